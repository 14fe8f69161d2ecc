//! The shared tier against real `redis-server` processes: instances share what they fetch,
//! coalesce their misses, see each other's purges, and go on serving when Redis dies, stalls or
//! holds garbage.
//!
//! Every request names the same site (`Host: site.test`), as a load balancer in front of a
//! fleet would send it, so that every instance computes the same cache keys.

mod common;
mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cachet::origin::{Origin, OriginConfig};
use cachet::server::{self, Running};
use cachet::shared::{RedisTarget, SharedConfig};
use cachet::store::{Backend, Key};
use common::{client, proxy_config, start_origin, Reply};
use redis_support::{require_redis, RedisCluster, RedisServer};
use tokio_util::sync::CancellationToken;

const SITE: &str = "site.test";

/// An origin and several proxies sharing one tier.
struct Fleet {
    origin: Origin,
    _origin_stop: CancellationToken,
    proxies: Vec<Running>,
    client: reqwest::Client,
}

/// The shared-tier settings of the tests: lookups get 250 ms, not the default 5 ms, because
/// debug builds on a loaded two-core machine can be slow; the tests that are about a slow or
/// dead Redis set their own.
fn tier(url: &str) -> SharedConfig {
    let mut config = SharedConfig::new(RedisTarget::parse(url).unwrap());
    config.timeout = Duration::from_millis(250);
    config.probe_interval = Duration::from_millis(200);
    config
}

async fn fleet(
    n: usize,
    shared: Option<SharedConfig>,
    origin_latency: Duration,
    backend: Backend,
) -> Fleet {
    let (origin, origin_stop) = start_origin(OriginConfig {
        latency: origin_latency,
        body_size: 2048,
        max_age: 3600,
    })
    .await;
    let mut proxies = Vec::new();
    for _ in 0..n {
        let mut config = proxy_config(origin.addr, backend);
        config.admin = Some("127.0.0.1:0".parse().unwrap());
        config.shared = shared.clone();
        proxies.push(server::start(config).await.unwrap());
    }
    Fleet {
        origin,
        _origin_stop: origin_stop,
        proxies,
        client: client(),
    }
}

impl Fleet {
    async fn get(&self, instance: usize, path: &str) -> Reply {
        self.get_with(instance, path, &[]).await
    }

    async fn get_with(&self, instance: usize, path: &str, headers: &[(&str, &str)]) -> Reply {
        let url = format!("http://{}{path}", self.proxies[instance].addr);
        let mut req = self.client.get(url).header("host", SITE);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        Reply::read(req.send().await.expect("proxy answers")).await
    }

