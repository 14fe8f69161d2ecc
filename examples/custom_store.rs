//! Plugging a store of your own into the proxy.
//!
//! The `Store` trait is the extension point: anything that can get, insert and remove
//! `Arc<Entry>` values synchronously, and bound itself in bytes, can sit behind the proxy. This
//! one is a deliberately small FIFO over a `Mutex<HashMap>` that logs each eviction.
//!
//! ```sh
//! cargo run --example custom_store -- http://127.0.0.1:9000
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cachet::config::ServeConfig;
use cachet::store::{Entry, Key, Store};
use tokio::net::TcpListener;

/// A FIFO store: the oldest insertion is evicted first.
struct FifoStore {
    capacity: u64,
    // A std Mutex: the trait is synchronous, so the lock is never held across an await.
    inner: Mutex<Fifo>,
    evictions: AtomicU64,
}

#[derive(Default)]
struct Fifo {
    map: HashMap<Key, (Arc<Entry>, u64)>,
    order: VecDeque<Key>,
    bytes: u64,
}

impl FifoStore {
    fn new(capacity: u64) -> Self {
        FifoStore {
            capacity,
            inner: Mutex::default(),
            evictions: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Fifo> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for FifoStore {
    fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        self.lock().map.get(key).map(|(e, _)| Arc::clone(e))
    }

    fn insert(&self, key: Key, entry: Arc<Entry>) {
        let charge = entry.charge(&key);
        if charge > self.capacity {
            return;
        }
        let mut fifo = self.lock();
        if let Some((_, old)) = fifo.map.insert(key.clone(), (entry, charge)) {
            fifo.bytes -= old;
        } else {
            fifo.order.push_back(key);
        }
        fifo.bytes += charge;
        while fifo.bytes > self.capacity {
            let Some(victim) = fifo.order.pop_front() else {
                break;
            };
            if let Some((_, size)) = fifo.map.remove(&victim) {
                fifo.bytes -= size;
                self.evictions.fetch_add(1, Ordering::Relaxed);
                eprintln!("evicted {victim}");
            }
        }
    }

    fn contains(&self, key: &Key) -> bool {
        self.lock().map.contains_key(key)
    }

    fn remove(&self, key: &Key) -> Option<Arc<Entry>> {
        let mut fifo = self.lock();
        let (entry, size) = fifo.map.remove(key)?;
        fifo.bytes -= size;
        fifo.order.retain(|k| k != key);
        Some(entry)
    }

    fn keys_where(&self, pick: &dyn Fn(&Key) -> bool) -> Vec<Key> {
        self.lock()
            .map
            .keys()
            .filter(|k| pick(k))
            .cloned()
            .collect()
    }

    fn weighted_size(&self) -> u64 {
        self.lock().bytes
    }

    fn entry_count(&self) -> u64 {
        self.lock().map.len() as u64
    }

    fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn name(&self) -> &'static str {
        "fifo"
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let upstream = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:9000".to_string());
    let upstream = cachet::config::parse_upstream(&upstream).map_err(anyhow::Error::msg)?;
    let listener = TcpListener::bind("127.0.0.1:8080").await?;
    let config = ServeConfig::new(listener.local_addr()?, upstream);
    let running = cachet::server::start_with(listener, config, Arc::new(FifoStore::new(16 << 20)))?;
    println!(
        "serving on http://{} with a FIFO store; Ctrl-C to stop",
        running.addr
    );
    tokio::signal::ctrl_c().await?;
    running.shutdown().await;
    Ok(())
}
