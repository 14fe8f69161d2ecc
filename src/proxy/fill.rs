//! Cache fills: one upstream exchange whose response is streamed to the client while it is
//! buffered for the store, and the refresh of a stale entry by a conditional request.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
};
use http::request::Parts;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::sync::{mpsc, oneshot};

use crate::body::{self, Body, BoxError};
use crate::coalesce::{Leader, Outcome};
use crate::metrics;
use crate::policy::authority::Authority;
use crate::policy::cache_control::FieldScope;
use crate::policy::conditional;
use crate::policy::headers::drop_framing_copied_beside_chunked;
use crate::policy::headers::strip_hop_by_hop;
use crate::policy::storable::storable;
use crate::policy::targeted;
use crate::policy::{CacheControl, NotStorable};
use crate::shared::FillLock;
use crate::store::{CachedResponse, Key};
use crate::upstream::{add_via, Upstream, UpstreamError, UpstreamPermit};

use super::{Inner, StoredResponse, Target};
use crate::site::Site;

/// A stale response a fetch may fall back on or refresh.
pub(super) struct Stale {
    pub(super) entry: StoredResponse,
    /// `stale-if-error` allows serving it when the upstream fails.
    pub(super) serve_on_error: bool,
}

/// What an exchange reports once the upstream's response head is in.
pub(super) enum Head {
    Failed(UpstreamError, Duration),
    /// The upstream failed and the stale entry may be served instead.
    StaleOnError {
        entry: StoredResponse,
        fwd_status: Option<u16>,
        elapsed: Duration,
    },
    /// A 304 refreshed the stored entry. `requester` is the refreshed response as the client
    /// that caused the revalidation gets it: with the 304's `Set-Cookie` and `no-cache` /
    /// `private`-listed fields, which the stored (shared) copy leaves out.
    Refreshed {
        requester: Box<CachedResponse>,
        /// Whether the refreshed entry is in the store (a purge may have voided it).
        stored: bool,
        elapsed: Duration,
    },
    /// A full response: its head, whether it may be stored (with its ttl), whether it is in the
    /// store already (a small body is read whole and stored before the head is reported), and
    /// the body.
    Streaming {
        head: http::response::Parts,
        verdict: Result<i64, NotStorable>,
        stored: bool,
        body: Body,
        elapsed: Duration,
    },
}

/// What a cache fill sends upstream: the client's target and headers less its own conditionals
/// and range. A fill asks for the whole, current response so that it can be stored; the client's
/// conditions are then answered locally. The headers are also what storability and Vary are
/// decided on.
pub(super) struct FillRequest {
    uri: http::Uri,
    authority: Authority,
    /// The site the request picked: the fill goes to its upstream and is stored by its rules,
    /// even if a reload replaces the site meanwhile.
    site: Arc<Site>,
    version: http::Version,
    client: Option<SocketAddr>,
    headers: HeaderMap,
    /// The URL's fill lock in the shared tier, when this fill holds it: released when the
    /// fill (and so this request) is dropped, after the fill's write to the tier was queued.
    lock: Option<FillLock>,
}

impl FillRequest {
    pub(super) fn new(parts: &Parts, target: &Target, client: Option<SocketAddr>) -> Self {
        FillRequest {
            uri: target.upstream_uri(&parts.uri).clone(),
            authority: target.authority.clone(),
            site: Arc::clone(&target.site),
            version: parts.version,
            client,
            headers: fill_request_headers(&parts.headers),
            lock: None,
        }
    }

    /// The fill holds `lock`, the URL's fill lock in the shared tier.
    pub(super) fn with_lock(mut self, lock: Option<FillLock>) -> Self {
        self.lock = lock;
        self
    }

    /// Records what the fill stored, for the instances waiting on its lock: they are told
    /// "stored" only when the entry is held here and will be written to the tier.
    fn filled(&self, held: bool, entry: &StoredResponse) {
        if let Some(lock) = &self.lock {
            lock.stored(held && lock.would_store(&entry.0));
        }
    }

    /// Releases the fill lock now (as not stored): the response cannot be shared, and the
    /// other instances should not wait for its body.
    fn release_lock(&mut self) {
        self.lock = None;
    }

    /// The upstream of the request's site.
    pub(super) fn upstream(&self) -> &Upstream {
        self.site.upstream()
    }

