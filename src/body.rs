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

/// A request body that notes when it fails, so that a request whose own body was malformed (bad
/// chunked framing, a cut upload) is answered 400, not 502 as if the upstream had failed.
pub struct Watched<B> {
    body: B,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<B> Watched<B> {
    /// `body`, and the flag set when it yields an error.
    pub fn new(body: B) -> (Self, std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        (
            Watched {
                body,
                failed: std::sync::Arc::clone(&failed),
            },
            failed,
        )
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Err(_))) = &polled {
            self.failed
                .store(true, std::sync::atomic::Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
