//! The replay is honest: a backend is held to its capacity at every step (so none can beat
//! Belady's OPT, and moka's LRU mode is exact LRU), and the same seed gives the same hits.
//!
//! Small caches (12 and 50 objects) are where a store that keeps entries readable beyond its
//! capacity shows most: moka's batched maintenance kept up to 64 extra inserts readable, which
//! on a 12-object cache is six times the cache.

use cachet::bench::http::id_width;
use cachet::bench::report::{Report, Row};
use cachet::bench::runner::{self, Input, SimOptions};
use cachet::bench::sim::{self, Objects};
use cachet::bench::spec::{Capacity, SizeSpec, Workload};
use cachet::bench::trace::Trace;
use cachet::store::{Backend, Eviction, MokaPolicy, ENTRY_OVERHEAD};
use indicatif::ProgressBar;

const SIZE: u64 = 4096;

/// What `bench sim` charges each object of a fixed-size trace of `objects` objects.
fn charge(objects: usize) -> u64 {
    ENTRY_OVERHEAD + 5 + id_width(objects) as u64 + SIZE
}

fn generated(workload: Workload, keys: u64, requests: usize, seed: u64) -> Input {
    Input::generate(workload, keys, requests, SizeSpec::Fixed(SIZE), seed)
}

/// Every key of `keys` in turn, `rounds` times over: LRU's worst case (it misses every request
/// once the cache is smaller than the loop), where OPT keeps a fixed part of the loop.
fn looping(keys: u32, rounds: usize) -> Input {
    let requests = (0..rounds).flat_map(|_| 0..keys).collect();
    Input {
        trace: Trace {
            requests,
            sizes: vec![SIZE; keys as usize],
        },
        workload: format!("loop:{keys}"),
        size: "4KiB".into(),
        seed: 1,
    }
}

/// A loop over `keys` keys interleaved with a Zipf stream over the same keys: half the
/// requests walk the loop, half are popular keys.
fn loop_and_zipf(keys: u64, requests: usize, seed: u64) -> Input {
    let zipf = generated(Workload::Zipf { alpha: 1.0 }, keys, requests / 2, seed);
    let mut trace = cachet::bench::trace::TraceBuilder::<u64>::default();
    for (cursor, &o) in zipf.trace.requests.iter().enumerate() {
        // Object numbers of the Zipf trace are dense; use them as key names.
        trace.push(u64::from(o), || SIZE);
        trace.push(cursor as u64 % keys, || SIZE);
    }
    Input {
        trace: trace.finish(),
        workload: format!("loop+zipf:{keys}"),
        size: "4KiB".into(),
        seed,
    }
}

/// Capacities of exactly `counts` objects of `input`'s trace.
fn object_capacities(input: &Input, counts: &[u64]) -> Vec<Capacity> {
    let c = charge(input.trace.objects());
    counts.iter().map(|&n| Capacity::Bytes(n * c)).collect()
}

fn sim(input: &Input, capacities: Vec<Capacity>, policy: MokaPolicy) -> Report {
    let options = SimOptions {
        capacities,
        backends: Backend::ALL.to_vec(),
        evictions: Eviction::ALL.to_vec(),
        moka_policy: policy,
    };
    runner::run_sim(input, &options, &ProgressBar::hidden())
}

fn rows<'a>(report: &'a Report, capacity: &str) -> impl Iterator<Item = &'a Row> + 'a {
    let capacity = capacity.to_string();
    report
        .results
        .iter()
        .filter(move |r| r.capacity == capacity)
}

fn reference<'a>(report: &'a Report, capacity: &str, name: &str) -> &'a Row {
    rows(report, capacity)
        .find(|r| r.backend == name)
        .unwrap_or_else(|| panic!("no {name} row at {capacity}"))
}

