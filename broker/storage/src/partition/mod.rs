//! `PartitionLog`: one partition's append-only log, the engine's public face.
//!
//! Invariants (checked by the model test in `tests/storage_model.rs`, the stress test in
//! `tests/storage_concurrency.rs`, the disk faults of `tests/storage_faults.rs`, and the
//! `debug_assert!`s where each is enforced):
//! - Offsets are dense and never move: the batch appended after offset `n-1` gets base offset
//!   `n`, and a read of offset `n` returns the same bytes until retention deletes,
//!   `truncate_to` cuts or `reset_to` drops them (the offsets of a reset log start anew at
//!   its offset).
//! - `log_start_offset <= recovery_point <= high_watermark`; every byte in `[log start,
//!   recovery point)` has been synced (retention may raise the recovery point to a new log start
//!   without a sync: nothing below the log start counts), and the checkpointed recovery point is
//!   never above the in-memory one; nothing at or past the high watermark is ever served.
//! - An append is validated completely, and its disk blocks reserved, before the first byte is
//!   written; a refused append publishes nothing (offsets, reads and the high watermark are
//!   unchanged; one refused for a full disk may still have rolled the active segment).
//! - `append_durable` returns `Ok` only after an fdatasync covered its batch. If the sync fails
//!   it returns `SyncFailed` although the batch was appended (its offsets are taken and it is
//!   readable, just not known durable): a non-idempotent producer that retries may duplicate
//!   it (an idempotent one is recognized as a retry). A batch cut by `truncate_to` before its sync gets
//!   `TruncatedBeforeSync`, never `Ok`, even if a newer batch reuses its offsets.
//! - The epoch history (`leader-epoch`) describes the log: every entry starts in `[log start,
//!   high watermark]`, and every change is stored durably before the call making it returns
//!   (`epochs.rs`; a truncation stores it after its cut, so a crash in between leaves entries at
//!   or past the log end, which the next open drops).
//! - Retention never moves the log start past the retention limit (the owner's high
//!   watermark on a replicated partition, see `set_retention_limit`): a segment holding an
//!   offset at or above it stays.
//! - A closed, deleted or dropped log's handles fail with `Closed` and never open a file by
//!   path again (the path may name another log's file by then).
//!
//! Concurrency: one `Mutex` serializes appends and segment changes; the high watermark, log
//! start and recovery point are mirrored in atomics for lock-free polling and checkpoints.
//! Reads clone the handles they need under the lock (an index lookup; occasionally reopening
//! an idle active segment) and walk the mapped bytes after releasing it. Syncs happen outside
//! that lock, one at a time per partition: an appender that wants durability either finds its
//! offset already durable, parks until the sync in flight finishes, or runs the next sync for
//! everyone waiting (group commit). Lock order: partition lock, then sync state; never the
//! reverse.
//!
//! Where each concern lives (one `impl PartitionLog` block per file of `partition/`):
//! - `mod.rs`: the struct, the state behind its lock (`Inner`), the public result types,
//!   construction, accessors, clean close and retirement;
//! - `append.rs`: validate, check conditions and idempotent producers (not for a follower's
//!   `append_replica`), roll, reserve, copy, publish the high watermark;
//! - `sync.rs`: group commit, where an append becomes durable (`sync_through`, `run_sync`,
//!   `wait_durable`, the flush policy);
//! - `read.rs`: `read` and `read_bounded` (`read_once`, `select_batches`) and `offset_for_time`;
//! - `derived.rs`: producer states and the key index, their snapshots and rebuilds;
//! - `epochs.rs`: the epoch history (`epoch_history`, `assign_epoch`) and fitting it to the
//!   log when truncation or retention moves the log's ends;
//! - `retention.rs`: everything that removes data: `truncate_to`, `reset_to`, retention,
//!   `delete_segments_before`, and closing idle files;
//! - `scrub.rs`: CRC-checking a sealed segment for the background scrub, and the damage it
//!   found, which reads stop before.

mod append;
mod derived;
mod epochs;
mod read;
mod retention;
mod scrub;
mod sync;

pub use scrub::{KnownDamage, ScrubbedSegment};

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use bytes::Bytes;

use super::config::LogConfig;
use super::error::{Result, StorageError};
use super::fs::SyncMode;
use super::key_index::KeyIndex;
use super::producer_state::ProducerStates;
use super::segment::{ActiveSegment, SealedSegment};
use sync::SyncState;
use weir_proto::topic::TopicPartition;
use weir_replication::EpochHistory;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    pub record_count: u32,
    pub max_timestamp: i64,
    /// The batch was a retry of one already in the log (same producer id, epoch and
    /// sequences): nothing was written, the offsets are the original's.
    pub duplicate: bool,
}

