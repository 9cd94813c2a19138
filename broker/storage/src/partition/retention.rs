//! Removing data: `truncate_to` (and the file swap behind it, `replace_tail`), `reset_to` (the
//! whole log replaced by an empty one at any offset), size and age retention,
//! `delete_segments_before`, and closing idle segments' files.
//!
//! Invariants enforced here:
//! - Files on disk always hold a prefix of the log: a truncation lowers and checkpoints the
//!   recovery point first, writes and syncs the kept prefix to a temporary file, then unlinks
//!   later segments newest first and renames the prefix over the cut segment. A failure midway
//!   leaves the partition read-only (the recorded sync failure) until a restart recovers.
//!   A reset lowers the checkpointed recovery point and log start to its offset first, then
//!   deletes segments newest first and creates the empty one last, so the files hold a prefix
//!   of the old log or exactly the new one.
//! - A truncation bumps the epoch, forgets the derived state, lowers the durable offset to the
//!   new high watermark and remembers the cut, so no batch it removed is ever acknowledged
//!   durable; the derived-state snapshot is deleted before anything is cut.
//! - Retention deletes whole sealed segments, oldest first, and moves the log start (and the
//!   recovery point, never below it) before unlinking: a file that fails to unlink is leaked
//!   space, never a hole in the log. The active segment is never deleted.
//! - Retention is bounded by the retention limit (`set_retention_limit`; a replicated
//!   partition's high watermark, on the leader and on every follower, each its own): a segment
//!   goes only if its last offset is below the limit, i.e. the next segment's base is at or
//!   below it (Kafka's `UnifiedLog.deletableSegments` with `highWatermark`). So the log start
//!   never passes the high watermark, and a consumer or a follower never finds a record above
//!   it, not yet committed, gone. Without a limit (a single copy: its high watermark is its
//!   log end) nothing changes.
//! - The epoch history follows the log: a truncation stores it after the cut (the next open
//!   drops entries at or past the log end, so a crash in between is repaired), retention
//!   collapses the entries below the new log start after deleting (an open collapses them too).
//! - Bytes of a mapped file below its published length are never rewritten (see `mmap`): the
//!   truncated copy is a new inode, and readers keep the old one through their `Arc`s.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::info;

use super::read::select_batches;
use super::sync::TRUNCATION_HISTORY;
use super::{Inner, PartitionLog, lock};
use crate::config::duration_ms;
use crate::derived_snapshot;
use crate::error::{Result, StorageError};
use crate::fs::{
    INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, create_preallocated, fsync_dir, remove_if_exists,
    segment_path,
};
use crate::index;
use crate::mmap::region_slice;
use crate::scan::scan_batches;
use crate::segment::ActiveSegment;
use crate::sys;

