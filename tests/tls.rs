//! TLS on both sides with certificates made in the test (rcgen): an https origin verified
//! against a test CA, one whose certificate no trusted CA issued (502 with the reason), the
//! explicit opt-out, and the TLS listener with ALPN (an h2 client gets a hit; http/1.1 still
//! works), its `https://` keys, and its certificate replaced without a restart.

mod common;
mod tls_support;

use std::path::Path;
use std::time::Duration;

use cachet::config::sites::{parse_sites, SiteDefaults};
use cachet::config::{ServeConfig, TlsListen};
use cachet::policy::StoreRules;
use cachet::server::{self, Running};
use cachet::tls::CertFiles;
use cachet::upstream::UpstreamConfig;
use common::{client, start_origin, Reply};
use tls_support::{self_signed, write_files, HttpsOrigin, TempDir, TestCa, TlsClient};

/// A proxy whose one site is `site` (the keys of a `[[site]]` table, `name` and `default`
/// added), and a TLS listener when `tls` is given.
async fn proxy(site: &str, tls: Option<CertFiles>) -> Running {
    proxy_with(site, tls, Duration::from_secs(2)).await
}

/// [`proxy`] with this connect timeout (TCP and TLS set-up together).
async fn proxy_with(site: &str, tls: Option<CertFiles>, connect_timeout: Duration) -> Running {
    let mut config = ServeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        "http://127.0.0.1:1".parse().unwrap(),
    );
    let mut template = UpstreamConfig::new("http://127.0.0.1:1".parse().unwrap());
    template.servers.clear();
    template.connect_timeout = connect_timeout;
    let defaults = SiteDefaults {
        upstream: template,
        store: StoreRules::default(),
    };
    let toml = format!("[[site]]\nname = \"s\"\ndefault = true\n{site}\n");
    config.sites = parse_sites(Path::new("test.toml"), &toml, &defaults).expect("valid site");
    config.tls = tls.map(|files| TlsListen {
        listen: "127.0.0.1:0".parse().unwrap(),
        files,
    });
    server::start(config).await.expect("proxy starts")
}

async fn get(proxy: &Running, host: &str, path: &str) -> Reply {
    let req = client()
        .get(format!("http://{}{}", proxy.addr, path))
        .header("host", host);
    Reply::read(req.send().await.expect("proxy answers")).await
}

