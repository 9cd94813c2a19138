//! The append path: validate, check conditions, roll if due, reserve, copy, publish.
//!
//! Owns `append`, `append_durable`, `append_for_sync`, a follower's `append_replica` (and
//! `append_unsynced`, which they all share, told by `AppendMode` whose batch it is), the
//! idempotent-producer and conditional-append checks, and rolling a segment.
//!
//! Invariants enforced here:
//! - Everything that can refuse a batch (size, CRC and header validation, sync failure,
//!   producer sequence and epoch, expected offset and key offsets, offset exhaustion, disk
//!   space) is checked before the first byte is written; a refused append publishes nothing.
//! - Offsets are dense: a batch's base offset is stamped as the active segment's next offset,
//!   under the partition lock, and the high watermark is published (Release) only after the
//!   bytes, the index entry and the derived state are in place.
//! - A replica's batch is written byte for byte at its own base offset, which must be the log
//!   end; producer and condition checks are skipped (the leader ran them), the derived state
//!   is still updated from it.
//! - A duplicate from an idempotent producer writes nothing and returns the original offsets;
//!   it is checked before the conditions, so a retried conditional batch is not a conflict with
//!   itself.
//! - A roll is failure-atomic: the new segment file and the old one's indexes and trim are all
//!   done before the switch, so an error leaves the old segment active and appendable.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::debug;
use weir_proto::batch::RecordBatch;

use super::{AppendConditions, AppendInfo, Inner, PartitionLog, SyncTicket, UnsyncedSegment, lock};
use crate::config::{FlushPolicy, LogConfig, duration_ms};
use crate::error::{Result, StorageError};
use crate::fs::{LOG_SUFFIX, SyncMode, now_ms, remove_if_exists, segment_path};
use crate::producer_state::SequenceCheck;
use crate::segment::{ActiveSegment, SealedSegment};

/// Whose batch `append_unsynced` appends.
#[derive(Clone, Copy)]
enum AppendMode<'a> {
    /// A producer's, on the leader: offsets are stamped here; idempotent-producer checks and
    /// these conditions run first.
    Leader(&'a AppendConditions),
    /// The leader's, on a follower: the batch's own base offset must be the log end; no
    /// producer check or condition runs (the leader ran them), the derived state still learns it.
    Replica,
}

impl PartitionLog {
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
        let (info, epoch) = self.append_unsynced(batch, AppendMode::Leader(&conditions))?;
        Ok((
            info,
            SyncTicket {
                through: info.last_offset + 1,
                epoch,
            },
        ))
    }

    /// A follower's append of a batch the leader wrote: the same bytes at the same offsets.
    /// The batch is validated as `append` validates (size, header, CRC, records) and its
    /// stamped base offset must be this log's end (`ReplicaOffsetMismatch` otherwise, nothing
    /// written); the bytes written are exactly `batch`. No idempotent-producer check and no
    /// condition runs (the leader ran them: a follower must never refuse what its leader
    /// committed), but producer states and the key index learn the batch, so after a failover
    /// this log recognizes retries and checks conditions against what was replicated. Like
    /// [`PartitionLog::append_for_sync`], it waits for no sync: [`PartitionLog::wait_durable`]
    /// on the ticket does. A batch of a newer leader epoch is preceded by
    /// [`PartitionLog::assign_epoch`] with its base offset.
    pub fn append_replica(&self, batch: &[u8]) -> Result<(AppendInfo, SyncTicket)> {
        let (info, epoch) = self.append_unsynced(batch, AppendMode::Replica)?;
        Ok((
            info,
            SyncTicket {
                through: info.last_offset + 1,
                epoch,
            },
        ))
    }

    fn append_with(&self, batch: &[u8], durable: bool) -> Result<AppendInfo> {
        let (info, epoch) =
            self.append_unsynced(batch, AppendMode::Leader(&AppendConditions::default()))?;
        if durable {
            self.sync_appended(info.last_offset + 1, Some(epoch))?;
        }
        Ok(info)
    }

    /// The append itself: validate, roll if due, copy into the active segment, publish the new
    /// high watermark. Returns the truncation epoch the batch was appended in.
    fn append_unsynced(&self, batch: &[u8], mode: AppendMode<'_>) -> Result<(AppendInfo, u64)> {
        let no_conditions = AppendConditions::default();
        let (conditions, replica) = match mode {
            AppendMode::Leader(conditions) => (conditions, false),
            AppendMode::Replica => (&no_conditions, true),
        };
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
        // Derived state (producer states, key index) must be built before these appends. A
        // replica's append checks nothing against it: it only updates what is built (a rebuild
        // later reads the batch from the log like any other).
        let idempotent =
            !replica && (header.producer_id >= 0 || !conditions.expected_keys.is_empty());
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
            if replica && header.base_offset != inner.active.next_offset {
                return Err(StorageError::ReplicaOffsetMismatch {
                    partition: self.tp.to_string(),
                    expected: inner.active.next_offset,
                    actual: header.base_offset,
                });
            }
            if !replica
                && let Some(states) = &inner.producers
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
            // A replica's batch already carries this offset (checked above), so the stamp
            // rewrites the same eight bytes: what lands is byte-identical to the leader's.
            header.base_offset = inner.active.next_offset;
            // Dense offsets: the batch starts exactly where the published log ends (the atomic
            // mirrors `active.next_offset` under this lock).
            debug_assert_eq!(
                header.base_offset,
                self.high_watermark.load(Ordering::Relaxed),
                "base offset stamped away from the published high watermark"
            );
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
            debug_assert_eq!(inner.active.next_offset, header.next_offset());
            inner.debug_check_marks();
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
        let new_path = segment_path(&self.dir, new_base, LOG_SUFFIX);
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
        inner.debug_check_chain();
        Ok(())
    }
}