/// Preconditions checked under the partition lock, atomically with the append; when one fails,
/// nothing is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendConditions {
    /// The partition's next offset (high watermark) must equal this ("append only if nobody
    /// appended since I read up to here").
    pub expected_offset: Option<u64>,
    /// Per key, the offset its last record must be at (`None`: the key must be new). Needs a
    /// partition with `key_index` on.
    pub expected_keys: Vec<(Vec<u8>, Option<u64>)>,
}

/// What [`PartitionLog::wait_durable`] needs to know of an appended batch: the offset it must be
/// durable through, and the truncation epoch it was appended in (so a batch cut by a truncation
/// is never reported durable, even once newer batches reuse its offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncTicket {
    through: u64,
    epoch: u64,
}

/// Whole batches read from one segment: the file range (for sendfile) and the same bytes as a
/// zero-copy slice of the segment's map.
#[derive(Debug, Clone)]
pub struct ReadChunk {
    /// The segment's `.log`; stays valid for this chunk even if retention deletes the segment.
    pub file: Arc<File>,
    pub position: u64,
    pub bytes: Bytes,
    /// Base offset of the first batch in the chunk.
    pub first_offset: u64,
    /// The offset after the last batch in the chunk.
    pub next_offset: u64,
}

/// The answer to a read: whole batches, possibly from several segments, in offset order.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub chunks: Vec<ReadChunk>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

impl ReadResult {
    pub fn total_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.bytes.len()).sum()
    }

    /// The offset a follow-up read should start at.
    pub fn next_offset(&self) -> Option<u64> {
        self.chunks.last().map(|c| c.next_offset)
    }

    /// All chunks' bytes in one buffer (copies; for callers that need contiguous bytes).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.total_bytes());
        for c in &self.chunks {
            out.extend_from_slice(&c.bytes);
        }
        out
    }
}

/// A sealed segment whose bytes are not yet known to be on disk.
pub(crate) struct UnsyncedSegment {
    pub next_offset: u64,
    pub file: Arc<File>,
    pub path: PathBuf,
}

/// State changed only under the partition lock.
pub(crate) struct Inner {
    pub sealed: VecDeque<Arc<SealedSegment>>,
    pub active: ActiveSegment,
    pub log_start_offset: u64,
    pub recovery_point: u64,
    pub unsynced_sealed: Vec<UnsyncedSegment>,
    /// When the oldest unsynced append happened, for the interval flush policy.
    pub first_unsynced_ms: Option<i64>,
    pub closed: bool,
    /// Bumped whenever the active file is replaced under the same base offset (truncation),
    /// so a sync that started before cannot credit its work to the new file.
    pub epoch: u64,
    /// Idempotent producers' recent batches; `None` until first needed after an open or a
    /// truncation, then rebuilt from the log (so opening 10,000 partitions reads no headers).
    pub producers: Option<ProducerStates>,
    /// Each key's last offset, for partitions with `key_index`; built and dropped together with
    /// `producers` (one scan of the log builds both).
    pub keys: Option<KeyIndex>,
    /// The derived state changed since its last snapshot.
    pub derived_dirty: bool,
    /// (base offset, CRC) of the last batch appended or scanned: a snapshot names it so a log
    /// that lost its tail and grew back past the snapshot is not mistaken for the same log.
    pub last_batch: Option<(u64, u32)>,
    /// Leader epoch -> start offset, as the `leader-epoch` file holds it (every change is
    /// stored before the lock is released). Every start lies in `[log start, high watermark]`.
    pub epochs: EpochHistory,
}

impl Inner {
    pub(crate) fn new(
        sealed: VecDeque<Arc<SealedSegment>>,
        active: ActiveSegment,
        log_start_offset: u64,
    ) -> Self {
        let recovery_point = active.next_offset;
        Inner {
            sealed,
            active,
            log_start_offset,
            recovery_point,
            unsynced_sealed: Vec::new(),
            first_unsynced_ms: None,
            closed: false,
            epoch: 0,
            producers: None,
            keys: None,
            derived_dirty: false,
            last_batch: None,
            epochs: EpochHistory::new(),
        }
    }