#[tokio::test]
async fn an_https_upstream_is_verified_against_the_given_ca_and_sent_sni() {
    let dir = TempDir::new();
    let ca = TestCa::new("origin test CA");
    let origin = HttpsOrigin::start(&ca.issue(&["localhost", "127.0.0.1"]), "over tls");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let proxy = proxy(
        &format!(
            "upstream = \"https://localhost:{}\"\nupstream_ca = {:?}",
            origin.addr.port(),
            ca_file
        ),
        None,
    )
    .await;
    let first = get(&proxy, "shop.test", "/a").await;
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(first.body, b"over tls");
    let second = get(&proxy, "shop.test", "/a").await;
    assert!(second.is_hit(), "{}", second.cache_status());
    assert_eq!(origin.hits(), 1);
    assert_eq!(
        origin.last_sni().as_deref(),
        Some("localhost"),
        "SNI is the server's name"
    );
    assert_eq!(
        origin.last_host().as_deref(),
        Some("shop.test"),
        "Host is the request's"
    );
    // Pooled: a second miss reuses the TLS connection.
    get(&proxy, "shop.test", "/b").await;
    assert_eq!(origin.hits(), 2);
    assert_eq!(
        origin.handshakes(),
        1,
        "one TLS connection for both exchanges"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_upstream_certificate_no_trusted_ca_issued_is_a_502_with_the_reason() {
    let dir = TempDir::new();
    let trusted = TestCa::new("the CA cachet trusts");
    let other = TestCa::new("some other CA");
    let origin = HttpsOrigin::start(&other.issue(&["localhost"]), "impostor");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, trusted.cert_pem()).unwrap();
    let proxy = proxy(
        &format!(
            "upstream = \"https://localhost:{}\"\nupstream_ca = {:?}",
            origin.addr.port(),
            ca_file
        ),
        None,
    )
    .await;
    for _ in 0..2 {
        let reply = get(&proxy, "shop.test", "/a").await;
        assert_eq!(reply.status, 502);
        let body = String::from_utf8_lossy(&reply.body).to_string();
        assert!(
            body.contains("invalid peer certificate") && body.contains("UnknownIssuer"),
            "{body}"
        );
    }
    assert_eq!(
        origin.hits(),
        0,
        "no request was sent over the unverified connection"
    );
    assert_eq!(proxy.store().entry_count(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_and_only_the_named_opt_out_accepts_it() {
    let dir = TempDir::new();
    let cert = self_signed(&["elsewhere.test"]);
    let origin = HttpsOrigin::start(&cert, "self-signed");
    // Trusted as a CA, but it names another host than the one connected to.
    let ca_file = dir.path().join("self.pem");
    std::fs::write(&ca_file, &cert.cert_pem).unwrap();
    let strict = proxy(
        &format!(
            "upstream = \"https://localhost:{}\"\nupstream_ca = {:?}",
            origin.addr.port(),
            ca_file
        ),
        None,
    )
    .await;
    let refused = get(&strict, "shop.test", "/a").await;
    assert_eq!(
        refused.status,
        502,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let body = String::from_utf8_lossy(&refused.body).to_string();
    assert!(body.contains("not valid for name"), "{body}");
    assert_eq!(origin.hits(), 0);
    strict.shutdown().await;

    let lax = proxy(
        &format!(
            "upstream = \"https://localhost:{}\"\nupstream_insecure_skip_tls_verify = true",
            origin.addr.port()
        ),
        None,
    )
    .await;
    let accepted = get(&lax, "shop.test", "/a").await;
    assert_eq!(accepted.status, 200);
    assert_eq!(accepted.body, b"self-signed");
    lax.shutdown().await;
}

/// A plain origin, a proxy with a TLS listener whose certificate `ca` issued for localhost.
async fn tls_listener_stack(
    dir: &TempDir,
    ca: &TestCa,
) -> (
    Running,
    cachet::origin::Origin,
    tokio_util::sync::CancellationToken,
    CertFiles,
) {
    let (origin, stop) = start_origin(cachet::origin::OriginConfig {
        latency: Duration::from_millis(2),
        body_size: 512,
        max_age: 3600,
    })
    .await;
    let (cert, key) = write_files(
        dir.path(),
        "listener",
        &ca.issue(&["localhost", "127.0.0.1"]),
    );
    let files = CertFiles { cert, key };
    let proxy = proxy(
        &format!("upstream = \"http://{}\"", origin.addr),
        Some(files.clone()),
    )
    .await;
    (proxy, origin, stop, files)
}

#[tokio::test]
async fn an_h2_client_over_tls_negotiates_h2_by_alpn_and_gets_a_hit() {
    let dir = TempDir::new();
    let ca = TestCa::new("listener CA");
    let (proxy, origin, _stop, _) = tls_listener_stack(&dir, &ca).await;
    let tls_addr = proxy.tls_addr.expect("a TLS listener");

    let mut h2 = TlsClient::connect(tls_addr, &ca.cert_pem(), "localhost", &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(h2.alpn(), Some(&b"h2"[..]));
    let miss = h2.get("/page", "shop.test").await.unwrap();
    assert_eq!(miss.version, http::Version::HTTP_2);
    assert_eq!(miss.status, 200);
    assert!(!miss.header("cache-status").unwrap_or("").contains("; hit"));
    let hit = h2.get("/page", "shop.test").await.unwrap();
    assert!(
        hit.header("cache-status").unwrap_or("").contains("; hit"),
        "{:?}",
        hit.headers
    );
    assert_eq!(hit.body, miss.body);
    assert_eq!(origin.stats.requests(), 1);

    // http/1.1 by ALPN on the same listener, and the same https:// entry.
    let mut h1 = TlsClient::connect(tls_addr, &ca.cert_pem(), "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let hit1 = h1.get("/page", "shop.test").await.unwrap();
    assert_eq!(hit1.version, http::Version::HTTP_11);
    assert!(hit1.header("cache-status").unwrap_or("").contains("; hit"));

    // The plain listener keys http://: the same URL is another entry there.
    let plain = get(&proxy, "shop.test", "/page").await;
    assert!(!plain.is_hit(), "{}", plain.cache_status());
    assert_eq!(origin.stats.requests(), 2);
    let keys: Vec<String> = proxy
        .store()
        .keys_where(&|_| true)
        .into_iter()
        .map(|k| k.as_str().to_string())
        .collect();
    assert!(
        keys.contains(&"https://shop.test/page".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"http://shop.test/page".to_string()),
        "{keys:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_client_that_sends_no_handshake_is_dropped_and_the_listener_goes_on() {
    let dir = TempDir::new();
    let ca = TestCa::new("listener CA");
    let (proxy, _origin, _stop, _) = tls_listener_stack(&dir, &ca).await;
    let tls_addr = proxy.tls_addr.unwrap();
    // Plain HTTP on the TLS port is not a handshake: the connection is closed.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "closed, not left hanging"
    );
    let ok = TlsClient::connect(tls_addr, &ca.cert_pem(), "localhost", &[b"h2"])
        .await
        .unwrap()
        .get("/after", "shop.test")
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_listener_certificate_is_replaced_by_a_reload_and_a_bad_one_is_refused() {
    let dir = TempDir::new();
    let first_ca = TestCa::new("first CA");
    let (proxy, _origin, _stop, files) = tls_listener_stack(&dir, &first_ca).await;
    let tls_addr = proxy.tls_addr.unwrap();
    let reloader = proxy.reloader();
    // An h2 connection opened before the reload goes on serving after it.
    let mut before = TlsClient::connect(tls_addr, &first_ca.cert_pem(), "localhost", &[b"h2"])
        .await
        .unwrap();
    assert_eq!(before.get("/x", "shop.test").await.unwrap().status, 200);

    let second_ca = TestCa::new("second CA");
    write_files(dir.path(), "listener", &second_ca.issue(&["localhost"]));
    let report = reloader.reload();
    assert!(report.is_ok(), "{report:?}");
    let fresh = TlsClient::connect(tls_addr, &second_ca.cert_pem(), "localhost", &[b"h2"]).await;
    assert!(
        fresh.is_ok(),
        "new handshakes use the new certificate: {:?}",
        fresh.err()
    );
    let stale = TlsClient::connect(tls_addr, &first_ca.cert_pem(), "localhost", &[b"h2"]).await;
    assert!(stale.is_err(), "the old certificate is no longer offered");
    assert_eq!(before.get("/y", "shop.test").await.unwrap().status, 200);

    // A key that does not belong to the certificate: refused, the running one kept.
    let stranger = second_ca.issue(&["localhost"]);
    std::fs::write(&files.key, stranger.key_pem).unwrap();
    let report = reloader.reload();
    let refused = report.certificate.expect("a TLS listener").unwrap_err();
    assert!(
        refused.contains("listener.crt") || refused.contains("listener.key"),
        "{refused}"
    );
    std::fs::write(&files.cert, "not a certificate").unwrap();
    let refused = reloader.reload().certificate.unwrap().unwrap_err();
    assert!(refused.contains("listener.crt"), "{refused}");
    let still = TlsClient::connect(tls_addr, &second_ca.cert_pem(), "localhost", &[b"h2"]).await;
    assert!(
        still.is_ok(),
        "the running certificate was kept: {:?}",
        still.err()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_site_with_its_own_certificate_is_offered_it_by_sni() {
    let dir = TempDir::new();
    let listener_ca = TestCa::new("listener CA");
    let shop_ca = TestCa::new("shop CA");
    let (cert, key) = write_files(dir.path(), "listener", &listener_ca.issue(&["localhost"]));
    let (shop_cert, shop_key) = write_files(
        dir.path(),
        "shop",
        &shop_ca.issue(&["shop.test", "www.shop.test"]),
    );
    let (origin, _stop) = start_origin(cachet::origin::OriginConfig {
        latency: Duration::ZERO,
        body_size: 64,
        max_age: 3600,
    })
    .await;
    let mut config = ServeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        "http://127.0.0.1:1".parse().unwrap(),
    );
    let mut template = UpstreamConfig::new("http://127.0.0.1:1".parse().unwrap());
    template.servers.clear();
    let defaults = SiteDefaults {
        upstream: template,
        store: StoreRules::default(),
    };
    let toml = format!(
        "[[site]]\nname = \"shop\"\nhosts = [\"shop.test\", \"*.shop.test\"]\nupstream = \"http://{o}\"\ntls_cert = {shop_cert:?}\ntls_key = {shop_key:?}\n\
         [[site]]\nname = \"rest\"\ndefault = true\nupstream = \"http://{o}\"\n",
        o = origin.addr
    );
    config.sites = parse_sites(Path::new("test.toml"), &toml, &defaults).unwrap();
    config.tls = Some(TlsListen {
        listen: "127.0.0.1:0".parse().unwrap(),
        files: CertFiles { cert, key },
    });
    let proxy = server::start(config).await.unwrap();
    let tls_addr = proxy.tls_addr.unwrap();
    let mut shop = TlsClient::connect(tls_addr, &shop_ca.cert_pem(), "shop.test", &[b"h2"])
        .await
        .expect("shop.test gets the shop's certificate");
    assert_eq!(shop.get("/", "shop.test").await.unwrap().status, 200);
    TlsClient::connect(tls_addr, &shop_ca.cert_pem(), "www.shop.test", &[b"h2"])
        .await
        .expect("a wildcard host of the site gets it too");
    TlsClient::connect(tls_addr, &listener_ca.cert_pem(), "localhost", &[b"h2"])
        .await
        .expect("other names get the listener's certificate");
    let wrong = TlsClient::connect(tls_addr, &listener_ca.cert_pem(), "shop.test", &[b"h2"]).await;
    assert!(
        wrong.is_err(),
        "shop.test is not offered the listener's certificate"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_server_that_stalls_the_tls_handshake_is_skipped_like_a_refused_one() {
    let dir = TempDir::new();
    let ca = TestCa::new("origin CA");
    let good = HttpsOrigin::start(&ca.issue(&["localhost"]), "good");
    // Accepts TCP, then never answers the ClientHello.
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_port = stall.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = stall.accept().await {
            open.push(sock);
        }
    });
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let proxy = proxy_with(
        &format!(
            "upstream = [\"https://localhost:{stall_port}\", \"https://localhost:{}\"]\nupstream_ca = {:?}\nfail_timeout = \"60s\"",
            good.addr.port(),
            ca_file
        ),
        None,
        Duration::from_millis(300),
    )
    .await;
    let started = std::time::Instant::now();
    for i in 0..6 {
        let reply = get(&proxy, "shop.test", &format!("/k{i}")).await;
        assert_eq!(
            reply.status,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    assert_eq!(good.hits(), 6);
    let sites = proxy.proxy.sites();
    assert!(
        sites.all()[0].upstream().is_skipped(0),
        "the stalling server is skipped"
    );
    // One handshake timeout at most, not one per request.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    held.abort();
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_host_is_the_tls_name_of_servers_reached_by_address() {
    let dir = TempDir::new();
    let ca = TestCa::new("origin CA");
    // The certificate names the host only, not the address the server is reached at.
    let origin = HttpsOrigin::start(&ca.issue(&["origin.internal"]), "by name");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let proxy = proxy(
        &format!(
            "upstream = \"https://127.0.0.1:{}\"\nupstream_host = \"origin.internal:{}\"\nupstream_ca = {:?}",
            origin.addr.port(),
            origin.addr.port(),
            ca_file
        ),
        None,
    )
    .await;
    let reply = get(&proxy, "shop.test", "/a").await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(origin.last_sni().as_deref(), Some("origin.internal"));
    assert_eq!(
        origin.last_host(),
        Some(format!("origin.internal:{}", origin.addr.port()))
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_purge_on_either_listener_removes_both_schemes_copies() {
    let dir = TempDir::new();
    let ca = TestCa::new("listener CA");
    let (origin, _stop) = start_origin(cachet::origin::OriginConfig {
        latency: Duration::ZERO,
        body_size: 64,
        max_age: 3600,
    })
    .await;
    let (cert, key) = write_files(dir.path(), "listener", &ca.issue(&["localhost"]));
    let mut config = ServeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        format!("http://{}", origin.addr).parse().unwrap(),
    );
    config.allow_purge_from = vec!["127.0.0.1/32".parse().unwrap()];
    config.tls = Some(TlsListen {
        listen: "127.0.0.1:0".parse().unwrap(),
        files: CertFiles { cert, key },
    });
    let proxy = server::start(config).await.unwrap();
    let mut h2 = TlsClient::connect(
        proxy.tls_addr.unwrap(),
        &ca.cert_pem(),
        "localhost",
        &[b"h2"],
    )
    .await
    .unwrap();
    assert_eq!(h2.get("/p", "shop.test").await.unwrap().status, 200);
    assert_eq!(get(&proxy, "shop.test", "/p").await.status, 200);
    assert_eq!(proxy.store().entry_count(), 2, "one entry per scheme");
    let purged = client()
        .request(
            reqwest::Method::from_bytes(b"PURGE").unwrap(),
            format!("http://{}/p", proxy.addr),
        )
        .header("host", "shop.test")
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&purged.text().await.unwrap()).unwrap();
    assert_eq!(body["purged"], 2, "{body}");
    assert_eq!(proxy.store().entry_count(), 0);
    proxy.shutdown().await;
}