    /// The upstream request, with `validators` added when revalidating.
    fn to_request(&self, validators: &[(HeaderName, HeaderValue)]) -> Request<Body> {
        let mut headers = self.headers.clone();
        for (name, value) in validators {
            headers.insert(name.clone(), value.clone());
        }
        self.upstream().prepare(
            Method::GET,
            &self.uri,
            &headers,
            &self.authority,
            self.version,
            self.client,
            body::empty(),
        )
    }
}

fn fill_request_headers(headers: &HeaderMap) -> HeaderMap {
    let mut h = headers.clone();
    for name in [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
        RANGE,
    ] {
        h.remove(name);
    }
    h
}

const CLIENT_CHANNEL_FRAMES: usize = 16;

/// A storable response that declares a body of at most this many bytes is read whole, and
/// stored, before its head goes to the client, if the body arrives within
/// [`READ_WHOLE_WITHIN`]: the client then gets an honest `stored` (RFC 9211) and a body from
/// memory, and has waited only for bytes that typically came in the same packets as the head.
/// A slower body, a larger or a chunked one is streamed as it arrives, and its `Cache-Status`
/// cannot say `stored` (it may yet be cut off, outgrow the object limit, or be purged).
const READ_WHOLE_UP_TO: u64 = 64 << 10;

/// How long a small body may take to arrive before it is streamed instead.
const READ_WHOLE_WITHIN: Duration = Duration::from_millis(20);

