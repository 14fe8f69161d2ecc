//! Targeted cache control (RFC 9213): `CDN-Cache-Control`, the field a reverse proxy or CDN
//! obeys instead of `Cache-Control`, so an origin can give its shared caches a different policy
//! from browsers.
//!
//! When a response carries a valid `CDN-Cache-Control`, its directives replace `Cache-Control`
//! and `Expires` for every caching decision here (RFC 9213 2.2); the field itself is passed on
//! to the client unchanged. A field that is not a valid Structured Field Dictionary (RFC 9651),
//! or whose known directives have values of the wrong type, is ignored as a whole (RFC 9213 2.1).

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, EXPIRES};
use sfv::{BareItem, Dictionary, ListEntry, Parser};

/// The targeted field this cache obeys.
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// Directives whose value is delta-seconds (an sf-integer here).
const SECONDS: [&str; 4] = [
    "max-age",
    "s-maxage",
    "stale-while-revalidate",
    "stale-if-error",
];

/// Directives that stand alone (an sf-boolean `true`), or name fields (an sf-string).
const FLAGS: [&str; 9] = [
    "no-store",
    "no-cache",
    "private",
    "public",
    "must-revalidate",
    "proxy-revalidate",
    "must-understand",
    "no-transform",
    "immutable",
];

/// The headers caching decisions are made on: `headers` itself, or a copy whose `Cache-Control`
/// is rewritten from a valid `CDN-Cache-Control` and whose `Expires` is dropped.
pub fn effective_headers(headers: &HeaderMap) -> Cow<'_, HeaderMap> {
    let Some(directives) = cdn_directives(headers) else {
        return Cow::Borrowed(headers);
    };
    let mut effective = headers.clone();
    effective.remove(CACHE_CONTROL);
    effective.remove(EXPIRES);
    if !directives.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&directives) {
            effective.insert(CACHE_CONTROL, v);
        }
    }
    Cow::Owned(effective)
}

/// The directives of a valid `CDN-Cache-Control`, rendered as a `Cache-Control` value; `None`
/// when the field is absent or invalid.
pub fn cdn_directives(headers: &HeaderMap) -> Option<String> {
    let lines: Vec<&str> = headers
        .get_all(CDN_CACHE_CONTROL)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<_>>()?;
    if lines.is_empty() {
        return None;
    }
    let joined = lines.join(", ");
    let dictionary: Dictionary = Parser::new(&joined).parse().ok()?;
    let mut out = Vec::new();
    for (key, entry) in &dictionary {
        let name = key.as_str();
        let ListEntry::Item(item) = entry else {
            if SECONDS.contains(&name) || FLAGS.contains(&name) {
                return None;
            }
            continue;
        };
        if SECONDS.contains(&name) {
            match &item.bare_item {
                BareItem::Integer(n) => {
                    let n = i64::from(*n);
                    if n < 0 {
                        return None;
                    }
                    out.push(format!("{name}={n}"));
                }
                _ => return None,
            }
        } else if FLAGS.contains(&name) {
            match &item.bare_item {
                BareItem::Boolean(true) => out.push(name.to_string()),
                BareItem::Boolean(false) => {}
                BareItem::String(fields) if name == "no-cache" || name == "private" => {
                    out.push(format!("{name}=\"{}\"", fields.as_str()));
                }
                _ => return None,
            }
        }
        // Unknown directives are extensions: ignored, whatever their type.
    }
    Some(out.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_support::headers;

    fn effective_cc(pairs: &[(&str, &str)]) -> (Option<String>, bool) {
        let h = headers(pairs);
        let e = effective_headers(&h);
        (
            e.get(CACHE_CONTROL)
                .map(|v| v.to_str().unwrap().to_string()),
            e.contains_key(EXPIRES),
        )
    }

    /// Response headers, the effective Cache-Control, and whether Expires is kept.
    type Case = (
        &'static [(&'static str, &'static str)],
        Option<&'static str>,
        bool,
    );

    #[test]
    fn table() {
        // (headers, effective Cache-Control, Expires kept) — RFC 9213 2.1 and 2.2.
        let cases: &[Case] = &[
            // Absent: Cache-Control and Expires as they are.
            (
                &[("cache-control", "max-age=5"), ("expires", "0")],
                Some("max-age=5"),
                true,
            ),
            // Present and valid: replaces both.
            (
                &[
                    ("cache-control", "max-age=1"),
                    ("cdn-cache-control", "max-age=3600"),
                ],
                Some("max-age=3600"),
                false,
            ),
            (
                &[
                    ("cache-control", "no-store"),
                    ("cdn-cache-control", "max-age=10000"),
                ],
                Some("max-age=10000"),
                false,
            ),
            (
                &[
                    ("cache-control", "max-age=10000"),
                    ("cdn-cache-control", "no-store"),
                ],
                Some("no-store"),
                false,
            ),
            (
                &[
                    ("cache-control", "max-age=10000"),
                    ("cdn-cache-control", "private"),
                ],
                Some("private"),
                false,
            ),
            (
                &[
                    ("cdn-cache-control", "max-age=0"),
                    ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
                ],
                Some("max-age=0"),
                false,
            ),
            // Extensions are ignored, directives kept.
            (
                &[("cdn-cache-control", "foobar, max-age=3600")],
                Some("max-age=3600"),
                false,
            ),
            (
                &[("cdn-cache-control", "max-age=99999999999")],
                Some("max-age=99999999999"),
                false,
            ),
            // Field names on no-cache as an sf-string.
            (
                &[("cdn-cache-control", "no-cache=\"set-cookie\"")],
                Some("no-cache=\"set-cookie\""),
                false,
            ),
            // Invalid Structured Field: ignored, Cache-Control governs.
            (
                &[
                    ("cache-control", "no-store"),
                    ("cdn-cache-control", "max-age=10000, &&&&&"),
                ],
                Some("no-store"),
                false,
            ),
            (
                &[
                    ("cache-control", "max-age=1"),
                    ("cdn-cache-control", "max-age =100"),
                ],
                Some("max-age=1"),
                false,
            ),
            (
                &[
                    ("cache-control", "max-age=1"),
                    ("cdn-cache-control", "max-age= 100"),
                ],
                Some("max-age=1"),
                false,
            ),
            (
                &[
                    ("cache-control", "max-age=1"),
                    ("cdn-cache-control", "MaX-aGe=3600"),
                ],
                Some("max-age=1"),
                false,
            ),
            // Wrong type for a known directive: ignored.
            (
                &[
                    ("cache-control", "no-store"),
                    ("cdn-cache-control", "max-age=\"10000\""),
                ],
                Some("no-store"),
                false,
            ),
            (
                &[
                    ("cache-control", "no-store"),
                    ("cdn-cache-control", "max-age=-1"),
                ],
                Some("no-store"),
                false,
            ),
            (
                &[
                    ("cache-control", "no-store"),
                    ("cdn-cache-control", "no-store=5"),
                ],
                Some("no-store"),
                false,
            ),
        ];
        for (i, (pairs, cc, expires)) in cases.iter().enumerate() {
            let (got_cc, got_expires) = effective_cc(pairs);
            assert_eq!(got_cc.as_deref(), *cc, "case {i}: {pairs:?}");
            if pairs.iter().any(|(n, _)| *n == "expires") {
                assert_eq!(got_expires, *expires, "case {i}: {pairs:?}");
            }
        }
    }
}
