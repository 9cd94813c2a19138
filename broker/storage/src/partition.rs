//! `PartitionLog`: one partition's append-only log, the engine's public face.
//!
//! Invariants (checked by the model test in `tests/storage_model.rs` and the stress test in
//! `tests/storage_concurrency.rs`):
//! - Offsets are dense and never move: the batch appended after offset `n-1` gets base offset
//!   `n`, and a read of offset `n` returns the same bytes until retention deletes or
//!   `truncate_to` cuts them.
//! - `log_start_offset <= recovery_point <= high_watermark`; every byte below the recovery
//!   point has been synced, and the checkpointed recovery point is never above the in-memory
//!   one; nothing at or past the high watermark is ever served.
//! - An append is validated completely, and its disk blocks reserved, before the first byte is
//!   written; a refused append publishes nothing (offsets, reads and the high watermark are
//!   unchanged; one refused for a full disk may still have rolled the active segment).
//! - `append_durable` returns `Ok` only after an fdatasync covered its batch. If the sync fails
//!   it returns `SyncFailed` although the batch was appended (its offsets are taken and it is
//!   readable, just not known durable): a non-idempotent producer that retries may duplicate
//!   it (an idempotent one is recognized as a retry). A batch cut by `truncate_to` before its sync gets
//!   `TruncatedBeforeSync`, never `Ok`, even if a newer batch reuses its offsets.
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

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::thread::Thread;

use bytes::Bytes;
use memmap2::MmapRaw;
use tracing::{debug, info};
use weir_proto::batch::{BatchHeader, RecordBatch};

use super::config::{FlushPolicy, LogConfig, duration_ms};
use super::derived_snapshot;
use super::error::{Result, StorageError};
use super::fs::{
    INDEX_SUFFIX, SyncMode, TIME_INDEX_SUFFIX, atomic_write, create_preallocated, fsync_dir,
    now_ms, remove_if_exists, segment_path,
};
use super::index::{self, OffsetEntry};
use super::key_index::KeyIndex;
use super::mmap::{region_bytes, region_slice};
use super::producer_state::{ProducerStates, SequenceCheck};
use super::scan::scan_batches;
use super::segment::{ActiveSegment, SealedSegment};
use weir_proto::topic::TopicPartition;

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
        }
    }
}

/// Writes the data dir's checkpoints now; installed by `LogDir`, called by `truncate_to`
/// before it destroys anything, so the on-disk recovery point never claims cut-away bytes.
pub(crate) type CheckpointHook = Box<dyn Fn() -> Result<()> + Send + Sync>;

struct SyncState {
    in_progress: bool,
    durable_offset: u64,
    failure: Option<String>,
    /// Appenders parked until `durable_offset` reaches their offset. A finished sync wakes
    /// only those it covered, plus one other to lead the next sync: waking every waiter after
    /// every sync (a condvar broadcast) spends the CPU the other appenders need to join the
    /// next group, measured at 64 appenders on 2 cores.
    waiters: Vec<(u64, Thread)>,
    /// Recent truncations as (epoch after, new high watermark), oldest first, so a durable
    /// appender can tell that its batch was cut even if a new batch has since taken its offset.
    truncations: VecDeque<(u64, u64)>,
}

/// How many truncations `SyncState` remembers; an appender older than all of them is told
/// its batch may have been cut (conservative, and truncations are rare).
const TRUNCATION_HISTORY: usize = 64;

impl SyncState {
    /// Wakes the waiters the finished sync covered (all of them after a failure) and the
    /// uncovered waiter with the lowest offset, who will lead the next sync.
    fn wake_after_sync(&mut self) {
        let durable = self.durable_offset;
        let failed = self.failure.is_some();
        self.waiters.retain(|(offset, thread)| {
            let done = failed || *offset <= durable;
            if done {
                thread.unpark();
            }
            !done
        });
        self.wake_next_leader();
    }

    /// Wakes the waiter with the lowest offset (it stays registered until it runs) to lead the
    /// next sync.
    fn wake_next_leader(&self) {
        if let Some((_, next_leader)) = self.waiters.iter().min_by_key(|(offset, _)| *offset) {
            next_leader.unpark();
        }
    }
}

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
}

/// Clears `in_progress` and wakes waiters when the sync leader finishes, even by panic, so a
/// failed leader can never leave later `sync_through` calls waiting forever.
struct SyncLeader<'a>(&'a PartitionLog);

impl Drop for SyncLeader<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.0.sync);
        if std::thread::panicking() && state.failure.is_none() {
            state.failure = Some("a sync panicked".into());
        }
        state.in_progress = false;
        state.wake_after_sync();
    }
}

/// A segment a read may draw from, with handles cloned under the lock.
enum ReadSource {
    Sealed(Arc<SealedSegment>),
    Active {
        map: Arc<MmapRaw>,
        file: Arc<File>,
        base_offset: u64,
        size: u64,
        hint: OffsetEntry,
    },
}

