//! The partition's epoch history (leader epoch -> start offset) for replication: reading it,
//! assigning an epoch, and keeping it fitted to the log when truncation or retention moves the
//! log's ends. The file format lives in `leader_epoch`.
//!
//! Invariants enforced here:
//! - `Inner::epochs` is what the `leader-epoch` file holds: every change is stored (atomically,
//!   durably) under the partition lock before the call that made it returns; a failed store
//!   leaves the in-memory history unchanged for `assign_epoch`, and for the fits below one that
//!   the next open recomputes from the log (so the file lagging is harmless).
//! - Every start offset lies in `[log start, high watermark]`: `assign_epoch` refuses a start
//!   past the log end, `truncate_to` drops the entries at or past its cut (after the cut, see
//!   `retention.rs`), retention collapses the entries below the new log start.

use tracing::warn;
use weir_replication::epochs::EpochError;
use weir_replication::{EpochHistory, LeaderEpoch};

use super::{Inner, PartitionLog, lock};
use crate::error::{Result, StorageError};
use crate::leader_epoch;

impl PartitionLog {
    /// A copy of the epoch history: for each leader epoch that wrote to this log, the offset of
    /// its first record, oldest first. Empty for a log no epoch was assigned to (including
    /// one written before epochs were kept).
    pub fn epoch_history(&self) -> EpochHistory {
        lock(&self.inner).epochs.clone()
    }

    /// The newest epoch in the history (what a follower's fetch names as its last), without
    /// copying the history.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        lock(&self.inner).epochs.latest_epoch()
    }

    /// Records that `epoch` starts at `start_offset` ([`EpochHistory::assign`]), durably before
    /// returning. A new leader calls it with its log end when it takes the epoch; a follower
    /// just before appending the first batch of a newer epoch (with its log end, the batch's
    /// base offset). Assigning the latest epoch again with the same start is a no-op that
    /// writes nothing. Refused, with nothing written: an epoch not newer than the latest
    /// (`EpochNotNewer`), a start below the latest's (`EpochStartBeforeLatest`), a start past
    /// the log end (`EpochStartPastLogEnd`).
    ///
    /// An epoch that still owns no record (its start is the log end) is dropped by a restart,
    /// as recovery drops every entry at or past the recovered log end (what makes a crash in
    /// the middle of `truncate_to` safe): a leader assigns its epoch again when it takes, or
    /// retakes, leadership.
    pub fn assign_epoch(&self, epoch: LeaderEpoch, start_offset: u64) -> Result<()> {
        let mut inner = lock(&self.inner);
        self.check_open(&inner)?;
        let log_end = inner.active.next_offset;
        if start_offset > log_end {
            return Err(StorageError::EpochStartPastLogEnd {
                partition: self.tp.to_string(),
                start_offset,
                log_end,
            });
        }
        let mut updated = inner.epochs.clone();
        updated.assign(epoch, start_offset).map_err(|e| match e {
            EpochError::EpochNotNewer { latest, given } => StorageError::EpochNotNewer {
                partition: self.tp.to_string(),
                latest,
                given,
            },
            EpochError::StartBeforeLatest {
                latest_start,
                given,
            } => StorageError::EpochStartBeforeLatest {
                partition: self.tp.to_string(),
                latest_start,
                given,
            },
        })?;
        if updated == inner.epochs {
            return Ok(());
        }
        // A start below the log start would describe records that are gone: collapse it the
        // way retention does (only reachable when the history is empty or starts later).
        let updated = leader_epoch::fit_to_log(&updated, inner.log_start_offset, u64::MAX);
        leader_epoch::store(&self.dir, &updated)?;
        inner.epochs = updated;
        Ok(())
    }

    /// Fits the history to the log's current ends (`leader_epoch::fit_to_log`) and stores it
    /// if that changed it. Callers hold the partition lock and have already moved the log.
    pub(super) fn fit_epochs_locked(&self, inner: &mut Inner) -> Result<()> {
        let fitted = leader_epoch::fit_to_log(
            &inner.epochs,
            inner.log_start_offset,
            inner.active.next_offset,
        );
        self.replace_epochs_locked(inner, fitted)
    }

    /// Installs `epochs` and stores it, if it differs from the current history. In memory it
    /// changes even if the store fails: the log already moved, and the next open fits the file
    /// to the log again.
    pub(super) fn replace_epochs_locked(
        &self,
        inner: &mut Inner,
        epochs: EpochHistory,
    ) -> Result<()> {
        if epochs == inner.epochs {
            return Ok(());
        }
        inner.epochs = epochs;
        leader_epoch::store(&self.dir, &inner.epochs)
    }

    /// After retention moved the log start: collapse the entries below it. A failed store is
    /// only logged: the deleted segments are gone either way, and an open collapses again.
    pub(super) fn collapse_epochs_after_retention(&self, inner: &mut Inner) {
        let fitted = leader_epoch::fit_to_log(&inner.epochs, inner.log_start_offset, u64::MAX);
        if let Err(e) = self.replace_epochs_locked(inner, fitted) {
            warn!(partition = %self.tp, error = %e, "could not store the epoch history after retention; the next open collapses it again");
        }
    }
}
