//! The storage engine: partition logs of memory-mapped segments. No networking here; the
//! server layers call into it, and it is tested and benchmarked on its own.
//!
//! - [`LogDir`] owns a data directory: its partitions, checkpoints, clean-shutdown marker and
//!   maintenance thread (interval flushes, retention, closing idle files).
//! - [`PartitionLog`] is one partition: `append` (validate, reserve, copy, publish), `read`
//!   (whole batches as file ranges plus zero-copy `Bytes`), `offset_for_time`, `truncate_to`,
//!   `flush`/`sync_through` (group commit), retention; for replication, a follower's
//!   `append_replica` (the leader's bytes at the leader's offsets), `reset_to` (start over,
//!   empty, at the leader's log start), `read_bounded` (nothing past the committed high
//!   watermark) and the epoch history (`epoch_history`, `assign_epoch`).
//! - Inside: [`segment`] (active and sealed segments), [`mmap`] (maps and the invariant that makes
//!   handing out slices of them sound), [`index`] (sparse offset and time indexes), [`scan`]
//!   (batch validation walking), [`recovery`] (opening, crash recovery), [`checkpoint`], [`fs`]
//!   (atomic file creation, fallocate), [`sys`] (the one seam every file-system syscall goes
//!   through, with the named failpoints the `failpoints` feature compiles in), [`leader_epoch`]
//!   (the epoch history file beside each partition's segments, for replication).
//! - [`stats`]: lock-free histograms of each partition's syncs, for the broker's metrics.
//! - [`verify`]: every CRC of a data directory checked from outside, read-only
//!   (`weir-broker --verify`); [`scrub`]: the background thread that CRC-checks sealed
//!   segments at a bounded rate, so reads stop before damage a consumer would otherwise meet.
//!
//! The byte formats of every file are specified in `segments-format.md` at the repository root.

pub mod checkpoint;
pub mod config;
pub mod derived_snapshot;
pub mod error;
pub mod fs;
/// Property checks of the on-disk parsers for the fuzz targets in `fuzz/` and the bounded runs
/// in `tests/storage_fuzz_parsers.rs`; not an API.
#[doc(hidden)]
pub mod fuzz_checks;
pub mod index;
pub mod key_index;
pub mod leader_epoch;
pub mod log_dir;
pub mod mmap;
pub mod partition;
pub mod producer_state;
pub mod recovery;
pub mod scan;
pub mod scrub;
pub mod segment;
pub mod stats;
pub mod sys;
pub mod verify;

pub use config::{FlushPolicy, LogConfig, LogDirConfig};
pub use error::{Result, StorageError};
pub use log_dir::{LogDir, OpenReport};
pub use partition::{
    AppendConditions, AppendInfo, KnownDamage, PartitionLog, ReadChunk, ReadResult,
    ScrubbedSegment, SyncTicket,
};
pub use recovery::TruncationReport;
pub use scan::ScanStop;
pub use verify::{Damage, EpochFileIssue, VerifyReport, verify_log_dir};
pub use weir_proto::topic::TopicPartition;
