//! HTTP caching decisions as pure functions over `http` types: no I/O, no clocks read inside
//! (callers pass `now`), so every rule is tested by table without a socket.
//!
//! RFC 9111 (caching), RFC 5861 (stale content), RFC 9211 (`Cache-Status`), and the parts of
//! RFC 9110 a cache answers for (conditional and range requests).

pub mod cache_control;
pub mod cache_status;
pub mod conditional;
pub mod freshness;
pub mod headers;
pub mod key;
pub mod range;
pub mod storable;
pub mod targeted;
pub mod vary;

pub use cache_control::CacheControl;
pub use cache_status::{CacheStatus, Fwd};
pub use freshness::{Decision, Heuristics};
pub use storable::{NotStorable, StoreRules};

use http::{Method, StatusCode};

/// Methods whose responses a cache looks up and may serve.
pub fn is_cacheable_method(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// True when a response to `method` invalidates stored responses for the target URI and its
/// same-origin `Location` / `Content-Location` (RFC 9111 4.4): an unsafe method and a non-error
/// status.
pub fn invalidates(method: &Method, status: StatusCode) -> bool {
    let unsafe_method = !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    unsafe_method && (status.is_success() || status.is_redirection())
}
