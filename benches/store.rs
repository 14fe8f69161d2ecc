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

fn run_threads(store: &Arc<dyn Store>, f: &Fixture, threads: usize, iters: u64) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, store) = (&barrier, Arc::clone(store));
                s.spawn(move || {
                    let offset = t * (STREAM / threads.max(1));
                    barrier.wait();
                    for i in 0..iters as usize {
                        let k = f.stream[(offset + i) % STREAM] as usize;
                        let key = &f.keys[k];
                        if i % WRITE_EVERY == WRITE_EVERY - 1 {
                            store.insert(key.clone(), Arc::clone(&f.entry));
                        } else {
                            black_box(store.get(key));
                        }
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

fn backends(c: &mut Criterion) {
    let f = fixture();
    let mut group = c.benchmark_group("store_95get_5insert_zipf1");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for backend in Backend::ALL {
        let store = warm_store(backend, &f);
        for threads in [1usize, 2, 4, 8] {
            group.throughput(Throughput::Elements(threads as u64));
            group.bench_with_input(
                BenchmarkId::new(backend.as_str(), threads),
                &threads,
                |b, &threads| b.iter_custom(|iters| run_threads(&store, &f, threads, iters)),
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
    let mut group = c.benchmark_group("store_hit_zipf1");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let per_entry = f.entry.charge(&f.keys[0]);
    for backend in Backend::ALL {
        let store = backend.build(per_entry * HOT * 2, Eviction::Adaptive, MokaPolicy::Tinylfu);
        for key in &f.keys[..HOT as usize] {
            store.insert(key.clone(), Arc::clone(&f.entry));
        }
        store.settle();
        let stream: Vec<u32> = f.stream.iter().map(|&k| k % HOT as u32).collect();
        for threads in [1usize, 2] {
            group.throughput(Throughput::Elements(threads as u64));
            group.bench_with_input(
                BenchmarkId::new(backend.as_str(), threads),
                &threads,
                |b, &threads| {
                    b.iter_custom(|iters| {
                        let barrier = Barrier::new(threads + 1);
                        std::thread::scope(|s| {
                            let handles: Vec<_> = (0..threads)
                                .map(|t| {
                                    let (barrier, store, stream) = (&barrier, &store, &stream);
                                    let keys = &f.keys;
                                    s.spawn(move || {
                                        let offset = t * (STREAM / threads);
                                        barrier.wait();
                                        for i in 0..iters as usize {
                                            let k = stream[(offset + i) % STREAM] as usize;
                                            black_box(store.get(&keys[k]));
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
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, backends, hits);
criterion_main!(benches);
