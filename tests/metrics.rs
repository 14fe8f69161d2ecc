//! `/metrics` over a real admin listener. The Prometheus recorder is process-wide, so this file
//! holds a single test: in its own test binary, no other server moves the counters it checks.

mod ops_support;
use ops_support as common;

use std::collections::HashMap;
use std::time::Duration;

use common::{client, eventually, origin, proxy};
use reqwest::StatusCode;

/// Parses Prometheus text exposition (version 0.0.4) strictly enough to catch a malformed line:
/// every line is blank, a `# HELP`/`# TYPE` comment, or `name{labels} value`. Returns the samples
/// keyed by `name{labels}` as written.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut types = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), _) => assert!(valid_name(name), "line {n}: {line}"),
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(valid_name(name), "line {n}: {line}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "line {n}: unknown type in {line}"
                    );
                    assert!(
                        types.insert(name.to_string(), kind).is_none(),
                        "line {n}: second TYPE for {name}"
                    );
                }
                _ => panic!("line {n}: malformed comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("line {n}: no value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "line {n}: bad metric name in {line:?}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "line {n}: bad labels in {line:?}"
            );
            for pair in labels[1..labels.len() - 1].split(',') {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("line {n}: bad label {pair:?}"));
                assert!(valid_name(k), "line {n}: bad label name {k:?}");
                assert!(
                    v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                    "line {n}: unquoted label value {v:?}"
                );
            }
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("line {n}: bad value in {line:?}")),
        };
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "line {n}: duplicate series {series}"
        );
    }
    samples
}

/// A loopback port nothing listens on (bound, then released).
async fn closed_port() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

async fn scrape(http: &reqwest::Client, admin: std::net::SocketAddr) -> HashMap<String, f64> {
    let resp = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    parse_prometheus(&resp.text().await.unwrap())
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_with_requests() {
    let (origin, _stop) = origin(Duration::from_millis(20)).await;
    let running = proxy(origin.addr, |_| {}).await;
    let admin = running.admin_addr.unwrap();
    let http = client();

    let before = scrape(&http, admin).await;
    // Every result is listed from the start, at zero.
    for result in [
        "hit",
        "miss",
        "stale",
        "revalidated",
        "coalesced",
        "bypass",
        "error",
    ] {
        let series = format!("cachet_requests_total{{result=\"{result}\"}}");
        assert_eq!(before.get(&series), Some(&0.0), "{series}");
    }
    assert_eq!(before["cachet_upstream_requests_total"], 0.0);
    assert_eq!(before["cachet_store_entries"], 0.0);
    for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
        let series = format!("cachet_responses_total{{class=\"{class}\"}}");
        assert_eq!(before.get(&series), Some(&0.0), "{series}");
    }
    for kind in ["unreachable", "timeout", "busy"] {
        let series = format!("cachet_upstream_errors_total{{kind=\"{kind}\"}}");
        assert_eq!(before.get(&series), Some(&0.0), "{series}");
    }
    assert_eq!(before["cachet_response_body_bytes_total"], 0.0);

    // One miss, two hits, one bypass.
    let url = format!("http://{}/metered", running.addr);
    for _ in 0..3 {
        let resp = http.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.bytes().await.unwrap();
    }
    http.post(format!("http://{}/other", running.addr))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    // Gauges settle once the responses' bodies are done.
    let in_flight = running.in_flight.clone();
    assert!(eventually(Duration::from_secs(5), || in_flight.get() == 0).await);

    let after = scrape(&http, admin).await;
    let delta = |series: &str| after[series] - before.get(series).copied().unwrap_or(0.0);
    assert_eq!(delta("cachet_requests_total{result=\"miss\"}"), 1.0);
    assert_eq!(delta("cachet_requests_total{result=\"hit\"}"), 2.0);
    assert_eq!(delta("cachet_requests_total{result=\"bypass\"}"), 1.0);
    // The same requests by site: `--upstream` alone is the one site called "default".
    let by_site = |result: &str| {
        let series = after
            .keys()
            .find(|k| {
                k.starts_with("cachet_site_requests_total{")
                    && k.contains("site=\"default\"")
                    && k.contains(&format!("result=\"{result}\""))
            })
            .unwrap_or_else(|| panic!("no site series for {result}"));
        delta(series)
    };
    assert_eq!(by_site("miss"), 1.0);
    assert_eq!(by_site("hit"), 2.0);
    assert_eq!(by_site("bypass"), 1.0);
    assert_eq!(delta("cachet_upstream_requests_total"), 2.0);
    assert_eq!(delta("cachet_upstream_duration_seconds_count"), 2.0);
    // Latency by result: one miss, two hits, one bypass.
    assert_eq!(
        delta("cachet_request_duration_seconds_count{result=\"miss\"}"),
        1.0
    );
    assert_eq!(
        delta("cachet_request_duration_seconds_count{result=\"hit\"}"),
        2.0
    );
    assert_eq!(
        delta("cachet_request_duration_seconds_count{result=\"bypass\"}"),
        1.0
    );
    // Four responses, all 2xx; the bodies of the three GETs (the origin's default size) and
    // the POST's were sent in full.
    assert_eq!(delta("cachet_responses_total{class=\"2xx\"}"), 4.0);
    assert_eq!(delta("cachet_responses_total{class=\"5xx\"}"), 0.0);
    assert!(
        delta("cachet_response_body_bytes_total") >= 3.0 * 1024.0,
        "{}",
        delta("cachet_response_body_bytes_total")
    );
    assert_eq!(
        delta("cachet_upstream_errors_total{kind=\"unreachable\"}"),
        0.0
    );
    // Both upstream exchanges took at least the origin's 20 ms.
    assert!(after["cachet_upstream_duration_seconds_sum"] >= 0.04);
    assert_eq!(
        after["cachet_upstream_duration_seconds_bucket{le=\"+Inf\"}"],
        after["cachet_upstream_duration_seconds_count"]
    );
    assert_eq!(
        after["cachet_upstream_duration_seconds_bucket{le=\"0.01\"}"],
        0.0
    );
    assert_eq!(
        after["cachet_store_entries"],
        running.store().entry_count() as f64
    );
    assert!(
        after["cachet_store_bytes"] > 1024.0,
        "the stored body is counted"
    );
    assert_eq!(after["cachet_requests_in_flight"], 0.0);

    // An upstream that refuses connections: one 502, counted as an `unreachable` error.
    let dead = proxy(closed_port().await, |_| {}).await;
    let resp = http
        .get(format!("http://{}/gone", dead.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    resp.bytes().await.unwrap();
    let last = scrape(&http, admin).await;
    assert_eq!(
        last["cachet_upstream_errors_total{kind=\"unreachable\"}"]
            - after["cachet_upstream_errors_total{kind=\"unreachable\"}"],
        1.0
    );
    assert!(eventually(Duration::from_secs(5), || dead.in_flight.get() == 0).await);
    let last = scrape(&http, admin).await;
    assert_eq!(
        last["cachet_responses_total{class=\"5xx\"}"]
            - after["cachet_responses_total{class=\"5xx\"}"],
        1.0
    );
    dead.shutdown().await;
    // The scrape's own admin connection is not a client connection; reqwest keeps its proxy
    // connection alive, so one is open.
    assert_eq!(
        after["cachet_connections"],
        running.connections.get() as f64
    );
    running.shutdown().await;
}
