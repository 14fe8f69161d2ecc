//! Operations over real sockets, in-process: gauges, purges, the admin API, limits, timeouts and
//! the graceful drain.

mod ops_support;
use ops_support as common;

use std::time::Duration;

use common::{client, eventually, origin, proxy, raw_exchange, read_until_close};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// 500 concurrent requests, a fifth of them abandoned by their client mid-response or before
/// any response: afterwards no connection and no request may still be counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_return_to_zero_after_500_requests_with_disconnects() {
    let (origin, _stop) = origin(Duration::from_millis(5)).await;
    let running = proxy(origin.addr, |_| {}).await;
    let addr = running.addr;
    let http = client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..500u32 {
        let http = http.clone();
        tasks.spawn(async move {
            match i % 5 {
                // Abandoned mid-response: a 2 MiB body, read a little of it, then hang up.
                0 => {
                    let mut s = TcpStream::connect(addr).await.unwrap();
                    let req =
                        format!("GET /big{i}?size=2MiB&cc=no-store HTTP/1.1\r\nHost: t\r\n\r\n");
                    s.write_all(req.as_bytes()).await.unwrap();
                    let mut buf = [0u8; 4096];
                    let _ = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
                    drop(s);
                    None
                }
                // Abandoned before the response: the upstream is slow, the client is not patient.
                1 if i % 10 == 1 => {
                    let mut s = TcpStream::connect(addr).await.unwrap();
                    let req = format!("GET /slow{i}?latency=300ms HTTP/1.1\r\nHost: t\r\n\r\n");
                    s.write_all(req.as_bytes()).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    drop(s);
                    None
                }
                _ => {
                    let url = format!("http://{addr}/page{}", i % 50);
                    let resp = http.get(url).send().await.unwrap();
                    let status = resp.status();
                    let body = resp.bytes().await.unwrap();
                    Some((status, body.len()))
                }
            }
        });
    }
    let mut completed = 0;
    while let Some(r) = tasks.join_next().await {
        if let Some((status, len)) = r.unwrap() {
            assert_eq!(status, StatusCode::OK);
            assert_eq!(len, 1024);
            completed += 1;
        }
    }
    assert_eq!(completed, 350);
    drop(http); // its pool holds keep-alive connections open
    let (connections, in_flight) = (running.connections.clone(), running.in_flight.clone());
    // Generous: on a loaded machine the last abandoned connections take a while to be noticed
    // (a write to a socket the peer has closed), and this checks that they end, not how fast.
    let settled = eventually(Duration::from_secs(30), || {
        connections.get() == 0 && in_flight.get() == 0
    })
    .await;
    assert!(
        settled,
        "connections={} in_flight={} after every client left",
        connections.get(),
        in_flight.get()
    );
    // The 350 complete requests and at least the 100 mid-body ones reached the proxy.
    assert!(running.counts.total() >= 450, "{}", running.counts.total());
    running.shutdown().await;
}

