//! The request path over real sockets: a real origin, the proxy, a real HTTP client.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cachet::origin::body_for;
use cachet::store::Backend;
use common::*;

async fn miss_then_hit(backend: Backend) {
    let s = stack(backend).await;
    let first = s.get("/a").await;
    assert_eq!(first.status, 200);
    assert!(
        first.cache_status().contains("fwd=uri-miss"),
        "{}",
        first.cache_status()
    );
    assert!(first.cache_status().contains("stored"));
    assert_eq!(s.origin_requests(), 1);

    let second = s.get("/a").await;
    assert_eq!(second.status, 200);
    assert!(second.is_hit(), "{}", second.cache_status());
    assert!(second.header("age").is_some(), "a hit carries Age");
    assert_eq!(first.body, second.body, "bodies are byte-identical");
    assert_eq!(second.body, body_for("/a", "", 4096).to_vec());
    assert_eq!(s.origin_requests(), 1, "the hit did not reach the origin");

    // HEAD is answered from the stored GET.
    let head = s.send(s.client.head(s.url("/a"))).await;
    assert_eq!(head.status, 200);
    assert!(head.is_hit());
    assert_eq!(head.header("content-length"), Some("4096"));
    assert!(head.body.is_empty());
    assert_eq!(s.origin_requests(), 1);
}

async fn concurrent_misses_coalesce(backend: Backend) {
    let s = Arc::new(stack_with(backend, Duration::from_millis(500), |_| {}).await);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.get("/cold").await })
        })
        .collect();
    let mut collapsed = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 4096);
        if r.cache_status().contains("collapsed") {
            collapsed += 1;
        }
    }
    assert_eq!(
        s.origin_requests(),
        1,
        "200 concurrent misses made one upstream request"
    );
    assert!(collapsed > 0);
}

async fn no_lock_across_io(backend: Backend) {
    let s = Arc::new(stack(backend).await);
    // Warm key B.
    assert_eq!(s.get("/b").await.status, 200);
    // Hold an upstream fetch for key A open for 3 s.
    let slow = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.get("/a?latency=3s").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    for _ in 0..20 {
        let hit = s.get("/b").await;
        assert!(hit.is_hit());
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500),
        "hits for B waited on the fetch of A: {elapsed:?}"
    );
    assert!(
        !slow.is_finished(),
        "the slow fetch was still in flight during the hits"
    );
    assert_eq!(slow.await.unwrap().status, 200);
}

async fn uncacheable_is_forwarded_not_stored(backend: Backend) {
    let s = stack_with(backend, Duration::from_millis(5), |c| {
        c.proxy.max_object_size = 64 << 10
    })
    .await;
    for path in [
        "/ns?cc=no-store",
        "/pv?cc=private,max-age=60",
        "/nf?status=404&cc=",
    ] {
        let a = s.get(path).await;
        let b = s.get(path).await;
        assert!(!a.is_hit() && !b.is_hit(), "{path}: {}", b.cache_status());
        assert!(
            !b.cache_status().contains("stored"),
            "{path}: {}",
            b.cache_status()
        );
    }
    assert_eq!(s.origin_requests(), 6);
    assert_eq!(s.get("/nf?status=404&cc=").await.status, 404);

    // Larger than --max-object-size: reaches the client whole, is not stored.
    let big = s.get("/big?size=200000").await;
    assert_eq!(big.status, 200);
    assert_eq!(big.body, body_for("/big", "", 200_000).to_vec());
    assert!(
        big.cache_status().contains("too-large"),
        "{}",
        big.cache_status()
    );
    let again = s.get("/big?size=200000").await;
    assert!(!again.is_hit());
    assert_eq!(again.body.len(), 200_000);
}

async fn truncated_upstream_body_is_not_stored(backend: Backend) {
    let s = stack(backend).await;
    let resp = s
        .client
        .get(s.url("/cut?truncate=1&size=100000"))
        .send()
        .await;
    // The client sees the cut: either the request or the body read fails.
    let complete = match resp {
        Ok(r) => r.bytes().await.map(|b| b.len() == 100_000).unwrap_or(false),
        Err(_) => false,
    };
    assert!(!complete, "a truncated body must not look complete");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.proxy.store().entry_count(), 0, "nothing stored");
    let again = s
        .client
        .get(s.url("/cut?truncate=1&size=100000"))
        .send()
        .await;
    if let Ok(r) = again {
        assert!(!r.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("hit"));
    }
    assert_eq!(
        s.origin_requests(),
        2,
        "the second request went upstream again"
    );
}