/// One upstream exchange that may fill the store. Runs in its own task or on a revalidation worker;
/// reports the response head on `report` (ignored when nobody listens) and keeps reading the body
/// for the store even after the client is gone.
///
/// `permit` is the exchange's upstream slot; it is held until the fill ends, so fills that
/// outlive their clients still count against the upstream bound.
pub(super) async fn exchange(
    inner: Arc<Inner>,
    permit: UpstreamPermit,
    mut fill: FillRequest,
    key: Key,
    mut leader: Option<Leader>,
    stale: Option<Stale>,
    report: oneshot::Sender<Head>,
) {
    let ticket = inner.fills.begin(&key);
    let validators = stale
        .as_ref()
        .map(|s| conditional::revalidation_headers(&s.entry.headers))
        .unwrap_or_default();
    let mut request_time = SystemTime::now();
    let started = Instant::now();
    let mut sent = fill
        .upstream()
        .send(&permit, fill.to_request(&validators))
        .await;
    if let (Ok(resp), Some(s)) = (&sent, &stale) {
        let stored = &s.entry;
        if resp.status() == StatusCode::NOT_MODIFIED
            && !conditional::not_modified_applies(&stored.headers, resp.headers())
        {
            // A 304 for some other representation than the one we hold (RFC 9111 4.3.4):
            // it cannot refresh ours, so ask again without conditions.
            request_time = SystemTime::now();
            metrics::record_upstream(started.elapsed());
            sent = fill.upstream().send(&permit, fill.to_request(&[])).await;
        }
    }
    let elapsed = started.elapsed();
    let response_time = SystemTime::now();
    metrics::record_upstream(elapsed);

    let response = match sent {
        Err(e) => {
            let head = match stale {
                Some(s) if s.serve_on_error => Head::StaleOnError {
                    entry: s.entry,
                    fwd_status: None,
                    elapsed,
                },
                _ => Head::Failed(e, elapsed),
            };
            let _ = report.send(head);
            return; // `leader` drops here: followers fetch for themselves.
        }
        Ok(r) => r,
    };
    let (mut head, mut body) = response.into_parts();
    drop_framing_copied_beside_chunked(&mut head.headers);
    strip_hop_by_hop(&mut head.headers);
    add_via(&mut head.headers, head.version);

    if let Some(s) = &stale {
        let stored = &s.entry;
        if head.status == StatusCode::NOT_MODIFIED
            && conditional::not_modified_applies(&stored.headers, &head.headers)
        {
            let mut requester = CachedResponse::clone(stored);
            requester.headers = conditional::merge_not_modified(&stored.headers, &head.headers);
            requester.request_time = request_time;
            requester.response_time = response_time;
            let (cc, lifetime) = inner.freshness(
                fill.site.store_rules(),
                requester.status,
                &requester.headers,
                response_time,
            );
            requester.cc = cc;
            requester.lifetime = lifetime;
            requester.derive_age();
            let mut refreshed = requester.clone();
            if !fill.site.store_rules().allow_set_cookie {
                // A cookie set on a 304 is one client's; it must not become part of the entry.
                refreshed.headers.remove(http::header::SET_COOKIE);
            }
            strip_unshareable_fields(&mut refreshed.headers, &refreshed.cc);
            let (entry, stored) = inner.store_response(&key, &fill.headers, refreshed, &ticket);
            fill.filled(stored, &entry);
            // Followers get the shared copy only.
            share(leader, &entry, stored);
            let _ = report.send(Head::Refreshed {
                requester: Box::new(requester),
                stored,
                elapsed,
            });
            return;
        }
        if s.serve_on_error && head.status.is_server_error() {
            // Keep the stale entry; a 5xx must not replace it.
            let _ = report.send(Head::StaleOnError {
                entry: s.entry.clone(),
                fwd_status: Some(head.status.as_u16()),
                elapsed,
            });
            return;
        }
    }

    let mut verdict = storable(
        &Method::GET,
        &fill.headers,
        head.status,
        &targeted::effective_headers(&head.headers),
        fill.site.store_rules(),
    );
    let max = inner.config.max_object_size;
    let declared = head
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if verdict.is_ok() && declared.is_some_and(|n| n > max) {
        verdict = Err(NotStorable::TooLarge);
    }
    let (cc, lifetime) = inner.freshness(
        fill.site.store_rules(),
        head.status,
        &head.headers,
        response_time,
    );
    let ttl_verdict = verdict.map(|()| lifetime as i64);
    if let Err(reason) = verdict {
        // The head already shows the response cannot be shared: release the followers now,
        // not after its whole body, and remember the URL so later requests do not wait at all.
        if let Some(l) = leader.take() {
            l.finish(Outcome::NotShared);
        }
        // The other instances waiting on this fill's lock go too.
        fill.release_lock();
        if reason.is_response_caused() {
            inner.hit_for_miss.remember(&key);
        }
    }
    let idle = fill.upstream().response_timeout();
    let entry_of = |body: Bytes, mut headers: HeaderMap| {
        strip_unshareable_fields(&mut headers, &cc);
        CachedResponse {
            status: head.status,
            headers,
            body,
            request_time,
            response_time,
            vary_values: Vec::new(),
            cc: cc.clone(),
            lifetime,
            initial_age: 0,
        }
    };

    // Frames read before the head is reported; they go to the client (and the store buffer)
    // first when the body turns out to be slow and is streamed after all.
    let mut early: Vec<Frame<Bytes>> = Vec::new();
    if verdict.is_ok() && declared.is_some_and(|n| n <= READ_WHOLE_UP_TO) {
        let deadline = tokio::time::Instant::now() + READ_WHOLE_WITHIN;
        let mut failure: Option<BoxError> = None;
        let mut ended = false;
        loop {
            let wait = tokio::time::timeout_at(deadline, tokio::time::timeout(idle, body.frame()));
            match wait.await {
                Err(_) => break, // slow: stream it
                Ok(Err(_)) => {
                    failure = Some(format!("upstream body stalled for {idle:?}").into());
                    break;
                }
                Ok(Ok(None)) => {
                    ended = true;
                    break;
                }
                Ok(Ok(Some(Err(e)))) => {
                    failure = Some(BoxError::from(e));
                    break;
                }
                Ok(Ok(Some(Ok(frame)))) => early.push(frame),
            }
        }
        if ended || failure.is_some() {
            let mut stored = false;
            let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = Vec::with_capacity(3);
            match failure {
                // A truncated body is never stored: the client gets what came and then the
                // error, as it would have streamed, and the leader's drop releases the followers.
                Some(e) => {
                    frames.extend(early.into_iter().map(Ok));
                    frames.push(Err(e));
                }
                None => {
                    let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
                    for frame in early {
                        match frame.into_data() {
                            Ok(data) => buffer.extend_from_slice(&data),
                            Err(other) => frames.push(Ok(other)),
                        }
                    }
                    // One copy of the bytes, shared by the entry and the client's body.
                    let whole = buffer.freeze();
                    if !whole.is_empty() {
                        frames.insert(0, Ok(Frame::data(whole.clone())));
                    }
                    let response = entry_of(whole, head.headers.clone());
                    let (entry, held) =
                        inner.store_response(&key, &fill.headers, response, &ticket);
                    stored = held;
                    fill.filled(held, &entry);
                    share(leader.take(), &entry, held);
                }
            }
            drop(permit);
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed();
            let _ = report.send(Head::Streaming {
                head,
                verdict: ttl_verdict,
                stored,
                body,
                elapsed,
            });
            return;
        }
    }

    let (client_tx, client_rx) =
        mpsc::channel::<Result<Frame<Bytes>, BoxError>>(CLIENT_CHANNEL_FRAMES);
    let complete = Arc::new(AtomicBool::new(false));
    let client_body = ClientBody {
        rx: client_rx,
        complete: Arc::clone(&complete),
    }
    .boxed();
    let client_head = head.clone();
    let listening = report
        .send(Head::Streaming {
            head: client_head,
            verdict: ttl_verdict,
            stored: false,
            body: client_body,
            elapsed,
        })
        .is_ok();
    let mut client = listening.then_some(client_tx);

    let mut buffer = verdict
        .is_ok()
        .then(|| BytesMut::with_capacity(declared.unwrap_or(0).min(max) as usize));
    // Every wait in the loop is bounded: an upstream that stalls mid-body is a failed fetch, and
    // a client that stops reading is dropped while the fill goes on for the store.
    let mut early = early.into_iter();
    loop {
        let next: Option<Result<Frame<Bytes>, BoxError>> = match early.next() {
            Some(frame) => Some(Ok(frame)),
            None => match tokio::time::timeout(idle, body.frame()).await {
                Ok(frame) => frame.map(|r| r.map_err(BoxError::from)),
                Err(_) => Some(Err(format!("upstream body stalled for {idle:?}").into())),
            },
        };
        match next {
            None => {
                // Set before the sender drops, so the client's body ends cleanly only now.
                complete.store(true, Ordering::Release);
                break;
            }
            Some(Ok(frame)) => {
                if let (Some(data), Some(buf)) = (frame.data_ref(), buffer.as_mut()) {
                    if buf.len() as u64 + data.len() as u64 > max {
                        // Too large after all: nobody can share it, so the followers go now.
                        buffer = None;
                        if let Some(l) = leader.take() {
                            l.finish(Outcome::NotShared);
                        }
                        fill.release_lock();
                        inner.hit_for_miss.remember(&key);
                    } else {
                        buf.extend_from_slice(data);
                    }
                }
                if let Some(tx) = &client {
                    if !matches!(
                        tokio::time::timeout(idle, tx.send(Ok(frame))).await,
                        Ok(Ok(()))
                    ) {
                        client = None; // the client left or stalled; keep filling for the store
                    }
                }
                if client.is_none() && buffer.is_none() {
                    return; // nobody needs the rest
                }
            }
            Some(Err(e)) => {
                // A truncated body must never become an entry: drop the buffer, fail the client's
                // stream so it sees the cut too, and let the leader release the followers.
                if let Some(tx) = &client {
                    let _ = tokio::time::timeout(idle, tx.send(Err(e))).await;
                }
                return;
            }
        }
    }
    drop(permit);
    let Some(buffer) = buffer else { return };
    let Ok(()) = verdict else { return };
    let response = entry_of(buffer.freeze(), head.headers.clone());
    let (entry, held) = inner.store_response(&key, &fill.headers, response, &ticket);
    fill.filled(held, &entry);
    share(leader, &entry, held);
}

