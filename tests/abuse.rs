//! Amplification, coalescing of what cannot be shared, purges racing fills, and honest
//! `Cache-Status`: the faults a hostile or merely unlucky client could turn into upstream load,
//! lost fills or false claims. Each test runs the real proxy in front of the real origin on
//! loopback; counts come from the origin (requests, requests answered at once).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cachet::store::Backend;
use common::{stack_with, Stack};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// An HTTP/2 (prior knowledge) connection to the proxy.
async fn h2(s: &Stack) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(s.proxy.addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

fn h2_get(s: &Stack, path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::builder()
        .uri(format!("http://{}{}", s.proxy.addr, path))
        .body(Empty::new())
        .unwrap()
}

/// Defect 6: one h2 connection opening many streams for distinct slow URLs, each reset soon
/// after its HEADERS. The origin must never see more exchanges at once than the bound, and
/// streams whose client left while waiting for a slot must cost the origin nothing.
async fn reset_streams_are_bounded(backend: Backend) {
    const BOUND: usize = 8;
    const STREAMS: usize = 300;
    let s = stack_with(backend, Duration::ZERO, |c| {
        c.upstream.max_concurrency = BOUND;
    })
    .await;
    let send = h2(&s).await;
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let mut send = send.clone();
        let req = h2_get(&s, &format!("/amp/{i}?latency=400ms"));
        tasks.push(tokio::spawn(async move {
            send.ready().await.ok()?;
            // Dropping the response future resets the stream.
            tokio::time::timeout(Duration::from_millis(100), send.send_request(req))
                .await
                .ok()
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    // Let the fills that did start (and outlive their clients) finish.
    let freed = common_eventually(Duration::from_secs(10), || {
        s.proxy.proxy.upstream_slots_free() == BOUND
    })
    .await;
    assert!(freed, "every upstream slot comes back");
    let peak = s.origin.stats.peak_in_flight();
    let total = s.origin_requests();
    assert!(
        peak <= BOUND as u64,
        "{backend}: origin saw {peak} at once, bound {BOUND}"
    );
    assert!(
        total <= 2 * BOUND as u64,
        "{backend}: {total} origin requests for {STREAMS} reset streams (bound {BOUND})"
    );
    // The proxy still serves.
    let after = s.get("/after").await;
    assert_eq!(after.status, 200);
}

async fn common_eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

/// Past the bound, a request waits the queue timeout and is answered 503 with a reason; the
/// exchange in flight is untouched.
async fn a_full_upstream_answers_503(backend: Backend) {
    let s = stack_with(backend, Duration::ZERO, |c| {
        c.upstream.max_concurrency = 1;
        c.upstream.queue_timeout = Duration::from_millis(150);
    })
    .await;
    let slow = {
        let client = s.client.clone();
        let url = s.url("/busy/slow?latency=1500ms");
        tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
    };
    assert!(
        common_eventually(Duration::from_secs(5), || s.origin_requests() == 1).await,
        "the slow request reached the origin"
    );
    let refused = s.get("/busy/other").await;
    assert_eq!(refused.status, 503, "{}", refused.cache_status());
    assert!(
        refused.cache_status().contains("upstream-busy"),
        "{}",
        refused.cache_status()
    );
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(
        s.origin_requests(),
        1,
        "the refused request never went upstream"
    );
}

/// A pass-through (a POST) whose client leaves gives its upstream slot back at once: it is not
/// a fill, nothing needs its answer.
async fn a_pass_through_ends_with_its_client(backend: Backend) {
    let s = stack_with(backend, Duration::ZERO, |c| {
        c.upstream.max_concurrency = 4;
    })
    .await;
    let client = s.client.clone();
    let url = s.url("/post?latency=3s");
    let gone = tokio::spawn(async move { client.post(url).body("x").send().await });
    assert!(common_eventually(Duration::from_secs(5), || s.origin_requests() == 1).await);
    assert_eq!(
        s.proxy.proxy.upstream_slots_free(),
        3,
        "the POST holds a slot"
    );
    gone.abort();
    assert!(
        common_eventually(Duration::from_secs(2), || {
            s.proxy.proxy.upstream_slots_free() == 4
        })
        .await,
        "{backend}: the slot came back when the client left, not after the origin's 3 s"
    );
}

/// Defect 7: requests for a URL whose response cannot be stored. Followers are released at the
/// leader's response head (not its whole slow body), and once the URL is known as not
/// storable, concurrent requests all go upstream at once instead of queueing behind one.
async fn unshareable_urls_are_not_serialised(backend: Backend) {
    let s = Arc::new(stack_with(backend, Duration::ZERO, |_| {}).await);
    // Head after 300 ms, then a body that takes 3 x 400 ms more.
    let path = "/nostore?cc=no-store&latency=300ms&drip=400ms&size=4000";
    let started = Instant::now();
    let mut both = Vec::new();
    for delay in [0, 50] {
        let s = Arc::clone(&s);
        both.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let r = s.get(path).await;
            (r.status, r.body.len(), started.elapsed())
        }));
    }
    let mut done = Vec::new();
    for t in both {
        done.push(t.await.unwrap());
    }
    for (status, len, _) in &done {
        assert_eq!((*status, *len), (200, 4000));
    }
    // Serialised behind the whole body, the second would end after 2 x 1.5 s = 3 s; released at
    // the head, after about 0.3 + 1.5 s.
    let second = done[1].2;
    assert!(
        second < Duration::from_millis(2600),
        "{backend}: the follower ended at {second:?}, as if it had waited for the whole body"
    );
    assert_eq!(s.origin_requests(), 2);

    // Now known as not storable: four concurrent requests reach the origin together.
    s.origin.stats.reset();
    let fast = "/nostore?cc=no-store&latency=500ms";
    // One request teaches the proxy that this URL (a different key) is not storable.
    assert_eq!(s.get(fast).await.status, 200);
    s.origin.stats.reset();
    let mut four = Vec::new();
    for _ in 0..4 {
        let s = Arc::clone(&s);
        four.push(tokio::spawn(async move { s.get(fast).await }));
    }
    for t in four {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert!(
            !r.cache_status().contains("collapsed"),
            "{}",
            r.cache_status()
        );
    }
    assert_eq!(s.origin_requests(), 4);
    assert_eq!(
        s.origin.stats.peak_in_flight(),
        4,
        "{backend}: hit-for-miss requests go upstream in parallel"
    );
}

/// Defect 8: a purge voids only the fills of the URL it names. A purge of another URL during
/// a fill leaves the fill to be stored; a purge of the URL itself keeps it out, and the
/// response that fill produced does not claim `stored`.
async fn purges_void_only_their_own_fills(backend: Backend) {
    let s = Arc::new(stack_with(backend, Duration::ZERO, |_| {}).await);
    let key = |path: &str| format!("http://{}{}", s.proxy.addr, path);

    let path = "/fill/a?latency=600ms";
    let fill = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.get(path).await })
    };
    assert!(common_eventually(Duration::from_secs(5), || s.origin_requests() == 1).await);
    for _ in 0..3 {
        s.proxy.proxy.purge_url(&key("/unrelated"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = fill.await.unwrap();
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    let hit = s.get(path).await;
    assert!(
        hit.is_hit(),
        "{backend}: unrelated purges cost the fill: {}",
        hit.cache_status()
    );

    s.origin.stats.reset();
    let path = "/fill/b?latency=600ms";
    let fill = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.get(path).await })
    };
    assert!(common_eventually(Duration::from_secs(5), || s.origin_requests() == 1).await);
    s.proxy.proxy.purge_url(&key(path));
    let voided = fill.await.unwrap();
    assert_eq!(voided.status, 200);
    assert!(
        !voided.cache_status().contains("stored"),
        "{backend}: a purge-voided fill claimed stored: {}",
        voided.cache_status()
    );
    let after = s.get(path).await;
    assert!(
        !after.is_hit(),
        "{backend}: the purged URL came back from its fill"
    );
    assert_eq!(s.origin_requests(), 2);
}

