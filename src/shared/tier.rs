//! The shared tier's trait: what the proxy needs from a cache that several instances share.
//!
//! It is async, unlike the local [`Store`](crate::store::Store): every call is network I/O. The
//! rule "no lock is held across I/O" stays with the local store, whose trait cannot await; the
//! proxy calls this tier only with no lock held, and always under a timeout (see
//! [`super::Shared`]). The operations are the few the request path needs, in cache terms, so a
//! tier other than Redis could implement them.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use crate::policy::purge::PurgeTarget;

/// A call's future.
pub type TierFuture<'a, T> = BoxFuture<'a, Result<T, TierError>>;

/// Why a call to the shared tier failed. The proxy never fails a request for any of these: it
/// serves from the local store or the upstream instead.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// No answer within the call's timeout.
    #[error("timed out")]
    Timeout,
    /// Calls are not made while the circuit breaker is open.
    #[error("circuit open: the shared tier failed repeatedly and is being probed")]
    Open,
    /// The tier could not be reached, or the connection broke.
    #[error("unreachable: {0}")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The tier answered with an error (out of memory, a wrong type under our key, ...).
    #[error("refused: {0}")]
    Refused(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl TierError {
    /// The label of `cachet_shared_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            TierError::Timeout => "timeout",
            TierError::Open => "open",
            TierError::Unreachable(_) => "unreachable",
            TierError::Refused(_) => "refused",
        }
    }
}

/// What the tier holds for a URL at first look: its response (when its responses have no
/// `Vary`), or the names its responses vary on, whose variant is then read with
/// [`SharedTier::lookup_variant`].
#[derive(Debug, Default)]
pub struct UrlRecord {
    /// An encoded response ([`super::codec::encode`]).
    pub response: Option<Bytes>,
    /// Encoded Vary names ([`super::codec::encode_names`]).
    pub names: Option<Bytes>,
}

/// A write to the tier.
#[derive(Debug, Clone)]
pub enum Put {
    /// The URL's one response: replaces whatever the URL held (variants included).
    Response {
        /// The encoded response.
        record: Bytes,
        /// When the fill's request was sent, in ms since the epoch: a purge of the URL after
        /// that refuses the write.
        sent_ms: u64,
    },
    /// One variant, kept beside the URL's other variants when they vary on the same `names`;
    /// when the names differ, the URL's old records are dropped first.
    Variant {
        /// Encoded names.
        names: Bytes,
        /// The variant's field ([`super::codec::variant_field`]).
        field: String,
        /// The encoded response.
        record: Bytes,
        /// As for [`Put::Response`].
        sent_ms: u64,
    },
}

/// A cache shared by several proxy instances. Keys are URL cache keys; the implementation adds
/// its own prefix.
pub trait SharedTier: Send + Sync + 'static {
    /// The URL's response or Vary names.
    fn lookup<'a>(&'a self, url: &'a str) -> TierFuture<'a, UrlRecord>;
    /// One variant of a URL.
    fn lookup_variant<'a>(&'a self, url: &'a str, field: &'a str) -> TierFuture<'a, Option<Bytes>>;
    /// Writes a response or variant; the URL's records expire after `ttl` (extended, never
    /// shortened, by a later write).
    fn put<'a>(&'a self, url: &'a str, put: Put, ttl: Duration) -> TierFuture<'a, ()>;
    /// Drops one record of a URL that could not be used (`field` of
    /// [`SharedTier::lookup_variant`]), or everything the URL holds (`None`).
    fn forget<'a>(&'a self, url: &'a str, field: Option<&'a str>) -> TierFuture<'a, ()>;
    /// Removes every URL `target` picks; returns how many URLs were removed. A one-URL purge
    /// leaves a tombstone that refuses writes of fills sent before it.
    fn remove<'a>(&'a self, target: &'a PurgeTarget) -> TierFuture<'a, u64>;
    /// Takes the fill lock of a URL for `ttl` unless another instance holds it.
    fn try_lock<'a>(&'a self, url: &'a str, token: &'a str, ttl: Duration) -> TierFuture<'a, bool>;
    /// Releases the fill lock if `token` still holds it.
    fn unlock<'a>(&'a self, url: &'a str, token: &'a str) -> TierFuture<'a, ()>;
    /// Sends an event to every instance subscribed.
    fn publish<'a>(&'a self, event: Bytes) -> TierFuture<'a, ()>;
    /// The events every instance publishes, from now until the connection breaks (then the
    /// stream ends and the caller subscribes again).
    fn subscribe(&self) -> TierFuture<'_, BoxStream<'static, Bytes>>;
    /// Answers when the tier is reachable.
    fn ping(&self) -> TierFuture<'_, ()>;
}
