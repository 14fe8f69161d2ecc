//! `cachet bench` end to end, in-process and bounded: the replay is honest (no backend above
//! OPT, moka's TinyLFU above LRU on a skewed, stable workload), and the HTTP level agrees with
//! the replay (within 2 points, and the origin's count equals the misses the client saw).
//! `--instances N --shared URL` runs against a real `redis-server`: the fleet shares what it
//! fetched (fewer origin requests than isolated instances) and cleans up after itself; its
//! flag errors and an unreachable Redis are clear messages from the real binary.

mod redis_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use cachet::bench::fleet::FleetOptions;
use cachet::bench::http::DriveOptions;
use cachet::bench::runner::{self, HttpOptions, Input, SimOptions};
use cachet::bench::spec::{Capacity, SizeSpec, Workload};
use cachet::shared::RedisTarget;
use cachet::store::{Backend, Eviction, MokaPolicy};
use indicatif::ProgressBar;
use redis_support::{require_redis, RedisServer};

const KEYS: u64 = 10_000;

fn input(requests: usize) -> Input {
    Input::generate(
        Workload::Zipf { alpha: 1.0 },
        KEYS,
        requests,
        SizeSpec::Fixed(4096),
        1,
    )
}

fn options() -> SimOptions {
    SimOptions {
        capacities: vec![Capacity::Percent(10.0)],
        backends: Backend::ALL.to_vec(),
        evictions: vec![Eviction::Adaptive],
        moka_policy: MokaPolicy::Tinylfu,
    }
}