/// A URL purge removes the variant index and every variant under it.
async fn a_url_purge_removes_every_variant(backend: Backend) {
    let s = stack_with(backend, Duration::ZERO, |_| {}).await;
    let path = "/v?vary=Accept-Language";
    for lang in ["en", "fr", "de"] {
        let r = s
            .send(s.client.get(s.url(path)).header("accept-language", lang))
            .await;
        assert!(r.cache_status().contains("stored"), "{}", r.cache_status());
    }
    assert_eq!(
        s.proxy.store().entry_count(),
        4,
        "an index and three variants"
    );
    let removed = s
        .proxy
        .proxy
        .purge_url(&format!("http://{}{}", s.proxy.addr, path));
    assert_eq!(removed, 4);
    assert_eq!(s.proxy.store().entry_count(), 0);
}

/// Defect 9: `stored` is claimed only for what the store holds when the head is sent: not for a
/// body that is then cut off, nor for one streamed past the object size limit.
async fn cache_status_never_claims_an_unstored_response(backend: Backend) {
    let s = stack_with(backend, Duration::ZERO, |c| {
        c.proxy.max_object_size = 10_000;
    })
    .await;
    let cut = s.get("/cut?truncate=1&size=4000").await;
    assert!(
        !cut.cache_status().contains("stored"),
        "{}",
        cut.cache_status()
    );
    assert!(!s.get("/cut?truncate=1&size=4000").await.is_hit());

    // Declares 20 kB, more than the object limit: not storable, and said so.
    let big = s.get("/big?size=20000").await;
    assert!(
        !big.cache_status().contains("stored"),
        "{}",
        big.cache_status()
    );
    assert!(
        big.cache_status().contains("too-large"),
        "{}",
        big.cache_status()
    );

    // A small body: read whole, stored, then answered; the claim is true.
    let small = s.get("/small?size=1000").await;
    assert!(
        small.cache_status().contains("stored"),
        "{}",
        small.cache_status()
    );
    assert!(s.get("/small?size=1000").await.is_hit());
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod rwlock { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(cachet::store::Backend::Rwlock).await } )* }
        mod sharded { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(cachet::store::Backend::Sharded).await } )* }
        mod moka { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(cachet::store::Backend::Moka).await } )* }
    };
}

on_every_backend!(
    reset_streams_are_bounded,
    a_full_upstream_answers_503,
    a_pass_through_ends_with_its_client,
    unshareable_urls_are_not_serialised,
    purges_void_only_their_own_fills,
    a_url_purge_removes_every_variant,
    cache_status_never_claims_an_unstored_response,
);
