//! What the engine measures about itself, for the broker's metrics: lock-free histograms of
//! each partition's syncs (how long each group-commit fdatasync took, how many waiting callers
//! it covered). The broker reads them at scrape time ([`PartitionLog::sync_stats`]); the engine
//! knows nothing of Prometheus.
//!
//! Invariants: an observation is relaxed atomic adds (it takes no lock and allocates nothing),
//! made by the thread that ran the sync; a snapshot may be torn between buckets
//! by a concurrent observation (each bucket, the count and the sum are each monotonic, which
//! is all a scraper assumes).
//!
//! [`PartitionLog::sync_stats`]: crate::PartitionLog::sync_stats

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the sync-duration buckets, nanoseconds: 50 us to 10 s (the broker's latency
/// buckets).
pub const SYNC_DURATION_BOUNDS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Upper bounds of the group-size buckets: callers one sync made durable.
pub const GROUP_SIZE_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A histogram of `u64` observations over fixed upper bounds (the last bucket, +Inf, is
/// `count`).
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [u64],
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
}

/// A histogram's values at one moment: the observations in each bucket, by upper bound (not
/// cumulative; those above the last bound are only in `count`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(u64, u64)>,
    pub sum: u64,
    pub count: u64,
}

impl AtomicHistogram {
    pub fn new(bounds: &'static [u64]) -> Self {
        AtomicHistogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: u64) {
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets = self
            .bounds
            .iter()
            .zip(self.buckets.iter())
            .map(|(&bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            buckets,
            sum: self.sum.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

impl HistogramSnapshot {
    /// Adds `other` (a histogram over the same bounds) to this one.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.buckets.is_empty() {
            self.buckets = other.buckets.clone();
        } else {
            for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
                debug_assert_eq!(mine.0, theirs.0, "merged histograms share their bounds");
                mine.1 += theirs.1;
            }
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

/// One partition's sync measurements.
#[derive(Debug)]
pub struct SyncStats {
    /// Time each group-commit sync took (its fdatasyncs), nanoseconds.
    pub duration_ns: AtomicHistogram,
    /// Callers each sync made durable (the one that ran it included).
    pub group_size: AtomicHistogram,
}

impl Default for SyncStats {
    fn default() -> Self {
        SyncStats {
            duration_ns: AtomicHistogram::new(&SYNC_DURATION_BOUNDS_NS),
            group_size: AtomicHistogram::new(&GROUP_SIZE_BOUNDS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets() {
        let h = AtomicHistogram::new(&GROUP_SIZE_BOUNDS);
        for v in [1, 1, 3, 2000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!((s.count, s.sum), (4, 2005));
        assert_eq!(s.buckets[0], (1, 2));
        assert_eq!(s.buckets[2], (4, 1));
        assert_eq!(
            s.buckets.iter().map(|b| b.1).sum::<u64>(),
            3,
            "2000 is only in +Inf"
        );
        let mut total = s.clone();
        total.merge(&s);
        assert_eq!((total.count, total.buckets[0]), (8, (1, 4)));
    }
}
