//! The one response body type the proxy and the origin hand to hyper.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Errors carried by a body; boxed because a body may come from hyper, a channel or memory.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed body: stored responses, streamed upstream bodies and short error texts share it.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body of bytes already in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}
