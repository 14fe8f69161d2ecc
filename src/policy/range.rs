//! `Range` requests answered from a stored full response (RFC 9110 14).

use http::header::{HeaderMap, DATE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};

use super::conditional::EntityTag;
use super::freshness::{header_date, http_date};

/// What to send for a request's `Range` against a stored body of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No usable range (absent, invalid, multi-range, not `bytes`, `If-Range` failed, or a suffix
    /// of an empty body): send it whole.
    Full,
    /// Send bytes `start..=end` with 206.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// No byte of the range exists: 416.
    Unsatisfiable,
}

/// Decides how to answer the request's `Range` from a stored response.
///
/// A single byte range is served; a request for several ranges gets the whole body, which RFC
/// 9110 14.2 allows, rather than a multipart response.
pub fn answer(request: &HeaderMap, stored: &HeaderMap, len: u64) -> RangeAnswer {
    let Some(range) = request.get(RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeAnswer::Full;
    };
    if !if_range_holds(request, stored) {
        return RangeAnswer::Full;
    }
    // Range units are case-insensitive (RFC 9110 14.1).
    let Some((unit, spec)) = range.trim().split_once('=') else {
        return RangeAnswer::Full;
    };
    if !unit.eq_ignore_ascii_case("bytes") {
        return RangeAnswer::Full;
    }
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    // All digits: only overflow can fail, and an overflowing position is past any body.
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().unwrap_or(u64::MAX))
    };
    match (first.is_empty(), last.is_empty()) {
        // "-N": the last N bytes.
        (true, false) => match number(last) {
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(n) if len > 0 => RangeAnswer::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            // A non-zero suffix of an empty body is satisfiable (RFC 9110 14.1.1) yet selects
            // nothing: the empty body is sent whole.
            Some(_) => RangeAnswer::Full,
            None => RangeAnswer::Full,
        },
        // "N-": from N to the end.
        (false, true) => match number(first) {
            Some(start) if start < len => RangeAnswer::Partial {
                start,
                end: len - 1,
            },
            Some(_) => RangeAnswer::Unsatisfiable,
            None => RangeAnswer::Full,
        },
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= len {
                    RangeAnswer::Unsatisfiable
                } else {
                    RangeAnswer::Partial {
                        start,
                        end: end.min(len - 1),
                    }
                }
            }
            // An invalid range-spec: the field is ignored (RFC 9110 14.2).
            _ => RangeAnswer::Full,
        },
        (true, true) => RangeAnswer::Full,
    }
}