/// Hands the followers what the fill stored, or sends them upstream when it stored nothing (a
/// purge voided the fill, or the store refused the entry): a purged response is not served to
/// anyone who asked after the purge was decided.
fn share(leader: Option<Leader>, entry: &StoredResponse, held: bool) {
    if let Some(l) = leader {
        l.finish(if held {
            Outcome::Shared(Arc::clone(&entry.0))
        } else {
            Outcome::NotShared
        });
    }
}

/// Removes the fields a shared cache must not store (`private="..."`) or must not send without
/// revalidation (`no-cache="..."`), RFC 9111 5.2.2.4 and 5.2.2.7.
fn strip_unshareable_fields(headers: &mut HeaderMap, cc: &CacheControl) {
    for scope in [&cc.private, &cc.no_cache].into_iter().flatten() {
        if let FieldScope::Fields(names) = scope {
            for name in names {
                if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                    headers.remove(n);
                }
            }
        }
    }
}

/// The body a fill streams to the client that asked for it. The fill's end of the channel is
/// dropped both when the upstream body is done and when the fill gives up on a client that does
/// not read; only the first may look like a complete body, so the second ends the stream with an
/// error (hyper then cuts the connection) instead of a clean, short end that a chunked response
/// could not tell from a whole one.
struct ClientBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    complete: Arc<AtomicBool>,
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match ready!(self.rx.poll_recv(cx)) {
            Some(frame) => Poll::Ready(Some(frame)),
            None if self.complete.load(Ordering::Acquire) => Poll::Ready(None),
            None => Poll::Ready(Some(Err(
                "the response was abandoned before its end (client too slow)".into(),
            ))),
        }
    }
}