impl PartitionLog {
    pub(crate) fn from_parts(
        tp: TopicPartition,
        dir: PathBuf,
        config: LogConfig,
        inner: Inner,
    ) -> Self {
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

    fn set_recovery_point(&self, inner: &mut Inner, offset: u64) {
        inner.recovery_point = offset;
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

    /// Appends one batch, syncing first if the flush policy is `Always`.
    pub fn append(&self, batch: &[u8]) -> Result<AppendInfo> {
        let durable = self.config().flush == FlushPolicy::Always;
        self.append_with(batch, durable)
    }

    /// Appends one batch and returns only once it is synced to disk. Concurrent callers share
    /// syncs (group commit). See the module docs for what each error means for the batch.
    pub fn append_durable(&self, batch: &[u8]) -> Result<AppendInfo> {
        self.append_with(batch, true)
    }

    /// Appends one batch without waiting for any sync, and returns a [`SyncTicket`] that
    /// [`PartitionLog::wait_durable`] turns into `append_durable`'s guarantee later. For callers
    /// that must append in order but wait for durability concurrently (a produce stream with
    /// many durable batches in flight); the flush policy is ignored here.
    pub fn append_for_sync(
        &self,
        batch: &[u8],
        conditions: AppendConditions,
    ) -> Result<(AppendInfo, SyncTicket)> {
        let (info, epoch) = self.append_unsynced(batch, &conditions)?;
        Ok((
            info,
            SyncTicket {
                through: info.last_offset + 1,
                epoch,
            },
        ))
    }

    /// Returns once the batch `ticket` came from is synced, with `append_durable`'s errors.
    pub fn wait_durable(&self, ticket: SyncTicket) -> Result<()> {
        self.sync_appended(ticket.through, Some(ticket.epoch))
    }

    fn append_with(&self, batch: &[u8], durable: bool) -> Result<AppendInfo> {
        let (info, epoch) = self.append_unsynced(batch, &AppendConditions::default())?;
        if durable {
            self.sync_appended(info.last_offset + 1, Some(epoch))?;
        }
        Ok(info)
    }

    /// The append itself: validate, roll if due, copy into the active segment, publish the new
    /// high watermark. Returns the truncation epoch the batch was appended in.
    fn append_unsynced(
        &self,
        batch: &[u8],
        conditions: &AppendConditions,
    ) -> Result<(AppendInfo, u64)> {
        let config = self.config();
        if batch.len() > config.max_batch_bytes as usize {
            return Err(StorageError::BatchTooLarge {
                size: batch.len(),
                max: config.max_batch_bytes,
            });
        }
        let mut header = RecordBatch::validate(batch)?;
        if !conditions.expected_keys.is_empty() && !config.key_index {
            return Err(StorageError::InvalidConfig(format!(
                "{}: expected_key_offset needs a topic created with a key index",
                self.tp
            )));
        }
        // Derived state (producer states, key index) must be built before these appends.
        let idempotent = header.producer_id >= 0 || !conditions.expected_keys.is_empty();
        let epoch;
        let info = {
            let mut inner = loop {
                let inner = lock(&self.inner);
                // Built is the common case: only a missing state (after an open, or a truncation,
                // possibly one that came between a rebuild and this lock) costs a rebuild.
                if !idempotent || inner.producers.is_some() || inner.closed {
                    break inner;
                }
                drop(inner);
                self.ensure_derived_state()?;
            };
            self.check_open(&inner)?;
            if let Some(reason) = lock(&self.sync).failure.clone() {
                return Err(StorageError::SyncFailed {
                    partition: self.tp.to_string(),
                    reason,
                });
            }
            epoch = inner.epoch;
            if let Some(states) = &inner.producers
                && let SequenceCheck::Duplicate {
                    base_offset,
                    last_offset,
                } = states.check(&header)?
            {
                let info = AppendInfo {
                    base_offset,
                    last_offset,
                    record_count: header.record_count as u32,
                    max_timestamp: header.max_timestamp,
                    duplicate: true,
                };
                return Ok((info, epoch));
            }
            // After the duplicate check: the retry of a conditional batch that was appended
            // gets its offsets, not a conflict with itself.
            if let Some(expected) = conditions.expected_offset
                && expected != inner.active.next_offset
            {
                return Err(StorageError::OffsetConflict {
                    expected,
                    actual: inner.active.next_offset,
                });
            }
            if let Some(keys) = &inner.keys {
                for (key, expected) in &conditions.expected_keys {
                    let actual = keys.last_offset(key);
                    if actual != *expected {
                        return Err(StorageError::KeyConflict {
                            key: String::from_utf8_lossy(key).into_owned(),
                            expected: *expected,
                            actual,
                        });
                    }
                }
            }
            let len = batch.len() as u64;
            if inner.active.next_offset > i64::MAX as u64 - header.record_count as u64 {
                return Err(StorageError::InvalidConfig(
                    "offsets exhausted: the log reached i64::MAX".into(),
                ));
            }
            if inner.active.size == 0 && len > inner.active.capacity() {
                // An empty segment mapped for a smaller segment_bytes: recreate it at today's size.
                inner.active = ActiveSegment::create(
                    &self.dir,
                    inner.active.base_offset,
                    config.segment_bytes,
                    config.preallocate_min_bytes,
                    config.index_interval_bytes,
                )?;
            }
            let active = &inner.active;
            let offsets_after =
                active.next_offset + header.record_count as u64 - active.base_offset;
            let aged = config
                .segment_age
                .is_some_and(|age| now_ms().saturating_sub(active.created_ms) >= duration_ms(age));
            if active.size > 0
                && (active.size + len > config.segment_bytes.min(active.capacity())
                    || aged
                    || offsets_after > u64::from(u32::MAX))
            {
                self.roll_locked(&mut inner, &config)?;
            }
            header.base_offset = inner.active.next_offset;
            inner.active.append(batch, &header, &config)?;
            inner.first_unsynced_ms.get_or_insert_with(now_ms);
            if let Some(states) = &mut inner.producers {
                states.observe(&header);
                inner.derived_dirty = true;
            }
            inner.last_batch = Some((header.base_offset, header.crc));
            let base_offset = header.base_offset;
            if let Some(keys) = &mut inner.keys {
                keys.observe_batch(batch, base_offset);
            }
            self.high_watermark
                .store(inner.active.next_offset, Ordering::Release);
            AppendInfo {
                base_offset: header.base_offset,
                last_offset: header.last_offset(),
                record_count: header.record_count as u32,
                max_timestamp: header.max_timestamp,
                duplicate: false,
            }
        };
        Ok((info, epoch))
    }

    /// Builds the derived state (idempotent-producer states, and the key index of a
    /// `key_index` partition) if it is not built: from the newest usable snapshot plus the log
    /// after it, or from the log start. Runs without the partition lock (it reads through
    /// `read`); idempotent and key-conditional appends wait for it, plain appends do not, so
    /// after scanning to the high watermark it catches up with whatever plain appends added
    /// meanwhile (their keys count) and installs the state only once it has seen the whole log.
    fn ensure_derived_state(&self) -> Result<()> {
        let _rebuild = lock(&self.derived_rebuild);
        if lock(&self.inner).producers.is_some() {
            return Ok(());
        }
        let index_keys = self.config().key_index;
        'scan: loop {
            let truncations = lock(&self.inner).epoch;
            let mut end = self.high_watermark();
            let log_start = self.log_start_offset();
            // Start from the snapshot when it is usable (see `derived_snapshot`), else from the
            // log start.
            let snapshot = std::fs::read(self.dir.join(derived_snapshot::FILE_NAME))
                .ok()
                .and_then(|bytes| derived_snapshot::decode(&bytes))
                .filter(|s| {
                    (log_start..=end).contains(&s.through)
                        && s.keys.is_some() == index_keys
                        && self.snapshot_matches_log(s.through, s.last_batch, log_start)
                });
            let (mut states, mut keys, mut offset, mut last_batch) = match snapshot {
                Some(s) => (s.producers, s.keys, s.through, s.last_batch),
                None => (
                    ProducerStates::default(),
                    index_keys.then(KeyIndex::default),
                    log_start,
                    None,
                ),
            };
            let scanned_from = offset;
            loop {
                while offset < end {
                    let read = match self.read(offset, 8 << 20) {
                        Ok(read) => read,
                        // Retention moved the log start under the scan: start over from it.
                        Err(StorageError::OffsetOutOfRange { .. }) => continue 'scan,
                        Err(e) => return Err(e),
                    };
                    let Some(next) = read.next_offset() else {
                        return Err(self.corrupt_rebuild(format!(
                            "the log below the high watermark {end} ends at {offset}"
                        )));
                    };
                    for chunk in &read.chunks {
                        let mut pos = 0;
                        while pos < chunk.bytes.len() {
                            let header = BatchHeader::parse(&chunk.bytes[pos..])?;
                            let len = header
                                .total_len()
                                .filter(|&len| pos + len <= chunk.bytes.len())
                                .ok_or_else(|| {
                                    self.corrupt_rebuild(
                                        "a batch length runs past its chunk".into(),
                                    )
                                })?;
                            states.observe(&header);
                            if let Some(keys) = &mut keys {
                                keys.observe_batch(
                                    &chunk.bytes[pos..pos + len],
                                    header.base_offset,
                                );
                            }
                            last_batch = Some((header.base_offset, header.crc));
                            pos += len;
                        }
                    }
                    offset = next;
                }
                let mut inner = lock(&self.inner);
                if inner.epoch != truncations {
                    // A truncation cut what was scanned: scan again.
                    continue 'scan;
                }
                if inner.active.next_offset != end {
                    // Plain appends landed during the scan: read them too, then check again.
                    end = inner.active.next_offset;
                    continue;
                }
                tracing::debug!(partition = %self.tp, producers = states.len(), from = scanned_from, through = end, "rebuilt producer states and key index");
                inner.producers = Some(states);
                inner.keys = keys;
                inner.last_batch = last_batch;
                inner.derived_dirty = scanned_from != end;
                self.rebuild_scans
                    .fetch_add(end - scanned_from, Ordering::Relaxed);
                return Ok(());
            }
        }
    }

    fn corrupt_rebuild(&self, detail: String) -> StorageError {
        StorageError::Corrupt {
            what: "log during producer-state rebuild",
            path: self.dir.clone(),
            detail,
        }
    }

    /// Whether the batch that ends at `through` in the log is the one a snapshot names.
    fn snapshot_matches_log(&self, through: u64, last: Option<(u64, u32)>, log_start: u64) -> bool {
        if through == log_start {
            return true; // nothing below it to check (and nothing to skip)
        }
        let Some((base, crc)) = last else {
            return false;
        };
        let Ok(read) = self.read(through - 1, 1) else {
            return false;
        };
        read.chunks.first().is_some_and(|chunk| {
            BatchHeader::parse(&chunk.bytes)
                .is_ok_and(|h| h.base_offset == base && h.crc == crc && h.next_offset() == through)
        })
    }

    /// Writes a snapshot of the derived state (producer states, key index) if it changed since
    /// the last one. Returns whether one was written.
    pub(crate) fn snapshot_derived_state(&self, sync: SyncMode) -> Result<bool> {
        let _snapshot = lock(&self.snapshot_lock);
        // After a failed sync the log's tail may not be on disk: a snapshot of it could outlive it.
        if lock(&self.sync).failure.is_some() {
            return Ok(false);
        }
        let bytes = {
            let mut inner = lock(&self.inner);
            if inner.closed || !inner.derived_dirty {
                return Ok(false);
            }
            let Some(producers) = &inner.producers else {
                return Ok(false);
            };
            let bytes = derived_snapshot::encode(
                inner.active.next_offset,
                inner.last_batch,
                producers,
                inner.keys.as_ref(),
            );
            inner.derived_dirty = false;
            bytes
        };
        if let Err(e) = atomic_write(&self.dir.join(derived_snapshot::FILE_NAME), &bytes, sync) {
            // Try again next time.
            lock(&self.inner).derived_dirty = true;
            return Err(e);
        }
        Ok(true)
    }

    /// Offsets the derived-state rebuilds of this handle have scanned (a snapshot makes this
    /// the tail since the snapshot instead of the whole log).
    pub fn derived_state_scanned_offsets(&self) -> u64 {
        self.rebuild_scans.load(Ordering::Relaxed)
    }

    /// Seals the active segment and starts a new one (no-op on an empty active segment).
    pub fn roll(&self) -> Result<()> {
        let config = self.config();
        let mut inner = lock(&self.inner);
        self.check_open(&inner)?;
        if inner.active.size == 0 {
            return Ok(());
        }
        self.roll_locked(&mut inner, &config)
    }

    /// Order matters for failure atomicity: every step that can fail (creating the new file,
    /// writing the old segment's indexes, trimming it) happens before the switch, so an error
    /// leaves the old segment active and appendable.
    fn roll_locked(&self, inner: &mut Inner, config: &LogConfig) -> Result<()> {
        let new_base = inner.active.next_offset;
        let new_path = segment_path(&self.dir, new_base, super::fs::LOG_SUFFIX);
        let prepared = ActiveSegment::create(
            &self.dir,
            new_base,
            config.segment_bytes,
            config.preallocate_min_bytes,
            config.index_interval_bytes,
        )
        .and_then(|new_active| {
            let sync_handle = inner.active.sync_handle()?;
            inner.active.persist_for_close(SyncMode::Now)?;
            Ok((new_active, sync_handle))
        });
        let (new_active, old_file) = match prepared {
            Ok(pair) => pair,
            Err(e) => {
                // A stray empty segment would later look like a gap in the log.
                let _ = remove_if_exists(&new_path);
                return Err(e);
            }
        };
        let old = std::mem::replace(&mut inner.active, new_active);
        // Queued even when its bytes are synced: the trim must be made durable too.
        inner.unsynced_sealed.push(UnsyncedSegment {
            next_offset: old.next_offset,
            file: old_file,
            path: old.log_path(),
        });
        inner.first_unsynced_ms.get_or_insert_with(now_ms);
        let sealed = SealedSegment::new(
            &self.dir,
            old.base_offset,
            old.next_offset,
            old.size,
            config.index_interval_bytes,
            Some(old.index.max_timestamp),
        );
        debug!(partition = %self.tp, base_offset = old.base_offset, next_offset = old.next_offset, bytes = old.size, "rolled segment");
        inner.sealed.push_back(Arc::new(sealed));
        Ok(())
    }

    /// Makes every offset below `offset` durable (group commit: concurrent callers share syncs).
    /// `offset` must not exceed the high watermark.
    pub fn sync_through(&self, offset: u64) -> Result<()> {
        self.sync_appended(offset, None)
    }

    /// `sync_through`, for a batch appended in truncation epoch `appended_in`: fails with
    /// `TruncatedBeforeSync` if a truncation since then cut below `offset`, even when newer
    /// batches have taken those offsets again.
    fn sync_appended(&self, offset: u64, appended_in: Option<u64>) -> Result<()> {
        let mut state = lock(&self.sync);
        let result = loop {
            if let Some(epoch) = appended_in {
                let forgotten = state
                    .truncations
                    .front()
                    .is_some_and(|&(first, _)| first > epoch + 1);
                let cut = state
                    .truncations
                    .iter()
                    .any(|&(after, hw)| after > epoch && hw < offset);
                if cut || forgotten {
                    break Err(StorageError::TruncatedBeforeSync {
                        offset,
                        high_watermark: self.high_watermark(),
                    });
                }
            }
            if let Some(reason) = &state.failure {
                break Err(StorageError::SyncFailed {
                    partition: self.tp.to_string(),
                    reason: reason.clone(),
                });
            }
            if state.durable_offset >= offset {
                break Ok(());
            }
            if offset > self.high_watermark() {
                // Truncated away before it was synced: never acknowledge it as durable.
                break Err(StorageError::TruncatedBeforeSync {
                    offset,
                    high_watermark: self.high_watermark(),
                });
            }
            if state.in_progress {
                // Park until a finished sync covers this offset or picks this thread to lead
                // the next one. An unpark that lands before the park is not lost (the token).
                let me = std::thread::current();
                state.waiters.push((offset, me.clone()));
                drop(state);
                std::thread::park();
                state = lock(&self.sync);
                state.waiters.retain(|(_, t)| t.id() != me.id());
                continue;
            }
            state.in_progress = true;
            drop(state);
            let leader = SyncLeader(self);
            // Appenders woken by the previous sync are runnable now: let them append before
            // this sync decides what it covers (a bigger group per fdatasync).
            std::thread::yield_now();
            match self.run_sync() {
                Ok(()) => {}
                // Closed meanwhile: not a disk failure; every waiter learns it the same way.
                Err(StorageError::Closed) => {
                    drop(leader);
                    state = lock(&self.sync);
                    break Err(StorageError::Closed);
                }
                Err(e) => {
                    tracing::error!(partition = %self.tp, error = %e, "sync failed; partition is read-only until restart");
                    lock(&self.sync).failure = Some(e.to_string());
                }
            }
            drop(leader);
            state = lock(&self.sync);
        };
        // Invariant: while waiters exist and no sync runs, one of them is awake. This thread
        // may have been the one woken to lead; leaving without leading, it passes that on.
        if !state.in_progress {
            state.wake_next_leader();
        }
        result
    }

    /// One sync: captures what is unsynced under the lock, fdatasyncs it without the lock,
    /// then, under the lock again, records the new recovery point and durable offset unless
    /// the log was truncated meanwhile (then the work covered files that are gone).
    fn run_sync(&self) -> Result<()> {
        let (files, through, epoch, active_base, active_size) = {
            let inner = lock(&self.inner);
            self.check_open(&inner)?;
            let mut files: Vec<(Arc<File>, PathBuf, bool)> = inner
                .unsynced_sealed
                .iter()
                .map(|u| (Arc::clone(&u.file), u.path.clone(), true))
                .collect();
            if inner.active.synced_size < inner.active.size {
                files.push((inner.active.sync_handle()?, inner.active.log_path(), false));
            }
            (
                files,
                inner.active.next_offset,
                inner.epoch,
                inner.active.base_offset,
                inner.active.size,
            )
        };
        // fdatasync writes every dirty page of the file, whoever dirtied it. Sealed files get a
        // full fsync: their trim (a size change) must be durable too.
        for (file, path, sealed) in &files {
            let result = if *sealed {
                file.sync_all()
            } else {
                file.sync_data()
            };
            result.map_err(|e| StorageError::io("syncing segment", path, e))?;
        }
        let mut inner = lock(&self.inner);
        if inner.epoch != epoch || inner.closed {
            return Ok(());
        }
        // Only what this sync synced: a segment sealed meanwhile (its trim unsynced) stays.
        inner.unsynced_sealed.retain(|u| {
            !files
                .iter()
                .any(|(f, _, sealed)| *sealed && Arc::ptr_eq(f, &u.file))
        });
        if inner.active.base_offset == active_base {
            inner.active.synced_size = inner.active.synced_size.max(active_size);
        }
        let recovery_point = inner.recovery_point.max(through);
        self.set_recovery_point(&mut inner, recovery_point);
        if inner.unsynced_sealed.is_empty() && inner.active.synced_size == inner.active.size {
            inner.first_unsynced_ms = None;
        }
        let mut state = lock(&self.sync);
        state.durable_offset = state.durable_offset.max(through);
        Ok(())
    }

    /// Syncs everything appended so far.
    pub fn flush(&self) -> Result<()> {
        loop {
            match self.sync_through(self.high_watermark()) {
                // Truncated between reading the high watermark and syncing: sync what is left.
                Err(StorageError::TruncatedBeforeSync { .. }) => continue,
                other => return other,
            }
        }
    }

    /// Runs the interval flush if one is due. Returns whether it synced.
    pub fn flush_if_due(&self, now_ms: i64) -> Result<bool> {
        let FlushPolicy::Interval(every) = self.config().flush else {
            return Ok(false);
        };
        let due = {
            let inner = lock(&self.inner);
            !inner.closed
                && inner
                    .first_unsynced_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) >= duration_ms(every))
        };
        if due {
            self.flush()?;
        }
        Ok(due)
    }

    /// Reads whole batches starting with the one that holds `offset`, up to `max_bytes` (the
    /// first batch is returned whole even if larger, so a consumer always makes progress).
    /// Reading at the high watermark returns no chunks; outside `[log start, high watermark]`
    /// is `OffsetOutOfRange`.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult> {
        retry_if_segment_removed(|| self.read_once(offset, max_bytes))
    }

    fn read_once(&self, offset: u64, max_bytes: usize) -> Result<ReadResult> {
        let (sources, high_watermark, log_start_offset) = {
            let mut inner = lock(&self.inner);
            self.check_open(&inner)?;
            let hw = inner.active.next_offset;
            let start = inner.log_start_offset;
            if offset < start || offset > hw {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start: start,
                    high_watermark: hw,
                });
            }
            let mut sources = Vec::new();
            if offset < hw {
                // Sealed segments from the one holding `offset`, until they hold enough bytes.
                let mut reached_active = true;
                if offset < inner.active.base_offset {
                    let first = inner
                        .sealed
                        .partition_point(|s| s.base_offset <= offset)
                        .saturating_sub(1);
                    let mut after_first = 0u64;
                    for (k, s) in inner.sealed.iter().enumerate().skip(first) {
                        sources.push(ReadSource::Sealed(Arc::clone(s)));
                        if k > first {
                            after_first += s.size;
                        }
                        if after_first >= max_bytes as u64 {
                            reached_active = false;
                            break;
                        }
                    }
                }
                if reached_active && inner.active.size > 0 {
                    let hint = if offset >= inner.active.base_offset {
                        index::lookup_offset(
                            &inner.active.index.offsets,
                            offset - inner.active.base_offset,
                        )
                    } else {
                        OffsetEntry {
                            relative_offset: 0,
                            position: 0,
                        }
                    };
                    let (base_offset, size) = (inner.active.base_offset, inner.active.size);
                    let (map, file) = inner.active.read_handles()?;
                    sources.push(ReadSource::Active {
                        map,
                        file,
                        base_offset,
                        size,
                        hint,
                    });
                }
            }
            (sources, hw, start)
        };
        let mut result = ReadResult {
            chunks: Vec::new(),
            high_watermark,
            log_start_offset,
        };
        let mut used = 0usize;
        for source in sources {
            let (map, file, base_offset, size, hint) = match source {
                ReadSource::Sealed(segment) => {
                    let open = segment.open()?;
                    let Some(map) = open.map.clone() else {
                        continue;
                    };
                    let hint = if offset >= segment.base_offset && offset < segment.next_offset {
                        index::lookup_offset(open.offsets.as_slice(), offset - segment.base_offset)
                    } else {
                        OffsetEntry {
                            relative_offset: 0,
                            position: 0,
                        }
                    };
                    (
                        map,
                        Arc::clone(&open.file),
                        segment.base_offset,
                        segment.size,
                        hint,
                    )
                }
                ReadSource::Active {
                    map,
                    file,
                    base_offset,
                    size,
                    hint,
                } => (map, file, base_offset, size, hint),
            };
            let log = region_slice(&map, 0, size as usize);
            let must_take_one = result.chunks.is_empty();
            let budget = max_bytes.saturating_sub(used);
            let selected = select_batches(
                log,
                u64::from(hint.position),
                base_offset + u64::from(hint.relative_offset),
                offset,
                budget,
                must_take_one,
            )
            .or_else(|_| select_batches(log, 0, base_offset, offset, budget, must_take_one))
            .map_err(|detail| StorageError::Corrupt {
                what: "segment",
                path: segment_path(&self.dir, base_offset, super::fs::LOG_SUFFIX),
                detail,
            })?;
            let Some(sel) = selected else { break };
            used += (sel.end - sel.start) as usize;
            result.chunks.push(ReadChunk {
                file,
                position: sel.start,
                bytes: region_bytes(&map, sel.start as usize, (sel.end - sel.start) as usize),
                first_offset: sel.first_offset,
                next_offset: sel.next_offset,
            });
            if used >= max_bytes || sel.stopped_for_budget {
                break;
            }
        }
        if result.chunks.is_empty() && offset < high_watermark {
            // Below the high watermark there is always a batch; finding none means the segment
            // does not hold what its neighbours promise. An error beats an empty answer a
            // consumer would poll forever.
            return Err(StorageError::Corrupt {
                what: "partition",
                path: self.dir.clone(),
                detail: format!(
                    "no batch found for offset {offset} below high watermark {high_watermark}"
                ),
            });
        }
        Ok(result)
    }

    /// The offset of the first record whose timestamp is >= `timestamp`, or `None` if every
    /// record is older (Kafka's ListOffsets by time).
    pub fn offset_for_time(&self, timestamp: i64) -> Result<Option<u64>> {
        retry_if_segment_removed(|| self.offset_for_time_once(timestamp))
    }

    fn offset_for_time_once(&self, timestamp: i64) -> Result<Option<u64>> {
        let (sealed, active, log_start) = {
            let mut inner = lock(&self.inner);
            self.check_open(&inner)?;
            let sealed: Vec<Arc<SealedSegment>> = inner.sealed.iter().cloned().collect();
            let active = if inner.active.size > 0 && inner.active.index.max_timestamp >= timestamp {
                let start_rel = index::lookup_time(&inner.active.index.times, timestamp);
                let hint = index::lookup_offset(&inner.active.index.offsets, u64::from(start_rel));
                let (map, _) = inner.active.read_handles()?;
                Some((
                    map,
                    inner.active.base_offset,
                    inner.active.size,
                    start_rel,
                    hint,
                ))
            } else {
                None
            };
            (sealed, active, inner.log_start_offset)
        };
        for segment in sealed {
            if segment.next_offset <= log_start || segment.max_timestamp()? < timestamp {
                continue;
            }
            let open = segment.open()?;
            let Some(map) = open.map.clone() else {
                continue;
            };
            let start_rel = index::lookup_time(open.times.as_slice(), timestamp);
            let hint = index::lookup_offset(open.offsets.as_slice(), u64::from(start_rel));
            let corrupt = |detail| self.corrupt_segment(segment.base_offset, detail);
            let found = find_time_in_segment(
                &map,
                segment.size,
                segment.base_offset,
                hint,
                start_rel,
                timestamp,
                log_start,
            )
            .map_err(corrupt)?;
            if found.is_some() {
                return Ok(found);
            }
        }
        if let Some((map, base, size, start_rel, hint)) = active {
            return find_time_in_segment(&map, size, base, hint, start_rel, timestamp, log_start)
                .map_err(|detail| self.corrupt_segment(base, detail));
        }
        Ok(None)
    }

    /// Removes every batch from the one holding `offset` on (Kafka's truncateTo: the cut falls
    /// on a batch boundary, so the new high watermark may be below `offset`). Returns the new
    /// high watermark.
    ///
    /// Crash safety, step by step: (1) the recovery point is lowered and checkpointed, so it
    /// never claims cut-away bytes; (2) the kept prefix of the cut segment is written to a
    /// temporary file and synced: a failure up to here changes nothing; (3) later segments are
    /// unlinked newest first and the prefix is renamed over the cut segment, so the files on
    /// disk always hold a prefix of the old log. A failure in (3) leaves the partition
    /// read-only until a restart recovers that prefix. Readers of the old bytes keep them (the
    /// old inode lives on in their maps).
    pub fn truncate_to(&self, offset: u64) -> Result<u64> {
        let config = self.config();
        // The derived-state snapshot may describe batches about to be cut: gone first.
        let _snapshot = lock(&self.snapshot_lock);
        remove_if_exists(&self.dir.join(derived_snapshot::FILE_NAME))?;
        let mut inner = lock(&self.inner);
        self.check_open(&inner)?;
        let hw = inner.active.next_offset;
        if offset >= hw {
            return Ok(hw);
        }
        if offset < inner.log_start_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: inner.log_start_offset,
                high_watermark: hw,
            });
        }
        // The segment holding `offset`, and a copy of its published bytes.
        let in_active = offset >= inner.active.base_offset;
        let (base, log_bytes): (u64, Vec<u8>) = if in_active {
            let size = inner.active.size as usize;
            let (map, _) = inner.active.read_handles()?;
            (
                inner.active.base_offset,
                region_slice(&map, 0, size).to_vec(),
            )
        } else {
            let i = inner
                .sealed
                .partition_point(|s| s.base_offset <= offset)
                .saturating_sub(1);
            let segment = Arc::clone(&inner.sealed[i]);
            let open = segment.open()?;
            let bytes = open
                .map
                .as_ref()
                .map(|m| region_slice(m, 0, segment.size as usize).to_vec());
            (segment.base_offset, bytes.unwrap_or_default())
        };
        let path = segment_path(&self.dir, base, super::fs::LOG_SUFFIX);
        let cut = select_batches(&log_bytes, 0, base, offset, usize::MAX, true)
            .map_err(|detail| StorageError::Corrupt {
                what: "segment",
                path: path.clone(),
                detail,
            })?
            .map_or(log_bytes.len() as u64, |sel| sel.start);
        let kept = &log_bytes[..cut as usize];
        let mut index = index::IndexBuilder::new(base, config.index_interval_bytes);
        let new_hw = scan_batches(kept, 0, base, false, Some(&mut index)).next_offset;

        // (1)
        let lowered = inner.recovery_point.min(new_hw);
        self.set_recovery_point(&mut inner, lowered);
        if let Some(checkpoint) = self.checkpoint_hook.get() {
            checkpoint()?;
        }
        // (2)
        let tmp = self.dir.join(format!("{base:020}.truncate.tmp"));
        let prepared = create_preallocated(&tmp, kept.len() as u64).and_then(|file| {
            use std::os::unix::fs::FileExt;
            file.write_all_at(kept, 0)
                .and_then(|()| file.sync_data())
                .map_err(|e| StorageError::io("writing truncated segment", &tmp, e))
        });
        if let Err(e) = prepared {
            let _ = remove_if_exists(&tmp);
            return Err(e);
        }
        // (3)
        inner.epoch += 1;
        // The producers' recent batches and the key index may be cut: rebuild from the log when
        // next needed.
        inner.producers = None;
        inner.keys = None;
        inner.last_batch = None;
        if let Err(e) = self.replace_tail(&mut inner, base, in_active, &tmp, &path) {
            lock(&self.sync).failure = Some(format!("truncation failed midway: {e}"));
            return Err(e);
        }
        inner.active =
            ActiveSegment::resume(&self.dir, base, new_hw, cut, index, config.segment_bytes);
        inner.unsynced_sealed.retain(|u| u.next_offset <= base);
        if inner.unsynced_sealed.is_empty() {
            inner.first_unsynced_ms = None;
        }
        {
            let mut sync = lock(&self.sync);
            sync.durable_offset = sync.durable_offset.min(new_hw);
            if sync.truncations.len() == TRUNCATION_HISTORY {
                sync.truncations.pop_front();
            }
            sync.truncations.push_back((inner.epoch, new_hw));
            // Waiters whose batches were just cut learn it now, not when the offsets refill.
            for (_, thread) in sync
                .waiters
                .iter()
                .filter(|(waiting_for, _)| *waiting_for > new_hw)
            {
                thread.unpark();
            }
        }
        self.high_watermark.store(new_hw, Ordering::Release);
        info!(partition = %self.tp, requested = offset, high_watermark = new_hw, "truncated log");
        Ok(new_hw)
    }

    /// Step (3) of `truncate_to`: drop every segment after `base` (newest first), then put the
    /// prepared prefix `tmp` in place of segment `base`.
    fn replace_tail(
        &self,
        inner: &mut Inner,
        base: u64,
        in_active: bool,
        tmp: &Path,
        path: &Path,
    ) -> Result<()> {
        if !in_active {
            inner.active.close_writer();
            for suffix in [super::fs::LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                remove_if_exists(&segment_path(&self.dir, inner.active.base_offset, suffix))?;
            }
        }
        while inner.sealed.back().is_some_and(|s| s.base_offset >= base) {
            let Some(segment) = inner.sealed.pop_back() else {
                break;
            };
            if segment.base_offset == base {
                segment.mark_removed(); // its path is about to name the truncated copy
            } else {
                segment.delete_files()?;
            }
        }
        fsync_dir(&self.dir)?;
        std::fs::rename(tmp, path)
            .map_err(|e| StorageError::io("replacing truncated segment", path, e))?;
        remove_if_exists(&segment_path(&self.dir, base, INDEX_SUFFIX))?;
        remove_if_exists(&segment_path(&self.dir, base, TIME_INDEX_SUFFIX))?;
        fsync_dir(&self.dir)
    }

    /// Deletes whole sealed segments, oldest first, while the log exceeds `retention_bytes` or
    /// a segment's newest record is older than `retention_age`. Returns how many were deleted.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let config = self.config();
        if config.retention_bytes.is_none() && config.retention_age.is_none() {
            return Ok(0);
        }
        let mut inner = lock(&self.inner);
        self.check_open(&inner)?;
        let mut total: u64 = inner.sealed.iter().map(|s| s.size).sum::<u64>() + inner.active.size;
        let mut deleted = 0;
        while let Some(oldest) = inner.sealed.front().cloned() {
            let by_size = config
                .retention_bytes
                .is_some_and(|limit| total - oldest.size >= limit);
            let by_age = !by_size
                && match config.retention_age {
                    Some(age) => oldest.max_timestamp()? < now_ms.saturating_sub(duration_ms(age)),
                    None => false,
                };
            if !(by_size || by_age) {
                break;
            }
            total -= oldest.size;
            self.delete_oldest_segment(&mut inner);
            info!(partition = %self.tp, base_offset = oldest.base_offset, bytes = oldest.size, by_size, "retention deleted segment");
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Deletes the sealed segments that hold only offsets below `offset` (a prefix the caller
    /// no longer needs, e.g. one a snapshot covers). The active segment is never deleted: roll
    /// first to include it. Returns how many segments were deleted.
    pub fn delete_segments_before(&self, offset: u64) -> Result<usize> {
        let mut inner = lock(&self.inner);
        self.check_open(&inner)?;
        let mut deleted = 0;
        while inner
            .sealed
            .front()
            .is_some_and(|oldest| oldest.next_offset <= offset)
        {
            self.delete_oldest_segment(&mut inner);
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Removes the oldest sealed segment. The log's state moves first; a file that fails to
    /// unlink is only leaked space (the next open deletes segments below the checkpointed log
    /// start).
    fn delete_oldest_segment(&self, inner: &mut Inner) {
        let Some(oldest) = inner.sealed.pop_front() else {
            return;
        };
        inner.log_start_offset = oldest.next_offset;
        let recovery_point = inner.recovery_point.max(oldest.next_offset);
        self.set_recovery_point(inner, recovery_point);
        inner
            .unsynced_sealed
            .retain(|u| u.next_offset > oldest.next_offset);
        self.log_start_offset
            .store(oldest.next_offset, Ordering::Release);
        if let Err(e) = oldest.delete_files() {
            tracing::warn!(partition = %self.tp, base_offset = oldest.base_offset, error = %e, "could not delete segment files");
        }
    }

    /// Closes the files and maps of segments unused since `cutoff_ms`. Returns how many.
    pub fn close_idle(&self, cutoff_ms: i64) -> usize {
        let mut inner = lock(&self.inner);
        let mut closed = inner
            .sealed
            .iter()
            .filter(|s| s.close_if_idle(cutoff_ms))
            .count();
        if inner.active.close_if_idle(cutoff_ms) {
            closed += 1;
        }
        closed
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

    fn corrupt_segment(&self, base_offset: u64, detail: String) -> StorageError {
        StorageError::Corrupt {
            what: "segment",
            path: segment_path(&self.dir, base_offset, super::fs::LOG_SUFFIX),
            detail,
        }
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
/// Runs `op` again (at most three times) when a segment it was reading left the log midway:
/// the retry sees the log as it is now (e.g. `OffsetOutOfRange` after retention).
fn retry_if_segment_removed<T>(mut op: impl FnMut() -> Result<T>) -> Result<T> {
    for _ in 0..3 {
        match op() {
            Err(StorageError::SegmentRemoved { .. }) => continue,
            other => return other,
        }
    }
    op()
}

/// Batches chosen from one segment for a read.
struct Selection {
    start: u64,
    end: u64,
    first_offset: u64,
    next_offset: u64,
    stopped_for_budget: bool,
}

/// Walks `log` from `position` (where the batch with base `expected` starts) and selects the
/// whole batches from the one holding `target` on, within `budget` bytes (`must_take_one`: the
/// first selected batch is taken even if larger). An inconsistent header is an `Err` (the
/// caller retries from the segment start, in case the index hint was wrong).
fn select_batches(
    log: &[u8],
    position: u64,
    expected: u64,
    target: u64,
    budget: usize,
    must_take_one: bool,
) -> std::result::Result<Option<Selection>, String> {
    let mut pos = position as usize;
    let mut expected = expected;
    let mut selected: Option<Selection> = None;
    while pos < log.len() {
        // `log` is exactly the published bytes: anything but a whole batch here is corruption
        // (or a wrong index hint, which the caller retries from the segment start).
        let rest = &log[pos..];
        let header = BatchHeader::parse(rest).map_err(|e| format!("at byte {pos}: {e}"))?;
        if header.base_offset != expected {
            return Err(format!(
                "at byte {pos}: batch base offset {} where {expected} was expected",
                header.base_offset
            ));
        }
        let total = header
            .total_len()
            .filter(|&n| n <= rest.len())
            .ok_or_else(|| format!("at byte {pos}: batch length runs past the segment"))?;
        if header.next_offset() > target {
            match &mut selected {
                None => {
                    if total > budget && !must_take_one {
                        return Ok(None);
                    }
                    selected = Some(Selection {
                        start: pos as u64,
                        end: (pos + total) as u64,
                        first_offset: header.base_offset,
                        next_offset: header.next_offset(),
                        stopped_for_budget: false,
                    });
                }
                Some(sel) => {
                    if (pos + total) as u64 - sel.start > budget as u64 {
                        sel.stopped_for_budget = true;
                        break;
                    }
                    sel.end = (pos + total) as u64;
                    sel.next_offset = header.next_offset();
                }
            }
        }
        pos += total;
        expected = header.next_offset();
    }
    Ok(selected)
}

/// Within one segment: the first record at or after `start_rel` (relative) whose timestamp is
/// at least `timestamp`. Walks from the index hint, checking the chain of base offsets as reads do,
/// and from the segment start if the hint proves wrong.
fn find_time_in_segment(
    map: &Arc<MmapRaw>,
    size: u64,
    base: u64,
    hint: OffsetEntry,
    start_rel: u32,
    timestamp: i64,
    log_start: u64,
) -> std::result::Result<Option<u64>, String> {
    let from = (base + u64::from(start_rel)).max(log_start);
    let walk = |position: usize, expected: u64| -> std::result::Result<Option<u64>, String> {
        let log = region_slice(map, 0, size as usize);
        let (mut pos, mut expected) = (position, expected);
        while pos < log.len() {
            let header =
                BatchHeader::parse(&log[pos..]).map_err(|e| format!("at byte {pos}: {e}"))?;
            if header.base_offset != expected {
                return Err(format!(
                    "at byte {pos}: base offset {} where {expected} was expected",
                    header.base_offset
                ));
            }
            let total = header
                .total_len()
                .filter(|&n| pos + n <= log.len())
                .ok_or_else(|| format!("at byte {pos}: batch runs past the segment"))?;
            if header.next_offset() > from && header.max_timestamp >= timestamp {
                let batch = RecordBatch::parse(region_bytes(map, pos, total))
                    .map_err(|e| format!("at byte {pos}: {e}"))?;
                // The batch's newest record may lie before `from` (a log start inside it):
                // then keep looking in later batches.
                if let Some(r) = batch
                    .records()
                    .find(|r| r.offset >= from && r.timestamp >= timestamp)
                {
                    return Ok(Some(r.offset));
                }
            }
            pos += total;
            expected = header.next_offset();
        }
        Ok(None)
    };
    walk(
        hint.position as usize,
        base + u64::from(hint.relative_offset),
    )
    .or_else(|_| walk(0, base))
}

#[cfg(test)]
mod tests {
    use super::super::{LogDir, LogDirConfig, TopicPartition};
    use super::*;
    use weir_proto::batch::{BatchBuilder, RecordInput};

    fn one_record() -> Bytes {
        let mut b = BatchBuilder::new();
        b.push(RecordInput {
            value: Some(b"v"),
            ..Default::default()
        })
        .unwrap();
        b.build().unwrap()
    }

    /// What a failed fdatasync (EIO) leaves behind, without a failing disk: the recorded
    /// failure. (The disk-level path, `run_sync` returning an I/O error, records exactly this.)
    #[test]
    fn after_a_failed_sync_the_partition_is_read_only_and_nothing_is_acknowledged_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (logs, _) = LogDir::open(dir.path(), LogDirConfig::default()).unwrap();
        let log = logs
            .create_partition(TopicPartition::validated("t", 0).unwrap(), None)
            .unwrap();
        let (_, ticket) = log
            .append_for_sync(&one_record(), AppendConditions::default())
            .unwrap();
        lock(&log.sync).failure = Some("Input/output error (os error 5)".into());
        assert!(
            matches!(
                log.wait_durable(ticket),
                Err(StorageError::SyncFailed { .. })
            ),
            "a waiting append learns its batch may not be on disk"
        );
        assert!(matches!(
            log.append(&one_record()),
            Err(StorageError::SyncFailed { .. })
        ));
        assert!(matches!(
            log.append_durable(&one_record()),
            Err(StorageError::SyncFailed { .. })
        ));
        assert_eq!(
            log.high_watermark(),
            1,
            "nothing appended after the failure"
        );
        assert!(log.read(0, 1 << 20).is_ok(), "reads still work");
    }
}
