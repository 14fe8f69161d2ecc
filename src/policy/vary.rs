//! Selecting a stored response by the request headers its `Vary` names (RFC 9111 section 4.1).
//!
//! Values are normalised before they are compared or put in a key: several lines are joined, the
//! whitespace around commas is removed, and headers whose values are case-insensitive by
//! definition (the `Accept*` family) are lowercased. A missing header matches only a missing one.

use http::header::{HeaderMap, HeaderName, VARY};

use crate::store::Key;

/// What a response's `Vary` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarySpec {
    /// No `Vary`, or an empty one: one response serves every request.
    None,
    /// `Vary: *`: never matches a later request.
    Star,
    /// The request header names, lowercase, sorted and without duplicates.
    Names(Vec<HeaderName>),
}

/// Reads the `Vary` lines of a response.
pub fn vary_spec(headers: &HeaderMap) -> VarySpec {
    let mut names = Vec::new();
    for value in headers.get_all(VARY) {
        let Ok(text) = value.to_str() else {
            // A Vary we cannot read cannot be matched either.
            return VarySpec::Star;
        };
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return VarySpec::Star;
            }
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) => names.push(n),
                Err(_) => return VarySpec::Star,
            }
        }
    }
    if names.is_empty() {
        return VarySpec::None;
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    VarySpec::Names(names)
}

/// The normalised value of one request header, `None` when absent.
pub fn normalized_value(request: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut parts = Vec::new();
    for value in request.get_all(name) {
        let text = String::from_utf8_lossy(value.as_bytes());
        for part in text.split(',') {
            let part = part.split_whitespace().collect::<Vec<_>>().join(" ");
            if !part.is_empty() {
                parts.push(part);
            }
        }
    }
    if parts.is_empty() && !request.contains_key(name) {
        return None;
    }
    let joined = parts.join(",");
    if case_insensitive(name) {
        Some(joined.to_ascii_lowercase())
    } else {
        Some(joined)
    }
}

fn case_insensitive(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "accept" | "accept-encoding" | "accept-language" | "accept-charset"
    )
}

/// The values of the named request headers, in the order of `names`.
pub fn request_values(
    request: &HeaderMap,
    names: &[HeaderName],
) -> Vec<(HeaderName, Option<String>)> {
    names
        .iter()
        .map(|n| (n.clone(), normalized_value(request, n)))
        .collect()
}

/// True when a stored response selected by `stored` values may serve `request`.
pub fn matches(stored: &[(HeaderName, Option<String>)], request: &HeaderMap) -> bool {
    stored
        .iter()
        .all(|(name, value)| normalized_value(request, name) == *value)
}

/// The key a variant is stored under: the URL's key, then each name and value. NUL cannot appear
/// in a URL or a header value, so variant keys never collide with URL keys or with each other.
pub fn variant_key(primary: &Key, index_id: u64, values: &[(HeaderName, Option<String>)]) -> Key {
    let mut key = String::with_capacity(primary.len() + 32);
    key.push_str(primary.as_str());
    key.push('\0');
    key.push_str(&index_id.to_string());
    for (name, value) in values {
        key.push('\0');
        key.push_str(name.as_str());
        match value {
            Some(v) => {
                key.push('=');
                key.push_str(v);
            }
            None => key.push('!'),
        }
    }
    Key::new(key)
}

/// True when `key` is `primary` or one of its variants.
pub fn is_key_or_variant(key: &str, primary: &str) -> bool {
    key.strip_prefix(primary)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('\0'))
}
