//! `Range` requests answered from a stored full response (RFC 9110 14).

use http::header::{HeaderMap, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};

use super::conditional::EntityTag;
use super::freshness::{header_date, http_date};

/// What to send for a request's `Range` against a stored body of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No usable range (absent, multi-range, not `bytes`, or `If-Range` failed): send it whole.
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
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.is_empty(), last.is_empty()) {
        // "-N": the last N bytes.
        (true, false) => match number(last) {
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(n) if len > 0 => RangeAnswer::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            Some(_) => RangeAnswer::Unsatisfiable,
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

/// `If-Range` (RFC 9110 13.1.5): the range applies only if the validator matches strongly.
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
    match (http_date(value), header_date(stored, LAST_MODIFIED)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}
