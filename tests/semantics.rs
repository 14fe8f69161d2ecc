//! HTTP caching semantics over real sockets: revalidation, Vary, invalidation, stale content,
//! ranges, only-if-cached.

mod common;

use std::time::{Duration, Instant};

use cachet::origin::body_for;
use cachet::store::Backend;
use common::*;

#[tokio::test]
async fn revalidation_with_304_serves_the_stored_body() {
    let s = stack(Backend::Moka).await;
    let path = "/rv?etag=1&cc=max-age%3D0";
    let first = s.get(path).await;
    assert_eq!(first.status, 200);
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    assert!(first.header("etag").is_some());

    let second = s.get(path).await;
    assert_eq!(
        second.status, 200,
        "the client gets 200, not the upstream's 304"
    );
    assert_eq!(second.body, first.body);
    assert!(
        second.cache_status().contains("fwd=stale"),
        "{}",
        second.cache_status()
    );
    assert!(
        second.cache_status().contains("fwd-status=304"),
        "{}",
        second.cache_status()
    );
    assert_eq!(
        s.origin.stats.conditional(),
        1,
        "the origin saw one conditional request"
    );
    assert_eq!(s.origin_requests(), 2);
}

#[tokio::test]
async fn last_modified_revalidation_and_no_cache() {
    let s = stack(Backend::Sharded).await;
    let path = "/lm?lm=1&cc=no-cache";
    let first = s.get(path).await;
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    let second = s.get(path).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, first.body);
    assert!(
        second.cache_status().contains("fwd-status=304"),
        "{}",
        second.cache_status()
    );
    assert_eq!(s.origin.stats.conditional(), 1);
}

