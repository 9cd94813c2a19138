//! The background scrub: a thread per data dir that CRC-checks every sealed segment, one at a
//! time, at a bounded rate, so damage below the recovery point (where recovery never looks and
//! sendfile never reads) is found by the broker before a consumer finds it.
//!
//! A pass walks the partitions in order and, in each, the sealed segments that exist when it
//! gets there ([`PartitionLog::scrub_segment`] does the walk and records what it finds; reads stop
//! before it from then on). After each segment the thread sleeps as long as the segment's bytes
//! take at `scrub_bytes_per_sec`, so the scrub uses at most that much disk bandwidth on
//! average; a pass starts at most once per `scrub_pass_interval`.
//!
//! The active segment is not scrubbed: its bytes past the recovery point are recovery's, and
//! it is checked once it is sealed. The thread stops when the data dir closes (it is woken, and
//! finishes at most the segment in hand).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::error::StorageError;
use super::partition::PartitionLog;

/// How the scrub waits: on the data dir's stop flag, so closing it wakes the thread at once.
pub(crate) struct StopSignal<'a> {
    pub stop: &'a Mutex<bool>,
    pub wake: &'a Condvar,
}

impl StopSignal<'_> {
    /// Sleeps up to `duration`; `true` if the data dir is closing.
    fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut stop = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *stop {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            stop = self
                .wake
                .wait_timeout(stop, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Totals of one pass, for its log line.
#[derive(Debug, Default)]
struct Pass {
    segments: u64,
    bytes: u64,
    damaged: u64,
}

/// Runs passes until the data dir closes. `partitions` lists the open partitions now.
pub(crate) fn scrub_loop(
    partitions: impl Fn() -> Vec<Arc<PartitionLog>>,
    signal: StopSignal<'_>,
    bytes_per_sec: u64,
    pass_interval: Duration,
) {
    if bytes_per_sec == 0 {
        return;
    }
    loop {
        let started = Instant::now();
        let mut pass = Pass::default();
        for partition in partitions() {
            for base in partition.sealed_segment_bases() {
                let scrubbed = match partition.scrub_segment(base) {
                    Ok(Some(s)) => s,
                    // Removed meanwhile (retention, truncation) or the partition was deleted.
                    Ok(None) | Err(StorageError::Closed) => continue,
                    Err(e) => {
                        warn!(partition = %partition.topic_partition(), segment = base, error = %e, "scrub could not check a segment");
                        continue;
                    }
                };
                pass.segments += 1;
                pass.bytes += scrubbed.bytes;
                pass.damaged += u64::from(scrubbed.damage.is_some());
                let pause = Duration::from_secs_f64(scrubbed.bytes as f64 / bytes_per_sec as f64);
                if signal.sleep(pause) {
                    return;
                }
            }
        }
        if pass.segments > 0 {
            info!(
                segments = pass.segments,
                bytes = pass.bytes,
                damaged = pass.damaged,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "scrub pass complete"
            );
        }
        let next = pass_interval.saturating_sub(started.elapsed());
        // Never spin: an empty data dir still waits a second between passes.
        if signal.sleep(next.max(Duration::from_secs(1))) {
            return;
        }
    }
}