    /// Debug builds: `log_start_offset <= recovery_point <= high watermark` (the active
    /// segment's next offset), checked wherever one of them moves.
    pub(crate) fn debug_check_marks(&self) {
        debug_assert!(
            self.log_start_offset <= self.recovery_point
                && self.recovery_point <= self.active.next_offset,
            "marks out of order: log start {} <= recovery point {} <= high watermark {} broken",
            self.log_start_offset,
            self.recovery_point,
            self.active.next_offset
        );
    }

    /// Debug builds: the segments form one dense run of offsets (each starts where the one
    /// before it ends, the active one last) and the log start lies in it. Checked where
    /// segments come and go (open, roll, truncation, retention); linear in the segments, so not
    /// on every append.
    pub(crate) fn debug_check_chain(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let mut expected = self.sealed.front().map(|s| s.base_offset);
        for s in &self.sealed {
            debug_assert!(
                expected == Some(s.base_offset) && s.base_offset <= s.next_offset,
                "sealed segment [{}, {}) does not follow the one before (expected base {expected:?})",
                s.base_offset,
                s.next_offset
            );
            expected = Some(s.next_offset);
        }
        debug_assert!(
            expected.is_none_or(|e| e == self.active.base_offset)
                && self.active.base_offset <= self.active.next_offset,
            "active segment [{}, {}) does not follow the sealed ones (expected base {expected:?})",
            self.active.base_offset,
            self.active.next_offset
        );
        let first_base = self
            .sealed
            .front()
            .map_or(self.active.base_offset, |s| s.base_offset);
        debug_assert!(
            first_base <= self.log_start_offset,
            "log start {} is below the first segment's base {first_base}",
            self.log_start_offset
        );
        self.debug_check_marks();
    }
}

/// Writes the data dir's checkpoints now; installed by `LogDir`, called by `truncate_to`
/// before it destroys anything, so the on-disk recovery point never claims cut-away bytes.
pub(crate) type CheckpointHook = Box<dyn Fn() -> Result<()> + Send + Sync>;

/// One partition's log. Cheap to share (`Arc<PartitionLog>`); all methods take `&self`.
pub struct PartitionLog {
    tp: TopicPartition,
    dir: PathBuf,
    config: RwLock<Arc<LogConfig>>,
    inner: Mutex<Inner>,
    high_watermark: AtomicU64,
    log_start_offset: AtomicU64,
    /// Mirrors `Inner::recovery_point` so checkpoints read it without taking partition locks.
    recovery_point: AtomicU64,
    sync: Mutex<SyncState>,
    checkpoint_hook: OnceLock<CheckpointHook>,
    /// Serializes rebuilding the derived state from the log (see `ensure_derived_state`).
    derived_rebuild: Mutex<()>,
    /// Held while a derived-state snapshot is written and while a truncation deletes it, so a
    /// snapshot taken before a truncation can never land after it. Taken before `inner`.
    snapshot_lock: Mutex<()>,
    /// Offsets scanned by derived-state rebuilds (how much a snapshot saved; for tests).
    rebuild_scans: AtomicU64,
    /// 1 + the offset of the damage a read last logged (0: none), so a consumer retrying at a
    /// damaged place logs it once, not per fetch.
    damage_logged: AtomicU64,
    /// Damage the scrub found (see `scrub.rs`); reads stop before it. A leaf lock.
    known_damage: Mutex<Option<scrub::KnownDamage>>,
    /// What its syncs took and covered (see [`crate::stats`]).
    sync_stats: crate::stats::SyncStats,
    /// Retention deletes only segments wholly below this offset (the owner's committed
    /// offset: a replicated partition's high watermark); `u64::MAX`, the default, bounds it by
    /// nothing but the log itself. Not persisted: a reopened log starts unbounded again.
    retention_limit: AtomicU64,
}

impl PartitionLog {
    pub(crate) fn from_parts(
        tp: TopicPartition,
        dir: PathBuf,
        config: LogConfig,
        inner: Inner,
    ) -> Self {
        inner.debug_check_chain();
        let hw = inner.active.next_offset;
        PartitionLog {
            tp,
            dir,
            config: RwLock::new(Arc::new(config)),
            high_watermark: AtomicU64::new(hw),
            log_start_offset: AtomicU64::new(inner.log_start_offset),
            recovery_point: AtomicU64::new(inner.recovery_point),
            checkpoint_hook: OnceLock::new(),
            derived_rebuild: Mutex::new(()),
            snapshot_lock: Mutex::new(()),
            rebuild_scans: AtomicU64::new(0),
            damage_logged: AtomicU64::new(0),
            known_damage: Mutex::new(None),
            sync_stats: crate::stats::SyncStats::default(),
            retention_limit: AtomicU64::new(u64::MAX),
            sync: Mutex::new(SyncState {
                in_progress: false,
                durable_offset: inner.recovery_point,
                failure: None,
                waiters: Vec::new(),
                truncations: VecDeque::new(),
            }),
            inner: Mutex::new(inner),
        }
    }