async fn flood_is_bounded(backend: Backend) {
    let s = stack_with(backend, Duration::ZERO, |c| c.capacity = 16 << 20).await;
    let client = s.client.clone();
    let base = s.url("/flood/");
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in 0..20_000 {
        let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
        let client = client.clone();
        let url = format!("{base}{i}");
        tasks.push(tokio::spawn(async move {
            let r = client.get(url).send().await.unwrap();
            let n = r.bytes().await.unwrap().len();
            drop(permit);
            n
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 4096);
    }
    let held = s.proxy.store().weighted_size();
    assert!(held <= 16 << 20, "{backend}: holds {held} bytes");
    assert!(held > 8 << 20, "{backend}: holds only {held} bytes");
}

async fn upstream_down_and_slow(backend: Backend) {
    // Nothing listens on a port we bound and released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = proxy_config(format!("127.0.0.1:{port}").parse().unwrap(), backend);
    config.upstream.connect_timeout = Duration::from_secs(2);
    let proxy = cachet::server::start(config).await.unwrap();
    let r = Reply::read(
        client()
            .get(format!("http://{}/x", proxy.addr))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("unreachable"));
    assert_eq!(proxy.store().entry_count(), 0);

    let s = stack_with(backend, Duration::from_millis(5), |c| {
        c.upstream.response_timeout = Duration::from_millis(300)
    })
    .await;
    let r = s.get("/slow?latency=2s").await;
    assert_eq!(r.status, 504);
    assert!(String::from_utf8_lossy(&r.body).contains("timed out"));
    assert_eq!(s.proxy.store().entry_count(), 0);
}

macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod rwlock { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(cachet::store::Backend::Rwlock).await } )* }
        mod sharded { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(cachet::store::Backend::Sharded).await } )* }
        mod moka { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(cachet::store::Backend::Moka).await } )* }
    };
}

per_backend!(
    miss_then_hit,
    concurrent_misses_coalesce,
    no_lock_across_io,
    uncacheable_is_forwarded_not_stored,
    truncated_upstream_body_is_not_stored,
    flood_is_bounded,
    upstream_down_and_slow,
);

#[tokio::test]
async fn unsafe_method_is_passed_and_invalidates() {
    let s = stack(Backend::Moka).await;
    s.get("/inv").await;
    assert!(s.get("/inv").await.is_hit());
    let post = s.send(s.client.post(s.url("/inv")).body("x")).await;
    assert_eq!(post.status, 200);
    assert!(post.cache_status().contains("fwd=bypass"));
    let after = s.get("/inv").await;
    assert!(
        !after.is_hit(),
        "POST invalidated the stored response: {}",
        after.cache_status()
    );
}

