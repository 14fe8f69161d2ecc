//! Selecting a stored response by the request headers its `Vary` names (RFC 9111 section 4.1).
//!
//! Values are normalised before they are compared or put in a key: several lines are joined, the
//! whitespace around commas is removed, and headers whose values are case-insensitive by
//! definition (the `Accept*` family) are lowercased. A missing header matches only a missing one.

use http::header::{HeaderMap, HeaderName, VARY};

use super::key::Key;

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
///
/// Lines are joined as one list; runs of whitespace become one space and the whitespace around
/// commas goes. For the `Accept*` family, whose values are case-insensitive and whose parameters
/// allow whitespace around `;` (RFC 9110 12.5), that whitespace goes too and the value is
/// lowercased. Bytes outside ASCII and `%` are written as `%XX`, so distinct values never
/// normalise to the same text.
pub fn normalized_value(request: &HeaderMap, name: &HeaderName) -> Option<String> {
    if !request.contains_key(name) {
        return None;
    }
    let insensitive = case_insensitive(name);
    let mut parts = Vec::new();
    for value in request.get_all(name) {
        let text = escape_bytes(value.as_bytes());
        for part in text.split(',') {
            let mut part = part.split_whitespace().collect::<Vec<_>>().join(" ");
            if insensitive {
                part = part
                    .split(';')
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(";")
                    .to_ascii_lowercase();
            }
            if !part.is_empty() {
                parts.push(part);
            }
        }
    }
    Some(parts.join(","))
}

fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b >= 0x80 || b == b'%' {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
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
    push_selection(&mut key, values);
    Key::new(key)
}

/// Appends each name and its value (`\0name=value`, or `\0name!` for an absent header): the
/// part of a variant's key that says which selection it is, also the shared tier's field name.
pub fn push_selection(out: &mut String, values: &[(HeaderName, Option<String>)]) {
    for (name, value) in values {
        out.push('\0');
        out.push_str(name.as_str());
        match value {
            Some(v) => {
                out.push('=');
                out.push_str(v);
            }
            None => out.push('!'),
        }
    }
}