impl PartitionLog {
    /// Removes every batch from the one holding `offset` on (Kafka's truncateTo: the cut falls
    /// on a batch boundary, so the new high watermark may be below `offset`; if a damaged batch
    /// comes first in that segment, the cut falls where it starts). Returns the new high
    /// watermark.
    ///
    /// Crash safety, step by step: (1) the recovery point is lowered and checkpointed, so it
    /// never claims cut-away bytes; (2) the kept prefix of the cut segment is written to a
    /// temporary file and synced: a failure up to here changes nothing; (3) later segments are
    /// unlinked newest first and the prefix is renamed over the cut segment, so the files on
    /// disk always hold a prefix of the old log. A failure in (3) leaves the partition
    /// read-only until a restart recovers that prefix. Readers of the old bytes keep them (the
    /// old inode lives on in their maps). (4) The epoch history drops the entries starting at
    /// or past the new high watermark and is stored, before this returns; see
    /// `fit_epochs_or_fail` for why after the cut.
    pub fn truncate_to(&self, offset: u64) -> Result<u64> {
        let config = self.config();
        // The derived-state snapshot may describe batches about to be cut: gone first.
        let _snapshot = lock(&self.snapshot_lock);
        remove_if_exists(&self.dir.join(derived_snapshot::FILE_NAME))?;
        let mut inner = lock(&self.inner);
        self.check_open(&inner)?;
        let hw = inner.active.next_offset;
        if offset >= hw {
            // Nothing to cut, but an epoch starting exactly at the cut owns nothing past it: a
            // follower told to truncate at its log end drops such an entry (else its next,
            // older-epoch batch could not be assigned).
            if offset == hw {
                self.fit_epochs_or_fail(&mut inner)?;
            }
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
        let path = segment_path(&self.dir, base, LOG_SUFFIX);
        // Damage past the cut does not matter: the cut removes it. Damage before the batch
        // holding `offset` (a follower cutting at what the scrub found) moves the cut there:
        // nothing from it on can be read, and every batch before it is whole.
        let walk = select_batches(
            &log_bytes,
            0,
            base,
            offset..u64::MAX,
            usize::MAX,
            true,
            None,
        );
        let cut = match (walk.selection, walk.damage) {
            (Some(sel), _) => sel.start,
            (None, None) => log_bytes.len() as u64,
            (None, Some(damage)) if damage.offset <= offset => damage.position,
            (None, Some(damage)) => {
                return Err(StorageError::Corrupt {
                    what: "segment",
                    path: path.clone(),
                    detail: format!(
                        "at byte {} (offset {}): {}",
                        damage.position, damage.offset, damage.detail
                    ),
                });
            }
        };
        let kept = &log_bytes[..cut as usize];
        let mut index = index::IndexBuilder::new(base, config.index_interval_bytes);
        let new_hw = scan_batches(kept, 0, base, false, Some(&mut index)).next_offset;
        // A cut falls on a batch boundary at or below `offset`, never below the log start.
        debug_assert!(
            inner.log_start_offset <= new_hw && new_hw <= offset,
            "truncation to {offset} would cut to {new_hw} (log start {})",
            inner.log_start_offset
        );

        // (1)
        let lowered = inner.recovery_point.min(new_hw);
        self.set_recovery_point(&mut inner, lowered);
        if let Some(checkpoint) = self.checkpoint_hook.get() {
            checkpoint()?;
        }
        // (2)
        let tmp = self.dir.join(format!("{base:020}.truncate.tmp"));
        let prepared = create_preallocated(&tmp, kept.len() as u64).and_then(|file| {
            sys::pwrite_all(&file, kept, 0)
                .and_then(|()| sys::fdatasync(&file))
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
            debug_assert!(sync.durable_offset <= inner.recovery_point);
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
        // Offsets from here on may be written again: damage found in the cut part is gone.
        self.forget_damage_from(new_hw);
        inner.debug_check_chain();
        self.high_watermark.store(new_hw, Ordering::Release);
        info!(partition = %self.tp, requested = offset, high_watermark = new_hw, "truncated log");
        // (4) The epochs that started at or past the cut own no record now. Stored after the
        // cut, never before: a crash in between leaves exactly those entries at or past the
        // recovered log end, which the next open drops. (Stored first, a crash would leave
        // records past the cut attributed to an older epoch, which no open can tell.)
        self.fit_epochs_or_fail(&mut inner)?;
        Ok(new_hw)
    }

    /// Empties the log and restarts it at `offset`, which may lie anywhere (below the log
    /// start, inside the log, past its end): every segment goes, one empty active segment
    /// based at `offset` takes their place, and the log start, recovery point and high
    /// watermark all become `offset`; the epoch history is emptied, known damage and the
    /// derived state (producer states, key index) are forgotten. Kafka's
    /// `truncateFullyAndStartAt`: a follower whose next offset is below its leader's log start
    /// (retention deleted it there) cannot fetch what it misses, so it starts over where the
    /// leader's log starts.
    ///
    /// Crash safety, step by step: (1) the checkpointed recovery point and log start are
    /// lowered to at most `offset`, so an open never trusts unsynced bytes of the new log nor
    /// hides them behind the old log start: a failure here changes nothing; (2) the
    /// derived-state snapshot and every segment are deleted, newest first, so the files always
    /// hold a prefix of the old log (an open finds that prefix, or an empty log at the
    /// checkpointed log start: consistent either way, and a follower is simply told again);
    /// (3) the empty segment is created (atomically: a synced temporary file renamed into
    /// place, then the directory synced), after which an open finds exactly the new log;
    /// (4) the empty epoch history is stored (a crash before it leaves entries an open drops,
    /// since none can start inside an empty log). A failure in (2) to (4) leaves the partition
    /// read-only until a restart recovers, as in `truncate_to`.
    ///
    /// A durable append waiting meanwhile, or asked about later, is `TruncatedBeforeSync`
    /// unless it was synced before and `offset` is past it.
    pub fn reset_to(&self, offset: u64) -> Result<()> {
        let config = self.config();
        let _snapshot = lock(&self.snapshot_lock);
        let mut inner = lock(&self.inner);
        self.check_open(&inner)?;
        if let Some(reason) = lock(&self.sync).failure.clone() {
            return Err(StorageError::SyncFailed {
                partition: self.tp.to_string(),
                reason,
            });
        }
        // (1) Lowered in the mirrors the checkpoint reads (the in-memory marks move in (3));
        // restored if the checkpoint cannot be written.
        let (old_start, old_recovery) = (inner.log_start_offset, inner.recovery_point);
        self.log_start_offset
            .store(old_start.min(offset), Ordering::Release);
        self.recovery_point
            .store(old_recovery.min(offset), Ordering::Release);
        if let Some(checkpoint) = self.checkpoint_hook.get()
            && let Err(e) = checkpoint()
        {
            self.log_start_offset.store(old_start, Ordering::Release);
            self.recovery_point.store(old_recovery, Ordering::Release);
            return Err(e);
        }
        // From here on the old log is being destroyed: no in-flight sync may credit its work
        // to the new one (the epoch check), and whatever fails turns the partition read-only.
        inner.epoch += 1;
        inner.producers = None;
        inner.keys = None;
        inner.last_batch = None;
        inner.derived_dirty = false;
        let replaced = self.replace_all_segments(&mut inner, offset, &config);
        if let Err(e) = replaced {
            lock(&self.sync).failure = Some(format!("resetting the log failed midway: {e}"));
            return Err(e);
        }
        inner.unsynced_sealed.clear();
        inner.first_unsynced_ms = None;
        inner.log_start_offset = offset;
        inner.recovery_point = offset;
        self.log_start_offset.store(offset, Ordering::Release);
        self.recovery_point.store(offset, Ordering::Release);
        {
            let mut sync = lock(&self.sync);
            // A batch synced before stays durable only if it is below `offset`, where the new
            // log counts everything as synced; every other one was cut before its sync.
            let kept = sync.durable_offset.min(offset);
            sync.durable_offset = offset;
            if sync.truncations.len() == TRUNCATION_HISTORY {
                sync.truncations.pop_front();
            }
            sync.truncations.push_back((inner.epoch, kept));
            for (_, thread) in &sync.waiters {
                thread.unpark();
            }
        }
        self.forget_damage_from(0);
        self.damage_logged.store(0, Ordering::Relaxed);
        inner.debug_check_chain();
        self.high_watermark.store(offset, Ordering::Release);
        info!(partition = %self.tp, log_start = offset, old_log_start = old_start, "reset the log: empty, starting at the given offset");
        // (4)
        if let Err(e) =
            self.replace_epochs_locked(&mut inner, weir_replication::EpochHistory::new())
        {
            lock(&self.sync).failure = Some(format!("storing the epoch history failed: {e}"));
            return Err(e);
        }
        Ok(())
    }

    /// Steps (2) and (3) of `reset_to`: delete every segment (active first, then the sealed
    /// ones newest first) and the derived-state snapshot, then create the empty active segment
    /// at `offset`.
    fn replace_all_segments(
        &self,
        inner: &mut Inner,
        offset: u64,
        config: &crate::config::LogConfig,
    ) -> Result<()> {
        remove_if_exists(&self.dir.join(derived_snapshot::FILE_NAME))?;
        inner.active.close_writer();
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            remove_if_exists(&segment_path(&self.dir, inner.active.base_offset, suffix))?;
        }
        while let Some(segment) = inner.sealed.pop_back() {
            if let Err(e) = segment.delete_files() {
                inner.sealed.push_back(segment);
                return Err(e);
            }
        }
        fsync_dir(&self.dir)?;
        inner.active = ActiveSegment::create(
            &self.dir,
            offset,
            config.segment_bytes,
            config.preallocate_min_bytes,
            config.index_interval_bytes,
        )?;
        Ok(())
    }

    /// Step (4) of `truncate_to`: fit the epoch history to the cut log and store it. If the
    /// store fails, the partition turns read-only (as for a failure in step (3)) until a restart
    /// fits the file to the log: appending on top of a history that lists epochs past the log
    /// end could refuse the next epoch's assignment.
    fn fit_epochs_or_fail(&self, inner: &mut Inner) -> Result<()> {
        if let Err(e) = self.fit_epochs_locked(inner) {
            lock(&self.sync).failure = Some(format!("storing the epoch history failed: {e}"));
            return Err(e);
        }
        Ok(())
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
            for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
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
        sys::rename(tmp, path)
            .map_err(|e| StorageError::io("replacing truncated segment", path, e))?;
        remove_if_exists(&segment_path(&self.dir, base, INDEX_SUFFIX))?;
        remove_if_exists(&segment_path(&self.dir, base, TIME_INDEX_SUFFIX))?;
        fsync_dir(&self.dir)
    }

    /// Deletes whole sealed segments, oldest first, while the log exceeds `retention_bytes` or
    /// a segment's newest record is older than `retention_age`, stopping at the first segment
    /// that holds an offset at or above the retention limit (see the module docs). Returns how
    /// many were deleted.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let config = self.config();
        if config.retention_bytes.is_none() && config.retention_age.is_none() {
            return Ok(0);
        }
        let mut inner = lock(&self.inner);
        self.check_open(&inner)?;
        // Read under the lock: a limit raised meanwhile only lets the next pass delete more.
        let limit = self.retention_limit();
        let mut total: u64 = inner.sealed.iter().map(|s| s.size).sum::<u64>() + inner.active.size;
        let mut deleted = 0;
        while let Some(oldest) = inner.sealed.front().cloned() {
            // Uncommitted records (or ones a lagging follower may still need) are not the
            // retention's to delete; neither is anything after them.
            if oldest.next_offset > limit {
                break;
            }
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
        if deleted > 0 {
            self.collapse_epochs_after_retention(&mut inner);
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
        if deleted > 0 {
            self.collapse_epochs_after_retention(&mut inner);
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
        // The log start only moves forward, to the base of what is now the oldest segment.
        debug_assert!(oldest.next_offset >= inner.log_start_offset);
        inner.log_start_offset = oldest.next_offset;
        debug_assert_eq!(
            inner
                .sealed
                .front()
                .map_or(inner.active.base_offset, |s| s.base_offset),
            inner.log_start_offset
        );
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
}