#[tokio::test]
async fn via_and_hop_by_hop() {
    let s = stack(Backend::Moka).await;
    let r = s
        .send(
            s.client
                .get(s.url("/v"))
                .header("connection", "x-secret")
                .header("x-secret", "1"),
        )
        .await;
    assert!(r.header("via").is_some_and(|v| v.contains("cachet")));
    assert!(r
        .header("connection")
        .is_none_or(|c| !c.contains("x-secret")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_is_streamed_while_it_is_stored() {
    let s = stack(Backend::Moka).await;
    // Four parts, 400 ms apart: the whole body takes 1.2 s to arrive.
    let path = "/drip?drip=400ms&size=40000";
    let started = Instant::now();
    let mut resp = s.client.get(s.url(path)).send().await.unwrap();
    let first = resp.chunk().await.unwrap().expect("a first chunk");
    let first_at = started.elapsed();
    let mut body = first.to_vec();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let whole_at = started.elapsed();
    assert!(
        first_at < Duration::from_millis(600) && whole_at >= Duration::from_millis(1100),
        "first bytes at {first_at:?}, whole body at {whole_at:?}"
    );
    assert_eq!(body, body_for("/drip", "", 40_000).to_vec());
    let hit = s.get(path).await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    assert_eq!(hit.body, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_disconnect_does_not_cancel_the_fetch() {
    let s = Arc::new(stack(Backend::Sharded).await);
    let path = "/leader?latency=600ms";
    // The leader's client gives up long before the origin answers.
    let leader = {
        let client = s.client.clone();
        let url = s.url(path);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_millis(150), client.get(url).send()).await;
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let follower = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.get(path).await })
    };
    leader.await.unwrap();
    let r = follower.await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.cache_status().contains("collapsed"),
        "{}",
        r.cache_status()
    );
    assert_eq!(s.origin_requests(), 1, "the fetch went on for the follower");
    assert!(s.get(path).await.is_hit(), "and it was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upstream_body_fails_and_is_not_stored() {
    let s = stack_with(Backend::Moka, Duration::from_millis(5), |c| {
        c.upstream.response_timeout = Duration::from_millis(500)
    })
    .await;
    // The second quarter of the body comes 3 s after the first: longer than the timeout.
    let started = Instant::now();
    let got = match s.client.get(s.url("/stall?drip=3s&size=4000")).send().await {
        Ok(r) => r.bytes().await.map(|b| b.len()).unwrap_or(0),
        Err(_) => 0,
    };
    assert!(got < 4000, "a stalled body must not look complete");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "gave up at the timeout"
    );
    assert_eq!(s.proxy.store().entry_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_response_is_not_cut_by_the_header_read_timeout() {
    let s = stack_with(Backend::Rwlock, Duration::ZERO, |c| {
        c.header_read_timeout = Duration::from_secs(1)
    })
    .await;
    // The request head arrives at once; the response takes twice the header read timeout.
    let r = s.get("/slow?latency=2s").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = stack_with(Backend::Rwlock, Duration::ZERO, |c| {
        c.proxy.max_object_size = 64 << 20;
        c.capacity = 256 << 20;
        // Generous for the fill (a loaded machine may pause a 48 MiB body for seconds); the
        // send timeout under test is set apart from it (`ServeArgs::validate` would insist it be
        // longer; this test wants the stalled client cut first).
        c.upstream.response_timeout = Duration::from_secs(20);
        c.send_timeout = Duration::from_secs(3);
    })
    .await;
    let path = "/big?size=48MiB";
    assert_eq!(s.get(path).await.body.len(), 48 << 20);
    // The stack's client keeps its idle keep-alive connection: it is counted in `before`.
    let before = s.proxy.connections.get();
    // A hit whose 48 MiB the client never reads: the kernel buffers fill and writes stop.
    let mut raw = tokio::net::TcpStream::connect(s.proxy.addr).await.unwrap();
    raw.write_all(format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", s.proxy.addr).as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 64];
    assert!(raw.read(&mut head).await.unwrap() > 0);
    let connections = s.proxy.connections.clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    while connections.get() > before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        connections.get(),
        before,
        "the stalled connection is closed after --send-timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_for_a_fill_gets_an_error_not_a_short_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CHUNK: usize = 64 << 10;
    const CHUNKS: usize = 256; // 16 MiB, chunked
    let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = origin.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = origin.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = sock.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: no-store\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let data = vec![b'x'; CHUNK];
                for _ in 0..CHUNKS {
                    let chunk = [format!("{CHUNK:x}\r\n").as_bytes(), &data, b"\r\n"].concat();
                    if sock.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = sock.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    let mut config = proxy_config(origin_addr, Backend::Rwlock);
    config.upstream.response_timeout = Duration::from_secs(1);
    let proxy = cachet::server::start(config).await.unwrap();
    let mut resp = client()
        .get(format!("http://{}/chunked", proxy.addr))
        .send()
        .await
        .unwrap();
    let mut total = resp.chunk().await.unwrap().map_or(0, |c| c.len());
    // The client pauses for longer than the fill waits on it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ended_cleanly = loop {
        match resp.chunk().await {
            Ok(Some(c)) => total += c.len(),
            Ok(None) => break true,
            Err(_) => break false,
        }
    };
    assert!(
        total == CHUNK * CHUNKS || !ended_cleanly,
        "a short body ended as if whole: {total} of {} bytes",
        CHUNK * CHUNKS
    );
}
