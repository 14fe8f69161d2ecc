//! Purges against a full store: what a single-URL purge costs at 250k entries on each backend,
//! and what a hit waits while prefix and full purges run beside it.
//!
//! Not a criterion bench: the second measurement needs two threads at once (one purging, one
//! timing hits), and each row is a distribution, not a mean. Run with
//! `cargo bench --bench purge`; `PURGE_ENTRIES` changes the store size. The figures are ratios
//! to read within one run: the machine is shared.
//!
//! Rows:
//! - `url purge`: p50/p99/max of `Proxy::purge_url` on a stored URL (it is put back between
//!   purges, outside the timing);
//! - `hit, idle`: `Store::get` of a hot key with nothing else running;
//! - `hit, prefix purges`: the same while another thread purges 10% of the store by prefix,
//!   over and over (refilling between rounds; hits during the refills are not counted);
//! - `hit, full purges`: the same while the other thread empties the store (and refills it,
//!   not counted).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachet::proxy::{Proxy, ProxyConfig};
use cachet::revalidate::Revalidator;
use cachet::store::{Backend, Entry, Eviction, Key, MokaPolicy, Store};
use cachet::upstream::{Upstream, UpstreamConfig};
use hdrhistogram::Histogram;

fn key(i: usize) -> Key {
    // Ten "directories" so that a prefix purge picks a tenth of the store.
    Key::new(format!("http://bench.local/d{}/obj/{i}", i % 10))
}

fn fill(store: &dyn Store, n: usize, entry: &Arc<Entry>) {
    for i in 0..n {
        store.insert(key(i), Arc::clone(entry));
    }
}

fn proxy(store: Arc<dyn Store>, rt: &tokio::runtime::Runtime) -> Proxy {
    let _guard = rt.enter();
    let upstream = Upstream::new(UpstreamConfig {
        connect_timeout: Duration::from_millis(100),
        response_timeout: Duration::from_millis(100),
        pool_idle_timeout: Duration::from_secs(1),
        max_concurrency: 1,
        queue_timeout: Duration::from_millis(1),
        ..UpstreamConfig::new("http://127.0.0.1:9".parse().unwrap())
    })
    .expect("a plain-HTTP upstream needs no TLS files");
    let (revalidator, _workers) = Revalidator::start(1, 1);
    Proxy::new(store, upstream, ProxyConfig::default(), revalidator)
}

fn micros(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn row(backend: Backend, what: &str, h: &Histogram<u64>) {
    println!(
        "{:<8} {:<20} {:>9} {:>10.2} {:>10.2} {:>10.2}",
        backend.as_str(),
        what,
        h.len(),
        micros(h, 0.5),
        micros(h, 0.99),
        h.max() as f64 / 1000.0
    );
}

/// Times `Store::get` of a hot key for `for_how_long`, while `background` runs on another
/// thread until told to stop. Only hits timed while `background` says it is purging (the
/// second flag) are kept: its refills between purges are not what is measured.
fn hits_while(
    store: &Arc<dyn Store>,
    for_how_long: Duration,
    background: impl FnOnce(&AtomicBool, &AtomicBool) + Send,
) -> Histogram<u64> {
    let hot = key(1);
    let stop = AtomicBool::new(false);
    let purging = AtomicBool::new(false);
    let mut h = Histogram::<u64>::new(3).unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| background(&stop, &purging));
        let until = Instant::now() + for_how_long;
        while Instant::now() < until {
            let during = purging.load(Ordering::Relaxed);
            let t = Instant::now();
            let got = store.get(&hot);
            let took = t.elapsed().as_nanos() as u64;
            if during {
                h.record(took).unwrap();
            }
            if got.is_none() {
                // The full purge removed it; put it back so the next hit is a hit.
                store.insert(hot.clone(), Arc::new(Entry::synthetic(1024)));
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    h
}

fn main() {
    let entries: usize = std::env::var("PURGE_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let entry = Arc::new(Entry::synthetic(1024));
    println!("{entries} entries of 1 KiB each; times in microseconds");
    println!(
        "{:<8} {:<20} {:>9} {:>10} {:>10} {:>10}",
        "backend", "measure", "count", "p50", "p99", "max"
    );
    for backend in Backend::ALL {
        let store = backend.build(4 << 30, Eviction::Adaptive, MokaPolicy::Tinylfu);
        fill(&*store, entries, &entry);
        let proxy = proxy(Arc::clone(&store), &rt);

        let mut h = Histogram::<u64>::new(3).unwrap();
        for i in (0..entries).step_by(entries / 2000).take(2000) {
            let k = key(i);
            let t = Instant::now();
            let removed = proxy.purge_url(k.as_str());
            h.record(t.elapsed().as_nanos() as u64).unwrap();
            assert_eq!(removed, 1, "{backend}: {k:?} was stored");
            store.insert(k, Arc::clone(&entry));
        }
        row(backend, "url purge", &h);

        let idle = hits_while(&store, Duration::from_millis(500), |_, purging| {
            // Nothing runs; every hit counts.
            purging.store(true, Ordering::Relaxed);
        });
        row(backend, "hit, idle", &idle);

        let prefix = hits_while(&store, Duration::from_secs(2), |stop, purging| {
            while !stop.load(Ordering::Relaxed) {
                // Never the hot key's directory (d1): the hit path only waits, never misses.
                purging.store(true, Ordering::Relaxed);
                proxy.purge_prefix("http://bench.local/d3/");
                purging.store(false, Ordering::Relaxed);
                for i in (3..entries).step_by(10) {
                    store.insert(key(i), Arc::clone(&entry));
                }
            }
        });
        row(backend, "hit, prefix purges", &prefix);

        let full = hits_while(&store, Duration::from_secs(2), |stop, purging| {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                purging.store(true, Ordering::Relaxed);
                proxy.purge_all();
                purging.store(false, Ordering::Relaxed);
                let took = t.elapsed();
                fill(&*store, entries, &entry);
                eprintln!("{backend}: full purge of {entries} took {took:?}");
            }
        });
        row(backend, "hit, full purges", &full);
    }
}
