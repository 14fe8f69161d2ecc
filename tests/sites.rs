//! Several sites on one listener, each with its upstream servers and cache rules, against real
//! origins on loopback: host routing and 421, entries never shared between sites, a failing
//! server skipped, default lifetimes by status, bypass by path and cookie, ignored query
//! parameters, and the Host sent upstream.

mod common;
#[allow(dead_code)] // each test binary uses a part of the support module
mod forwarding_support;

use std::path::Path;
use std::time::Duration;

use cachet::config::sites::{parse_sites, SiteDefaults};
use cachet::config::ServeConfig;
use cachet::origin::{Origin, OriginConfig};
use cachet::policy::StoreRules;
use cachet::server::{self, Running};
use cachet::upstream::UpstreamConfig;
use common::{client, start_origin, Reply};
use tokio_util::sync::CancellationToken;

/// Two origins, so that a test can tell which one answered.
async fn origins() -> ((Origin, CancellationToken), (Origin, CancellationToken)) {
    let config = || OriginConfig {
        latency: Duration::from_millis(2),
        body_size: 64,
        max_age: 3600,
    };
    (start_origin(config()).await, start_origin(config()).await)
}

/// A proxy serving the `[[site]]` tables of `toml`.
async fn proxy_with_sites(toml: &str) -> Running {
    let mut config = ServeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        "http://127.0.0.1:1".parse().unwrap(),
    );
    let mut template = UpstreamConfig::new("http://127.0.0.1:1".parse().unwrap());
    template.servers.clear();
    template.connect_timeout = Duration::from_secs(2);
    let defaults = SiteDefaults {
        upstream: template,
        store: StoreRules::default(),
    };
    config.sites = parse_sites(Path::new("test.toml"), toml, &defaults).expect("valid sites");
    server::start(config).await.expect("proxy starts")
}

