//! What the `cachet bench` flags mean: workloads, object sizes, capacities and backend lists,
//! parsed once into typed values with errors that name the bad value.

use std::fmt;
use std::str::FromStr;

use crate::store::{Backend, Eviction};
use crate::units::{format_size, parse_size};

/// A flag value that could not be understood. Each variant carries the text the user typed, so
/// the CLI error points at it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// `--workload` is not one of the known shapes.
    #[error("invalid workload {0:?}: expected zipf:ALPHA (e.g. zipf:1.0), uniform, scan[:ALPHA], shift[:ALPHA] or drift[:ALPHA]")]
    Workload(String),
    /// A Zipf exponent that is not a positive finite number.
    #[error("invalid Zipf exponent {0:?} in --workload: expected a number above 0 and at most 5, e.g. 0.6 to 1.2")]
    Alpha(String),
    /// `--size` is neither a fixed size nor a distribution.
    #[error("invalid object size {0:?}: expected a size such as 4KiB, or lognormal:MEAN,SIGMA such as lognormal:16KiB,1.0")]
    Size(String),
    /// One item of `--capacity` is neither a size nor a percentage.
    #[error("invalid capacity {0:?}: expected a size with units (64MiB) or a percentage of the working set above 0 (10%)")]
    Capacity(String),
    /// `--capacity` was given as an empty list.
    #[error("--capacity is empty: give at least one size or percentage, e.g. 10% or 1%,10%,64MiB")]
    EmptyCapacity,
    /// One item of `--backend` is not a backend.
    #[error("invalid backend {0:?}: expected a comma list of rwlock, sharded and moka")]
    Backend(String),
    /// `--eviction` names a policy that is not ours.
    #[error("invalid eviction policy {0:?}: expected a comma list of adaptive and clock")]
    Eviction(String),
    /// `--trace-format` is not a known format.
    #[error("invalid trace format {0:?}: expected auto, csv or oracle")]
    TraceFormat(String),
}

/// The request stream a synthetic workload draws: which keys are requested, in what order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    /// Keys drawn by Zipf's law with exponent `alpha` over `--keys` keys.
    Zipf {
        /// The exponent: 0.6 is flat-ish (CDN tails), 1.2 is very skewed.
        alpha: f64,
    },
    /// Every key equally likely: no policy can beat capacity / keys.
    Uniform,
    /// Zipf traffic with periodic one-pass scans over the coldest keys; shows scan resistance.
    Scan {
        /// The exponent of the Zipf part.
        alpha: f64,
    },
    /// Zipf traffic whose popular keys change halfway through; shows how fast a policy adapts.
    Shift {
        /// The exponent of the Zipf part.
        alpha: f64,
    },
    /// Zipf traffic whose hot set slides steadily onto new keys: the newest keys are the most
    /// popular and each key cools as it ages (news, feeds). Recency matters most here, which is
    /// where frequency-based admission loses to LRU.
    Drift {
        /// The exponent of the Zipf part.
        alpha: f64,
    },
    /// Every key in turn, over and over: LRU's worst case (it misses every request once the
    /// cache is smaller than the loop), where the best policies keep a fixed part of the loop.
    Loop,
    /// A stream of new keys, each read once more a while after its first use (the gap drawn
    /// from an exponential distribution with a mean of `--keys` requests), and never again:
    /// recency is all that matters, which is where admission filters and small probationary
    /// queues lose to LRU.
    Reread,
}

/// The exponent used when `scan` or `shift` is given without one.
pub const DEFAULT_ALPHA: f64 = 1.0;

fn parse_alpha(text: &str) -> Result<f64, SpecError> {
    let alpha: f64 = text
        .trim()
        .parse()
        .map_err(|_| SpecError::Alpha(text.to_string()))?;
    // Zipf with alpha 0 is uniform (use `uniform`); past 5 nearly every request is for key 0.
    if !alpha.is_finite() || alpha <= 0.0 || alpha > 5.0 {
        return Err(SpecError::Alpha(text.to_string()));
    }
    Ok(alpha)
}