/// `If-Range` (RFC 9110 13.1.5): the range applies only if the validator matches strongly. An
/// entity tag must equal the stored strong tag; a date must equal the stored `Last-Modified`,
/// which counts as strong only when the stored `Date` is at least one second later (RFC 9110
/// 8.8.2.2).
fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(value) = request.get(IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if let Some(tag) = EntityTag::parse(value) {
        return stored
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(EntityTag::parse)
            .is_some_and(|s| s.strong_eq(&tag));
    }
    match (
        http_date(value),
        header_date(stored, LAST_MODIFIED),
        header_date(stored, DATE),
    ) {
        (Some(since), Some(lm), Some(date)) => {
            since == lm && date.duration_since(lm).is_ok_and(|d| d.as_secs() >= 1)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_support::headers;

    const LM: &str = "Tue, 14 Nov 2023 22:13:20 GMT";
    const LATER: &str = "Tue, 14 Nov 2023 23:00:00 GMT";

    fn part(start: u64, end: u64) -> RangeAnswer {
        RangeAnswer::Partial { start, end }
    }

    /// Each row: the RFC rule, the request's fields, the stored body length, the answer. The
    /// stored response has a strong ETag `"v1"`, `Last-Modified: LM` and a later `Date`.
    #[test]
    fn answer_table() {
        use RangeAnswer::{Full, Unsatisfiable};
        let stored = headers(&[("etag", "\"v1\""), ("last-modified", LM), ("date", LATER)]);
        type Row<'a> = (&'a str, Vec<(&'a str, &'a str)>, u64, RangeAnswer);
        let rows: Vec<Row> = vec![
            ("9110 14.2 no Range", vec![], 100, Full),
            (
                "9110 14.1.2 first-last",
                vec![("range", "bytes=0-9")],
                100,
                part(0, 9),
            ),
            (
                "9110 14.1.2 last clipped to the length",
                vec![("range", "bytes=90-200")],
                100,
                part(90, 99),
            ),
            (
                "9110 14.1.2 open-ended",
                vec![("range", "bytes=10-")],
                100,
                part(10, 99),
            ),
            (
                "9110 14.1.2 suffix",
                vec![("range", "bytes=-10")],
                100,
                part(90, 99),
            ),
            (
                "9110 14.1.2 suffix longer than the body",
                vec![("range", "bytes=-500")],
                100,
                part(0, 99),
            ),
            (
                "9110 14.1.1 zero suffix unsatisfiable",
                vec![("range", "bytes=-0")],
                100,
                Unsatisfiable,
            ),
            (
                "9110 14.1.1 first past the end",
                vec![("range", "bytes=100-")],
                100,
                Unsatisfiable,
            ),
            (
                "9110 14.1.1 first-last past the end",
                vec![("range", "bytes=150-160")],
                100,
                Unsatisfiable,
            ),
            (
                "9110 14.1.1 overflowing first position",
                vec![("range", "bytes=99999999999999999999999-")],
                100,
                Unsatisfiable,
            ),
            (
                "9110 14.1.1 empty body, suffix: whole empty body",
                vec![("range", "bytes=-5")],
                0,
                Full,
            ),
            (
                "9110 14.1.1 empty body, first-last",
                vec![("range", "bytes=0-0")],
                0,
                Unsatisfiable,
            ),
            (
                "9110 14.1 unit case-insensitive",
                vec![("range", "Bytes=0-0")],
                100,
                part(0, 0),
            ),
            (
                "9110 14.1 whitespace inside the spec",
                vec![("range", "bytes= 5 - 6 ")],
                100,
                part(5, 6),
            ),
            (
                "9110 14.2 unknown unit ignored",
                vec![("range", "items=0-1")],
                100,
                Full,
            ),
            (
                "9110 14.2 last before first: invalid, ignored",
                vec![("range", "bytes=9-5")],
                100,
                Full,
            ),
            (
                "9110 14.2 non-numeric, ignored",
                vec![("range", "bytes=a-b")],
                100,
                Full,
            ),
            (
                "9110 14.2 lone dash, ignored",
                vec![("range", "bytes=-")],
                100,
                Full,
            ),
            (
                "9110 14.2 no dash, ignored",
                vec![("range", "bytes=5")],
                100,
                Full,
            ),
            (
                "9110 14.2 no '=', ignored",
                vec![("range", "bytes")],
                100,
                Full,
            ),
            (
                "9110 14.2 negative, ignored",
                vec![("range", "bytes=--5")],
                100,
                Full,
            ),
            (
                "9110 14.2 multiple ranges: whole body",
                vec![("range", "bytes=0-1,5-6")],
                100,
                Full,
            ),
            (
                "9110 13.1.5 If-Range strong ETag matches",
                vec![("range", "bytes=0-1"), ("if-range", "\"v1\"")],
                100,
                part(0, 1),
            ),
            (
                "9110 13.1.5 If-Range ETag differs",
                vec![("range", "bytes=0-1"), ("if-range", "\"v2\"")],
                100,
                Full,
            ),
            (
                "9110 13.1.5 If-Range weak ETag never matches",
                vec![("range", "bytes=0-1"), ("if-range", "W/\"v1\"")],
                100,
                Full,
            ),
            (
                "9110 13.1.5 If-Range date equals strong Last-Modified",
                vec![("range", "bytes=0-1"), ("if-range", LM)],
                100,
                part(0, 1),
            ),
            (
                "9110 13.1.5 If-Range date differs",
                vec![("range", "bytes=0-1"), ("if-range", LATER)],
                100,
                Full,
            ),
            (
                "9110 13.1.5 If-Range garbage",
                vec![("range", "bytes=0-1"), ("if-range", "whenever")],
                100,
                Full,
            ),
            (
                "9110 13.1.5 If-Range ignored without Range",
                vec![("if-range", "\"v2\"")],
                100,
                Full,
            ),
        ];
        for (rule, req, len, want) in rows {
            assert_eq!(answer(&headers(&req), &stored, len), want, "{rule}");
        }
    }

    /// Each row: the RFC rule, the stored fields, whether `If-Range: LM` with a range holds.
    #[test]
    fn if_range_date_strength_table() {
        type Row<'a> = (&'a str, Vec<(&'a str, &'a str)>, bool);
        let rows: Vec<Row> = vec![
            (
                "9110 8.8.2.2 Date a second or more after Last-Modified: strong",
                vec![
                    ("last-modified", LM),
                    ("date", "Tue, 14 Nov 2023 22:13:21 GMT"),
                ],
                true,
            ),
            (
                "9110 8.8.2.2 Date equal to Last-Modified: weak",
                vec![("last-modified", LM), ("date", LM)],
                false,
            ),
            (
                "9110 8.8.2.2 no Date: weak",
                vec![("last-modified", LM)],
                false,
            ),
            ("9110 13.1.5 no Last-Modified", vec![("date", LATER)], false),
        ];
        for (rule, stored, want) in rows {
            let req = headers(&[("range", "bytes=0-1"), ("if-range", LM)]);
            let got = answer(&req, &headers(&stored), 10) == part(0, 1);
            assert_eq!(got, want, "{rule}");
        }
    }
}
