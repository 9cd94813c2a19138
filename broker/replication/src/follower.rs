//! The follower's decisions: which fetch answers it applies, where it truncates, what high
//! watermark it keeps.
//!
//! Owns: [`accepts_response`], [`truncation_offset`], [`on_leader_epoch_change`],
//! [`follower_hw`].
//!
//! Invariants: a follower applies only answers from the leader of the epoch it currently
//! follows, to the fetch offset it has now (rule 2; a delayed or duplicated answer changes
//! nothing); it truncates only to a divergence point learned from the leader's epoch history,
//! never to its own high watermark (rule 8, KIP-101, KIP-279); its high watermark never exceeds
//! its log end.

use crate::epochs::EpochHistory;
use crate::rules::Rules;
use crate::{BrokerId, LeaderEpoch, Offset};

/// Whether a follower that follows `following` (leader, epoch) with log end `log_end` applies an
/// answer from `from` in `epoch` to a fetch at `fetch_offset`.
pub fn accepts_response(
    following: Option<(BrokerId, LeaderEpoch)>,
    log_end: Offset,
    from: BrokerId,
    epoch: LeaderEpoch,
    fetch_offset: Offset,
) -> bool {
    following == Some((from, epoch)) && fetch_offset == log_end
}

/// Where a follower truncates after the leader answered its fetch with a divergence: the
/// leader's largest epoch `leader_epoch` not newer than the follower's last one ends at
/// `leader_end` in the leader's log (KIP-101). The follower keeps no more than that, and no
/// more than its own end of that epoch (KIP-279: the follower may hold later epochs the leader
/// never had below `leader_end`); the next fetch checks again, so the cut converges on the last
/// offset where both logs hold the same epoch. `None` from the leader (it has no epoch that old)
/// keeps nothing.
pub fn truncation_offset(
    own: &EpochHistory,
    own_log_end: Offset,
    leader_epoch: Option<LeaderEpoch>,
    leader_end: Offset,
) -> Offset {
    match leader_epoch {
        None => 0,
        Some(epoch) => {
            let (_, own_end) = own.end_offset_for(epoch, own_log_end);
            leader_end.min(own_end).min(own_log_end)
        }
    }
}

/// What a replica does to its log at once when it learns a new leader epoch as a follower
/// (rule 8: truncation happens on every epoch change). With `rules.truncate_by_epoch`, nothing
/// yet: its next fetch, checked against the leader's history, tells it where it diverges.
/// Without (Kafka before KIP-101): it cuts to its own high watermark, the returned offset.
pub fn on_leader_epoch_change(rules: &Rules, local_hw: Offset, log_end: Offset) -> Option<Offset> {
    if rules.truncate_by_epoch {
        None
    } else {
        Some(local_hw.min(log_end))
    }
}

/// The follower's high watermark after an answer: the leader's, capped by its own log end.
pub fn follower_hw(leader_hw: Offset, log_end: Offset) -> Offset {
    leader_hw.min(log_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_the_longest_prefix_the_epochs_agree_on() {
        // Follower: epoch 1 at 0, epoch 2 at 1 (log end 3). Leader: epoch 1 at 0, epoch 3 at 2.
        let mut own = EpochHistory::new();
        own.assign(LeaderEpoch(1), 0).unwrap();
        own.assign(LeaderEpoch(2), 1).unwrap();
        // The leader answers for epoch 2: its largest epoch <= 2 is 1, ending at 2. The follower
        // holds epoch 1 only up to 1: it keeps one record, not two.
        assert_eq!(truncation_offset(&own, 3, Some(LeaderEpoch(1)), 2), 1);
        assert_eq!(truncation_offset(&own, 3, Some(LeaderEpoch(2)), 5), 3);
        assert_eq!(truncation_offset(&own, 3, None, 0), 0);
    }

    #[test]
    fn only_answers_to_the_current_fetch_of_the_current_epoch_apply() {
        let following = Some((BrokerId(0), LeaderEpoch(2)));
        assert!(accepts_response(
            following,
            4,
            BrokerId(0),
            LeaderEpoch(2),
            4
        ));
        assert!(!accepts_response(
            following,
            4,
            BrokerId(0),
            LeaderEpoch(1),
            4
        ));
        assert!(!accepts_response(
            following,
            4,
            BrokerId(0),
            LeaderEpoch(2),
            3
        ));
        assert!(!accepts_response(None, 4, BrokerId(0), LeaderEpoch(2), 4));
    }

    #[test]
    fn the_epoch_change_truncation_is_deferred_to_the_divergence_check() {
        assert_eq!(on_leader_epoch_change(&Rules::ALL, 2, 5), None);
        let old = Rules {
            truncate_by_epoch: false,
            ..Rules::ALL
        };
        assert_eq!(on_leader_epoch_change(&old, 2, 5), Some(2));
        assert_eq!(follower_hw(7, 5), 5);
    }
}