impl FromStr for Workload {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let (name, arg) = match t.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (t.as_str(), None),
        };
        let alpha = || arg.map_or(Ok(DEFAULT_ALPHA), parse_alpha);
        match name {
            "zipf" => Ok(Workload::Zipf { alpha: alpha()? }),
            "uniform" if arg.is_none() => Ok(Workload::Uniform),
            "scan" => Ok(Workload::Scan { alpha: alpha()? }),
            "shift" => Ok(Workload::Shift { alpha: alpha()? }),
            "drift" => Ok(Workload::Drift { alpha: alpha()? }),
            "loop" if arg.is_none() => Ok(Workload::Loop),
            "reread" if arg.is_none() => Ok(Workload::Reread),
            _ => Err(SpecError::Workload(s.to_string())),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Zipf { alpha } => write!(f, "zipf:{alpha}"),
            Workload::Uniform => f.write_str("uniform"),
            Workload::Scan { alpha } => write!(f, "scan:{alpha}"),
            Workload::Shift { alpha } => write!(f, "shift:{alpha}"),
            Workload::Drift { alpha } => write!(f, "drift:{alpha}"),
            Workload::Loop => f.write_str("loop"),
            Workload::Reread => f.write_str("reread"),
        }
    }
}

/// How big each object is. Sizes are per object, not per request: an object keeps one size for
/// the whole run, as a file behind a URL does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SizeSpec {
    /// Every object has this many body bytes.
    Fixed(u64),
    /// Body bytes drawn from a log-normal distribution with this mean (bytes) and this sigma of
    /// the underlying normal; the usual shape of web object sizes.
    LogNormal {
        /// Mean object size in bytes.
        mean: u64,
        /// Standard deviation of `ln(size)`.
        sigma: f64,
    },
}

impl FromStr for SizeSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || SpecError::Size(s.to_string());
        let t = s.trim();
        if let Some(args) = t
            .strip_prefix("lognormal:")
            .or_else(|| t.strip_prefix("LogNormal:"))
        {
            let (mean, sigma) = args.split_once(',').ok_or_else(err)?;
            let mean = parse_size(mean).map_err(|_| err())?;
            let sigma: f64 = sigma.trim().parse().map_err(|_| err())?;
            if mean == 0 || !(0.0..=4.0).contains(&sigma) {
                return Err(err());
            }
            return Ok(SizeSpec::LogNormal { mean, sigma });
        }
        match parse_size(t) {
            Ok(0) | Err(_) => Err(err()),
            Ok(n) => Ok(SizeSpec::Fixed(n)),
        }
    }
}

impl fmt::Display for SizeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeSpec::Fixed(n) => f.write_str(&format_size(*n)),
            SizeSpec::LogNormal { mean, sigma } => {
                write!(f, "lognormal:{},{sigma}", format_size(*mean))
            }
        }
    }
}

/// One cache size to run at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Capacity {
    /// This many bytes, as every backend counts them (`Entry::charge`).
    Bytes(u64),
    /// This percentage of the trace's working set: the charged bytes of every distinct object.
    Percent(f64),
}

impl Capacity {
    /// The capacity in bytes for a trace of `objects` distinct objects whose working set is
    /// `working_set` bytes; never 0.
    ///
    /// A percentage is rounded to a whole number of objects, the nearest to `p%` of `objects`
    /// (at least one), each counted at the mean charge `working_set / objects`. With equal
    /// charges (a fixed `--size`) exactly that many objects fit: 10% of 125 objects holds 13,
    /// where `round(10% of the bytes)` would hold 12.5 objects' bytes, and so only 12.
    pub fn resolve(self, working_set: u64, objects: usize) -> u64 {
        match self {
            Capacity::Bytes(n) => n,
            Capacity::Percent(p) if objects == 0 => {
                ((working_set as f64 * p / 100.0).round() as u64).max(1)
            }
            Capacity::Percent(p) => {
                let n = objects as u128;
                let whole = ((objects as f64 * p / 100.0).round() as u128).max(1);
                // whole * working_set / n, rounded, without floating point: exact to the byte
                // when every object has the same charge.
                let bytes = (whole * u128::from(working_set) + n / 2) / n;
                u64::try_from(bytes).unwrap_or(u64::MAX).max(1)
            }
        }
    }
}

