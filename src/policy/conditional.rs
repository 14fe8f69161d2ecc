//! Conditional requests: answering a client's from a stored response (RFC 9110 13.1, 13.2), and
//! making our own to revalidate a stored response and merging the 304 (RFC 9111 4.3).

use std::time::SystemTime;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_MATCH,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE, LAST_MODIFIED, TRANSFER_ENCODING,
};
use http::StatusCode;

use super::freshness::{header_date, http_date};

/// An entity tag, `W/"x"` or `"x"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag<'a> {
    /// True for a weak tag.
    pub weak: bool,
    /// The opaque part, quotes included.
    pub opaque: &'a str,
}

impl<'a> EntityTag<'a> {
    /// Parses one entity tag; `None` when it is malformed.
    pub fn parse(s: &'a str) -> Option<Self> {
        let s = s.trim();
        let (weak, rest) = match s.strip_prefix("W/") {
            Some(r) => (true, r),
            None => (false, s),
        };
        if rest.len() >= 2 && rest.starts_with('"') && rest.ends_with('"') {
            Some(EntityTag { weak, opaque: rest })
        } else {
            None
        }
    }

    /// Weak comparison: opaque parts equal, weakness ignored (RFC 9110 8.8.3.2).
    pub fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }

    /// Strong comparison: both strong and opaque parts equal.
    pub fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }
}

/// Splits an entity-tag list, respecting commas inside quotes.
fn tag_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

fn header_text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// How a client's preconditions come out against a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// No condition, or all pass: send the stored response.
    Pass,
    /// `If-None-Match` or `If-Modified-Since` says the client has it: 304.
    NotModified,
    /// `If-Match` or `If-Unmodified-Since` failed: 412.
    Failed,
}

/// Evaluates the client's preconditions against a stored response for a GET or HEAD, in the order
/// of RFC 9110 13.2.2.
pub fn evaluate(request: &HeaderMap, stored: &HeaderMap, status: StatusCode) -> Precondition {
    // Preconditions apply to 2xx responses only; others are sent as they are.
    if !status.is_success() {
        return Precondition::Pass;
    }
    let etag_text = stored.get(ETAG).and_then(|v| v.to_str().ok());
    let etag = etag_text.and_then(EntityTag::parse);
    let last_modified = header_date(stored, LAST_MODIFIED);

    if let Some(if_match) = header_text(request, &IF_MATCH) {
        let ok = tag_list(&if_match).iter().any(|t| {
            *t == "*" && etag_text.is_some()
                || EntityTag::parse(t)
                    .zip(etag.as_ref())
                    .is_some_and(|(a, b)| a.strong_eq(b))
        });
        if !ok {
            return Precondition::Failed;
        }
    } else if let Some(since) = request
        .get(IF_UNMODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(http_date)
    {
        if last_modified.is_none_or(|lm| lm > since) {
            return Precondition::Failed;
        }
    }

    if let Some(if_none_match) = header_text(request, &IF_NONE_MATCH) {
        let matched = tag_list(&if_none_match).iter().any(|t| {
            *t == "*"
                || EntityTag::parse(t)
                    .zip(etag.as_ref())
                    .is_some_and(|(a, b)| a.weak_eq(b))
        });
        return if matched {
            Precondition::NotModified
        } else {
            Precondition::Pass
        };
    }
    if let Some(since) = request
        .get(IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(http_date)
    {
        if last_modified.is_some_and(|lm| lm <= since) {
            return Precondition::NotModified;
        }
    }
    Precondition::Pass
}

/// The validators to send upstream when revalidating a stored response (RFC 9111 4.3.1); empty
/// when it has none.
pub fn revalidation_headers(stored: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if let Some(etag) = stored.get(ETAG) {
        out.push((IF_NONE_MATCH, etag.clone()));
    }
    if let Some(lm) = stored.get(LAST_MODIFIED) {
        out.push((IF_MODIFIED_SINCE, lm.clone()));
    }
    out
}

/// True when a 304 can be applied to the stored response it answers (RFC 9111 4.3.4): a strong
/// ETag in the 304 must equal the stored one; otherwise a Last-Modified in both must agree;
/// otherwise, with no validator in the 304, it applies to the response we asked about.
pub fn not_modified_applies(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    let tag = |h: &HeaderMap| {
        h.get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if let Some(new) = tag(not_modified) {
        return match (EntityTag::parse(&new), tag(stored)) {
            (Some(n), Some(old)) => EntityTag::parse(&old).is_some_and(|o| o.weak_eq(&n)),
            _ => false,
        };
    }
    match (
        header_date(not_modified, LAST_MODIFIED),
        header_date(stored, LAST_MODIFIED),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Header fields a 304 does not replace in the stored response: they describe the stored body,
/// which the 304 does not carry.
fn kept_from_stored(name: &HeaderName) -> bool {
    name == CONTENT_LENGTH || name == CONTENT_RANGE || name == TRANSFER_ENCODING
}

/// The stored headers updated by a 304 (RFC 9111 3.2 and 4.3.4): every field the 304 carries
/// replaces the stored one of that name, except those describing the body.
pub fn merge_not_modified(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut merged = stored.clone();
    let mut replaced: Vec<&HeaderName> = Vec::new();
    for (name, value) in not_modified {
        if kept_from_stored(name) {
            continue;
        }
        if !replaced.contains(&name) {
            merged.remove(name);
            replaced.push(name);
        }
        merged.append(name.clone(), value.clone());
    }
    merged
}

/// The current time in the form an `If-Modified-Since` wants; kept here so callers need not
/// format dates themselves.
pub fn http_date_now() -> String {
    httpdate::fmt_http_date(SystemTime::now())
}
