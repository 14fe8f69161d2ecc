//! Building responses: from a stored entry (preconditions, ranges, HEAD, `Age`), and the
//! proxy's own short errors.

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, AGE, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH,
    CONTENT_LOCATION, CONTENT_RANGE, CONTENT_TYPE, DATE, ETAG, EXPIRES, LAST_MODIFIED, VARY,
};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{self, Body, BoxError};
use crate::policy::conditional::{self, Precondition};
use crate::policy::range::{self, RangeAnswer};
use crate::policy::{CacheStatus, Fwd};
use crate::store::CachedResponse;

use super::{CacheResult, UpstreamTime};

/// The `Cache-Status` header name (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Builds the response for a stored entry: client preconditions, ranges, HEAD, `Age` and
/// `Cache-Status`.
pub(super) fn serve_stored(
    parts: &Parts,
    stored: &CachedResponse,
    age: u64,
    status: CacheStatus,
    result: CacheResult,
) -> Response<Body> {
    let pre = if parts.method == Method::GET || parts.method == Method::HEAD {
        conditional::evaluate(&parts.headers, &stored.headers, stored.status)
    } else {
        Precondition::Pass
    };
    if pre != Precondition::Pass {
        let mut resp = precondition_response(pre, &stored.headers, status);
        resp.headers_mut().insert(AGE, HeaderValue::from(age));
        resp.extensions_mut().insert(result);
        return resp;
    }
    let mut headers = stored.headers.clone();
    headers.insert(AGE, HeaderValue::from(age));
    let len = stored.body.len() as u64;
    let (code, body) = match (parts.method == Method::GET && stored.status == StatusCode::OK)
        .then(|| range::answer(&parts.headers, &stored.headers, len))
    {
        Some(RangeAnswer::Partial { start, end }) => {
            headers.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")).expect("ascii"),
            );
            (
                StatusCode::PARTIAL_CONTENT,
                stored.body.slice(start as usize..=end as usize),
            )
        }
        Some(RangeAnswer::Unsatisfiable) => {
            headers.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
            );
            (StatusCode::RANGE_NOT_SATISFIABLE, Bytes::new())
        }
        _ => (stored.status, stored.body.clone()),
    };
    if code == StatusCode::NO_CONTENT || code == StatusCode::NOT_MODIFIED {
        // These carry no body, and RFC 9110 8.6 forbids a Content-Length on a 204.
        headers.remove(CONTENT_LENGTH);
    } else {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    headers.append(CACHE_STATUS, status.header_value());
    let body = if parts.method == Method::HEAD {
        body::empty()
    } else {
        body::full(body)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = code;
    *resp.headers_mut() = headers;
    resp.extensions_mut().insert(result);
    resp
}

/// A 304 (with the fields RFC 9110 15.4.5 says it carries) or a 412.
pub(super) fn precondition_response(
    pre: Precondition,
    stored: &HeaderMap,
    status: CacheStatus,
) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    if pre == Precondition::Failed {
        *resp.status_mut() = StatusCode::PRECONDITION_FAILED;
    } else {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        for name in [
            CACHE_CONTROL,
            CONTENT_LOCATION,
            DATE,
            ETAG,
            EXPIRES,
            VARY,
            LAST_MODIFIED,
        ] {
            for v in stored.get_all(&name) {
                resp.headers_mut().append(name.clone(), v.clone());
            }
        }
    }
    resp.headers_mut()
        .append(CACHE_STATUS, status.header_value());
    resp
}

/// A short plain-text error from the proxy itself.
pub(super) fn error_response(
    code: StatusCode,
    reason: &str,
    status: CacheStatus,
    upstream_time: Option<Duration>,
) -> Response<Body> {
    let mut resp = Response::new(body::full(format!("{reason}\n")));
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.append(CACHE_STATUS, status.header_value());
    resp.extensions_mut().insert(CacheResult::Error);
    if let Some(t) = upstream_time {
        resp.extensions_mut().insert(UpstreamTime(t));
    }
    resp
}

/// The proxy's refusal of a request it will neither look up nor forward (a bad authority, a
/// method it does not proxy, a head over the limit): a status and a short reason. It is a value,
/// not yet a response, so that callers (PURGE, the request path) decide when to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status it is answered with.
    pub status: StatusCode,
    /// The reason, sent as the body.
    pub reason: Cow<'static, str>,
}

impl Refusal {
    pub(super) fn new(status: StatusCode, reason: Cow<'static, str>) -> Refusal {
        Refusal { status, reason }
    }

    /// The response that answers it. The connection is closed after it: a request refused
    /// before its body was read leaves that body unread on the wire, and nothing after it can be
    /// trusted to start a new request.
    pub fn into_response(self) -> Response<Body> {
        refused(self.status, &self.reason)
    }
}

fn refused(code: StatusCode, reason: &str) -> Response<Body> {
    let mut resp = Response::new(body::full(format!("{reason}\n")));
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    resp.extensions_mut().insert(CacheResult::Error);
    resp
}

/// RFC 9111 5.2.1.7: `only-if-cached` with nothing usable stored is answered 504.
pub(super) fn only_if_cached_miss() -> Response<Body> {
    let mut status = CacheStatus::forward(Fwd::Miss);
    status.fwd = None;
    status.detail = Some("only-if-cached".into());
    error_response(
        StatusCode::GATEWAY_TIMEOUT,
        "only-if-cached: no stored response can be used",
        status,
        None,
    )
}

/// Answers a client's `Range` from a whole response that is still arriving: a fill asks the
/// upstream for the whole object (to store it), so the range is cut out here, as the body
/// streams, rather than after it is stored. Leaves anything but a 200 with a known length, and
/// any request without a single satisfiable range, as it is.
pub(super) fn apply_range(parts: &Parts, head: &mut http::response::Parts, body: Body) -> Body {
    if parts.method != Method::GET || head.status != StatusCode::OK {
        return body;
    }
    let Some(len) = head
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return body;
    };
    match range::answer(&parts.headers, &head.headers, len) {
        RangeAnswer::Full => body,
        RangeAnswer::Partial { start, end } => {
            head.status = StatusCode::PARTIAL_CONTENT;
            head.headers.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")).expect("ascii"),
            );
            head.headers
                .insert(CONTENT_LENGTH, HeaderValue::from(end - start + 1));
            RangeBody {
                inner: body,
                skip: start,
                remaining: end - start + 1,
            }
            .boxed()
        }
        RangeAnswer::Unsatisfiable => {
            // The fill goes on in its task for the store; this client gets the 416 alone.
            head.status = StatusCode::RANGE_NOT_SATISFIABLE;
            head.headers.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
            );
            head.headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
            body::empty()
        }
    }
}

/// A body cut down to one byte range of another: `skip` bytes dropped, then `remaining` kept.
struct RangeBody {
    inner: Body,
    skip: u64,
    remaining: u64,
}

impl http_body::Body for RangeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.remaining == 0 {
                return Poll::Ready(None);
            }
            let frame = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(frame)) => frame,
            };
            // Trailers belong to the whole body, not to a range of it.
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            let len = data.len() as u64;
            if self.skip >= len {
                self.skip -= len;
                continue;
            }
            if self.skip > 0 {
                data = data.slice(self.skip as usize..);
                self.skip = 0;
            }
            if data.len() as u64 > self.remaining {
                data.truncate(self.remaining as usize);
            }
            self.remaining -= data.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