/// The small-cache cases: scans, loops, a loop under Zipf traffic, and plain Zipf.
fn small_cases() -> Vec<Input> {
    vec![
        generated(Workload::Scan { alpha: 1.0 }, 500, 10_000, 1),
        generated(Workload::Scan { alpha: 0.8 }, 2_000, 10_000, 2),
        looping(100, 100),
        looping(60, 150),
        loop_and_zipf(300, 10_000, 3),
        generated(Workload::Zipf { alpha: 1.0 }, 1_000, 10_000, 4),
    ]
}

#[test]
fn no_backend_beats_opt_on_small_caches() {
    for input in small_cases() {
        let capacities = object_capacities(&input, &[12, 50]);
        for policy in [MokaPolicy::Tinylfu, MokaPolicy::Lru] {
            let report = sim(&input, capacities.clone(), policy);
            for cap in &capacities {
                let cap = cap.to_string();
                let opt = reference(&report, &cap, "opt");
                for row in rows(&report, &cap).filter(|r| r.backend != "opt") {
                    assert!(
                        row.hits <= opt.hits,
                        "{} at {cap} ({policy}): {} {} hits > OPT {}\n{}",
                        input.workload,
                        row.backend,
                        row.hits,
                        opt.hits,
                        report.table()
                    );
                    assert!(row.stored_bytes.unwrap() <= row.capacity_bytes, "{row:?}");
                }
            }
        }
    }
}

#[test]
fn moka_lru_is_exact_lru_on_equal_sizes() {
    let mut cases = small_cases();
    cases.push(generated(Workload::Shift { alpha: 1.0 }, 1_000, 10_000, 5));
    cases.push(generated(Workload::Drift { alpha: 1.0 }, 500, 10_000, 6));
    for input in cases {
        let mut capacities = object_capacities(&input, &[12, 50]);
        capacities.push(Capacity::Percent(10.0));
        let options = SimOptions {
            capacities: capacities.clone(),
            backends: vec![Backend::Moka],
            evictions: vec![Eviction::Adaptive],
            moka_policy: MokaPolicy::Lru,
        };
        let report = runner::run_sim(&input, &options, &ProgressBar::hidden());
        for cap in &capacities {
            let cap = cap.to_string();
            let moka = reference(&report, &cap, "moka");
            let lru = reference(&report, &cap, "lru");
            assert_eq!(
                moka.hits,
                lru.hits,
                "{} at {cap}: moka (lru) and exact LRU differ\n{}",
                input.workload,
                report.table()
            );
        }
    }
}

