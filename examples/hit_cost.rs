//! The cost of one store hit, for `valgrind --tool=callgrind`: instruction counts repeat exactly
//! from run to run, where timings on a shared machine do not.
//!
//! ```sh
//! cargo build --release --example hit_cost
//! valgrind --tool=callgrind --toggle-collect=hit_cost::hit_loop \
//!     target/release/examples/hit_cost rwlock    # or sharded, moka
//! ```
//!
//! The collected instructions divided by [`HITS`] are the instructions per hit. Add
//! `--cache-sim=yes` for simulated cache misses.

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;

use cachet::store::{Backend, Entry, Eviction, Key, MokaPolicy, Store};

/// Lookups measured.
const HITS: usize = 1_000_000;
/// Keys stored, all of them hit.
const KEYS: usize = 10_000;

/// Only this function is measured (`--toggle-collect`); `inline(never)` keeps it a symbol.
#[inline(never)]
fn hit_loop(store: &dyn Store, keys: &[Key]) -> usize {
    let mut found = 0;
    for i in 0..HITS {
        // A stride coprime with the key count visits every key, in an order without locality.
        let key = &keys[i.wrapping_mul(7919) % keys.len()];
        if black_box(store.get(key)).is_some() {
            found += 1;
        }
    }
    found
}

fn main() -> ExitCode {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "rwlock".into());
    let backend: Backend = match arg.parse() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let store = backend.build(1 << 30, Eviction::Adaptive, MokaPolicy::Tinylfu);
    let keys: Vec<Key> = (0..KEYS)
        .map(|i| Key::new(format!("http://bench.local/obj/{i:06}")))
        .collect();
    let entry = Arc::new(Entry::synthetic(1024));
    for key in &keys {
        store.insert(key.clone(), Arc::clone(&entry));
    }
    store.settle();
    let found = hit_loop(&*store, &keys);
    println!("{backend}: {found} hits of {HITS}");
    if found == HITS {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