async fn get(proxy: &Running, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client()
        .get(format!("http://{}{}", proxy.addr, path))
        .header("host", host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    Reply::read(req.send().await.expect("proxy answers")).await
}

#[tokio::test]
async fn two_sites_on_one_listener_reach_their_own_origins_and_never_share_entries() {
    let ((a, _sa), (b, _sb)) = origins().await;
    let proxy = proxy_with_sites(&format!(
        r#"
        [[site]]
        name = "a"
        hosts = ["a.test", "*.a.test"]
        upstream = "http://{}"
        [[site]]
        name = "b"
        hosts = ["b.test"]
        upstream = "http://{}"
        "#,
        a.addr, b.addr
    ))
    .await;

    let first_a = get(&proxy, "a.test", "/same", &[]).await;
    let first_b = get(&proxy, "b.test", "/same", &[]).await;
    assert_eq!((first_a.status, first_b.status), (200, 200));
    assert!(
        !first_b.is_hit(),
        "b's /same is not a's: {}",
        first_b.cache_status()
    );
    assert_eq!(
        (a.stats.requests(), b.stats.requests()),
        (1, 1),
        "each site asked its own origin"
    );

    let again_a = get(&proxy, "a.test", "/same", &[]).await;
    let again_b = get(&proxy, "b.test:80", "/same", &[]).await;
    assert!(
        again_a.is_hit() && again_b.is_hit(),
        "{} / {}",
        again_a.cache_status(),
        again_b.cache_status()
    );
    let www = get(&proxy, "www.a.test", "/same", &[]).await;
    assert_eq!(www.status, 200);
    assert_eq!(
        (a.stats.requests(), b.stats.requests()),
        (2, 1),
        "a wildcard host is site a, with its own key"
    );

    // No site names this host and none is the default: 421, and no origin is asked.
    let stray = get(&proxy, "c.test", "/same", &[]).await;
    assert_eq!(
        stray.status,
        421,
        "{}",
        String::from_utf8_lossy(&stray.body)
    );
    assert!(String::from_utf8_lossy(&stray.body).contains("no site is configured for host c.test"));
    assert_eq!((a.stats.requests(), b.stats.requests()), (2, 1));

    let keys: Vec<String> = proxy
        .store()
        .keys_where(&|_| true)
        .into_iter()
        .map(|k| k.as_str().to_string())
        .collect();
    assert!(keys.contains(&"http://a.test/same".to_string()), "{keys:?}");
    assert!(keys.contains(&"http://b.test/same".to_string()), "{keys:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_default_site_takes_the_hosts_no_site_names() {
    let ((a, _sa), (b, _sb)) = origins().await;
    let proxy = proxy_with_sites(&format!(
        r#"
        [[site]]
        name = "a"
        hosts = ["a.test"]
        upstream = "http://{}"
        [[site]]
        name = "rest"
        default = true
        upstream = "http://{}"
        "#,
        a.addr, b.addr
    ))
    .await;
    assert_eq!(get(&proxy, "anything.test", "/x", &[]).await.status, 200);
    assert_eq!(get(&proxy, "a.test", "/x", &[]).await.status, 200);
    assert_eq!((a.stats.requests(), b.stats.requests()), (1, 1));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_server_that_refuses_connections_is_skipped_and_no_request_fails() {
    let (a, _sa) = start_origin(OriginConfig {
        latency: Duration::ZERO,
        body_size: 64,
        max_age: 3600,
    })
    .await;
    // A port nothing listens on: bound, then closed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = proxy_with_sites(&format!(
        r#"
        [[site]]
        name = "pair"
        default = true
        upstream = ["http://{dead}", "http://{}"]
        fail_timeout = "30s"
        "#,
        a.addr
    ))
    .await;
    for i in 0..12 {
        let reply = get(&proxy, "pair.test", &format!("/k{i}"), &[]).await;
        assert_eq!(
            reply.status,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    assert_eq!(
        a.stats.requests(),
        12,
        "every request reached the live server"
    );
    let sites = proxy.proxy.sites();
    let upstream = sites.all()[0].upstream();
    assert!(upstream.is_skipped(0), "the dead server is being skipped");
    assert!(!upstream.is_skipped(1));
    // What /stats shows the operator.
    let report = cachet::admin::sites_report(&proxy.proxy);
    assert_eq!(report[0]["name"], "pair");
    assert_eq!(report[0]["servers"][0]["skipped"], true, "{report}");
    assert_eq!(report[0]["servers"][1]["skipped"], false, "{report}");
    // A request with a body cannot be retried on the next server (its body went with the
    // first attempt); with the dead server skipped it goes to the live one.
    let post = client()
        .post(format!("http://{}/p", proxy.addr))
        .header("host", "pair.test")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    proxy.shutdown().await;
}

#[tokio::test]
async fn every_server_down_is_a_502_that_names_the_failure_and_stores_nothing() {
    let dead1 = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead2 = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = proxy_with_sites(&format!(
        r#"
        [[site]]
        name = "down"
        default = true
        upstream = ["http://{dead1}", "http://{dead2}"]
        "#
    ))
    .await;
    for _ in 0..3 {
        let reply = get(&proxy, "down.test", "/x", &[]).await;
        assert_eq!(reply.status, 502);
        assert!(String::from_utf8_lossy(&reply.body).contains("upstream unreachable"));
    }
    assert_eq!(proxy.store().entry_count(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn cache_valid_gives_a_lifetime_to_responses_that_state_none() {
    let ((a, _sa), _) = origins().await;
    let proxy = proxy_with_sites(&format!(
        r#"
        [[site]]
        name = "a"
        hosts = ["a.test"]
        upstream = "http://{}"
        cache_valid = {{ "200" = "60s", "404" = "10s" }}
        [[site]]
        name = "plain"
        hosts = ["plain.test"]
        upstream = "http://{}"
        "#,
        a.addr, a.addr
    ))
    .await;
    // No Cache-Control, no Expires, no Last-Modified: storable only by the site's rule.
    let path = "/bare?cc=";
    let first = get(&proxy, "a.test", path, &[]).await;
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    let second = get(&proxy, "a.test", path, &[]).await;
    assert!(second.is_hit(), "{}", second.cache_status());
    assert!(
        second.cache_status().contains("ttl=5") || second.cache_status().contains("ttl=60"),
        "{}",
        second.cache_status()
    );
    let missing = "/gone?cc=&status=404";
    get(&proxy, "a.test", missing, &[]).await;
    let missing_again = get(&proxy, "a.test", missing, &[]).await;
    assert_eq!(missing_again.status, 404);
    assert!(missing_again.is_hit(), "{}", missing_again.cache_status());
    assert_eq!(a.stats.requests(), 2);
    // The same responses on a site without the rule are not stored.
    get(&proxy, "plain.test", path, &[]).await;
    let plain = get(&proxy, "plain.test", path, &[]).await;
    assert!(!plain.is_hit(), "{}", plain.cache_status());
    assert_eq!(a.stats.requests(), 4);
    // The rule never overrides what the response forbids.
    get(&proxy, "a.test", "/private?cc=private", &[]).await;
    let private = get(&proxy, "a.test", "/private?cc=private", &[]).await;
    assert!(!private.is_hit(), "{}", private.cache_status());
    proxy.shutdown().await;
}

#[tokio::test]
async fn bypass_paths_and_cookies_go_upstream_every_time_and_are_never_stored() {
    let ((a, _sa), _) = origins().await;
    let proxy = proxy_with_sites(&format!(
        r#"
        [[site]]
        name = "a"
        default = true
        upstream = "http://{}"
        bypass_paths = ["/admin/"]
        bypass_cookies = ["session", "wp_logged_in_*"]
        "#,
        a.addr
    ))
    .await;
    for path in [
        "/admin/users",
        "/%61dmin/users",
        "//admin/users",
        "/x/../admin/users",
    ] {
        let before = a.stats.requests();
        let reply = get(&proxy, "a.test", path, &[]).await;
        assert_eq!(reply.status, 200);
        assert!(
            reply.cache_status().contains("fwd=bypass"),
            "{path}: {}",
            reply.cache_status()
        );
        assert!(
            reply.cache_status().contains("bypass-path"),
            "{path}: {}",
            reply.cache_status()
        );
        assert_eq!(a.stats.requests(), before + 1, "{path} went upstream");
    }
    // A cookie named in the rules bypasses; the same URL without it is cached as usual.
    for cookie in ["session=1", "a=1; wp_logged_in_42=x"] {
        let reply = get(&proxy, "a.test", "/page", &[("cookie", cookie)]).await;
        assert!(
            reply.cache_status().contains("bypass-cookie"),
            "{cookie}: {}",
            reply.cache_status()
        );
    }
    get(&proxy, "a.test", "/page", &[("cookie", "theme=dark")]).await;
    let hit = get(&proxy, "a.test", "/page", &[]).await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    let bypassed_again = get(&proxy, "a.test", "/page", &[("cookie", "session=2")]).await;
    assert!(
        !bypassed_again.is_hit(),
        "a bypassed request is not served from the store"
    );
    let keys: Vec<String> = proxy
        .store()
        .keys_where(&|_| true)
        .into_iter()
        .map(|k| k.as_str().to_string())
        .collect();
    assert_eq!(keys, ["http://a.test/page"], "nothing bypassed was stored");
    proxy.shutdown().await;
}

#[tokio::test]
async fn ignored_query_parameters_share_one_entry_and_are_not_sent_upstream() {
    let origin = forwarding_support::RawOrigin::start(forwarding_support::BodyMode::Read).await;
    let proxy = proxy_with_sites(&format!(
        r#"
        [[site]]
        name = "a"
        default = true
        upstream = "http://{}"
        ignore_query = ["utm_*", "fbclid"]
        "#,
        origin.addr
    ))
    .await;
    let first = get(&proxy, "a.test", "/p?id=7&utm_source=mail&fbclid=x", &[]).await;
    assert_eq!(first.status, 200);
    let second = get(&proxy, "a.test", "/p?utm_campaign=z&id=7", &[]).await;
    assert!(second.is_hit(), "{}", second.cache_status());
    let other = get(&proxy, "a.test", "/p?id=8&utm_source=mail", &[]).await;
    assert!(!other.is_hit(), "id is part of the key");
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    // The upstream is asked for what the key names: an ignored parameter it read anyway (or a
    // `;`-joined one hidden in it) cannot change the stored answer.
    assert_eq!(seen[0].target, "/p?id=7");
    get(&proxy, "a.test", "/p?id=9&utm_source=x;id=evil", &[]).await;
    assert_eq!(origin.seen()[2].target, "/p?id=9");
    get(&proxy, "a.test", "/q?utm_source=only", &[]).await;
    assert_eq!(origin.seen()[3].target, "/q");
    let keys: Vec<String> = proxy
        .store()
        .keys_where(&|_| true)
        .into_iter()
        .map(|k| k.as_str().to_string())
        .collect();
    assert!(
        keys.contains(&"http://a.test/p?id=7".to_string()),
        "{keys:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_host_is_the_host_the_origin_sees_and_the_key_keeps_the_request_host() {
    let origin = forwarding_support::RawOrigin::start(forwarding_support::BodyMode::Read).await;
    let proxy = proxy_with_sites(&format!(
        r#"
        [[site]]
        name = "a"
        hosts = ["a.test", "www.a.test"]
        upstream = "http://{}"
        upstream_host = "origin.internal"
        "#,
        origin.addr
    ))
    .await;
    assert_eq!(get(&proxy, "www.a.test", "/h", &[]).await.status, 200);
    let seen = origin.seen();
    assert_eq!(seen[0].header_values("host"), ["origin.internal"]);
    let keys: Vec<String> = proxy
        .store()
        .keys_where(&|_| true)
        .into_iter()
        .map(|k| k.as_str().to_string())
        .collect();
    assert_eq!(keys, ["http://www.a.test/h"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn cookies_an_h2_client_sends_as_separate_fields_reach_the_origin_as_one() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let origin = forwarding_support::RawOrigin::start(forwarding_support::BodyMode::Read).await;
    let proxy = proxy_with_sites(&format!(
        "[[site]]\nname = \"a\"\ndefault = true\nupstream = \"http://{}\"\n",
        origin.addr
    ))
    .await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("http://a.test/c")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;
    let seen = origin.seen();
    assert_eq!(seen[0].header_values("cookie"), ["a=1; b=2"]);
    proxy.shutdown().await;
}