/// Hits, byte hit ratio and stored bytes of every row, for exact comparison.
fn outcome(report: &Report) -> Vec<(String, String, u64, u64, u64)> {
    report
        .results
        .iter()
        .map(|r| {
            (
                r.backend.clone(),
                r.capacity.clone(),
                r.hits,
                r.byte_hit_ratio.to_bits(),
                r.stored_bytes.unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_hits_on_every_backend() {
    let lognormal = SizeSpec::LogNormal {
        mean: 8192,
        sigma: 1.0,
    };
    let cases = [
        (
            generated(Workload::Zipf { alpha: 0.8 }, 2_000, 10_000, 7),
            MokaPolicy::Tinylfu,
        ),
        (
            generated(Workload::Scan { alpha: 1.0 }, 1_000, 10_000, 8),
            MokaPolicy::Tinylfu,
        ),
        (
            Input::generate(Workload::Drift { alpha: 1.0 }, 1_000, 10_000, lognormal, 9),
            MokaPolicy::Lru,
        ),
        (loop_and_zipf(300, 10_000, 10), MokaPolicy::Tinylfu),
    ];
    for (input, policy) in cases {
        let capacities = vec![Capacity::Percent(2.0), Capacity::Percent(10.0)];
        {
            let first = sim(&input, capacities.clone(), policy);
            let second = sim(&input, capacities.clone(), policy);
            assert_eq!(
                outcome(&first),
                outcome(&second),
                "{} ({policy}): two runs of one seed differ\n{}\n{}",
                input.workload,
                first.table(),
                second.table()
            );
            // One policy and one seeded hasher: rwlock and sharded agree hit for hit.
            for r in first.results.iter().filter(|r| r.backend == "rwlock") {
                let twin = first
                    .results
                    .iter()
                    .find(|t| {
                        t.backend == "sharded" && t.policy == r.policy && t.capacity == r.capacity
                    })
                    .expect("a sharded row for every rwlock row");
                assert_eq!(
                    r.hits, twin.hits,
                    "{} {:?} {}",
                    input.workload, r.policy, r.capacity
                );
            }
        }
    }
}

#[test]
fn capacity_holds_after_every_request() {
    // What `get` could return after each step of the replay, counted with `contains` (which is
    // not a use, and runs no maintenance), never exceeds the capacity.
    for input in [looping(200, 10), loop_and_zipf(200, 4_000, 11)] {
        let trace = &input.trace;
        let width = id_width(trace.objects());
        let objects = Objects::new(trace, |o, _| format!("/obj/{o:0width$}"), |_| 0);
        for objects_held in [12, 50] {
            let capacity = objects_held * charge(trace.objects());
            for backend in Backend::ALL {
                for (eviction, policy) in [
                    (Eviction::Adaptive, MokaPolicy::Tinylfu),
                    (Eviction::Clock, MokaPolicy::Lru),
                ] {
                    let store = sim::build_store(backend, capacity, eviction, policy, 1);
                    for (i, &o) in trace.requests.iter().enumerate() {
                        sim::request(&*store, trace, &objects, o);
                        let readable: u64 = (0..trace.objects())
                            .filter(|&k| store.contains(&objects.keys[k]))
                            .map(|k| objects.charges[k])
                            .sum();
                        assert!(
                            readable <= capacity,
                            "{backend} ({policy}), {} at request {i}: {readable} bytes readable > {capacity}",
                            input.workload
                        );
                    }
                }
            }
        }
    }
}

/// The grid of the README's eviction table (scripts/eviction-grid.sh on its defaults): each
/// workload shape at 1%, 5%, 10% and 25% of its working set. The default policy of rwlock and
/// sharded is at or above exact LRU on every row, and within a point of the best of LRU,
/// S3-FIFO and SIEVE. (Plain S3-FIFO fails the first on `reread`, by up to 30 points; SIEVE
/// by up to 33; CLOCK fails the second on every Zipf row.)
#[test]
fn the_default_policy_is_never_below_lru_and_within_a_point_of_the_best_reference() {
    let workloads = [
        Workload::Zipf { alpha: 0.6 },
        Workload::Zipf { alpha: 0.8 },
        Workload::Zipf { alpha: 1.0 },
        Workload::Zipf { alpha: 1.2 },
        Workload::Scan { alpha: 1.0 },
        Workload::Shift { alpha: 1.0 },
        Workload::Drift { alpha: 1.0 },
        Workload::Loop,
        Workload::Reread,
    ];
    let options = SimOptions {
        capacities: [1.0, 5.0, 10.0, 25.0].map(Capacity::Percent).to_vec(),
        // rwlock only: sharded runs the same policy with the same seeded hasher, hit for hit
        // (`the_same_seed_gives_the_same_hits_on_every_backend` compares them).
        backends: vec![Backend::Rwlock],
        evictions: vec![Eviction::Adaptive],
        moka_policy: MokaPolicy::Tinylfu,
    };
    let mut failures = Vec::new();
    for workload in workloads {
        let input = generated(workload, 10_000, 300_000, 1);
        let report = runner::run_sim(&input, &options, &ProgressBar::hidden());
        for cap in &options.capacities {
            let cap = cap.to_string();
            let ratio = |name: &str| reference(&report, &cap, name).hit_ratio * 100.0;
            let lru = ratio("lru");
            let best = lru.max(ratio("s3fifo")).max(ratio("sieve"));
            let ours = ratio("rwlock");
            if ours < lru || ours < best - 1.0 {
                failures.push(format!(
                    "{workload} at {cap}: adaptive {ours:.2}%, lru {lru:.2}%, best {best:.2}%"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
