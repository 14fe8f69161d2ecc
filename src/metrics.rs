//! Counters, gauges and histograms, recorded through the `metrics` facade.
//!
//! Recording is a no-op until an exporter is installed (the admin listener installs the
//! Prometheus one), so library users and tests pay nothing for it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::proxy::CacheResult;

/// Counts one request by its result, and its total time.
pub fn record_request(result: CacheResult, elapsed: Duration) {
    metrics::counter!("cachet_requests_total", "result" => result.as_str()).increment(1);
    metrics::histogram!("cachet_request_duration_seconds").record(elapsed.as_secs_f64());
}

/// Counts one upstream exchange and its time to response headers.
pub fn record_upstream(elapsed: Duration) {
    metrics::counter!("cachet_upstream_requests_total").increment(1);
    metrics::histogram!("cachet_upstream_duration_seconds").record(elapsed.as_secs_f64());
}

/// Counts a background refresh dropped because the queue was full.
pub fn record_refresh_dropped() {
    metrics::counter!("cachet_refresh_dropped_total").increment(1);
}

/// A gauge that cannot go negative or leak: it is raised by creating a [`GaugeGuard`] and
/// lowered when the guard drops, whatever path (early return, error, panic, disconnect) ends the
/// guarded work.
#[derive(Debug, Clone)]
pub struct LiveGauge {
    value: Arc<AtomicI64>,
    name: &'static str,
}

impl LiveGauge {
    /// A gauge exported under `name`.
    pub fn new(name: &'static str) -> Self {
        LiveGauge {
            value: Arc::new(AtomicI64::new(0)),
            name,
        }
    }

    /// Raises the gauge until the returned guard drops.
    pub fn enter(&self) -> GaugeGuard {
        let now = self.value.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::gauge!(self.name).set(now as f64);
        GaugeGuard {
            gauge: self.clone(),
        }
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Acquire)
    }
}

/// Lowers its [`LiveGauge`] on drop.
#[derive(Debug)]
pub struct GaugeGuard {
    gauge: LiveGauge,
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        let now = self.gauge.value.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(self.gauge.name).set(now as f64);
    }
}
