//! Per-partition log settings and per-data-dir maintenance settings, with Kafka's defaults
//! where Kafka has one.

use std::time::Duration;

use super::error::{Result, StorageError};

/// Milliseconds of `d`, saturating: a "forever" duration must not wrap to a negative age.
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// When appended bytes are forced to disk (fdatasync/msync) without being asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Leave it to the OS page cache; only `append_durable` (acks=durable) forces a sync.
    Never,
    /// Sync at most this long after an append (by the data dir's maintenance thread).
    Interval(Duration),
    /// Every append returns only after its batch is synced (group commit shares the syncs).
    Always,
}

/// Settings of one partition log. Changing `segment_bytes` affects new segments only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before the active one would exceed this size. Default 1 GiB.
    pub segment_bytes: u64,
    /// Roll a non-empty active segment this long after it was created. Default 7 days.
    pub segment_age: Option<Duration>,
    /// Add a sparse index entry after this many bytes of batches. Default 4096.
    pub index_interval_bytes: u32,
    /// Refuse batches larger than this. Default 8 MiB.
    pub max_batch_bytes: u32,
    /// Disk blocks are reserved (fallocate) ahead of the write position in extents that start
    /// at `preallocate_min_bytes` and double up to `preallocate_max_bytes`, so an idle partition
    /// reserves little and a busy one rarely calls fallocate. Defaults 64 KiB and 64 MiB.
    pub preallocate_min_bytes: u64,
    pub preallocate_max_bytes: u64,
    pub flush: FlushPolicy,
    /// Delete the oldest sealed segments while the log is larger than this. Default: no limit.
    pub retention_bytes: Option<u64>,
    /// Delete sealed segments whose newest record is older than this. Default: keep forever
    /// (weir is an event store first: deleting history must be asked for).
    pub retention_age: Option<Duration>,
    /// Keep a per-key index of each key's last offset, so appends can be conditional on it
    /// (`expected_key_offset`). Costs memory per distinct key (see `key_index`). Default off.
    pub key_index: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_age: Some(Duration::from_secs(7 * 24 * 3600)),
            index_interval_bytes: 4096,
            max_batch_bytes: 8 << 20,
            preallocate_min_bytes: 64 << 10,
            preallocate_max_bytes: 64 << 20,
            flush: FlushPolicy::Interval(Duration::from_secs(1)),
            retention_bytes: None,
            retention_age: None,
            key_index: false,
        }
    }
}

impl LogConfig {
    /// Checks the settings against each other and the on-disk format's limits.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(StorageError::InvalidConfig(msg));
        if self.segment_bytes > u64::from(u32::MAX) {
            return bad(format!(
                "segment_bytes {} exceeds 4 GiB - 1: index positions are 32-bit",
                self.segment_bytes
            ));
        }
        if self.segment_bytes < u64::from(self.max_batch_bytes) {
            return bad(format!(
                "segment_bytes {} is smaller than max_batch_bytes {}: a maximal batch must fit in a segment",
                self.segment_bytes, self.max_batch_bytes
            ));
        }
        if (self.max_batch_bytes as usize) < weir_proto::batch::HEADER_LEN {
            return bad(format!(
                "max_batch_bytes {} cannot hold a batch header",
                self.max_batch_bytes
            ));
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be at least 1".into());
        }
        if self.preallocate_min_bytes == 0
            || self.preallocate_min_bytes > self.preallocate_max_bytes
        {
            return bad("need 0 < preallocate_min_bytes <= preallocate_max_bytes".into());
        }
        Ok(())
    }
}

/// Settings of a data directory's background maintenance.
#[derive(Debug, Clone)]
pub struct LogDirConfig {
    /// Settings for partitions created without their own.
    pub default_log: LogConfig,
    /// How often the maintenance thread wakes to run interval flushes. Default 50 ms.
    pub tick: Duration,
    /// How often recovery points and log start offsets are checkpointed. Default 10 s.
    pub checkpoint_interval: Duration,
    /// How often retention runs. Default 30 s.
    pub retention_check_interval: Duration,
    /// Files and maps of segments not touched for this long are closed. Default 60 s.
    pub idle_close_after: Duration,
    /// The background scrub CRC-checks sealed segments at most this fast (bytes per second of
    /// segment walked), one segment at a time, on a thread of its own. 0 turns it off.
    /// Default 16 MiB/s: a pass over 1 TB takes about 18 hours.
    pub scrub_bytes_per_sec: u64,
    /// A new scrub pass starts at most this long after the previous one started. Default 24 h.
    pub scrub_pass_interval: Duration,
}

impl Default for LogDirConfig {
    fn default() -> Self {
        LogDirConfig {
            default_log: LogConfig::default(),
            tick: Duration::from_millis(50),
            checkpoint_interval: Duration::from_secs(10),
            retention_check_interval: Duration::from_secs(30),
            idle_close_after: Duration::from_secs(60),
            scrub_bytes_per_sec: 16 << 20,
            scrub_pass_interval: Duration::from_secs(24 * 3600),
        }
    }
}
