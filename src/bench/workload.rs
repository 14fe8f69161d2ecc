//! Synthetic workloads: key streams drawn from Zipf, uniform, scan and shift patterns, and
//! object sizes, all deterministic under a seed.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Zipf};

use super::spec::{SizeSpec, Workload};
use super::trace::{Trace, TraceBuilder};

/// Largest object a size distribution may draw: a log-normal tail is unbounded, and one draw of
/// a few gigabytes would dominate any byte count.
pub const MAX_OBJECT_SIZE: u64 = 64 << 20;

/// Draws Zipf ranks in `0..n`: rank `r` (0-based) has probability proportional to `(r+1)^-alpha`.
///
/// A thin wrapper over `rand_distr::Zipf` (rejection-inversion, O(1) per draw), which yields
/// 1-based floats.
#[derive(Debug, Clone, Copy)]
pub struct ZipfRanks {
    dist: Zipf<f64>,
    n: u64,
}

impl ZipfRanks {
    /// A sampler over `n >= 1` ranks with exponent `alpha > 0`.
    pub fn new(n: u64, alpha: f64) -> Self {
        let dist = Zipf::new(n.max(1) as f64, alpha).expect("n >= 1 and alpha >= 0 are checked");
        ZipfRanks { dist, n: n.max(1) }
    }

    /// One rank.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        // The float is an exact integer in [1, n]; the min guards the last ulp.
        (self.dist.sample(rng) as u64).clamp(1, self.n) - 1
    }
}

/// The size of object `key` under `spec`, the same every time for the same seed and key, so
/// that an object keeps one size and a run can be repeated.
pub fn object_size(spec: SizeSpec, seed: u64, key: u64) -> u64 {
    match spec {
        SizeSpec::Fixed(n) => n,
        SizeSpec::LogNormal { mean, sigma } => {
            // A per-object stream, so that the size does not depend on when the object is first
            // requested: the shift workload must not change sizes when popularity moves.
            let mut rng = StdRng::seed_from_u64(splitmix(seed ^ splitmix(key)));
            // E[X] = exp(mu + sigma^2 / 2) for a log-normal, so mu = ln(mean) - sigma^2 / 2.
            let mu = (mean as f64).ln() - sigma * sigma / 2.0;
            let dist = LogNormal::new(mu, sigma).expect("sigma >= 0 is checked");
            (dist.sample(&mut rng).round() as u64).clamp(1, MAX_OBJECT_SIZE)
        }
    }
}

/// SplitMix64's finaliser: spreads nearby integers over the whole range before they seed a
/// generator.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Share of each scan period spent in the scan itself (the rest is Zipf traffic).
pub const SCAN_SHARE: f64 = 0.2;
/// Number of scan periods in a `scan` trace.
pub const SCAN_PERIODS: usize = 10;