async fn admin_post(http: &reqwest::Client, admin: std::net::SocketAddr, query: &str) -> u64 {
    let resp = http
        .post(format!("http://{admin}/purge?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "purge?{query}");
    let v = common::json(resp).await;
    v["purged"].as_u64().unwrap()
}

#[tokio::test]
async fn purge_by_url_prefix_and_all_removes_exactly_what_it_names() {
    let (origin, _stop) = origin(Duration::ZERO).await;
    let running = proxy(origin.addr, |_| {}).await;
    let admin = running.admin_addr.unwrap();
    let http = client();
    let base = format!("http://{}", running.addr);
    let get = |path: &'static str, ae: &'static str| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let resp = http
                .get(url)
                .header("accept-encoding", ae)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.bytes().await.unwrap();
        }
    };
    let paths = ["/a/1", "/a/2", "/b/1", "/v?vary=Accept-Encoding"];
    // Fill: each path once, and the Vary one in two variants.
    for p in paths {
        get(p, "gzip").await;
    }
    get("/v?vary=Accept-Encoding", "br").await;
    let filled = origin.stats.requests();
    assert_eq!(filled, 5);
    // Everything is a hit now.
    for p in paths {
        get(p, "gzip").await;
    }
    get("/v?vary=Accept-Encoding", "br").await;
    assert_eq!(origin.stats.requests(), filled, "all hits before any purge");

    // One URL, as a full URL: only it goes upstream again.
    let n = admin_post(
        &http,
        admin,
        &format!("url=http%3A%2F%2F{}%2Fa%2F1", running.addr),
    )
    .await;
    assert_eq!(n, 1);
    get("/a/1", "gzip").await;
    get("/a/2", "gzip").await;
    get("/b/1", "gzip").await;
    assert_eq!(origin.stats.requests(), filled + 1, "only /a/1 missed");

    // One URL with Vary variants, as a path: both variants go.
    let n = admin_post(&http, admin, "url=%2Fv%3Fvary%3DAccept-Encoding").await;
    assert!(n >= 2, "both variants (and any index entry) removed: {n}");
    get("/v?vary=Accept-Encoding", "gzip").await;
    get("/v?vary=Accept-Encoding", "br").await;
    get("/b/1", "gzip").await;
    assert_eq!(origin.stats.requests(), filled + 3, "both variants missed");

    // A path prefix: /a/1 and /a/2 go, /b/1 stays.
    let n = admin_post(&http, admin, "prefix=/a/").await;
    assert_eq!(n, 2);
    get("/a/1", "gzip").await;
    get("/a/2", "gzip").await;
    get("/b/1", "gzip").await;
    assert_eq!(origin.stats.requests(), filled + 5, "/a/* missed, /b/1 hit");

    // Everything.
    let entries_before = running.store().entry_count();
    let n = admin_post(&http, admin, "all=1").await;
    assert!(n >= 4, "{n} of {entries_before}");
    for p in paths {
        get(p, "gzip").await;
    }
    assert_eq!(origin.stats.requests(), filled + 9, "every path missed");

    // A query that names nothing is refused, not taken for "all".
    let resp = http
        .post(format!("http://{admin}/purge"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    running.shutdown().await;
}

#[tokio::test]
async fn purge_method_needs_an_allowed_address() {
    let (origin, _stop) = origin(Duration::ZERO).await;
    let purge = Method::from_bytes(b"PURGE").unwrap();
    let http = client();

    // Allowed: 10.0.0.0/8 only; the test client is 127.0.0.1.
    let refused = proxy(origin.addr, |c| {
        c.allow_purge_from = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    let url = format!("http://{}/p", refused.addr);
    http.get(&url).send().await.unwrap().bytes().await.unwrap();
    let resp = http.request(purge.clone(), &url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(resp.headers().contains_key("allow"));
    let before = origin.stats.requests();
    http.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(
        origin.stats.requests(),
        before,
        "the refused PURGE removed nothing"
    );

    // Allowed: loopback.
    let allowed = proxy(origin.addr, |c| {
        c.allow_purge_from = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let url = format!("http://{}/p", allowed.addr);
    http.get(&url).send().await.unwrap().bytes().await.unwrap();
    let before = origin.stats.requests();
    let resp = http.request(purge, &url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v = common::json(resp).await;
    assert_eq!(v["purged"], 1);
    assert_eq!(origin.stats.requests(), before, "PURGE never goes upstream");
    http.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(origin.stats.requests(), before + 1, "the purged URL missed");
    refused.shutdown().await;
    allowed.shutdown().await;
}

#[tokio::test]
async fn admin_token_is_required_except_for_health() {
    let (origin, _stop) = origin(Duration::ZERO).await;
    let running = proxy(origin.addr, |c| c.admin_token = Some("s3cret".into())).await;
    let admin = running.admin_addr.unwrap();
    let http = client();
    for path in ["/stats", "/metrics"] {
        let url = format!("http://{admin}{path}");
        let none = http.get(&url).send().await.unwrap();
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(none.headers()["www-authenticate"], "Bearer");
        let wrong = http.get(&url).bearer_auth("s3cre").send().await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
        let right = http.get(&url).bearer_auth("s3cret").send().await.unwrap();
        assert_eq!(right.status(), StatusCode::OK, "{path}");
    }
    // A purge without the token does nothing.
    http.get(format!("http://{}/t", running.addr))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let resp = http
        .post(format!("http://{admin}/purge?all=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let before = origin.stats.requests();
    http.get(format!("http://{}/t", running.addr))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(origin.stats.requests(), before, "still cached");
    // Health checkers carry no credentials.
    let health = http
        .get(format!("http://{admin}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    running.shutdown().await;
}

#[tokio::test]
async fn stats_reports_counts_ratio_and_store() {
    let (origin, _stop) = origin(Duration::ZERO).await;
    let running = proxy(origin.addr, |c| c.backend = cachet::store::Backend::Rwlock).await;
    let admin = running.admin_addr.unwrap();
    let http = client();
    for _ in 0..4 {
        http.get(format!("http://{}/s", running.addr))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    http.post(format!("http://{}/s", running.addr))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let v = common::json(
        http.get(format!("http://{admin}/stats"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["backend"], "rwlock");
    assert_eq!(v["results"]["miss"], 1);
    assert_eq!(v["results"]["hit"], 3);
    assert_eq!(v["results"]["bypass"], 1);
    assert_eq!(v["requests"], 5);
    assert_eq!(v["hit_ratio"], 0.75);
    assert_eq!(v["draining"], false);
    // The POST invalidated /s (RFC 9111 4.4), so the store may be empty again; what it reports
    // must be what the store says.
    assert_eq!(v["store"]["entries"], running.store().entry_count());
    assert_eq!(v["store"]["bytes"], running.store().weighted_size());
    running.shutdown().await;
}

#[tokio::test]
async fn oversized_request_head_gets_431() {
    let (origin, _stop) = origin(Duration::ZERO).await;
    let running = proxy(origin.addr, |c| c.max_header_size = 16 << 10).await;
    let http = client();
    let url = format!("http://{}/h", running.addr);
    let small = http
        .get(&url)
        .header("x-fill", "a".repeat(8 << 10))
        .send()
        .await
        .unwrap();
    assert_eq!(
        small.status(),
        StatusCode::OK,
        "8 KiB of headers fit in 16 KiB"
    );
    let big = http
        .get(&url)
        .header("x-fill", "a".repeat(32 << 10))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    running.shutdown().await;
}

#[tokio::test]
async fn slow_request_head_is_cut_off() {
    let (origin, _stop) = origin(Duration::ZERO).await;
    let running = proxy(origin.addr, |c| {
        c.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let started = std::time::Instant::now();
    // Half a request head, then silence.
    let (_, closed) = raw_exchange(
        running.addr,
        b"GET / HTTP/1.1\r\nHost: t\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(closed, "the server closed the slow connection");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // A connection that sends nothing at all is cut off too.
    let (_, closed) = raw_exchange(running.addr, b"", Duration::from_secs(5)).await;
    assert!(closed);
    let gauge = running.connections.clone();
    assert!(eventually(Duration::from_secs(5), || gauge.get() == 0).await);
    running.shutdown().await;
}

#[tokio::test]
async fn keepalive_idle_timeout_is_its_own_deadline() {
    let (origin, _stop) = origin(Duration::ZERO).await;
    let running = proxy(origin.addr, |c| {
        c.header_read_timeout = Duration::from_millis(200);
        c.keepalive_timeout = Duration::from_millis(1500);
    })
    .await;
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    let request = b"GET /k HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut buf = vec![0u8; 64 << 10];
    s.write_all(request).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Idle for longer than the header read timeout, shorter than the keep-alive timeout: the
    // connection is still usable.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.write_all(request).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "second request on the idle connection: {:?}",
        String::from_utf8_lossy(&buf[..n.min(40)])
    );
    // Then idle past the keep-alive timeout: the server closes it.
    let started = std::time::Instant::now();
    let (_, closed) = read_until_close(&mut s, Duration::from_secs(6)).await;
    assert!(closed, "idle connection closed by the server");
    assert!(started.elapsed() >= Duration::from_millis(1000));
    running.shutdown().await;
}

#[tokio::test]
async fn connection_limit_holds_new_clients_back() {
    let (origin, _stop) = origin(Duration::ZERO).await;
    let running = proxy(origin.addr, |c| c.max_connections = 2).await;
    let request = b"GET /m HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut first = TcpStream::connect(running.addr).await.unwrap();
    let second = TcpStream::connect(running.addr).await.unwrap();
    first.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 64 << 10];
    assert!(first.read(&mut buf).await.unwrap() > 0);
    let gauge = running.connections.clone();
    assert!(eventually(Duration::from_secs(5), || gauge.get() == 2).await);
    // A third client connects (the kernel's backlog) but is not served while two are open.
    let mut third = TcpStream::connect(running.addr).await.unwrap();
    third.write_all(request).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "the third connection was served over the limit"
    );
    assert_eq!(running.connections.get(), 2);
    drop(second);
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    drop(first);
    running.shutdown().await;
}

#[tokio::test]
async fn health_turns_503_while_draining_and_in_flight_requests_finish() {
    let (origin, _stop) = origin(Duration::ZERO).await;
    let running = proxy(origin.addr, |_| {}).await;
    let admin = running.admin_addr.unwrap();
    let http = client();
    let health = |http: reqwest::Client| async move {
        http.get(format!("http://{admin}/health"))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(health(http.clone()).await, StatusCode::OK);
    let slow = {
        let http = http.clone();
        let url = format!("http://{}/slow?latency=1500ms", running.addr);
        tokio::spawn(async move {
            let resp = http.get(url).send().await.unwrap();
            (resp.status(), resp.bytes().await.unwrap().len())
        })
    };
    let in_flight = running.in_flight.clone();
    assert!(eventually(Duration::from_secs(5), || in_flight.get() == 1).await);
    let token = running.shutdown_token();
    token.cancel();
    assert_eq!(health(http.clone()).await, StatusCode::SERVICE_UNAVAILABLE);
    // New connections are refused once draining.
    let addr = running.addr;
    let refused = eventually(Duration::from_secs(2), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err()
    })
    .await;
    assert!(refused, "the listener closed");
    let (status, len) = slow.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(len, 1024);
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("the server stops once the drain is done");
    assert!(
        http.get(format!("http://{admin}/health"))
            .send()
            .await
            .is_err(),
        "the admin listener goes after the drain"
    );
}