    pub fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    /// What this partition's syncs took and covered since it was opened.
    pub fn sync_stats(&self) -> &crate::stats::SyncStats {
        &self.sync_stats
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> Arc<LogConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the settings. A new `segment_bytes` applies from the next segment on.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// The offset the next appended record will get; reads stop before it.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> u64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    /// Offsets below this are synced to disk (and checkpointed as the recovery point).
    pub fn recovery_point(&self) -> u64 {
        self.recovery_point.load(Ordering::Acquire)
    }

    /// Bounds retention from now on: it deletes a segment only if every offset in it is below
    /// `limit`, so the log start never passes `limit` by retention (Kafka's `deletableSegments`
    /// bound by the high watermark). The owner of a replicated partition passes its high
    /// watermark whenever it moves, so no record a consumer or follower may still need above
    /// it is deleted; `u64::MAX` (the default) lifts the bound. Truncation, `reset_to` and
    /// `delete_segments_before` are explicit and not bounded by it.
    pub fn set_retention_limit(&self, limit: u64) {
        self.retention_limit.store(limit, Ordering::Release);
    }

    /// The bound [`Self::set_retention_limit`] set (`u64::MAX`: none).
    pub fn retention_limit(&self) -> u64 {
        self.retention_limit.load(Ordering::Acquire)
    }

    fn set_recovery_point(&self, inner: &mut Inner, offset: u64) {
        inner.recovery_point = offset;
        inner.debug_check_marks();
        self.recovery_point.store(offset, Ordering::Release);
    }

    pub(crate) fn set_checkpoint_hook(&self, hook: CheckpointHook) {
        let _ = self.checkpoint_hook.set(hook);
    }

    /// `Closed` once the log was closed, deleted, or its data dir dropped: a stale handle must
    /// never touch files that may now belong to someone else.
    fn check_open(&self, inner: &Inner) -> Result<()> {
        if inner.closed {
            Err(StorageError::Closed)
        } else {
            Ok(())
        }
    }

    /// Number of segments (sealed and active).
    pub fn segment_count(&self) -> usize {
        lock(&self.inner).sealed.len() + 1
    }

    /// Segments whose files are open right now (each holds one log descriptor and map).
    pub fn open_segment_count(&self) -> usize {
        let inner = lock(&self.inner);
        inner.sealed.iter().filter(|s| s.is_open()).count() + usize::from(inner.active.is_open())
    }

    /// Bytes of batches in the log.
    pub fn size_bytes(&self) -> u64 {
        let inner = lock(&self.inner);
        inner.sealed.iter().map(|s| s.size).sum::<u64>() + inner.active.size
    }

    /// Clean close, without syncing: writes the active segment's indexes, trims its
    /// preallocated tail, closes every file, and sets the recovery point to the high watermark.
    /// The caller ([`super::LogDir::close`]) must sync the file system before it checkpoints
    /// that recovery point or writes the clean-shutdown marker: one `syncfs` instead of several
    /// fsyncs per partition. Later calls fail with `Closed`.
    pub(crate) fn close_unsynced(&self) -> Result<()> {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return Ok(());
        }
        // After a failed sync the page cache may have dropped pages it never wrote: this close
        // must not be recorded as clean (the next open then scans and cuts what is missing).
        if let Some(reason) = lock(&self.sync).failure.clone() {
            return Err(StorageError::SyncFailed {
                partition: self.tp.to_string(),
                reason,
            });
        }
        inner.active.persist_for_close(SyncMode::Deferred)?;
        inner.active.close_writer();
        for s in &inner.sealed {
            s.mark_removed();
        }
        inner.unsynced_sealed.clear();
        let recovery_point = inner.active.next_offset;
        self.set_recovery_point(&mut inner, recovery_point);
        inner.closed = true;
        Ok(())
    }

    /// Retires this handle for good: every later call fails with `Closed`, and no file is
    /// opened by path again (sealed segments are marked removed). Used when the data dir is
    /// dropped without a clean close, or the partition is deleted; readers in flight keep the
    /// maps they already hold.
    pub(crate) fn retire(&self) {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        inner.active.close_writer();
        for s in &inner.sealed {
            s.mark_removed();
        }
    }
}