#[tokio::test]
async fn client_conditional_is_answered_from_the_store() {
    let s = stack(Backend::Moka).await;
    let first = s.get("/cond?etag=1").await;
    let etag = first.header("etag").unwrap().to_string();
    let r = s
        .send(
            s.client
                .get(s.url("/cond?etag=1"))
                .header("if-none-match", format!("W/{etag}")),
        )
        .await;
    assert_eq!(r.status, 304, "weak comparison matches");
    assert!(r.is_hit());
    assert!(r.body.is_empty());
    let r = s
        .send(
            s.client
                .get(s.url("/cond?etag=1"))
                .header("if-none-match", "\"other\""),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(s.origin_requests(), 1);
}

#[tokio::test]
async fn client_no_cache_forces_revalidation() {
    let s = stack(Backend::Moka).await;
    s.get("/nc?etag=1").await;
    let r = s
        .send(
            s.client
                .get(s.url("/nc?etag=1"))
                .header("cache-control", "no-cache"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.cache_status().contains("fwd=request"),
        "{}",
        r.cache_status()
    );
    assert_eq!(s.origin.stats.conditional(), 1);
}

#[tokio::test]
async fn vary_keeps_two_variants() {
    let s = stack(Backend::Rwlock).await;
    let path = "/vy?vary=Accept-Language";
    let get =
        |lang: &'static str| s.send(s.client.get(s.url(path)).header("accept-language", lang));
    let en = get("en").await;
    assert!(
        en.cache_status().contains("fwd=uri-miss"),
        "{}",
        en.cache_status()
    );
    let fr = get("fr").await;
    assert!(
        fr.cache_status().contains("fwd=vary-miss"),
        "{}",
        fr.cache_status()
    );
    let en2 = get("EN").await; // Accept-Language compares case-insensitively
    let fr2 = get("fr").await;
    assert!(
        en2.is_hit() && fr2.is_hit(),
        "{} / {}",
        en2.cache_status(),
        fr2.cache_status()
    );
    assert!(en2.body.starts_with(b"Accept-Language=en\n"));
    assert!(fr2.body.starts_with(b"Accept-Language=fr\n"));
    assert_eq!(s.origin_requests(), 2);
}

#[tokio::test]
async fn vary_star_is_not_stored() {
    let s = stack(Backend::Moka).await;
    s.get("/vs?vary=*").await;
    let r = s.get("/vs?vary=*").await;
    assert!(!r.is_hit());
    assert_eq!(s.origin_requests(), 2);
}

#[tokio::test]
async fn post_invalidates_uri_and_same_origin_location() {
    let s = stack(Backend::Moka).await;
    s.get("/target").await;
    s.get("/other").await;
    assert!(s.get("/target").await.is_hit());
    let addr = s.proxy.addr;
    // The Location names the target on the same origin (the request's Host).
    let post = s
        .send(
            s.client
                .post(s.url(&format!("/form?location=http%3A%2F%2F{addr}%2Ftarget"))),
        )
        .await;
    assert_eq!(post.status, 200);
    assert!(
        !s.get("/target").await.is_hit(),
        "Location target invalidated"
    );
    assert!(s.get("/other").await.is_hit(), "unrelated entry untouched");
    // A failed unsafe request invalidates nothing.
    s.get("/keep").await;
    s.send(s.client.delete(s.url("/keep?status=500"))).await;
    assert!(s.get("/keep").await.is_hit());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_at_once_then_refreshes() {
    let s = stack(Backend::Moka).await;
    let path = "/swr?latency=1s&cc=max-age%3D3,stale-while-revalidate%3D30";
    let first = s.get(path).await;
    assert!(first.cache_status().contains("stored"));
    tokio::time::sleep(Duration::from_millis(3200)).await;

    let started = Instant::now();
    let stale = s.get(path).await;
    let took = started.elapsed();
    assert_eq!(stale.status, 200);
    assert!(
        took < Duration::from_millis(700),
        "stale response waited for the origin: {took:?}"
    );
    assert!(stale.is_hit(), "{}", stale.cache_status());
    assert!(stale.cache_status().contains("stale-while-revalidate"));
    assert!(
        stale.cache_status().contains("ttl=-"),
        "{}",
        stale.cache_status()
    );

    // The background refresh reaches the origin (1 s away) and replaces the entry: a later
    // request is a fresh hit, and the origin saw exactly one more request.
    let deadline = Instant::now() + Duration::from_secs(5);
    let fresh = loop {
        let r = s.get(path).await;
        if !r.cache_status().contains("ttl=-") || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(fresh.is_hit(), "{}", fresh.cache_status());
    assert!(
        !fresh.cache_status().contains("ttl=-"),
        "{}",
        fresh.cache_status()
    );
    assert_eq!(
        s.origin_requests(),
        2,
        "one refresh, however many stale hits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_with_the_origin_stopped() {
    let s = stack(Backend::Sharded).await;
    let path = "/sie?cc=max-age%3D1,stale-if-error%3D60";
    let first = s.get(path).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    s.origin_shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = s.get(path).await;
    assert_eq!(r.status, 200, "{}", r.cache_status());
    assert_eq!(r.body, first.body);
    assert!(
        r.cache_status().contains("stale-if-error"),
        "{}",
        r.cache_status()
    );

    // Without stale-if-error a stale entry is not served when the origin is gone.
    let s2 = stack(Backend::Sharded).await;
    s2.get("/plain?cc=max-age%3D1").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    s2.origin_shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s2.get("/plain?cc=max-age%3D1").await.status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_revalidate_is_never_served_stale() {
    let s = stack(Backend::Moka).await;
    let path = "/mr?cc=max-age%3D1,must-revalidate,stale-if-error%3D60";
    s.get(path).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    s.origin_shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.get(path).await.status, 502);
}

#[tokio::test]
async fn range_from_a_stored_response() {
    let s = stack(Backend::Moka).await;
    s.get("/rg").await;
    let whole = body_for("/rg", "", 4096);
    let r = s
        .send(s.client.get(s.url("/rg")).header("range", "bytes=10-19"))
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/4096"));
    assert_eq!(r.body, whole[10..20].to_vec());
    assert!(r.is_hit());
    let r = s
        .send(s.client.get(s.url("/rg")).header("range", "bytes=-5"))
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, whole[4091..].to_vec());
    let r = s
        .send(
            s.client
                .get(s.url("/rg"))
                .header("range", "bytes=5000-6000"),
        )
        .await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */4096"));
    assert_eq!(s.origin_requests(), 1);
}

#[tokio::test]
async fn only_if_cached() {
    let s = stack(Backend::Moka).await;
    let oic = || {
        s.send(
            s.client
                .get(s.url("/oic"))
                .header("cache-control", "only-if-cached"),
        )
    };
    let r = oic().await;
    assert_eq!(r.status, 504);
    assert_eq!(s.origin_requests(), 0);
    s.get("/oic").await;
    let r = oic().await;
    assert_eq!(r.status, 200);
    assert!(r.is_hit());
    assert_eq!(s.origin_requests(), 1);
}

#[tokio::test]
async fn set_cookie_is_not_stored_by_default() {
    let s = stack(Backend::Moka).await;
    s.get("/ck?cookie=1").await;
    let r = s.get("/ck?cookie=1").await;
    assert!(!r.is_hit());
    assert!(
        r.cache_status().contains("detail=set-cookie"),
        "{}",
        r.cache_status()
    );

    let s = stack_with(Backend::Moka, Duration::from_millis(5), |c| {
        c.proxy.rules.allow_set_cookie = true
    })
    .await;
    s.get("/ck?cookie=1").await;
    assert!(s.get("/ck?cookie=1").await.is_hit());
}

#[tokio::test]
async fn authorization_is_not_shared_without_permission() {
    let s = stack(Backend::Moka).await;
    let auth = |path: &'static str| {
        s.send(
            s.client
                .get(s.url(path))
                .header("authorization", "Bearer x"),
        )
    };
    auth("/au?cc=max-age%3D60").await;
    assert!(!auth("/au?cc=max-age%3D60").await.is_hit());
    auth("/au2?cc=public,max-age%3D60").await;
    assert!(auth("/au2?cc=public,max-age%3D60").await.is_hit());
}

#[tokio::test]
async fn heuristic_freshness_from_last_modified() {
    let s = stack(Backend::Moka).await;
    // No explicit freshness, Last-Modified a day or more ago: 10% of that is fresh.
    s.get("/hf?lm=1&cc=").await;
    let r = s.get("/hf?lm=1&cc=").await;
    assert!(r.is_hit(), "{}", r.cache_status());
    // Neither freshness nor Last-Modified: not stored.
    s.get("/nofresh?cc=").await;
    assert!(!s.get("/nofresh?cc=").await.is_hit());
}

#[tokio::test]
async fn cdn_cache_control_governs_the_proxy() {
    let s = stack(Backend::Moka).await;
    // RFC 9213: the targeted field wins over Cache-Control, both ways.
    let stored = "/cdn1?cc=no-store&cdncc=max-age%3D60";
    s.get(stored).await;
    let r = s.get(stored).await;
    assert!(r.is_hit(), "{}", r.cache_status());
    assert_eq!(
        r.header("cdn-cache-control"),
        Some("max-age=60"),
        "passed on unchanged"
    );
    let refused = "/cdn2?cc=max-age%3D60&cdncc=no-store";
    s.get(refused).await;
    assert!(!s.get(refused).await.is_hit());
    // An invalid targeted field is ignored: Cache-Control governs.
    let invalid = "/cdn3?cc=max-age%3D60&cdncc=max-age%3D%2210%22";
    s.get(invalid).await;
    assert!(s.get(invalid).await.is_hit());
    assert_eq!(s.origin_requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_stale_if_error_covers_responses_without_one() {
    let s = stack_with(Backend::Rwlock, Duration::from_millis(5), |c| {
        c.proxy.stale_if_error = Duration::from_secs(60)
    })
    .await;
    let plain = "/grace?cc=max-age%3D1";
    let strict = "/strict?cc=max-age%3D1,must-revalidate";
    let first = s.get(plain).await;
    s.get(strict).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    s.origin_shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = s.get(plain).await;
    assert_eq!(r.status, 200, "{}", r.cache_status());
    assert_eq!(r.body, first.body);
    assert!(r.cache_status().contains("stale-if-error"));
    assert_eq!(
        s.get(strict).await.status,
        502,
        "must-revalidate is still honoured"
    );
}

#[tokio::test]
async fn range_on_a_miss_fills_the_whole_object() {
    let s = stack(Backend::Sharded).await;
    let whole = body_for("/rm", "", 100_000);
    let range =
        |spec: &'static str| s.send(s.client.get(s.url("/rm?size=100000")).header("range", spec));
    // The whole object is fetched and stored; the client gets its range as it streams by.
    let r = range("bytes=70000-70009").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 70000-70009/100000"));
    assert_eq!(r.body, whole[70000..70010].to_vec());
    // 100 KB is streamed, not read whole first: when its head went out, nothing was stored yet,
    // so it may not say `stored` (RFC 9211). The hit below shows it was.
    assert!(!r.cache_status().contains("stored"), "{}", r.cache_status());
    let full = s.get("/rm?size=100000").await;
    assert!(full.is_hit(), "{}", full.cache_status());
    assert_eq!(full.body, whole.to_vec());
    assert_eq!(s.origin_requests(), 1);

    // Not storable: still the right bytes, cut from the whole response.
    let r = s
        .send(
            s.client
                .get(s.url("/rn?size=5000&cc=no-store"))
                .header("range", "bytes=-100"),
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, body_for("/rn", "", 5000)[4900..].to_vec());
    // Unsatisfiable on a miss: 416, and the object is stored all the same.
    let r = s
        .send(
            s.client
                .get(s.url("/ru?size=5000"))
                .header("range", "bytes=9000-"),
        )
        .await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */5000"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.get("/ru?size=5000").await.is_hit());
}

#[tokio::test]
async fn a_304_cookie_reaches_its_requester_but_is_not_stored() {
    let s = stack(Backend::Moka).await;
    let path = "/rc?etag=1&cc=max-age%3D0&cookie304=1";
    let first = s.get(path).await;
    assert!(first.header("set-cookie").is_none());
    let second = s.get(path).await;
    assert!(
        second.cache_status().contains("fwd-status=304"),
        "{}",
        second.cache_status()
    );
    assert_eq!(
        second.header("set-cookie"),
        Some("session=refreshed; Path=/")
    );
    let key = cachet::store::Key::new(format!("http://{}{}", s.proxy.addr, path));
    let stored = s
        .proxy
        .store()
        .get(&key)
        .expect("the refreshed entry is stored");
    let stored = stored.response().expect("a response");
    assert!(
        !stored.headers.contains_key("set-cookie"),
        "the cookie is not shared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_during_a_revalidation_is_not_undone() {
    let s = stack(Backend::Rwlock).await;
    let path = "/pr?etag=1&latency=1s&cc=max-age%3D1";
    assert!(s.get(path).await.cache_status().contains("stored"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Stale now: the next request revalidates, and the origin takes a second to answer 304.
    let revalidation = {
        let client = s.client.clone();
        let url = s.url(path);
        tokio::spawn(async move { Reply::read(client.get(url).send().await.unwrap()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.proxy.proxy.purge_all(), 1);
    let r = revalidation.await.unwrap();
    assert_eq!(r.status, 200, "the requester is still answered");
    assert_eq!(
        s.proxy.store().entry_count(),
        0,
        "the purged entry did not come back"
    );
}