impl FromStr for Capacity {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || SpecError::Capacity(s.to_string());
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| err())?;
            if !p.is_finite() || p <= 0.0 {
                return Err(err());
            }
            return Ok(Capacity::Percent(p));
        }
        match parse_size(t) {
            Ok(0) | Err(_) => Err(err()),
            Ok(n) => Ok(Capacity::Bytes(n)),
        }
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capacity::Bytes(n) => f.write_str(&format_size(*n)),
            Capacity::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// `--capacity`: a comma list, each item run in turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacities(pub Vec<Capacity>);

impl FromStr for Capacities {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let items: Vec<Capacity> = s
            .split(',')
            .filter(|i| !i.trim().is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        if items.is_empty() {
            return Err(SpecError::EmptyCapacity);
        }
        Ok(Capacities(items))
    }
}

/// `--backend`: a comma list of backends, each run in turn, duplicates dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backends(pub Vec<Backend>);

impl Default for Backends {
    fn default() -> Self {
        Backends(Backend::ALL.to_vec())
    }
}

impl FromStr for Backends {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Vec::new();
        for item in s.split(',').filter(|i| !i.trim().is_empty()) {
            let b: Backend = item
                .parse()
                .map_err(|_| SpecError::Backend(item.trim().to_string()))?;
            if !out.contains(&b) {
                out.push(b);
            }
        }
        if out.is_empty() {
            return Err(SpecError::Backend(s.to_string()));
        }
        Ok(Backends(out))
    }
}

/// `--eviction` of `bench`: a comma list of policies for the rwlock and sharded backends.
#[derive(Debug, Clone, PartialEq)]
pub struct Evictions(pub Vec<Eviction>);

impl FromStr for Evictions {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Vec::new();
        for item in s.split(',').filter(|i| !i.trim().is_empty()) {
            let e: Eviction = item
                .parse()
                .map_err(|_| SpecError::Eviction(item.trim().to_string()))?;
            if !out.contains(&e) {
                out.push(e);
            }
        }
        if out.is_empty() {
            return Err(SpecError::Eviction(s.to_string()));
        }
        Ok(Evictions(out))
    }
}

/// How a `--trace` file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TraceFormat {
    /// Guess from the name: `.oracleGeneral`, `.bin` or a `.zst` suffix mean oracleGeneral,
    /// anything else is text.
    #[default]
    Auto,
    /// One request per line: a key, then optionally a size, separated by a comma or whitespace.
    Csv,
    /// libCacheSim's oracleGeneral: 24-byte little-endian records, optionally zstd-compressed.
    Oracle,
}