#[test]
fn sim_backends_are_bounded_by_opt_and_tinylfu_beats_lru() {
    let report = runner::run_sim(&input(50_000), &options(), &ProgressBar::hidden());
    let ratio = |name: &str| {
        report
            .results
            .iter()
            .find(|r| r.backend == name)
            .unwrap_or_else(|| panic!("no {name} row"))
            .hit_ratio
    };
    let (opt, lru) = (ratio("opt"), ratio("lru"));
    eprintln!("{}", report.table());
    assert!(lru < opt, "lru {lru} opt {opt}");
    for b in Backend::ALL {
        let r = ratio(b.as_str());
        assert!(r > 0.2, "{b}: {r} is implausibly low");
        assert!(r <= opt, "{b}: {r} above OPT {opt}");
    }
    assert!(ratio("moka") > lru, "moka {} lru {lru}", ratio("moka"));
    for r in &report.results {
        assert!(r.stored_bytes.unwrap() <= r.capacity_bytes, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_agrees_with_sim_and_the_origin_count() {
    let options = HttpOptions {
        sim: options(),
        drive: DriveOptions {
            concurrency: 16,
            // A bound for a wedged run, far above what the run takes (seconds): the test checks
            // counts, not speed, and a loaded machine must not cut it short.
            time_limit: Duration::from_secs(600),
            request_timeout: Duration::from_secs(60),
        },
        origin_latency: Duration::from_millis(2),
        target: None,
        fleet: None,
    };
    let requests = 20_000;
    let report = runner::run_http(&input(requests), &options, &ProgressBar::hidden())
        .await
        .unwrap();
    eprintln!("{}", report.table());
    for b in Backend::ALL {
        let row = report
            .results
            .iter()
            .find(|r| r.backend == b.as_str())
            .unwrap();
        let h = row.http.as_ref().unwrap();
        assert_eq!(row.requests, requests as u64, "{b}: cut short");
        assert_eq!(h.errors, 0, "{b}");
        assert_eq!(row.hits + h.coalesced + h.misses, row.requests, "{b}");
        assert_eq!(h.upstream_requests, Some(h.misses), "{b}: origin count");
        let sim = h.sim_hit_ratio.unwrap();
        assert!(
            (h.hit_ratio_with_coalesced - sim).abs() <= 0.02,
            "{b}: http {} vs sim {sim}",
            h.hit_ratio_with_coalesced
        );
        assert!(row.hit_ratio > 0.2, "{b}: {}", row.hit_ratio);
        assert!(h.p50_ms > 0.0 && h.p50_ms <= h.p99_ms && h.p99_ms <= h.p999_ms);
        assert!(row.stored_bytes.unwrap() <= row.capacity_bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_sharing_redis_beats_isolated_instances_and_cleans_up() {
    if !require_redis("a_fleet_sharing_redis_beats_isolated_instances_and_cleans_up") {
        return;
    }
    let redis = RedisServer::start().await;
    let requests = 6_000;
    let input = Input::generate(
        Workload::Zipf { alpha: 1.0 },
        2_000,
        requests,
        SizeSpec::Fixed(4096),
        1,
    );
    let options = HttpOptions {
        sim: SimOptions {
            capacities: vec![Capacity::Percent(10.0)],
            backends: vec![Backend::Moka],
            evictions: vec![Eviction::Adaptive],
            moka_policy: MokaPolicy::Tinylfu,
        },
        drive: DriveOptions {
            concurrency: 8,
            time_limit: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        },
        origin_latency: Duration::from_millis(1),
        target: None,
        fleet: Some(FleetOptions {
            instances: 2,
            target: RedisTarget::parse(&redis.url()).unwrap(),
            // A debug build on a loaded two-core machine: the 5 ms default would time out.
            timeout: Some(Duration::from_millis(250)),
        }),
    };
    let report = runner::run_http(&input, &options, &ProgressBar::hidden())
        .await
        .unwrap();
    let table = report.table();
    eprintln!("{table}");
    let row = |layout: &str| {
        report
            .results
            .iter()
            .find(|r| r.layout.as_deref() == Some(layout))
            .unwrap_or_else(|| panic!("no {layout} row"))
    };
    let (fleet, big, isolated) = (row("fleet"), row("one-big"), row("isolated"));
    for r in [fleet, big, isolated] {
        let h = r.http.as_ref().unwrap();
        assert_eq!(r.requests, requests as u64, "{r:?}: cut short");
        assert_eq!(h.errors, 0, "{r:?}");
        assert_eq!(r.hits + h.coalesced + h.misses, r.requests, "{r:?}");
        let upstream = h.upstream_requests.unwrap();
        if r.layout.as_deref() == Some("fleet") {
            // A request that waited for another instance's fill, then found nothing in the tier
            // and fetched for itself, still says `collapsed` in Cache-Status: the client counts
            // it as coalesced, the origin as a request.
            assert!(
                (h.misses..=h.misses + h.coalesced).contains(&upstream),
                "{r:?}: origin count"
            );
        } else {
            assert_eq!(upstream, h.misses, "{r:?}: origin count");
        }
    }
    assert_eq!(
        (fleet.instances, big.instances, isolated.instances),
        (Some(2), Some(1), Some(2))
    );
    assert_eq!(big.capacity_bytes, 2 * fleet.capacity_bytes);
    assert_eq!(isolated.capacity_bytes, fleet.capacity_bytes);
    let shared = |r: &cachet::bench::report::Row| r.http.as_ref().unwrap().shared_hits.unwrap();
    let upstream =
        |r: &cachet::bench::report::Row| r.http.as_ref().unwrap().upstream_requests.unwrap();
    assert!(shared(fleet) > 0, "the fleet reported no shared hit");
    assert_eq!(shared(big), 0);
    assert_eq!(shared(isolated), 0);
    // With a tier that keeps what any instance fetched, the fleet asks the origin less than
    // the same instances on their own, and hits more.
    assert!(
        upstream(fleet) < upstream(isolated),
        "fleet {} vs isolated {} origin requests",
        upstream(fleet),
        upstream(isolated)
    );
    assert!(fleet.hit_ratio > isolated.hit_ratio);
    // Each instance of the isolated set-up holds about half the hot set that one instance of
    // twice the memory holds.
    assert!(big.hit_ratio > isolated.hit_ratio);
    // The report says which set-up each row is, in the table and the JSON.
    assert!(table.contains("ran: fleet x2: 2 instances"), "{table}");
    assert!(table.contains("ran: one big: 1 instance of 2xC"), "{table}");
    assert!(
        table.contains("request i of the trace to instance i mod 2"),
        "{table}"
    );
    for label in ["fleet x2", "one big", "isolated x2"] {
        assert!(table.contains(label), "{label}: {table}");
    }
    let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
    let layouts: Vec<&str> = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["layout"].as_str())
        .collect();
    assert_eq!(layouts, ["fleet", "one-big", "isolated"]);
    assert!(json["results"][0]["shared_hits"].as_u64().unwrap() > 0);
    // Every URL the fleet wrote was deleted at the end (lock keys expire on their own).
    let setup = report.setup.join("\n");
    assert!(setup.contains("were deleted from the tier"), "{setup}");
    let left = redis.cmd(&["KEYS", "cachet-bench-*r:*"]).await;
    assert!(left.trim().is_empty(), "keys left in Redis: {left}");
}

const BIN: &str = env!("CARGO_BIN_EXE_cachet");

/// Runs the real binary to its exit (killed after 30 s): exit code and stderr.
fn cachet(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cachet");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, "killed after 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fleet_flags_are_checked_and_an_unreachable_redis_is_named() {
    let (code, err) = cachet(&["bench", "http", "--instances", "2"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--shared"), "{err}");

    let (code, err) = cachet(&["bench", "http", "--shared", "redis://127.0.0.1:6379"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--instances"), "{err}");

    let (code, err) = cachet(&[
        "bench",
        "--instances",
        "1",
        "--shared",
        "redis://127.0.0.1:6379",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--instances") && err.contains("2..=64"),
        "{err}"
    );

    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let (code, err) = cachet(&["bench", "http", "--instances", "2", "--shared", &url]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&url) && err.contains("did not answer PING"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
