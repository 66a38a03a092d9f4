//! What the manager measures of each plugin's calls, and the statistics it reports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gk_sandbox::StatsSnapshot;
use gk_sdk::LimitStops;
use serde::Serialize;

use super::{Manager, ManagerError};

/// Upper bounds (inclusive, microseconds) of the call latency histogram's buckets; calls
/// slower than the last bound are counted only in the total.
pub const LATENCY_BUCKETS_MICROS: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000, 10_000_000,
];

/// Calls, errors and latency of one plugin, measured by the manager.
#[derive(Debug, Default)]
pub(super) struct CallCounters {
    calls: AtomicU64,
    errors: AtomicU64,
    total_micros: AtomicU64,
    max_micros: AtomicU64,
    /// Calls per latency bucket (not cumulative).
    buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len()],
}

/// A plugin's statistics: the manager's call counters and its sandbox's host-call counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginStats {
    /// Calls into the plugin.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Mean call latency in microseconds.
    pub mean_micros: u64,
    /// Slowest call in microseconds.
    pub max_micros: u64,
    /// Sum of all call latencies in microseconds.
    pub total_micros: u64,
    /// Calls at or under each bound of [`LATENCY_BUCKETS_MICROS`] (cumulative, as Prometheus
    /// histograms count).
    pub latency_histogram: Vec<u64>,
    /// The sandbox's counters of the plugin's host calls.
    pub host: StatsSnapshot,
    /// Calls stopped by each limit (deadline, fuel, memory), as the plugin's runtime counted
    /// them since it was loaded.
    pub stopped_by: LimitStops,
}

impl CallCounters {
    /// Counts one call that took `elapsed` and succeeded or not.
    pub(super) fn record(&self, elapsed: Duration, succeeded: bool) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.total_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
        if let Some(bucket) = LATENCY_BUCKETS_MICROS.iter().position(|&b| micros <= b) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        if !succeeded {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Manager {
    /// A plugin's statistics.
    pub fn stats(&self, name: &str) -> Result<PluginStats, ManagerError> {
        let slot = self.slot(name)?;
        let c = &slot.counters;
        let calls = c.calls.load(Ordering::Relaxed);
        let loaded = slot.loaded.load_full();
        Ok(PluginStats {
            calls,
            errors: c.errors.load(Ordering::Relaxed),
            mean_micros: c
                .total_micros
                .load(Ordering::Relaxed)
                .checked_div(calls)
                .unwrap_or(0),
            max_micros: c.max_micros.load(Ordering::Relaxed),
            total_micros: c.total_micros.load(Ordering::Relaxed),
            latency_histogram: c
                .buckets
                .iter()
                .scan(0, |sum, bucket| {
                    *sum += bucket.load(Ordering::Relaxed);
                    Some(*sum)
                })
                .collect(),
            host: loaded
                .as_ref()
                .map(|l| l.sandbox.stats())
                .unwrap_or_default(),
            stopped_by: loaded
                .as_ref()
                .map(|l| l.plugin.limit_stops())
                .unwrap_or_default(),
        })
    }
}
