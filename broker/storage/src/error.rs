//! The storage engine's errors. Each says what failed and, where it helps, what to do.

use std::io;
use std::path::PathBuf;

use weir_proto::batch::BatchError;
use weir_proto::topic::InvalidTopicName;
use weir_replication::LeaderEpoch;

/// Everything the storage engine can refuse or fail at. A refused append wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("batch of {size} bytes exceeds max_batch_bytes ({max}); send smaller batches")]
    BatchTooLarge { size: usize, max: u32 },
    #[error(
        "offset {offset} is out of range: the log holds offsets [{log_start}, {high_watermark})"
    )]
    OffsetOutOfRange {
        offset: u64,
        log_start: u64,
        high_watermark: u64,
    },
    #[error(
        "disk full while {context} ({path}); free space and retry: the partition stays readable"
    )]
    DiskFull {
        context: &'static str,
        path: PathBuf,
    },
    #[error("I/O error while {context} ({path}): {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "partition {partition} is read-only after a failed sync ({reason}); restart the broker once the disk is healthy"
    )]
    SyncFailed { partition: String, reason: String },
    #[error(
        "offset {offset} was truncated away before it was synced (high watermark is now {high_watermark}); it is not durable"
    )]
    TruncatedBeforeSync { offset: u64, high_watermark: u64 },
    #[error(
        "segment {base_offset} was removed (retention or truncation) while being read; retry the read"
    )]
    SegmentRemoved { base_offset: u64 },
    #[error("partition {0} already exists")]
    PartitionExists(String),
    #[error("unknown partition {0}")]
    UnknownPartition(String),
    #[error("invalid topic name: {0}")]
    InvalidTopicName(#[from] InvalidTopicName),
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    #[error("data directory {0} is locked by another process (is another broker running on it?)")]
    DirLocked(PathBuf),
    /// A read met a batch that is not what the log promises below the high watermark (a torn,
    /// zeroed or inconsistent batch: a bad sector, a stray write). Every batch before `offset`
    /// was served; nothing at or past it is, from this copy.
    #[error(
        "{partition}: the stored log is damaged at offset {offset} ({} byte {position}: {detail}); every batch before it is readable; `weir-broker --verify` lists all damage",
        path.display()
    )]
    CorruptLog {
        partition: String,
        offset: u64,
        path: PathBuf,
        position: u64,
        detail: String,
    },
    #[error("corrupt {what} at {path}: {detail}")]
    Corrupt {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error(
        "producer {producer_id}: batch starts at sequence {got}, expected {expected}; a batch was lost or reordered (re-initialize the producer)"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error(
        "producer {producer_id} epoch {epoch} is fenced: epoch {current} has written since; another instance took over"
    )]
    ProducerFenced {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error(
        "conflict: expected the next offset to be {expected}, it is {actual}; nothing was written"
    )]
    OffsetConflict { expected: u64, actual: u64 },
    #[error(
        "conflict on key {key}: expected its last record at {}, it is at {}; nothing was written",
        expected.map_or("none (a new key)".to_string(), |o| o.to_string()),
        actual.map_or("none (the key is new)".to_string(), |o| o.to_string())
    )]
    KeyConflict {
        key: String,
        expected: Option<u64>,
        actual: Option<u64>,
    },
    /// A follower's `append_replica` got a batch that does not start at its log end: it
    /// must truncate or fetch from `expected` first. Nothing was written.
    #[error(
        "{partition}: replicated batch starts at offset {actual}, the log ends at {expected}; nothing was written"
    )]
    ReplicaOffsetMismatch {
        partition: String,
        expected: u64,
        actual: u64,
    },
    /// `assign_epoch` with an epoch older than (or equal to, at another start) the latest one
    /// in the partition's epoch history. Nothing was written.
    #[error(
        "{partition}: leader epoch {} is not newer than the latest epoch {} in the epoch history",
        given.0,
        latest.0
    )]
    EpochNotNewer {
        partition: String,
        latest: LeaderEpoch,
        given: LeaderEpoch,
    },
    /// `assign_epoch` with a start offset below the latest epoch's start. Nothing was written.
    #[error(
        "{partition}: leader epoch start offset {given} is below the latest epoch's start {latest_start}"
    )]
    EpochStartBeforeLatest {
        partition: String,
        latest_start: u64,
        given: u64,
    },
    /// `assign_epoch` with a start offset past the log end: an epoch starts at a record the log
    /// holds or at the next one. Nothing was written.
    #[error("{partition}: leader epoch start offset {start_offset} is past the log end {log_end}")]
    EpochStartPastLogEnd {
        partition: String,
        start_offset: u64,
        log_end: u64,
    },
    #[error("the log is closed")]
    Closed,
}

impl StorageError {
    /// Wraps an I/O error, turning ENOSPC/EDQUOT into [`StorageError::DiskFull`] so callers can
    /// tell "retry when space is back" from a broken disk.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(code)
                if code == rustix::io::Errno::NOSPC.raw_os_error()
                    || code == rustix::io::Errno::DQUOT.raw_os_error() =>
            {
                StorageError::DiskFull { context, path }
            }
            _ => StorageError::Io {
                context,
                path,
                source,
            },
        }
    }

    /// True for errors that go away by themselves once the disk has room again.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::DiskFull { .. })
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
