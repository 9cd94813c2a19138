//! A replica's epoch history: for each leader epoch that wrote to this log, the offset of its
//! first record (Kafka's leader-epoch checkpoint, KIP-101). Kept beside the segments; followers
//! learn the divergence point from the leader's copy (rule 8).
//!
//! Owns: [`EpochHistory`]. Invariants: epochs strictly increase along the history; start
//! offsets never decrease; no two entries share a start offset (an epoch that wrote nothing
//! before the next one started is dropped, it owns no record). The history describes the log it
//! sits beside: after the log is cut at `offset`, [`EpochHistory::truncate_from_end`] with the
//! same offset must follow.

use crate::{LeaderEpoch, Offset};

/// Leader epoch -> start offset, in epoch order.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EpochHistory {
    entries: Vec<(LeaderEpoch, Offset)>,
}

/// Why [`EpochHistory::assign`] refused an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochError {
    /// The epoch is not newer than the latest one in the history.
    EpochNotNewer {
        latest: LeaderEpoch,
        given: LeaderEpoch,
    },
    /// The start offset is below the latest entry's start.
    StartBeforeLatest { latest_start: Offset, given: Offset },
}

impl EpochHistory {
    /// An empty history (an empty log).
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[(LeaderEpoch, Offset)] {
        &self.entries
    }

    /// The newest epoch in the history, if any: what a follower sends as its last fetched epoch.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// Records that `epoch` starts at `start_offset`: a leader calls it when it takes the epoch
    /// (with its log end), a follower when it appends the first record of a newer epoch.
    /// Assigning the latest epoch again with the same start is a no-op. An older entry starting
    /// at the same offset wrote nothing and is replaced.
    pub fn assign(&mut self, epoch: LeaderEpoch, start_offset: Offset) -> Result<(), EpochError> {
        if let Some(&(latest, latest_start)) = self.entries.last() {
            if latest == epoch && latest_start == start_offset {
                return Ok(());
            }
            if epoch <= latest {
                return Err(EpochError::EpochNotNewer {
                    latest,
                    given: epoch,
                });
            }
            if start_offset < latest_start {
                return Err(EpochError::StartBeforeLatest {
                    latest_start,
                    given: start_offset,
                });
            }
            if start_offset == latest_start {
                self.entries.pop();
            }
        }
        self.entries.push((epoch, start_offset));
        Ok(())
    }

    /// Kafka's OffsetsForLeaderEpoch answer, computed by the leader for a follower whose last
    /// record has `epoch`: the largest epoch in this history that is `<= epoch`, and the offset
    /// where that epoch ends here (the start of the next epoch, or `log_end` for the latest).
    /// `None` for the epoch when this history has no epoch that old: the follower keeps nothing
    /// (end offset 0).
    pub fn end_offset_for(
        &self,
        epoch: LeaderEpoch,
        log_end: Offset,
    ) -> (Option<LeaderEpoch>, Offset) {
        // Index of the first entry with an epoch greater than the one asked for.
        let after = self.entries.partition_point(|&(e, _)| e <= epoch);
        if after == 0 {
            return (None, 0);
        }
        let found = self.entries[after - 1].0;
        let end = match self.entries.get(after) {
            Some(&(_, next_start)) => next_start,
            None => log_end,
        };
        (Some(found), end)
    }

    /// Drops the entries that start at or past `offset`: call it after cutting the log there.
    pub fn truncate_from_end(&mut self, offset: Offset) {
        while matches!(self.entries.last(), Some(&(_, start)) if start >= offset) {
            self.entries.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(entries: &[(u32, Offset)]) -> EpochHistory {
        let mut history = EpochHistory::new();
        for &(e, s) in entries {
            history.assign(LeaderEpoch(e), s).unwrap();
        }
        history
    }

    #[test]
    fn assign_keeps_epochs_increasing_and_drops_empty_epochs() {
        let mut history = h(&[(1, 0), (3, 2)]);
        assert_eq!(
            history.assign(LeaderEpoch(2), 5),
            Err(EpochError::EpochNotNewer {
                latest: LeaderEpoch(3),
                given: LeaderEpoch(2)
            })
        );
        assert_eq!(
            history.assign(LeaderEpoch(4), 1),
            Err(EpochError::StartBeforeLatest {
                latest_start: 2,
                given: 1
            })
        );
        history.assign(LeaderEpoch(3), 2).unwrap();
        history.assign(LeaderEpoch(5), 2).unwrap();
        assert_eq!(
            history.entries(),
            &[(LeaderEpoch(1), 0), (LeaderEpoch(5), 2)]
        );
    }

    #[test]
    fn end_offset_for_answers_like_offsets_for_leader_epoch() {
        let history = h(&[(1, 0), (3, 2), (4, 5)]);
        assert_eq!(history.end_offset_for(LeaderEpoch(0), 7), (None, 0));
        assert_eq!(
            history.end_offset_for(LeaderEpoch(1), 7),
            (Some(LeaderEpoch(1)), 2)
        );
        // An epoch the leader never had: the largest older one, ending where the next begins.
        assert_eq!(
            history.end_offset_for(LeaderEpoch(2), 7),
            (Some(LeaderEpoch(1)), 2)
        );
        assert_eq!(
            history.end_offset_for(LeaderEpoch(3), 7),
            (Some(LeaderEpoch(3)), 5)
        );
        assert_eq!(
            history.end_offset_for(LeaderEpoch(4), 7),
            (Some(LeaderEpoch(4)), 7)
        );
        assert_eq!(
            history.end_offset_for(LeaderEpoch(9), 7),
            (Some(LeaderEpoch(4)), 7)
        );
    }

    #[test]
    fn truncate_from_end_drops_epochs_that_start_at_or_past_the_cut() {
        let mut history = h(&[(1, 0), (3, 2), (4, 5)]);
        history.truncate_from_end(5);
        assert_eq!(
            history.entries(),
            &[(LeaderEpoch(1), 0), (LeaderEpoch(3), 2)]
        );
        history.truncate_from_end(3);
        assert_eq!(
            history.entries(),
            &[(LeaderEpoch(1), 0), (LeaderEpoch(3), 2)]
        );
        history.truncate_from_end(0);
        assert!(history.entries().is_empty());
    }
}
