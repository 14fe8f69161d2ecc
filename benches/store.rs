//! Each store backend under contention: 95% `get`, 5% `insert`, Zipf-distributed keys, on 1, 2,
//! 4 and 8 threads.
//!
//! Every thread runs the same number of operations per iteration, starting at its own offset in
//! one shared Zipf key stream; the time reported per iteration is the wall time for all threads
//! to finish, and the throughput (elements = threads) is operations per second across threads.
//! On a machine with fewer cores than threads the extra threads time-share, which is what a
//! proxy with more workers than cores does too.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cachet::bench::workload::ZipfRanks;
use cachet::store::{Backend, Entry, Eviction, Key, MokaPolicy, Store};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::SeedableRng;

const KEYS: u64 = 100_000;
const STREAM: usize = 1 << 20;
const BODY: usize = 1024;
/// One operation in this many is an insert: 5%.
const WRITE_EVERY: usize = 20;

struct Fixture {
    keys: Vec<Key>,
    stream: Vec<u32>,
    entry: Arc<Entry>,
}

fn fixture() -> Fixture {
    let keys = (0..KEYS)
        .map(|i| Key::new(format!("http://bench.local/obj/{i:06}")))
        .collect();
    let zipf = ZipfRanks::new(KEYS, 1.0);
    let mut rng = StdRng::seed_from_u64(1);
    let stream = (0..STREAM).map(|_| zipf.sample(&mut rng) as u32).collect();
    Fixture {
        keys,
        stream,
        entry: Arc::new(Entry::synthetic(BODY)),
    }
}

/// A store holding a quarter of the keys, filled with the hottest ones first, as after warm-up.
fn warm_store(backend: Backend, f: &Fixture) -> Arc<dyn Store> {
    let per_entry = f.entry.charge(&f.keys[0]);
    let store = backend.build(
        per_entry * KEYS / 4,
        Eviction::Adaptive,
        MokaPolicy::Tinylfu,
    );
    for &k in f.stream.iter().take(STREAM / 4) {
        let key = &f.keys[k as usize];
        if store.get(key).is_none() {
            store.insert(key.clone(), Arc::clone(&f.entry));
        }
    }
    store
}

/// Runs `op(thread, i)` for `i` in `0..iters` on each of `threads` threads started together,
/// returning the wall time until all have finished.
fn run_threads(threads: usize, iters: u64, op: impl Fn(usize, usize) + Sync) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, op) = (&barrier, &op);
                s.spawn(move || {
                    barrier.wait();
                    for i in 0..iters as usize {
                        op(t, i);
                    }
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        for h in handles {
            h.join().expect("bench thread panicked");
        }
        started.elapsed()
    })
}

/// Both groups are measured alike: short, since each sample already runs many operations.
fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group
}

fn backends(c: &mut Criterion) {
    let f = fixture();
    let mut group = group(c, "store_95get_5insert_zipf1");
    for backend in Backend::ALL {
        let store = warm_store(backend, &f);
        for threads in [1usize, 2, 4, 8] {
            group.throughput(Throughput::Elements(threads as u64));
            group.bench_with_input(
                BenchmarkId::new(backend.as_str(), threads),
                &threads,
                |b, &threads| {
                    b.iter_custom(|iters| {
                        run_threads(threads, iters, |t, i| {
                            // Each thread starts at its own offset in the one shared stream.
                            let k = f.stream[(t * (STREAM / threads) + i) % STREAM] as usize;
                            let key = &f.keys[k];
                            if i % WRITE_EVERY == WRITE_EVERY - 1 {
                                store.insert(key.clone(), Arc::clone(&f.entry));
                            } else {
                                black_box(store.get(key));
                            }
                        })
                    })
                },
            );
        }
    }
    group.finish();
}

/// Keys the hit-only group reads: all of them are stored.
const HOT: u64 = 10_000;

/// Only hits: every key of the stream is stored, so each operation is one `get` that finds its
/// entry. The cost of the hit path itself, with no insert to contend with.
fn hits(c: &mut Criterion) {
    let f = fixture();
    let mut group = group(c, "store_hit_zipf1");
    let per_entry = f.entry.charge(&f.keys[0]);
    let stream: Vec<u32> = f.stream.iter().map(|&k| k % HOT as u32).collect();
    for backend in Backend::ALL {
        let store = backend.build(per_entry * HOT * 2, Eviction::Adaptive, MokaPolicy::Tinylfu);
        for key in &f.keys[..HOT as usize] {
            store.insert(key.clone(), Arc::clone(&f.entry));
        }
        store.settle();
        for threads in [1usize, 2] {
            group.throughput(Throughput::Elements(threads as u64));
            group.bench_with_input(
                BenchmarkId::new(backend.as_str(), threads),
                &threads,
                |b, &threads| {
                    b.iter_custom(|iters| {
                        run_threads(threads, iters, |t, i| {
                            let k = stream[(t * (STREAM / threads) + i) % STREAM] as usize;
                            black_box(store.get(&f.keys[k]));
                        })
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, backends, hits);
criterion_main!(benches);
