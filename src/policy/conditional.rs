//! Conditional requests: answering a client's from a stored response (RFC 9110 13.1, 13.2), and
//! making our own to revalidate a stored response and merging the 304 (RFC 9111 4.3).

use std::time::SystemTime;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, AGE, CONTENT_LENGTH, CONTENT_RANGE, DATE, ETAG, IF_MATCH,
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
        // The opaque part is a quoted string without inner quotes (RFC 9110 8.8.3).
        if rest.len() >= 2
            && rest.starts_with('"')
            && rest.ends_with('"')
            && !rest[1..rest.len() - 1].contains('"')
        {
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

/// A request date field that holds exactly one valid HTTP-date; `None` when absent, repeated, or
/// invalid, all of which RFC 9110 13.1.3 and 13.1.4 say to ignore.
fn single_date(request: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let mut values = request.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok().and_then(http_date)
}

/// Evaluates the client's preconditions against a stored response for a GET or HEAD, in the order
/// of RFC 9110 13.2.2: `If-Match`, else `If-Unmodified-Since`; then `If-None-Match`, else
/// `If-Modified-Since`.
pub fn evaluate(request: &HeaderMap, stored: &HeaderMap, status: StatusCode) -> Precondition {
    // Preconditions apply to 2xx responses only; others are sent as they are.
    if !status.is_success() {
        return Precondition::Pass;
    }
    // Most requests carry no precondition: answered before the stored validators are parsed,
    // since this runs on every hit.
    let conditional = [
        &IF_MATCH,
        &IF_UNMODIFIED_SINCE,
        &IF_NONE_MATCH,
        &IF_MODIFIED_SINCE,
    ];
    if !conditional.iter().any(|name| request.contains_key(*name)) {
        return Precondition::Pass;
    }
    let etag = stored
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .and_then(EntityTag::parse);
    let last_modified = header_date(stored, LAST_MODIFIED);

    if let Some(if_match) = header_text(request, &IF_MATCH) {
        // `*` matches any current representation, and a stored 2xx is one (RFC 9110 13.1.1).
        let ok = tag_list(&if_match).iter().any(|t| {
            *t == "*"
                || EntityTag::parse(t)
                    .zip(etag.as_ref())
                    .is_some_and(|(a, b)| a.strong_eq(b))
        });
        if !ok {
            return Precondition::Failed;
        }
    } else if let Some(since) = single_date(request, &IF_UNMODIFIED_SINCE) {
        // Without a modification date the field is ignored (RFC 9110 13.1.4).
        if last_modified.is_some_and(|lm| lm > since) {
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
    if let Some(since) = single_date(request, &IF_MODIFIED_SINCE) {
        // Without Last-Modified, the stored Date stands in (RFC 9111 4.3.2).
        let modified = last_modified.or_else(|| header_date(stored, DATE));
        if modified.is_some_and(|lm| lm <= since) {
            return Precondition::NotModified;
        }
    }
    Precondition::Pass
}

/// The validators to send upstream when revalidating a stored response (RFC 9111 4.3.1): its
/// entity tag as `If-None-Match`, its `Last-Modified` as `If-Modified-Since`. A malformed tag or
/// date is not sent; the result is empty when the response has no usable validator.
pub fn revalidation_headers(stored: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if let Some(etag) = stored.get(ETAG) {
        if etag.to_str().ok().and_then(EntityTag::parse).is_some() {
            out.push((IF_NONE_MATCH, etag.clone()));
        }
    }
    if let Some(lm) = stored.get(LAST_MODIFIED) {
        if lm.to_str().ok().and_then(http_date).is_some() {
            out.push((IF_MODIFIED_SINCE, lm.clone()));
        }
    }
    out
}

/// True when a 304 can be applied to the stored response it answers (RFC 9111 4.3.4): a strong
/// ETag in the 304 must equal a strong stored one; a weak ETag must equal the stored one by weak
/// comparison; otherwise a Last-Modified in both must agree; otherwise, with no validator in the
/// 304, it applies to the one response whose validators the conditional request carried.
pub fn not_modified_applies(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    let tag = |h: &HeaderMap| {
        h.get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if let Some(new) = tag(not_modified) {
        return match (EntityTag::parse(&new), tag(stored)) {
            (Some(n), Some(old)) => EntityTag::parse(&old).is_some_and(|o| {
                if n.weak {
                    o.weak_eq(&n)
                } else {
                    o.strong_eq(&n)
                }
            }),
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
///
/// The refreshed response is timed from the 304's exchange (its request and response times), so
/// the stored `Age` and `Date`, which describe the original exchange, are dropped when the 304
/// does not replace them: kept, they would add the original response's age to the refreshed
/// one's (RFC 9111 4.2.3).
pub fn merge_not_modified(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut merged = stored.clone();
    merged.remove(AGE);
    if !not_modified.contains_key(DATE) {
        merged.remove(DATE);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_support::headers;

    const EARLY: &str = "Tue, 14 Nov 2023 22:00:00 GMT";
    const LM: &str = "Tue, 14 Nov 2023 22:13:20 GMT";
    const LATE: &str = "Tue, 14 Nov 2023 23:00:00 GMT";

    /// Each row: the RFC rule, the text, the parsed tag (weak, opaque) or `None`.
    #[test]
    fn entity_tag_table() {
        type Row<'a> = (&'a str, &'a str, Option<(bool, &'a str)>);
        let rows: Vec<Row> = vec![
            ("9110 8.8.3 strong", "\"xyzzy\"", Some((false, "\"xyzzy\""))),
            ("9110 8.8.3 weak", "W/\"xyzzy\"", Some((true, "\"xyzzy\""))),
            ("9110 8.8.3 empty opaque", "\"\"", Some((false, "\"\""))),
            (
                "9110 8.8.3 surrounding whitespace",
                "  \"a\" ",
                Some((false, "\"a\"")),
            ),
            ("9110 8.8.3 unquoted", "xyzzy", None),
            ("9110 8.8.3 lowercase w/ is not weak", "w/\"a\"", None),
            ("9110 8.8.3 inner quote", "\"a\"b\"", None),
            ("9110 8.8.3 lone quote", "\"", None),
            ("9110 8.8.3 W/ alone", "W/", None),
        ];
        for (rule, text, want) in rows {
            let got = EntityTag::parse(text).map(|t| (t.weak, t.opaque));
            assert_eq!(got, want, "{rule}");
        }
    }

    /// RFC 9110 8.8.3.2's own table: the two tags, strong comparison, weak comparison.
    #[test]
    fn comparison_table() {
        let rows = [
            ("W/\"1\"", "W/\"1\"", false, true),
            ("W/\"1\"", "W/\"2\"", false, false),
            ("W/\"1\"", "\"1\"", false, true),
            ("\"1\"", "\"1\"", true, true),
            ("\"1\"", "\"2\"", false, false),
        ];
        for (a, b, strong, weak) in rows {
            let (a, b) = (EntityTag::parse(a).unwrap(), EntityTag::parse(b).unwrap());
            assert_eq!(a.strong_eq(&b), strong, "9110 8.8.3.2 strong {a:?} {b:?}");
            assert_eq!(a.weak_eq(&b), weak, "9110 8.8.3.2 weak {a:?} {b:?}");
        }
    }

    /// Each row: the RFC rule, the request's conditionals, the stored response's fields, its
    /// status, the outcome.
    #[test]
    fn evaluate_table() {
        use Precondition::{Failed, NotModified, Pass};
        type Row<'a> = (
            &'a str,
            Vec<(&'a str, &'a str)>,
            Vec<(&'a str, &'a str)>,
            u16,
            Precondition,
        );
        let tagged = vec![("etag", "\"v1\""), ("last-modified", LM)];
        let weak = vec![("etag", "W/\"v1\"")];
        let rows: Vec<Row> = vec![
            (
                "9110 13.2.2 no conditionals",
                vec![],
                tagged.clone(),
                200,
                Pass,
            ),
            (
                "9110 13.1.2 If-None-Match matches",
                vec![("if-none-match", "\"v1\"")],
                tagged.clone(),
                200,
                NotModified,
            ),
            (
                "9110 13.1.2 If-None-Match differs",
                vec![("if-none-match", "\"v2\"")],
                tagged.clone(),
                200,
                Pass,
            ),
            (
                "9110 13.1.2 If-None-Match list, one matches",
                vec![("if-none-match", "\"a\", \"v1\"")],
                tagged.clone(),
                200,
                NotModified,
            ),
            (
                "9110 13.1.2 If-None-Match over two lines",
                vec![("if-none-match", "\"a\""), ("if-none-match", "\"v1\"")],
                tagged.clone(),
                200,
                NotModified,
            ),
            (
                "9110 13.1.2 If-None-Match weak comparison: weak request",
                vec![("if-none-match", "W/\"v1\"")],
                tagged.clone(),
                200,
                NotModified,
            ),
            (
                "9110 13.1.2 If-None-Match weak comparison: weak stored",
                vec![("if-none-match", "\"v1\"")],
                weak.clone(),
                200,
                NotModified,
            ),
            (
                "9110 13.1.2 If-None-Match: * with a stored representation",
                vec![("if-none-match", "*")],
                vec![],
                200,
                NotModified,
            ),
            (
                "9110 13.1.2 If-None-Match with no stored ETag",
                vec![("if-none-match", "\"v1\"")],
                vec![],
                200,
                Pass,
            ),
            (
                "9110 13.1.2 malformed If-None-Match never matches",
                vec![("if-none-match", "v1")],
                tagged.clone(),
                200,
                Pass,
            ),
            (
                "9110 13.1.2 comma inside a tag",
                vec![("if-none-match", "\"a,b\"")],
                vec![("etag", "\"a,b\"")],
                200,
                NotModified,
            ),
            (
                "9110 13.1.3 If-Modified-Since equal to Last-Modified",
                vec![("if-modified-since", LM)],
                tagged.clone(),
                200,
                NotModified,
            ),
            (
                "9110 13.1.3 If-Modified-Since later",
                vec![("if-modified-since", LATE)],
                tagged.clone(),
                200,
                NotModified,
            ),
            (
                "9110 13.1.3 If-Modified-Since earlier",
                vec![("if-modified-since", EARLY)],
                tagged.clone(),
                200,
                Pass,
            ),
            (
                "9110 13.1.3 If-Modified-Since RFC 850 date",
                vec![("if-modified-since", "Tuesday, 14-Nov-23 22:13:20 GMT")],
                tagged.clone(),
                200,
                NotModified,
            ),
            (
                "9110 13.1.3 invalid If-Modified-Since ignored",
                vec![("if-modified-since", "yesterday")],
                tagged.clone(),
                200,
                Pass,
            ),
            (
                "9110 13.1.3 repeated If-Modified-Since ignored",
                vec![("if-modified-since", LM), ("if-modified-since", LM)],
                tagged.clone(),
                200,
                Pass,
            ),
            (
                "9111 4.3.2 If-Modified-Since against Date without Last-Modified",
                vec![("if-modified-since", LM)],
                vec![("date", EARLY)],
                200,
                NotModified,
            ),
            (
                "9111 4.3.2 Date newer than If-Modified-Since",
                vec![("if-modified-since", EARLY)],
                vec![("date", LM)],
                200,
                Pass,
            ),
            (
                "9110 13.2.2 If-None-Match beats If-Modified-Since (no match)",
                vec![("if-none-match", "\"v2\""), ("if-modified-since", LATE)],
                tagged.clone(),
                200,
                Pass,
            ),
            (
                "9110 13.2.2 If-None-Match beats If-Modified-Since (match)",
                vec![("if-none-match", "\"v1\""), ("if-modified-since", EARLY)],
                tagged.clone(),
                200,
                NotModified,
            ),
            (
                "9110 13.1.1 If-Match strong match",
                vec![("if-match", "\"v1\"")],
                tagged.clone(),
                200,
                Pass,
            ),
            (
                "9110 13.1.1 If-Match differs",
                vec![("if-match", "\"v2\"")],
                tagged.clone(),
                200,
                Failed,
            ),
            (
                "9110 13.1.1 If-Match uses strong comparison",
                vec![("if-match", "W/\"v1\"")],
                weak.clone(),
                200,
                Failed,
            ),
            (
                "9110 13.1.1 If-Match: * with a stored representation",
                vec![("if-match", "*")],
                vec![],
                200,
                Pass,
            ),
            (
                "9110 13.1.1 If-Match list",
                vec![("if-match", "\"x\", \"v1\"")],
                tagged.clone(),
                200,
                Pass,
            ),
            (
                "9110 13.1.4 If-Unmodified-Since later: passes",
                vec![("if-unmodified-since", LATE)],
                tagged.clone(),
                200,
                Pass,
            ),
            (
                "9110 13.1.4 If-Unmodified-Since earlier: fails",
                vec![("if-unmodified-since", EARLY)],
                tagged.clone(),
                200,
                Failed,
            ),
            (
                "9110 13.1.4 If-Unmodified-Since without Last-Modified ignored",
                vec![("if-unmodified-since", EARLY)],
                vec![("etag", "\"v1\"")],
                200,
                Pass,
            ),
            (
                "9110 13.1.4 invalid If-Unmodified-Since ignored",
                vec![("if-unmodified-since", "0")],
                tagged.clone(),
                200,
                Pass,
            ),
            (
                "9110 13.2.2 If-Match beats If-Unmodified-Since",
                vec![("if-match", "\"v1\""), ("if-unmodified-since", EARLY)],
                tagged.clone(),
                200,
                Pass,
            ),
            (
                "9110 13.2.2 If-Match failure before If-None-Match",
                vec![("if-match", "\"v2\""), ("if-none-match", "\"v1\"")],
                tagged.clone(),
                200,
                Failed,
            ),
            (
                "9110 13.2.2 If-Match pass, then If-None-Match",
                vec![("if-match", "\"v1\""), ("if-none-match", "\"v1\"")],
                tagged.clone(),
                200,
                NotModified,
            ),
            (
                "9110 13.2.1 preconditions ignored for a non-2xx",
                vec![("if-none-match", "\"v1\"")],
                tagged.clone(),
                404,
                Pass,
            ),
            (
                "9110 13.2.1 If-Match ignored for a redirect",
                vec![("if-match", "\"nope\"")],
                tagged.clone(),
                301,
                Pass,
            ),
        ];
        for (rule, req, stored, status, want) in rows {
            let got = evaluate(
                &headers(&req),
                &headers(&stored),
                StatusCode::from_u16(status).unwrap(),
            );
            assert_eq!(got, want, "{rule}");
        }
    }

    /// Each row: the RFC rule, the stored fields, the conditional fields sent upstream.
    #[test]
    fn revalidation_headers_table() {
        type Row<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<(&'a str, &'a str)>);
        let rows: Vec<Row> = vec![
            (
                "9111 4.3.1 ETag and Last-Modified",
                vec![("etag", "\"v1\""), ("last-modified", LM)],
                vec![("if-none-match", "\"v1\""), ("if-modified-since", LM)],
            ),
            (
                "9111 4.3.1 weak ETag sent",
                vec![("etag", "W/\"v1\"")],
                vec![("if-none-match", "W/\"v1\"")],
            ),
            (
                "9111 4.3.1 Last-Modified only",
                vec![("last-modified", LM)],
                vec![("if-modified-since", LM)],
            ),
            ("9111 4.3.1 no validators", vec![("date", LM)], vec![]),
            (
                "9111 4.3.1 malformed ETag not sent",
                vec![("etag", "v1"), ("last-modified", LM)],
                vec![("if-modified-since", LM)],
            ),
            (
                "9111 4.3.1 invalid Last-Modified not sent",
                vec![("etag", "\"v1\""), ("last-modified", "never")],
                vec![("if-none-match", "\"v1\"")],
            ),
        ];
        for (rule, stored, want) in rows {
            let got = revalidation_headers(&headers(&stored));
            let got: Vec<(String, String)> = got
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want, "{rule}");
        }
    }

    /// Each row: the RFC rule, the stored fields, the 304's fields, whether the 304 applies.
    #[test]
    fn not_modified_applies_table() {
        type Row<'a> = (
            &'a str,
            Vec<(&'a str, &'a str)>,
            Vec<(&'a str, &'a str)>,
            bool,
        );
        let rows: Vec<Row> = vec![
            (
                "9111 4.3.4 same strong ETag",
                vec![("etag", "\"v1\"")],
                vec![("etag", "\"v1\"")],
                true,
            ),
            (
                "9111 4.3.4 different strong ETag",
                vec![("etag", "\"v1\"")],
                vec![("etag", "\"v2\"")],
                false,
            ),
            (
                "9111 4.3.4 strong 304 tag, weak stored tag",
                vec![("etag", "W/\"v1\"")],
                vec![("etag", "\"v1\"")],
                false,
            ),
            (
                "9111 4.3.4 weak 304 tag, same weak stored",
                vec![("etag", "W/\"v1\"")],
                vec![("etag", "W/\"v1\"")],
                true,
            ),
            (
                "9111 4.3.4 weak 304 tag, strong stored",
                vec![("etag", "\"v1\"")],
                vec![("etag", "W/\"v1\"")],
                true,
            ),
            (
                "9111 4.3.4 304 tag, nothing stored",
                vec![("last-modified", LM)],
                vec![("etag", "\"v1\"")],
                false,
            ),
            (
                "9111 4.3.4 malformed 304 tag",
                vec![("etag", "\"v1\"")],
                vec![("etag", "v1")],
                false,
            ),
            (
                "9111 4.3.4 same Last-Modified",
                vec![("last-modified", LM)],
                vec![("last-modified", LM)],
                true,
            ),
            (
                "9111 4.3.4 different Last-Modified",
                vec![("last-modified", LM)],
                vec![("last-modified", LATE)],
                false,
            ),
            (
                "9111 4.3.4 no validator in the 304",
                vec![("etag", "\"v1\"")],
                vec![("cache-control", "max-age=60")],
                true,
            ),
        ];
        for (rule, stored, nm, want) in rows {
            assert_eq!(
                not_modified_applies(&headers(&stored), &headers(&nm)),
                want,
                "{rule}"
            );
        }
    }

    /// Each row: the RFC rule, stored fields, the 304's fields, a field name, its merged values.
    #[test]
    fn merge_table() {
        type Row<'a> = (
            &'a str,
            Vec<(&'a str, &'a str)>,
            Vec<(&'a str, &'a str)>,
            &'a str,
            Vec<&'a str>,
        );
        let stored = vec![
            ("cache-control", "max-age=10"),
            ("content-length", "1234"),
            ("content-type", "text/html"),
            ("date", EARLY),
            ("age", "30"),
            ("x-old", "1"),
            ("x-multi", "a"),
            ("x-multi", "b"),
        ];
        let rows: Vec<Row> = vec![
            (
                "9111 3.2 304 field replaces the stored one",
                stored.clone(),
                vec![("cache-control", "max-age=600")],
                "cache-control",
                vec!["max-age=600"],
            ),
            (
                "9111 3.2 stored field kept when the 304 lacks it",
                stored.clone(),
                vec![("cache-control", "max-age=600")],
                "x-old",
                vec!["1"],
            ),
            (
                "9111 3.2 all instances replaced",
                stored.clone(),
                vec![("x-multi", "c")],
                "x-multi",
                vec!["c"],
            ),
            (
                "9111 3.2 several 304 lines all kept",
                stored.clone(),
                vec![("x-multi", "c"), ("x-multi", "d")],
                "x-multi",
                vec!["c", "d"],
            ),
            (
                "9111 3.2 new field added",
                stored.clone(),
                vec![("x-new", "n")],
                "x-new",
                vec!["n"],
            ),
            (
                "9111 3.2 Content-Length never updated",
                stored.clone(),
                vec![("content-length", "0")],
                "content-length",
                vec!["1234"],
            ),
            (
                "9111 3.2 Content-Range never updated",
                vec![("content-range", "bytes 0-1/2")],
                vec![("content-range", "bytes */9")],
                "content-range",
                vec!["bytes 0-1/2"],
            ),
            (
                "9111 4.2.3 304 Date replaces stored Date",
                stored.clone(),
                vec![("date", LATE)],
                "date",
                vec![LATE],
            ),
            (
                "9111 4.2.3 stored Date dropped when the 304 has none",
                stored.clone(),
                vec![("etag", "\"v1\"")],
                "date",
                vec![],
            ),
            (
                "9111 4.2.3 stored Age always dropped",
                stored.clone(),
                vec![("date", LATE)],
                "age",
                vec![],
            ),
            (
                "9111 4.2.3 304 Age kept",
                stored.clone(),
                vec![("age", "2")],
                "age",
                vec!["2"],
            ),
        ];
        for (rule, stored, nm, name, want) in rows {
            let merged = merge_not_modified(&headers(&stored), &headers(&nm));
            let got: Vec<&str> = merged
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(got, want, "{rule}");
        }
    }
}
