//! `cachet bench` end to end, in-process and bounded: the replay is honest (no backend above
//! OPT, moka's TinyLFU above LRU on a skewed, stable workload), and the HTTP level agrees with
//! the replay (within 2 points, and the origin's count equals the misses the client saw).

use std::time::Duration;

use cachet::bench::http::DriveOptions;
use cachet::bench::runner::{self, HttpOptions, Input, SimOptions};
use cachet::bench::spec::{Capacity, SizeSpec, Workload};
use cachet::store::{Backend, Eviction, MokaPolicy};
use indicatif::ProgressBar;

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
            time_limit: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        },
        origin_latency: Duration::from_millis(2),
        target: None,
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