/// True when `key` is `primary` or one of its variants.
pub fn is_key_or_variant(key: &str, primary: &str) -> bool {
    key.strip_prefix(primary)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('\0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    use super::super::test_support::headers;

    fn names(list: &[&str]) -> VarySpec {
        VarySpec::Names(
            list.iter()
                .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
                .collect(),
        )
    }

    /// Each row: the RFC rule, the response's Vary lines, what they say.
    #[test]
    fn vary_spec_table() {
        let rows: Vec<(&str, Vec<&str>, VarySpec)> = vec![
            ("9111 4.1 no Vary", vec![], VarySpec::None),
            ("9110 12.5.5 empty Vary", vec![""], VarySpec::None),
            (
                "9110 12.5.5 list of commas only",
                vec![" , ,"],
                VarySpec::None,
            ),
            ("9111 4.1 Vary: *", vec!["*"], VarySpec::Star),
            ("9111 4.1 * among names", vec!["Accept, *"], VarySpec::Star),
            (
                "9111 4.1 * on a second line",
                vec!["Accept", "*"],
                VarySpec::Star,
            ),
            (
                "9110 5.1 names case-insensitive, sorted",
                vec!["User-Agent, Accept-Encoding"],
                names(&["accept-encoding", "user-agent"]),
            ),
            (
                "9110 5.3 several lines combine, duplicates dropped",
                vec!["accept", "Accept, ACCEPT-language"],
                names(&["accept", "accept-language"]),
            ),
            (
                "9110 5.6.1 whitespace around members",
                vec!["  accept-encoding\t,  origin "],
                names(&["accept-encoding", "origin"]),
            ),
            (
                "9111 4.1 malformed name cannot be matched",
                vec!["accept encoding"],
                VarySpec::Star,
            ),
        ];
        for (rule, lines, want) in rows {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append(VARY, HeaderValue::from_str(l).unwrap());
            }
            assert_eq!(vary_spec(&h), want, "{rule}");
        }
    }

    #[test]
    fn unreadable_vary_is_star() {
        // 9111 4.1: a Vary the cache cannot read can never be matched.
        let mut h = HeaderMap::new();
        h.append(VARY, HeaderValue::from_bytes(b"accept\xff").unwrap());
        assert_eq!(vary_spec(&h), VarySpec::Star);
    }

    /// Each row: the RFC rule, the Vary names, the request the response was stored for, a later
    /// request, whether the stored response may serve the later request.
    #[test]
    fn matches_table() {
        type Row<'a> = (
            &'a str,
            &'a str,
            Vec<(&'a str, &'a str)>,
            Vec<(&'a str, &'a str)>,
            bool,
        );
        let rows: Vec<Row> = vec![
            (
                "9111 4.1 same value",
                "accept-encoding",
                vec![("accept-encoding", "gzip")],
                vec![("accept-encoding", "gzip")],
                true,
            ),
            (
                "9111 4.1 different value",
                "accept-encoding",
                vec![("accept-encoding", "gzip")],
                vec![("accept-encoding", "br")],
                false,
            ),
            (
                "9111 4.1 whitespace around commas normalised",
                "accept-encoding",
                vec![("accept-encoding", "gzip, deflate")],
                vec![("accept-encoding", "gzip,deflate")],
                true,
            ),
            (
                "9111 4.1 several lines equal one combined line",
                "accept-encoding",
                vec![("accept-encoding", "gzip"), ("accept-encoding", "br")],
                vec![("accept-encoding", "gzip, br")],
                true,
            ),
            (
                "9111 4.1 order of list members matters",
                "accept-encoding",
                vec![("accept-encoding", "gzip, br")],
                vec![("accept-encoding", "br, gzip")],
                false,
            ),
            (
                "9110 12.5.3 Accept-Encoding case-insensitive",
                "accept-encoding",
                vec![("accept-encoding", "GZIP")],
                vec![("accept-encoding", "gzip")],
                true,
            ),
            (
                "9110 12.5.4 Accept-Language case-insensitive",
                "accept-language",
                vec![("accept-language", "en-US")],
                vec![("accept-language", "en-us")],
                true,
            ),
            (
                "9110 12.5.1 Accept whitespace around ';'",
                "accept",
                vec![("accept", "text/html; q=0.9")],
                vec![("accept", "text/html;q=0.9")],
                true,
            ),
            (
                "9111 4.1 other headers keep their case",
                "x-variant",
                vec![("x-variant", "Blue")],
                vec![("x-variant", "blue")],
                false,
            ),
            (
                "9111 4.1 runs of whitespace collapse",
                "user-agent",
                vec![("user-agent", "Foo  Bar")],
                vec![("user-agent", "Foo Bar")],
                true,
            ),
            (
                "9111 4.1 absent matches absent",
                "accept-language",
                vec![],
                vec![],
                true,
            ),
            (
                "9111 4.1 absent does not match present",
                "accept-language",
                vec![],
                vec![("accept-language", "en")],
                false,
            ),
            (
                "9111 4.1 present does not match absent",
                "accept-language",
                vec![("accept-language", "en")],
                vec![],
                false,
            ),
            (
                "9111 4.1 empty value differs from absent",
                "accept-language",
                vec![("accept-language", "")],
                vec![],
                false,
            ),
            (
                "9111 4.1 every named header must match",
                "accept, accept-encoding",
                vec![("accept", "a"), ("accept-encoding", "gzip")],
                vec![("accept", "a"), ("accept-encoding", "br")],
                false,
            ),
            (
                "9111 4.1 unnamed headers do not matter",
                "accept",
                vec![("accept", "a"), ("cookie", "x=1")],
                vec![("accept", "a"), ("cookie", "x=2")],
                true,
            ),
        ];
        for (rule, vary, stored_req, new_req, want) in rows {
            let VarySpec::Names(list) = vary_spec(&headers(&[("vary", vary)])) else {
                panic!("{rule}: bad vary");
            };
            let stored = request_values(&headers(&stored_req), &list);
            assert_eq!(matches(&stored, &headers(&new_req)), want, "{rule}");
        }
    }

    #[test]
    fn opaque_bytes_do_not_collide() {
        // 9111 4.1: two different obs-text values must not normalise to one value.
        let name = HeaderName::from_static("x-name");
        let mut a = HeaderMap::new();
        a.insert(&name, HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let mut b = HeaderMap::new();
        b.insert(&name, HeaderValue::from_bytes(b"caf\xe8").unwrap());
        let mut c = HeaderMap::new();
        c.insert(&name, HeaderValue::from_static("caf%E9"));
        let va = normalized_value(&a, &name);
        assert_eq!(va.as_deref(), Some("caf%E9"));
        assert_ne!(va, normalized_value(&b, &name));
        assert_ne!(va, normalized_value(&c, &name));
    }

    /// Each row: the rule, two sets of vary values, whether their variant keys are equal.
    #[test]
    fn variant_key_table() {
        let n = HeaderName::from_static("accept");
        let some = |v: &str| vec![(n.clone(), Some(v.to_string()))];
        let rows: Vec<(&str, u64, Vec<_>, u64, Vec<_>, bool)> = vec![
            (
                "9111 4.1 same values, same key",
                1,
                some("a"),
                1,
                some("a"),
                true,
            ),
            (
                "9111 4.1 different values",
                1,
                some("a"),
                1,
                some("b"),
                false,
            ),
            (
                "9111 4.1 absent differs from empty",
                1,
                vec![(n.clone(), None)],
                1,
                some(""),
                false,
            ),
            (
                "cachet: another index id",
                1,
                some("a"),
                2,
                some("a"),
                false,
            ),
        ];
        let primary = Key::new("http://h/p");
        for (rule, id_a, a, id_b, b, want) in rows {
            let eq = variant_key(&primary, id_a, &a) == variant_key(&primary, id_b, &b);
            assert_eq!(eq, want, "{rule}");
        }
    }

    /// Each row: a stored key, a primary key, whether the first is the second or a variant of it.
    #[test]
    fn is_key_or_variant_table() {
        let variant = variant_key(&Key::new("http://h/a"), 3, &[]);
        let rows = [
            ("http://h/a", "http://h/a", true),
            (variant.as_str(), "http://h/a", true),
            ("http://h/ab", "http://h/a", false),
            ("http://h/a?x", "http://h/a", false),
            ("http://h/", "http://h/a", false),
        ];
        for (key, primary, want) in rows {
            assert_eq!(
                is_key_or_variant(key, primary),
                want,
                "{key:?} under {primary}"
            );
        }
    }
}