/// Generates `requests` requests of `workload` over `keys` keys.
///
/// Ranks are mapped to keys through a seeded permutation, so the popular keys are not simply the
/// smallest numbers (which would make hash-sharded backends look better or worse by accident).
/// - `scan`: the trace is cut into [`SCAN_PERIODS`] periods; the last [`SCAN_SHARE`] of each is a
///   sequential pass over the coldest half of the keys (continuing where the last scan stopped),
///   the rest Zipf traffic. A scan-resistant policy keeps its hot set through the scans.
/// - `shift`: for the second half of the trace, rank `r` maps to the key that had rank
///   `r + keys/2`: the popular keys become ones that were cold.
/// - `drift`: rank `r` at request `i` is key `i / step + r`, with `step` chosen so that the hot
///   window slides over `2 * keys` new keys across the trace: a new key enters at the top every
///   `step` requests and every other key moves one rank colder. The trace touches about
///   `3 * keys` keys in all.
/// - `loop`: key `i % keys` at request `i` (through the permutation).
/// - `reread`: at each request, the oldest re-read that is due, else a new key; each new key's
///   re-read falls due an exponentially distributed number of requests later (mean `keys`).
///   About `requests / 2` keys in all, each requested twice.
pub fn generate(
    workload: Workload,
    keys: u64,
    requests: usize,
    size: SizeSpec,
    seed: u64,
) -> Trace {
    let keys = keys.max(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut permutation: Vec<u64> = (0..keys).collect();
    permutation.shuffle(&mut rng);
    let mut builder = TraceBuilder::<u64>::default();
    let mut push = |key: u64| builder.push(key, || object_size(size, seed, key));
    match workload {
        Workload::Uniform => {
            for _ in 0..requests {
                push(permutation[rng.random_range(0..keys) as usize]);
            }
        }
        Workload::Zipf { alpha } => {
            let zipf = ZipfRanks::new(keys, alpha);
            for _ in 0..requests {
                push(permutation[zipf.sample(&mut rng) as usize]);
            }
        }
        Workload::Shift { alpha } => {
            let zipf = ZipfRanks::new(keys, alpha);
            let half = requests / 2;
            for i in 0..requests {
                let rank = zipf.sample(&mut rng);
                let rank = if i < half {
                    rank
                } else {
                    (rank + keys / 2) % keys
                };
                push(permutation[rank as usize]);
            }
        }
        Workload::Drift { alpha } => {
            let zipf = ZipfRanks::new(keys, alpha);
            let step = (requests as u64 / (2 * keys)).max(1);
            for i in 0..requests {
                // Newest key at rank 0: keys are numbered in the order they enter.
                let newest = i as u64 / step + keys;
                push(newest - zipf.sample(&mut rng));
            }
        }
        Workload::Loop => {
            for i in 0..requests {
                push(permutation[i % keys as usize]);
            }
        }
        Workload::Reread => {
            use std::cmp::Reverse;
            use std::collections::BinaryHeap;
            let gap = rand_distr::Exp::new(1.0 / keys as f64).expect("keys >= 1");
            let mut due: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
            let mut next_key = 0u64;
            for i in 0..requests as u64 {
                match due.peek() {
                    Some(&Reverse((when, key))) if when <= i => {
                        due.pop();
                        push(key);
                    }
                    _ => {
                        let key = next_key;
                        next_key += 1;
                        push(key);
                        let later = gap.sample(&mut rng).ceil().max(1.0) as u64;
                        due.push(Reverse((i + later, key)));
                    }
                }
            }
        }
        Workload::Scan { alpha } => {
            let zipf = ZipfRanks::new(keys, alpha);
            let cold_start = keys / 2;
            let cold = (keys - cold_start).max(1);
            let mut cursor = 0u64;
            let period = requests.div_ceil(SCAN_PERIODS).max(1);
            let scan_len = ((period as f64) * SCAN_SHARE).round() as usize;
            for i in 0..requests {
                if i % period >= period - scan_len {
                    push(permutation[(cold_start + cursor % cold) as usize]);
                    cursor += 1;
                } else {
                    push(permutation[zipf.sample(&mut rng) as usize]);
                }
            }
        }
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generalised harmonic number H(n, alpha): the Zipf normalising constant.
    fn harmonic(n: u64, alpha: f64) -> f64 {
        (1..=n).map(|r| (r as f64).powf(-alpha)).sum()
    }

    #[test]
    fn zipf_rank_frequencies_follow_the_law() {
        let (n, alpha, draws) = (1000u64, 1.0, 400_000usize);
        let zipf = ZipfRanks::new(n, alpha);
        let mut rng = StdRng::seed_from_u64(42);
        let mut counts = vec![0u64; n as usize];
        for _ in 0..draws {
            counts[zipf.sample(&mut rng) as usize] += 1;
        }
        let h = harmonic(n, alpha);
        // The top ranks carry enough draws for a 5% relative tolerance (rank 20 expects about
        // 2,700 draws, so 5% is over 2.5 standard deviations).
        for (r, &count) in counts.iter().enumerate().take(20) {
            let expected = draws as f64 * ((r + 1) as f64).powf(-alpha) / h;
            let got = count as f64;
            assert!(
                (got - expected).abs() / expected < 0.05,
                "rank {r}: {got} draws, expected {expected:.0}"
            );
        }
        // The mass of whole decades of ranks, where single ranks are too thin to test.
        for (lo, hi) in [(20usize, 100usize), (100, 1000)] {
            let expected: f64 = (lo..hi)
                .map(|r| draws as f64 * ((r + 1) as f64).powf(-alpha) / h)
                .sum();
            let got: u64 = counts[lo..hi].iter().sum();
            assert!(
                (got as f64 - expected).abs() / expected < 0.02,
                "ranks {lo}..{hi}: {got}, expected {expected:.0}"
            );
        }
        // And the slope: log-log regression over the top 100 ranks is close to -alpha.
        let pts: Vec<(f64, f64)> = (0..100)
            .map(|r| (((r + 1) as f64).ln(), (counts[r] as f64).ln()))
            .collect();
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / pts.len() as f64;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / pts.len() as f64;
        let slope = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
            / pts.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
        assert!((slope + alpha).abs() < 0.05, "slope {slope}");
    }

    #[test]
    fn generation_is_deterministic_under_the_seed() {
        for w in [
            Workload::Zipf { alpha: 0.8 },
            Workload::Uniform,
            Workload::Scan { alpha: 1.0 },
            Workload::Shift { alpha: 1.0 },
            Workload::Drift { alpha: 1.0 },
        ] {
            let size = SizeSpec::LogNormal {
                mean: 8192,
                sigma: 1.0,
            };
            let a = generate(w, 500, 5000, size, 7);
            let b = generate(w, 500, 5000, size, 7);
            let c = generate(w, 500, 5000, size, 8);
            assert_eq!(a, b, "{w}");
            assert_ne!(a.requests, c.requests, "{w}");
            assert_eq!(a.requests.len(), 5000);
            assert!(a.objects() <= 3 * 500 + 1, "{w}: {}", a.objects());
        }
    }

    #[test]
    fn sizes_are_per_object_and_have_the_asked_mean() {
        assert_eq!(object_size(SizeSpec::Fixed(4096), 1, 99), 4096);
        let spec = SizeSpec::LogNormal {
            mean: 10_000,
            sigma: 1.0,
        };
        assert_eq!(object_size(spec, 3, 17), object_size(spec, 3, 17));
        let n = 50_000;
        let mean = (0..n).map(|k| object_size(spec, 3, k) as f64).sum::<f64>() / n as f64;
        assert!((mean - 10_000.0).abs() < 300.0, "mean {mean}");
    }

    #[test]
    fn scan_passes_over_cold_keys_once_per_period() {
        let t = generate(
            Workload::Scan { alpha: 1.0 },
            1000,
            10_000,
            SizeSpec::Fixed(1),
            1,
        );
        // Each period is 1000 requests; the last 200 of each are a scan of 200 distinct keys.
        for period in 0..SCAN_PERIODS {
            let scan = &t.requests[period * 1000 + 800..(period + 1) * 1000];
            let mut distinct = scan.to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 200, "period {period}");
        }
    }

    #[test]
    fn drift_slides_the_hot_set_onto_new_keys() {
        let keys = 1000;
        let t = generate(
            Workload::Drift { alpha: 1.0 },
            keys,
            20_000,
            SizeSpec::Fixed(1),
            5,
        );
        // step = 20_000 / 2000 = 10: the hot window moves 2 * keys over the trace.
        assert!(t.objects() as u64 > 2 * keys && (t.objects() as u64) <= 3 * keys + 1);
        // The hottest key of each tenth is a different one, and never seen in the first tenth.
        let tenth = |n: usize| &t.requests[n * 2000..(n + 1) * 2000];
        let top = |reqs: &[u32]| {
            let mut counts = std::collections::HashMap::<u32, usize>::new();
            for &r in reqs {
                *counts.entry(r).or_default() += 1;
            }
            counts.into_iter().max_by_key(|&(k, c)| (c, k)).unwrap().0
        };
        assert!(!tenth(0).contains(&top(tenth(9))));
    }

    #[test]
    fn shift_moves_the_hot_keys() {
        let t = generate(
            Workload::Shift { alpha: 1.2 },
            1000,
            20_000,
            SizeSpec::Fixed(1),
            5,
        );
        let top = |reqs: &[u32]| {
            let mut counts = std::collections::HashMap::<u32, usize>::new();
            for &r in reqs {
                *counts.entry(r).or_default() += 1;
            }
            counts.into_iter().max_by_key(|&(k, c)| (c, k)).unwrap().0
        };
        assert_ne!(top(&t.requests[..10_000]), top(&t.requests[10_000..]));
    }
}