    async fn purge(&self, instance: usize, query: &str) -> serde_json::Value {
        let admin = self.proxies[instance].admin_addr.unwrap();
        let resp = self
            .client
            .post(format!("http://{admin}/purge?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
    }

    fn origin_requests(&self) -> u64 {
        self.origin.stats.requests()
    }

    fn holds(&self, instance: usize, path: &str) -> bool {
        let key = Key::new(format!("http://{SITE}{path}"));
        self.proxies[instance].store().contains(&key)
    }
}

fn url_key(path: &str) -> String {
    format!("cachet:r:http://{SITE}{path}")
}

/// Waits (bounded) until the tier holds the URL's record: a fill writes it in the background.
async fn until_written(exists: impl Fn() -> BoxedBool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !exists().await {
        assert!(
            Instant::now() < deadline,
            "{what} never reached the shared tier"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the URL's hash holds a response or Vary names (a purged URL keeps only a tombstone).
async fn holds_record(redis: &RedisServer, key: &str) -> bool {
    let fields = redis.cmd(&["HMGET", key, "r", "i"]).await;
    fields.lines().any(|l| !l.trim().is_empty())
}

type BoxedBool = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

fn exists_in(redis: &Arc<RedisServer>, key: String) -> impl Fn() -> BoxedBool {
    let redis = Arc::clone(redis);
    move || {
        let redis = Arc::clone(&redis);
        let key = key.clone();
        Box::pin(async move { holds_record(&redis, &key).await })
    }
}

fn is_shared_hit(r: &Reply) -> bool {
    r.is_hit() && r.cache_status().contains("detail=shared")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_an_entry_and_the_origin_sees_one_request() {
    if !require_redis("two_instances_share_an_entry_and_the_origin_sees_one_request") {
        return;
    }
    let redis = Arc::new(RedisServer::start().await);
    let fleet = fleet(2, Some(tier(&redis.url())), Duration::ZERO, Backend::Moka).await;

    let first = fleet.get(0, "/a").await;
    assert_eq!(first.status, 200);
    assert!(!first.is_hit(), "{}", first.cache_status());
    until_written(exists_in(&redis, url_key("/a")), "/a").await;

    let second = fleet.get(1, "/a").await;
    assert_eq!(second.status, 200);
    assert!(is_shared_hit(&second), "{}", second.cache_status());
    assert_eq!(second.body, first.body);
    assert_eq!(
        fleet.origin_requests(),
        1,
        "the second instance did not ask the origin"
    );
    // Promoted: the next request on the second instance is a local hit.
    assert!(fleet.holds(1, "/a"));
    let third = fleet.get(1, "/a").await;
    assert!(
        third.is_hit() && !is_shared_hit(&third),
        "{}",
        third.cache_status()
    );
    assert_eq!(fleet.origin_requests(), 1);
    assert!(
        second.header("age").is_some(),
        "a shared hit says how old it is"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_variants_are_shared_each_under_its_own_selection() {
    if !require_redis("vary_variants_are_shared_each_under_its_own_selection") {
        return;
    }
    let redis = Arc::new(RedisServer::start().await);
    let fleet = fleet(2, Some(tier(&redis.url())), Duration::ZERO, Backend::Rwlock).await;
    let path = "/v?vary=Accept-Encoding";
    let gzip = [("accept-encoding", "gzip")];
    let br = [("accept-encoding", "br")];

    let a_gzip = fleet.get_with(0, path, &gzip).await;
    let a_br = fleet.get_with(0, path, &br).await;
    assert_ne!(
        a_gzip.body, a_br.body,
        "the origin echoes the selecting header"
    );
    assert_eq!(fleet.origin_requests(), 2);
    until_written(exists_in(&redis, url_key(path)), path).await;
    // Both variants written (the hash holds the names and one field per variant).
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.cmd(&["HLEN", &url_key(path)]).await.trim() != "3" {
        assert!(
            Instant::now() < deadline,
            "both variants never reached the tier"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let b_br = fleet.get_with(1, path, &br).await;
    let b_gzip = fleet.get_with(1, path, &gzip).await;
    assert!(is_shared_hit(&b_br), "{}", b_br.cache_status());
    assert!(is_shared_hit(&b_gzip), "{}", b_gzip.cache_status());
    assert_eq!(b_br.body, a_br.body);
    assert_eq!(b_gzip.body, a_gzip.body);
    // A selection no instance fetched is a miss everywhere.
    let b_none = fleet
        .get_with(1, path, &[("accept-encoding", "zstd")])
        .await;
    assert!(!b_none.is_hit(), "{}", b_none.cache_status());
    assert_eq!(fleet.origin_requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_requests_over_three_instances_reach_the_origin_once() {
    if !require_redis("concurrent_cold_requests_over_three_instances_reach_the_origin_once") {
        return;
    }
    let redis = Arc::new(RedisServer::start().await);
    let latency = Duration::from_millis(500);
    // The same burst on one instance with no tier, for comparison: only local coalescing.
    let alone = Arc::new(fleet(1, None, latency, Backend::Sharded).await);
    let (alone_p50, alone_p99) = cold_burst(&alone, 200).await;
    assert_eq!(
        alone.origin_requests(),
        2,
        "the warm-up and one for the burst"
    );

    let fleet = Arc::new(fleet(3, Some(tier(&redis.url())), latency, Backend::Sharded).await);
    let (p50, p99) = cold_burst(&fleet, 200).await;
    assert_eq!(
        fleet.origin_requests(),
        2,
        "the warm-up, then 200 concurrent cold requests over 3 instances made one origin request"
    );
    eprintln!(
        "200 cold requests, origin latency {latency:?}: one instance p50 {alone_p50:?} p99 {alone_p99:?}; \
         3 instances sharing Redis p50 {p50:?} p99 {p99:?}"
    );
    // Bounded, not timed: a waiter that missed the fill's event would wait out the lock (10 s).
    assert!(p99 < latency * 4, "waiters p99 {p99:?}");
}

/// Sends `count` concurrent requests for one cold URL, spread over the fleet's instances; checks
/// every one got the same 200 and returns the p50 and p99 of their latencies.
async fn cold_burst(fleet: &Arc<Fleet>, count: usize) -> (Duration, Duration) {
    // Connections opened first, so the burst measures waiting, not TCP handshakes.
    for i in 0..fleet.proxies.len() {
        fleet.get(i, "/warm-up").await;
    }
    let mut tasks = Vec::new();
    for i in 0..count {
        let fleet = Arc::clone(fleet);
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = fleet.get(i % fleet.proxies.len(), "/cold").await;
            (r, started.elapsed())
        }));
    }
    let mut bodies = std::collections::HashSet::new();
    let mut waits = Vec::new();
    for t in tasks {
        let (r, took) = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.cache_status());
        bodies.insert(r.body);
        waits.push(took);
    }
    assert_eq!(bodies.len(), 1, "every request got the same response");
    waits.sort();
    (waits[waits.len() / 2], waits[waits.len() * 99 / 100])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_instance_makes_the_next_request_on_every_instance_a_miss() {
    if !require_redis("a_purge_on_one_instance_makes_the_next_request_on_every_instance_a_miss") {
        return;
    }
    let redis = Arc::new(RedisServer::start().await);
    let fleet = fleet(3, Some(tier(&redis.url())), Duration::ZERO, Backend::Moka).await;
    for path in ["/p/1", "/p/2", "/q"] {
        fleet.get(0, path).await;
        until_written(exists_in(&redis, url_key(path)), path).await;
        for i in 1..3 {
            let r = fleet.get(i, path).await;
            assert!(r.is_hit(), "{path} on {i}: {}", r.cache_status());
        }
    }
    assert_eq!(fleet.origin_requests(), 3);

    // One URL by its full key, then a prefix by path.
    for (query, gone, kept) in [
        (
            "url=http%3A%2F%2Fsite.test%2Fq",
            vec!["/q"],
            vec!["/p/1", "/p/2"],
        ),
        ("prefix=/p/", vec!["/p/1", "/p/2"], vec![]),
    ] {
        let purged_at = Instant::now();
        let answer = fleet.purge(1, query).await;
        assert_eq!(
            answer["shared"]["purged_urls"].as_u64(),
            Some(gone.len() as u64),
            "{answer}"
        );
        // Every instance drops it; how long the event takes is measured.
        let deadline = purged_at + Duration::from_secs(5);
        while (0..3).any(|i| gone.iter().any(|p| fleet.holds(i, p))) {
            assert!(
                Instant::now() < deadline,
                "a purge never reached every instance"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        eprintln!(
            "purge {query}: gone from all 3 instances {:?} after it was sent",
            purged_at.elapsed()
        );
        for path in &gone {
            assert!(
                !holds_record(&redis, &url_key(path)).await,
                "{path} left in Redis"
            );
        }
        for path in &kept {
            assert!((0..3).all(|i| fleet.holds(i, path)), "{path} purged too");
        }
    }
    let before = fleet.origin_requests();
    for i in 0..3 {
        let r = fleet.get(i, "/q").await;
        assert!(!r.is_hit() || i > 0, "{}", r.cache_status());
    }
    assert_eq!(
        fleet.origin_requests(),
        before + 1,
        "after the purge the first request refetched and the others shared its fill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_or_foreign_record_is_a_miss_and_is_deleted() {
    if !require_redis("a_corrupted_or_foreign_record_is_a_miss_and_is_deleted") {
        return;
    }
    let redis = Arc::new(RedisServer::start().await);
    let fleet = fleet(2, Some(tier(&redis.url())), Duration::ZERO, Backend::Rwlock).await;
    // The reference bodies, from an instance without the tier.
    let plain = fleet_without_tier(&fleet).await;

    // A real record, copied under another URL: valid, but written for another key.
    fleet.get(0, "/real").await;
    until_written(exists_in(&redis, url_key("/real")), "/real").await;
    redis
        .cmd(&["COPY", &url_key("/real"), &url_key("/copied")])
        .await;
    // Garbage in our field, a value of the wrong type, and a record of a future version.
    redis
        .cmd(&["HSET", &url_key("/garbage"), "r", "<html>not ours</html>"])
        .await;
    redis
        .cmd(&["SET", &url_key("/string"), "a plain string"])
        .await;
    redis
        .cmd(&["HSET", &url_key("/future"), "r", "CCHR\u{9}xxxxxxxxxxxx"])
        .await;
    redis
        .cmd(&["HSET", &url_key("/names"), "i", "CCHV\u{1}Not A Name"])
        .await;

    for path in ["/copied", "/garbage", "/string", "/future", "/names"] {
        let want = plain.get(path).await.body;
        let before = fleet.origin_requests();
        let r = fleet.get(1, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.cache_status());
        assert!(
            !r.is_hit(),
            "{path} served from a bad record: {}",
            r.cache_status()
        );
        assert_eq!(r.body, want, "{path}: the origin's body");
        assert_eq!(fleet.origin_requests(), before + 1, "{path}");
    }
    // Each bad record was deleted, and the fill wrote a good one in its place: the other
    // instance now gets a shared hit with the right body.
    for path in ["/copied", "/garbage", "/string", "/future", "/names"] {
        until_written(exists_in(&redis, url_key(path)), path).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let kind = redis.cmd(&["TYPE", &url_key(path)]).await;
            let field = redis.cmd(&["HGET", &url_key(path), "r"]).await;
            if kind.trim() == "hash" && field.starts_with("CCHR\u{1}") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: bad record never replaced"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = fleet.get(0, path).await;
        assert!(is_shared_hit(&r), "{path}: {}", r.cache_status());
        assert_eq!(r.body, plain.get(path).await.body, "{path}");
    }
}

/// A proxy on the fleet's origin with no shared tier, for reference responses.
async fn fleet_without_tier(fleet: &Fleet) -> Reference {
    let config = proxy_config(fleet.origin.addr, Backend::Moka);
    Reference {
        proxy: server::start(config).await.unwrap(),
        client: client(),
    }
}

struct Reference {
    proxy: Running,
    client: reqwest::Client,
}

impl Reference {
    async fn get(&self, path: &str) -> Reply {
        let url = format!("http://{}{path}", self.proxy.addr);
        let req = self.client.get(url).header("host", SITE);
        Reply::read(req.send().await.unwrap()).await
    }
}

/// Sends `count` requests over `keys` URLs, alternating instances, and returns each one's
/// latency; every response must be a 200 with the origin's body for its URL.
async fn load(
    fleet: &Fleet,
    tag: &str,
    count: usize,
    keys: usize,
    during: impl Fn(usize),
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(count);
    for n in 0..count {
        during(n);
        let path = format!("/load/{tag}/{}", n % keys);
        let started = Instant::now();
        let r = fleet.get(n % fleet.proxies.len(), &path).await;
        latencies.push(started.elapsed());
        assert_eq!(
            r.status,
            200,
            "request {n} ({path}) failed: {}",
            r.cache_status()
        );
        assert_eq!(r.body.len(), 2048, "request {n} ({path})");
    }
    latencies.sort();
    latencies
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() * 99 / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_fails_no_request_and_sharing_resumes_when_it_is_back() {
    if !require_redis("redis_killed_mid_load_fails_no_request_and_sharing_resumes_when_it_is_back")
    {
        return;
    }
    const COUNT: usize = 3000;
    const KEYS: usize = 300;
    // The baseline: the same load on two instances with no tier.
    let alone = fleet(2, None, Duration::from_millis(1), Backend::Moka).await;
    let base = load(&alone, "base", COUNT, KEYS, |_| {}).await;

    let mut redis = RedisServer::start().await;
    let mut config = tier(&redis.url());
    config.timeout = Duration::from_millis(5); // the default
    let fleet = fleet(2, Some(config), Duration::from_millis(1), Backend::Moka).await;
    let pid = redis.pid().unwrap();
    let killed = std::sync::atomic::AtomicBool::new(false);
    let with_kill = load(&fleet, "kill", COUNT, KEYS, |n| {
        if n == COUNT / 3 && !killed.swap(true, std::sync::atomic::Ordering::Relaxed) {
            // SIGKILL from the load's own thread: no request in flight is waited for.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    })
    .await;
    eprintln!(
        "{COUNT} requests over {KEYS} keys: p99 without a tier {:?}, with Redis killed after {} requests {:?}",
        p99(&base),
        COUNT / 3,
        p99(&with_kill)
    );
    assert!(
        p99(&with_kill) <= p99(&base) + Duration::from_millis(25),
        "p99 {:?} against {:?} without a tier",
        p99(&with_kill),
        p99(&base)
    );

    // Redis comes back (empty): within a few probe intervals the instances use it again.
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    loop {
        n += 1;
        let path = format!("/after/{n}");
        fleet.get(0, &path).await;
        let mut shared = false;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(25)).await;
            let r = fleet.get(1, &path).await;
            if is_shared_hit(&r) {
                shared = true;
                break;
            }
            if r.is_hit() {
                break; // fetched by instance 1 itself before the record arrived
            }
        }
        if shared {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sharing never resumed after Redis came back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_costs_requests_no_more_than_the_timeout_and_then_nothing() {
    if !require_redis("a_stalled_redis_costs_requests_no_more_than_the_timeout_and_then_nothing") {
        return;
    }
    let redis = RedisServer::start().await;
    let timeout = Duration::from_millis(20);
    let mut config = tier(&redis.url());
    config.timeout = timeout;
    let fleet = fleet(2, Some(config), Duration::ZERO, Backend::Moka).await;
    fleet.get(0, "/warm").await; // connected
                                 // The same requests with Redis answering first: on a loaded machine some requests are slow
                                 // whatever Redis does, and only those beyond that count against the stalled tier.
    let mut slow_anyway = 0;
    let mut worst_anyway = Duration::ZERO;
    for n in 0..200 {
        let started = Instant::now();
        let r = fleet.get(n % 2, &format!("/answering/{n}")).await;
        assert_eq!(r.status, 200);
        let took = started.elapsed();
        worst_anyway = worst_anyway.max(took);
        if took > timeout * 3 / 4 {
            slow_anyway += 1;
        }
    }
    redis.pause();
    let mut slow = 0;
    let mut worst = Duration::ZERO;
    for n in 0..200 {
        let started = Instant::now();
        let r = fleet.get(n % 2, &format!("/stalled/{n}")).await;
        assert_eq!(r.status, 200);
        let took = started.elapsed();
        worst = worst.max(took);
        if took > timeout * 3 / 4 {
            slow += 1;
        }
    }
    assert!(
        fleet.proxies[0].proxy.shared().unwrap().is_open(),
        "the breaker opened"
    );
    redis.resume();
    // A miss asks the tier twice (lookup, then the fill lock), bounded by one and two lookup
    // timeouts; three failures in a row open the breaker and later requests skip the tier. So a
    // handful pay at most two timeouts, not all 200 and not the writes' longer timeout. (The
    // bound on the worst is generous for a debug build on a loaded machine.)
    eprintln!(
        "stalled Redis, {timeout:?} timeout: {slow} of 200 requests slow, worst {worst:?} \
         (answering Redis: {slow_anyway} slow, worst {worst_anyway:?})"
    );
    assert!(
        slow <= slow_anyway + 10,
        "{slow} of 200 requests waited on the stalled Redis ({slow_anyway} were slow with it answering)"
    );
    assert!(
        worst < timeout * 2 + worst_anyway.max(Duration::from_millis(150)),
        "worst request {worst:?} (answering Redis: {worst_anyway:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_is_shared_and_purged_across_its_nodes() {
    if !require_redis("a_redis_cluster_is_shared_and_purged_across_its_nodes") {
        return;
    }
    let cluster = RedisCluster::start().await;
    let fleet = fleet(
        2,
        Some(tier(&cluster.url())),
        Duration::ZERO,
        Backend::Sharded,
    )
    .await;
    let paths: Vec<String> = (0..30).map(|i| format!("/c/{i}")).collect();
    for path in &paths {
        assert_eq!(fleet.get(0, path).await.status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.total_keys().await < paths.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "the fills never reached the cluster"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let per_node: Vec<u64> =
        futures_util::future::join_all(cluster.nodes().iter().map(|n| n.dbsize())).await;
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "keys spread over the masters: {per_node:?}"
    );
    for path in &paths {
        let r = fleet.get(1, path).await;
        assert!(is_shared_hit(&r), "{path}: {}", r.cache_status());
    }
    assert_eq!(fleet.origin_requests(), paths.len() as u64);

    let answer = fleet.purge(1, "prefix=/c/").await;
    assert_eq!(
        answer["shared"]["purged_urls"].as_u64(),
        Some(paths.len() as u64),
        "{answer}"
    );
    assert_eq!(
        cluster.total_keys().await,
        0,
        "the prefix purge scanned every master"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while paths.iter().any(|p| fleet.holds(0, p)) {
        assert!(
            Instant::now() < deadline,
            "the purge event never reached instance 0"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_request_through_one_instance_invalidates_the_url_on_every_instance() {
    if !require_redis(
        "an_unsafe_request_through_one_instance_invalidates_the_url_on_every_instance",
    ) {
        return;
    }
    let redis = Arc::new(RedisServer::start().await);
    let fleet = fleet(2, Some(tier(&redis.url())), Duration::ZERO, Backend::Moka).await;
    fleet.get(0, "/doc").await;
    until_written(exists_in(&redis, url_key("/doc")), "/doc").await;
    assert!(fleet.get(1, "/doc").await.is_hit());

    // A successful POST through instance 0 (RFC 9111 4.4).
    let url = format!("http://{}/doc", fleet.proxies[0].addr);
    let resp = fleet
        .client
        .post(url)
        .header("host", SITE)
        .body("x")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let deadline = Instant::now() + Duration::from_secs(5);
    while fleet.holds(1, "/doc") || holds_record(&redis, &url_key("/doc")).await {
        assert!(
            Instant::now() < deadline,
            "the invalidation never reached instance 1 and Redis"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!fleet.holds(0, "/doc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_is_refreshed_from_another_instances_fresher_copy() {
    if !require_redis("a_stale_entry_is_refreshed_from_another_instances_fresher_copy") {
        return;
    }
    let redis = Arc::new(RedisServer::start().await);
    let fleet = fleet(2, Some(tier(&redis.url())), Duration::ZERO, Backend::Rwlock).await;
    // Three seconds of freshness: time enough, on a loaded machine, to find the fresh copy.
    let path = "/s?cc=max-age%3D3";
    fleet.get(0, path).await;
    until_written(exists_in(&redis, url_key(path)), path).await;
    assert!(fleet.get(1, path).await.is_hit());
    assert_eq!(fleet.origin_requests(), 1);
    // Both copies go stale; instance 0 refetches and writes the fresh one to the tier.
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let refreshed = fleet.get(0, path).await;
    assert!(!refreshed.is_hit(), "{}", refreshed.cache_status());
    assert_eq!(fleet.origin_requests(), 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // The tier's copy is the new one, fresh for three seconds.
        let r = fleet.get(1, path).await;
        if is_shared_hit(&r) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "instance 1 never took the fresher copy: {}",
            r.cache_status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fleet.origin_requests(),
        2,
        "instance 1 revalidated nothing itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stay_local_and_records_expire_with_their_freshness() {
    if !require_redis("large_bodies_stay_local_and_records_expire_with_their_freshness") {
        return;
    }
    let redis = Arc::new(RedisServer::start().await);
    let mut config = tier(&redis.url());
    config.max_object_size = 16 << 10;
    let fleet = fleet(2, Some(config), Duration::ZERO, Backend::Moka).await;
    fleet.get(0, "/big?size=32KiB").await;
    fleet
        .get(
            0,
            "/small?size=1KiB&cc=max-age%3D100%2C+stale-while-revalidate%3D50",
        )
        .await;
    until_written(
        exists_in(
            &redis,
            url_key("/small?size=1KiB&cc=max-age%3D100%2C+stale-while-revalidate%3D50"),
        ),
        "/small",
    )
    .await;
    let ttl: i64 = redis
        .cmd(&[
            "TTL",
            &url_key("/small?size=1KiB&cc=max-age%3D100%2C+stale-while-revalidate%3D50"),
        ])
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(
        (140..=150).contains(&ttl),
        "TTL {ttl}: freshness 100 s plus 50 s stale window"
    );
    assert_eq!(
        redis
            .cmd(&["EXISTS", &url_key("/big?size=32KiB")])
            .await
            .trim(),
        "0"
    );
    let big = fleet.get(1, "/big?size=32KiB").await;
    assert!(!big.is_hit(), "{}", big.cache_status());
    assert_eq!(big.body.len(), 32 << 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refusing_writes_costs_requests_nothing() {
    if !require_redis("a_full_redis_refusing_writes_costs_requests_nothing") {
        return;
    }
    // 2 MiB (an empty server takes about 0.9) and no eviction: once full, every write is
    // refused with OOM.
    let redis = Arc::new(
        RedisServer::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]).await,
    );
    let fleet = fleet(2, Some(tier(&redis.url())), Duration::ZERO, Backend::Moka).await;
    for n in 0..400 {
        let r = fleet.get(n % 2, &format!("/full/{n}?size=8KiB")).await;
        assert_eq!(r.status, 200, "request {n}");
        assert_eq!(r.body.len(), 8 << 10);
    }
    let used: u64 = redis.dbsize().await;
    assert!(used < 400, "Redis refused some writes ({used} keys)");
    // What it holds is still shared: refused writes do not open the circuit breaker, so the
    // other instance's lookups go on.
    let keys = redis.cmd(&["KEYS", "cachet:r:*"]).await;
    let prefix = format!("cachet:r:http://{SITE}/full/");
    let fetched_by_0 = keys
        .lines()
        .filter_map(|k| {
            k.strip_prefix(&prefix)?
                .split('?')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .find(|n| n % 2 == 0)
        .expect("some records of instance 0 were written");
    let r = fleet
        .get(1, &format!("/full/{fetched_by_0}?size=8KiB"))
        .await;
    assert!(is_shared_hit(&r), "{}", r.cache_status());
    assert!(!fleet.proxies[1].proxy.shared().unwrap().is_open());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_on_its_way_during_a_purge_does_not_bring_the_url_back() {
    if !require_redis("a_fill_on_its_way_during_a_purge_does_not_bring_the_url_back") {
        return;
    }
    let redis = Arc::new(RedisServer::start().await);
    let fleet = Arc::new(fleet(2, Some(tier(&redis.url())), Duration::ZERO, Backend::Moka).await);
    // Instance 1 fetches a slow URL; while its fill is on its way, instance 0 purges the URL.
    let path = "/racing?latency=400ms";
    let filling = {
        let fleet = Arc::clone(&fleet);
        tokio::spawn(async move { fleet.get(1, path).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let answer = fleet
        .purge(0, "url=http%3A%2F%2Fsite.test%2Fracing%3Flatency%3D400ms")
        .await;
    assert!(answer["shared"].is_object(), "{answer}");
    let served = filling.await.unwrap();
    assert_eq!(served.status, 200, "the requester still gets its response");
    // Give the fill's write every chance to land: the tier and both stores stay without it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !holds_record(&redis, &url_key(path)).await,
        "a fill sent before the purge was written after it"
    );
    assert!(
        !fleet.holds(1, path),
        "instance 1 kept a fill the purge voided"
    );
    let before = fleet.origin_requests();
    let next = fleet.get(0, path).await;
    assert!(!next.is_hit(), "{}", next.cache_status());
    assert_eq!(fleet.origin_requests(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_that_cannot_be_shared_releases_the_other_instances_at_its_head() {
    if !require_redis("a_fill_that_cannot_be_shared_releases_the_other_instances_at_its_head") {
        return;
    }
    let redis = Arc::new(RedisServer::start().await);
    let fleet = Arc::new(fleet(2, Some(tier(&redis.url())), Duration::ZERO, Backend::Moka).await);
    // no-store, and a body that takes 2 s to arrive after its head.
    let path = "/unshared?cc=no-store&drip=700ms&size=64KiB";
    let first = {
        let fleet = Arc::clone(&fleet);
        tokio::spawn(async move { fleet.get(0, path).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let second = fleet.get_with(1, path, &[]);
    // Only the head is awaited: the second instance must not wait for the first one's body.
    let url = format!("http://{}{path}", fleet.proxies[1].addr);
    drop(second);
    let resp = fleet
        .client
        .get(url)
        .header("host", SITE)
        .send()
        .await
        .unwrap();
    let head_after = started.elapsed();
    assert_eq!(resp.status(), 200);
    eprintln!("second instance's head after {head_after:?}");
    assert!(
        head_after < Duration::from_millis(1500),
        "the second instance waited {head_after:?} for a fill it could not share"
    );
    assert_eq!(first.await.unwrap().status, 200);
}
