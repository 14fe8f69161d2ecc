//! The circuit breaker in front of the shared tier: after a run of failures the proxy stops
//! calling it (each call would cost a request its timeout) until a background probe finds it
//! answering again.
//!
//! Atomics only: it is consulted on every shared lookup, from every worker thread.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Closed (calls go through) or open (calls are refused at once); see the module doc.
#[derive(Debug)]
pub struct Breaker {
    /// Consecutive failures since the last success.
    failures: AtomicU32,
    open: AtomicBool,
    /// Failures in a row that open it.
    threshold: u32,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` failures in a row (at least 1).
    pub fn new(threshold: u32) -> Self {
        Breaker {
            failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
            threshold: threshold.max(1),
        }
    }

    /// True when calls may go through.
    pub fn allows(&self) -> bool {
        !self.open.load(Ordering::Relaxed)
    }

    /// True while open.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// A call succeeded: the run of failures ends.
    pub fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A call failed. Returns true when this failure opened the breaker.
    pub fn failure(&self) -> bool {
        let run = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        run >= self.threshold && !self.open.swap(true, Ordering::Relaxed)
    }

    /// The probe found the tier answering: close. Returns true when it was open.
    pub fn close(&self) -> bool {
        self.failures.store(0, Ordering::Relaxed);
        self.open.swap(false, Ordering::Relaxed)
    }
}

/// Lets one log line through per interval, so that a dead tier under load logs once a second
/// and not once a request. Times are milliseconds on any monotonic scale the caller keeps.
#[derive(Debug, Default)]
pub struct LogLimiter {
    /// The time of the last line let through, plus one (0: none yet).
    last: AtomicU64,
}

impl LogLimiter {
    /// True when a line may be written at `now_ms`, given lines at most every `every_ms`.
    pub fn allow(&self, now_ms: u64, every_ms: u64) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now_ms.saturating_add(1) < last.saturating_add(every_ms) {
            return false;
        }
        self.last
            .compare_exchange(last, now_ms + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_a_run_of_failures_and_only_the_probe_closes_it() {
        let b = Breaker::new(3);
        assert!(!b.failure());
        b.success(); // the run restarts
        assert!(!b.failure());
        assert!(!b.failure());
        assert!(b.allows());
        assert!(b.failure(), "the third failure in a row opens it");
        assert!(!b.allows());
        assert!(!b.failure(), "already open: not opened again");
        b.success(); // a call that raced the opening does not close it
        assert!(!b.allows());
        assert!(b.close());
        assert!(b.allows());
        assert!(!b.close());
    }

    #[test]
    fn the_log_limiter_lets_one_line_through_per_interval() {
        let l = LogLimiter::default();
        assert!(l.allow(0, 1000));
        assert!(!l.allow(10, 1000));
        assert!(!l.allow(998, 1000));
        assert!(l.allow(1000, 1000));
        assert!(!l.allow(1500, 1000));
        assert!(l.allow(2100, 1000));
    }
}
