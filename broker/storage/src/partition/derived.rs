//! Derived state: idempotent-producer states and the key index, their snapshots and rebuilds.
//!
//! Owns `ensure_derived_state` (the rebuild from the newest usable snapshot, or the log start),
//! the check that a snapshot still describes this log, and writing snapshots.
//!
//! Invariants enforced here:
//! - Installed derived state equals what observing every batch of the log from its start, in
//!   offset order, would build: a rebuild installs its state only under the partition lock,
//!   after it has seen the whole log up to the active segment's next offset, and starts over if
//!   a truncation (epoch change) came in between.
//! - A snapshot is used only if its `through` lies within `[log start, high watermark]`, its key
//!   index matches the partition's `key_index` setting, and the batch ending at `through` is the
//!   one it names (base offset and CRC).
//! - No snapshot is written after a failed sync (it could describe bytes that are not on disk),
//!   and none lands after a truncation that removed it (`snapshot_lock`).

use std::sync::atomic::Ordering;

use weir_proto::batch::BatchHeader;

use super::{PartitionLog, lock};
use crate::derived_snapshot;
use crate::error::{Result, StorageError};
use crate::fs::{SyncMode, atomic_write};
use crate::key_index::KeyIndex;
use crate::producer_state::ProducerStates;
use crate::sys;

impl PartitionLog {
    /// Builds the derived state (idempotent-producer states, and the key index of a
    /// `key_index` partition) if it is not built: from the newest usable snapshot plus the log
    /// after it, or from the log start. Runs without the partition lock (it reads through
    /// `read`); idempotent and key-conditional appends wait for it, plain appends do not, so
    /// after scanning to the high watermark it catches up with whatever plain appends added
    /// meanwhile (their keys count) and installs the state only once it has seen the whole log.
    pub(super) fn ensure_derived_state(&self) -> Result<()> {
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
            let snapshot = sys::read(&self.dir.join(derived_snapshot::FILE_NAME))
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
}