impl FromStr for TraceFormat {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(TraceFormat::Auto),
            "csv" | "txt" | "text" => Ok(TraceFormat::Csv),
            "oracle" | "oraclegeneral" => Ok(TraceFormat::Oracle),
            _ => Err(SpecError::TraceFormat(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_parse_sizes_percentages_and_lists() {
        assert_eq!(
            "10%".parse::<Capacities>().unwrap(),
            Capacities(vec![Capacity::Percent(10.0)])
        );
        assert_eq!(
            "64MiB".parse::<Capacities>().unwrap(),
            Capacities(vec![Capacity::Bytes(64 << 20)])
        );
        assert_eq!(
            "1%, 2.5%,64MiB,4096".parse::<Capacities>().unwrap(),
            Capacities(vec![
                Capacity::Percent(1.0),
                Capacity::Percent(2.5),
                Capacity::Bytes(64 << 20),
                Capacity::Bytes(4096),
            ])
        );
        assert_eq!(Capacity::Percent(10.0).resolve(1000, 10), 100);
        assert_eq!(Capacity::Percent(0.001).resolve(10, 0), 1, "never 0 bytes");
        assert_eq!(Capacity::Bytes(7).resolve(1000, 10), 7);
    }

    #[test]
    fn percentages_round_to_the_nearest_whole_object() {
        // (percent, objects, charge of each object, objects the capacity must hold)
        let table: &[(f64, usize, u64, u64)] = &[
            (10.0, 1000, 4746, 100),
            (10.0, 125, 4746, 13),        // 12.5 rounds up: bytes alone held 12
            (10.0, 124, 4746, 12),        // 12.4 rounds down
            (10.0, 126, 4746, 13),        // 12.6: bytes alone held 12
            (1.0, 80_786, 4746, 808),     // 807.86: bytes alone held 807
            (5.0, 99_570, 4746, 4979),    // 4978.5
            (25.0, 95_330, 4746, 23_833), // 23832.5
            (2.5, 10, 651, 1),            // 0.25 rounds to 0: still one object
            (0.001, 10, 651, 1),          // never an empty cache
            (50.0, 3, 1000, 2),           // 1.5
            (100.0, 7, 999, 7),           // the whole working set
            (200.0, 7, 999, 14),          // more than it
            (33.3, 3, 17, 1),             // 0.999
            (16.7, 6, 17, 1),             // 1.002
        ];
        for &(p, n, charge, held) in table {
            let bytes = Capacity::Percent(p).resolve(n as u64 * charge, n);
            assert_eq!(
                bytes,
                held * charge,
                "{p}% of {n} objects of {charge} bytes"
            );
            assert_eq!(bytes / charge, held, "{p}% of {n}: objects that fit");
        }
        // Varied charges: the nearest whole number of objects at the mean charge.
        assert_eq!(Capacity::Percent(10.0).resolve(1001, 25), 120); // 2.5 objects -> 3 x 40.04
        assert_eq!(Capacity::Percent(10.0).resolve(1000, 24), 83); // 2.4 -> 2 x 41.67
    }

    #[test]
    fn capacity_errors_name_the_bad_item() {
        for bad in ["10%,lots", "0", "-5%", "0%", "12XB", "%", "nan%"] {
            let err = bad.parse::<Capacities>().unwrap_err();
            let item = bad.split(',').next_back().unwrap();
            assert_eq!(err, SpecError::Capacity(item.to_string()), "{bad}");
            assert!(err.to_string().contains(item), "{err}");
        }
        assert_eq!(
            ",".parse::<Capacities>().unwrap_err(),
            SpecError::EmptyCapacity
        );
    }

    #[test]
    fn workloads() {
        assert_eq!(
            "zipf:1.0".parse::<Workload>().unwrap(),
            Workload::Zipf { alpha: 1.0 }
        );
        assert_eq!(
            "Zipf:0.6".parse::<Workload>().unwrap(),
            Workload::Zipf { alpha: 0.6 }
        );
        assert_eq!("uniform".parse::<Workload>().unwrap(), Workload::Uniform);
        assert_eq!(
            "scan".parse::<Workload>().unwrap(),
            Workload::Scan { alpha: 1.0 }
        );
        assert_eq!(
            "shift:1.2".parse::<Workload>().unwrap(),
            Workload::Shift { alpha: 1.2 }
        );
        assert_eq!(
            "zipf:x".parse::<Workload>().unwrap_err(),
            SpecError::Alpha("x".into())
        );
        assert_eq!(
            "zipf:0".parse::<Workload>().unwrap_err(),
            SpecError::Alpha("0".into())
        );
        assert_eq!(
            "pareto".parse::<Workload>().unwrap_err(),
            SpecError::Workload("pareto".into())
        );
        // Display round-trips, so reports can be fed back as flags.
        assert_eq!(
            "drift".parse::<Workload>().unwrap(),
            Workload::Drift { alpha: 1.0 }
        );
        for w in ["zipf:0.8", "uniform", "scan:1", "shift:1.1", "drift:0.9"] {
            let parsed: Workload = w.parse().unwrap();
            assert_eq!(parsed.to_string().parse::<Workload>().unwrap(), parsed);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!("4KiB".parse::<SizeSpec>().unwrap(), SizeSpec::Fixed(4096));
        assert_eq!(
            "lognormal:16KiB,1.5".parse::<SizeSpec>().unwrap(),
            SizeSpec::LogNormal {
                mean: 16384,
                sigma: 1.5
            }
        );
        for bad in [
            "0",
            "big",
            "lognormal:16KiB",
            "lognormal:0,1",
            "lognormal:1KiB,-1",
        ] {
            assert_eq!(
                bad.parse::<SizeSpec>().unwrap_err(),
                SpecError::Size(bad.into())
            );
        }
    }

    #[test]
    fn backends() {
        assert_eq!(
            "moka,rwlock,moka".parse::<Backends>().unwrap(),
            Backends(vec![Backend::Moka, Backend::Rwlock])
        );
        let err = "moka,redis".parse::<Backends>().unwrap_err();
        assert_eq!(err, SpecError::Backend("redis".into()));
        assert!(err.to_string().contains("\"redis\""));
    }
}
