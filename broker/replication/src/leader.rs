//! The leader's decisions: what it counts for the high watermark, when it may accept, ack and
//! serve, how it answers a follower's fetch, and how its ISR proposals resolve.
//!
//! Owns: [`IsrView`] (the ISR the leader last learned plus its one outstanding proposal),
//! [`FollowerProgress`], [`high_watermark`], [`check_fetch`], [`check_consumer_epoch`],
//! [`expansion_member`], and the produce / acknowledgement / read guards.
//!
//! Invariants:
//! - the high watermark never goes backwards at a leader, and never passes the log end of any
//!   replica it counts (the maximal ISR, rule 4);
//! - it advances only while the ISR the controller confirmed has `min_insync_replicas` members
//!   (rule 5, KIP-966);
//! - a leader's high watermark is final only once it reaches the start offset of the leader's
//!   epoch (rule 9): before that it serves no reads and adds no one to the ISR;
//! - only fetches in the leader's own epoch count (rule 2); an addition names the follower's
//!   broker epoch from its fetch (rule 6, KIP-903);
//! - at most one ISR proposal is outstanding; it is rolled back only on a definite refusal.

use crate::controller::{AlterError, AlterIsrRequest, IsrMember, PartitionState, isr_floor_allows};
use crate::epochs::EpochHistory;
use crate::rules::Rules;
use crate::{BrokerEpoch, BrokerId, LeaderEpoch, Offset, PartitionEpoch};

/// What the leader knows of a follower from its latest fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FollowerProgress {
    /// The fetch offset: the follower's log end when it asked.
    pub log_end: Offset,
    /// The leader epoch the follower fetched in.
    pub leader_epoch: LeaderEpoch,
    /// The broker epoch of the follower's start that sent the fetch.
    pub broker_epoch: BrokerEpoch,
}

/// Records a fetch that [`check_fetch`] let through. A fetch from an earlier start of the
/// follower than one already seen (a delayed request) is ignored: `None` means no change.
pub fn record_fetch(
    previous: Option<FollowerProgress>,
    fetch: FollowerProgress,
) -> Option<FollowerProgress> {
    match previous {
        Some(p) if p.broker_epoch > fetch.broker_epoch => None,
        Some(p) if p == fetch => None,
        _ => Some(fetch),
    }
}

/// The leader's picture of the ISR: the last one it learned from the controller, and its own
/// outstanding proposal, if any.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IsrView {
    committed: Vec<BrokerId>,
    committed_epoch: PartitionEpoch,
    pending: Option<AlterIsrRequest>,
}

/// Why the leader may not send a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// One is outstanding: a leader has at most one in flight.
    Busy,
    /// The proposal equals the ISR, or drops the leader, or goes below the min-ISR floor.
    Invalid,
}

impl IsrView {
    /// The view of a leader that just learned `state`.
    pub fn new(state: &PartitionState) -> Self {
        IsrView {
            committed: state.isr.clone(),
            committed_epoch: state.partition_epoch,
            pending: None,
        }
    }

    /// The ISR as last confirmed by the controller.
    pub fn committed(&self) -> &[BrokerId] {
        &self.committed
    }

    /// The outstanding proposal.
    pub fn pending(&self) -> Option<&AlterIsrRequest> {
        self.pending.as_ref()
    }

    /// The maximal ISR (rule 4): the confirmed ISR together with every member of the proposal,
    /// so a member being added counts at once and a member being removed counts until the
    /// controller confirms.
    pub fn maximal(&self) -> Vec<BrokerId> {
        let mut all = self.committed.clone();
        if let Some(p) = &self.pending {
            all.extend(p.new_isr.iter().map(|m| m.broker));
        }
        all.sort();
        all.dedup();
        all
    }

    /// The members whose log ends bound the high watermark: the maximal ISR, or without
    /// `rules.maximal_isr` the proposal itself as soon as it is sent.
    pub fn counted(&self, rules: &Rules) -> Vec<BrokerId> {
        match &self.pending {
            Some(p) if !rules.maximal_isr => p.new_isr.iter().map(|m| m.broker).collect(),
            _ => self.maximal(),
        }
    }

    /// Proposes `new_isr` (sorted) as `leader` of `leader_epoch`, based on the confirmed ISR's
    /// partition epoch. Returns the request to send to the controller.
    pub fn propose(
        &mut self,
        leader: BrokerId,
        leader_epoch: LeaderEpoch,
        new_isr: Vec<IsrMember>,
        min_insync: usize,
    ) -> Result<AlterIsrRequest, ProposeError> {
        if self.pending.is_some() {
            return Err(ProposeError::Busy);
        }
        let ids: Vec<BrokerId> = new_isr.iter().map(|m| m.broker).collect();
        if ids == self.committed
            || !ids.contains(&leader)
            || !isr_floor_allows(ids.len(), self.committed.len(), min_insync)
        {
            return Err(ProposeError::Invalid);
        }
        let request = AlterIsrRequest {
            leader,
            leader_epoch,
            partition_epoch: self.committed_epoch,
            new_isr,
        };
        self.pending = Some(request.clone());
        Ok(request)
    }

    /// The leader learned a partition state (from the controller's answer or its metadata). A
    /// newer one replaces the confirmed ISR and settles any proposal based on an older epoch:
    /// it was applied (this is its outcome) or refused (this is why).
    pub fn on_state(&mut self, state: &PartitionState) {
        if state.partition_epoch > self.committed_epoch {
            self.committed = state.isr.clone();
            self.committed_epoch = state.partition_epoch;
        }
        if matches!(&self.pending, Some(p) if p.partition_epoch < self.committed_epoch) {
            self.pending = None;
        }
    }

    /// The controller's answer to the outstanding proposal (rule 4): accepted, the new state is
    /// learned; refused definitely, the proposal is rolled back; refused as stale, the proposal
    /// keeps counting until a newer state is learned ([`IsrView::on_state`]).
    pub fn on_response(
        &mut self,
        request: &AlterIsrRequest,
        result: &Result<PartitionState, AlterError>,
    ) {
        match result {
            Ok(state) => self.on_state(state),
            Err(e) if e.is_definite() => {
                if self.pending.as_ref() == Some(request) {
                    self.pending = None;
                }
            }
            Err(_) => {}
        }
    }
}

/// The inputs of [`high_watermark`].
#[derive(Clone, Copy, Debug)]
pub struct HwInput<'a> {
    /// The leader's current high watermark (carried over from when it followed).
    pub current: Offset,
    /// The leader itself.
    pub leader: BrokerId,
    /// Its epoch: only fetches in it count.
    pub leader_epoch: LeaderEpoch,
    /// Its log end.
    pub leader_log_end: Offset,
    /// [`IsrView::counted`].
    pub counted: &'a [BrokerId],
    /// The size of [`IsrView::committed`], for strict min ISR.
    pub committed_isr_len: usize,
    /// The topic's `min_insync_replicas`.
    pub min_insync: usize,
    /// The latest fetch of each follower, if any.
    pub progress: &'a [(BrokerId, Option<FollowerProgress>)],
}

/// The leader's high watermark (rules 4, 5): the lowest log end over the counted members,
/// the leader's own included, where a follower that has not fetched in this epoch holds it
/// where it is; it moves only while the confirmed ISR has `min_insync` members (with
/// `rules.strict_min_isr`) and never backwards.
pub fn high_watermark(input: &HwInput<'_>, rules: &Rules) -> Offset {
    if rules.strict_min_isr && input.committed_isr_len < input.min_insync {
        return input.current;
    }
    let mut lowest = input.leader_log_end;
    for &member in input.counted.iter().filter(|&&m| m != input.leader) {
        let end = input
            .progress
            .iter()
            .find(|(b, _)| *b == member)
            .and_then(|(_, p)| *p)
            .filter(|p| p.leader_epoch == input.leader_epoch)
            .map(|p| p.log_end);
        match end {
            Some(end) => lowest = lowest.min(end),
            None => return input.current,
        }
    }
    input.current.max(lowest)
}

/// Whether a leader's high watermark is final (rule 9): it has reached the start offset of the
/// leader's epoch, so it covers everything earlier leaders committed. Always true without
/// `rules.hw_final_at_epoch_start`.
pub fn hw_is_final(hw: Offset, epoch_start: Offset, rules: &Rules) -> bool {
    !rules.hw_final_at_epoch_start || hw >= epoch_start
}

/// Why a produce request is refused; nothing is appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProduceError {
    /// The confirmed ISR is below `min_insync_replicas` (NOT_ENOUGH_REPLICAS).
    NotEnoughReplicas,
    /// The leader's lease lapsed (rule 12): it may already be deposed.
    LeaseExpired,
}

/// Whether the leader accepts an `acks=all` produce now.
pub fn may_accept_produce(
    committed_isr_len: usize,
    min_insync: usize,
    lease_valid: bool,
) -> Result<(), ProduceError> {
    if !lease_valid {
        Err(ProduceError::LeaseExpired)
    } else if committed_isr_len < min_insync {
        Err(ProduceError::NotEnoughReplicas)
    } else {
        Ok(())
    }
}

/// Whether the leader may acknowledge (`acks=all`) the record at `offset`: it is below the high
/// watermark (in the log of every counted replica) and the lease is valid (rule 12). A record of
/// the leader's own epoch sits at or past the epoch start, so being below the high watermark
/// implies the high watermark is final.
pub fn may_acknowledge(offset: Offset, hw: Offset, lease_valid: bool) -> bool {
    lease_valid && offset < hw
}

/// Whether the leader may answer consumers (below its high watermark) now: the lease is valid
/// (rule 12) and the high watermark final (rule 9).
pub fn may_serve_reads(hw_final: bool, lease_valid: bool) -> bool {
    hw_final && lease_valid
}

/// How a leader answers a consumer's fetch that quotes the leader epoch the consumer last read
/// in (KIP-320's current leader epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConsumerEpochCheck {
    /// The consumer quotes this epoch, or none (a client that does not track epochs): serve.
    Current,
    /// The consumer quotes an older epoch: its metadata is stale (FENCED_LEADER_EPOCH); it
    /// refreshes and comes back with this leader's epoch or a newer one.
    Fenced,
    /// The consumer quotes a newer epoch: this leader has been deposed, or has not learned it
    /// leads a newer epoch (UNKNOWN_LEADER_EPOCH). It must not serve: its high watermark may be
    /// below what the consumer already read from the newer leader (rule 2).
    Unknown,
}

/// How the leader of `my_epoch` answers a consumer quoting `consumer_epoch` (rule 2, its client
/// half, KIP-320; `rules.consumer_epochs`, without which every consumer is served).
/// A deposed leader keeps serving, within its lease, consumers that have not seen its
/// successor (what it serves is committed, only stale); one that read from the successor is
/// refused, so the high watermark each consumer sees never goes back, across handovers too.
pub fn check_consumer_epoch(
    my_epoch: LeaderEpoch,
    consumer_epoch: Option<LeaderEpoch>,
    rules: &Rules,
) -> ConsumerEpochCheck {
    match consumer_epoch.filter(|_| rules.consumer_epochs) {
        Some(e) if e < my_epoch => ConsumerEpochCheck::Fenced,
        Some(e) if e > my_epoch => ConsumerEpochCheck::Unknown,
        _ => ConsumerEpochCheck::Current,
    }
}

/// A follower's fetch, as far as the checks go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    /// The leader epoch the follower believes current.
    pub leader_epoch: LeaderEpoch,
    /// Its log end.
    pub offset: Offset,
    /// The newest epoch in its history (KIP-595-style fetch with divergence check).
    pub last_epoch: Option<LeaderEpoch>,
}

/// The leader's answer to a fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FetchDecision {
    /// The follower fetches in an older epoch: it must learn the new one (FENCED_LEADER_EPOCH).
    FencedLeaderEpoch,
    /// The follower is ahead of the leader's metadata: the leader must learn (UNKNOWN_LEADER_EPOCH).
    UnknownLeaderEpoch,
    /// The follower's log diverges: the leader's OffsetsForLeaderEpoch answer for the
    /// follower's last epoch, from which it truncates ([`crate::follower::truncation_offset`]).
    Diverging {
        epoch: Option<LeaderEpoch>,
        end_offset: Offset,
    },
    /// Without `rules.truncate_by_epoch`: the fetch offset is past the leader's log end; the
    /// follower truncates to it (Kafka before KIP-101).
    OutOfRange { log_end: Offset },
    /// Serve records from the fetch offset; the fetch counts for the follower's progress.
    Serve,
}

/// How the leader of `my_epoch`, with `history` and `log_end`, answers `fetch` (rules 2, 8).
/// With `rules.truncate_by_epoch`, every fetch is checked against the leader's epoch history:
/// the follower's last epoch must end here no earlier than the follower's log end.
pub fn check_fetch(
    my_epoch: LeaderEpoch,
    history: &EpochHistory,
    log_end: Offset,
    fetch: &FetchRequest,
    rules: &Rules,
) -> FetchDecision {
    if fetch.leader_epoch < my_epoch {
        return FetchDecision::FencedLeaderEpoch;
    }
    if fetch.leader_epoch > my_epoch {
        return FetchDecision::UnknownLeaderEpoch;
    }
    if rules.truncate_by_epoch {
        let (epoch, end_offset) = match fetch.last_epoch {
            Some(last) => history.end_offset_for(last, log_end),
            None => (None, 0),
        };
        if epoch != fetch.last_epoch || end_offset < fetch.offset {
            return FetchDecision::Diverging { epoch, end_offset };
        }
        FetchDecision::Serve
    } else if fetch.offset > log_end {
        FetchDecision::OutOfRange { log_end }
    } else {
        FetchDecision::Serve
    }
}

/// Whether a follower has dropped out of sync: it has not reached the leader's log end in this
/// epoch within `replica_lag_time_max_ms` (`lag_expired`, the broker's clock decides). A
/// follower that has not fetched in this epoch counts as holding nothing, so it is out of sync
/// once the leader holds a record.
pub fn out_of_sync(
    progress: Option<FollowerProgress>,
    leader_epoch: LeaderEpoch,
    leader_log_end: Offset,
    lag_expired: bool,
) -> bool {
    let reached = progress
        .filter(|p| p.leader_epoch == leader_epoch)
        .map_or(0, |p| p.log_end);
    lag_expired && reached < leader_log_end
}

/// Why a follower may not be added to the ISR yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotEligible {
    /// It is already counted.
    AlreadyInIsr,
    /// It has not fetched in the leader's epoch.
    NoFetchThisEpoch,
    /// The leader's high watermark is not final yet (rule 9).
    HwNotFinal,
    /// It has not reached the high watermark, or the epoch's start offset (rule 6).
    NotCaughtUp,
}

/// The member to propose for addition (rule 6): a follower outside the maximal ISR whose fetch
/// in the leader's epoch reached the high watermark and the epoch's start offset, while the
/// leader's high watermark is final (rule 9). The member carries the broker epoch of that fetch,
/// for the controller to check (KIP-903).
///
/// One exception to "final" keeps a partition live: while the confirmed ISR is below
/// `min_insync` (with `rules.strict_min_isr`), the high watermark cannot move, so a leader
/// elected with a stale one could never make it final and never grow the ISR back. A follower
/// that reached the epoch's start holds everything the leader held when it took the epoch, so
/// every committed record (the leader was elected from the ISR, rule 3): it may join. (The
/// model checks this with every rule on.)
#[allow(clippy::too_many_arguments)]
pub fn expansion_member(
    follower: BrokerId,
    view: &IsrView,
    progress: Option<FollowerProgress>,
    leader_epoch: LeaderEpoch,
    hw: Offset,
    epoch_start: Offset,
    min_insync: usize,
    rules: &Rules,
) -> Result<IsrMember, NotEligible> {
    if view.maximal().contains(&follower) {
        return Err(NotEligible::AlreadyInIsr);
    }
    let p = progress
        .filter(|p| p.leader_epoch == leader_epoch)
        .ok_or(NotEligible::NoFetchThisEpoch)?;
    let hw_frozen = rules.strict_min_isr && view.committed().len() < min_insync;
    if !hw_is_final(hw, epoch_start, rules) && !hw_frozen {
        return Err(NotEligible::HwNotFinal);
    }
    if p.log_end < hw || p.log_end < epoch_start {
        return Err(NotEligible::NotCaughtUp);
    }
    Ok(IsrMember {
        broker: follower,
        broker_epoch: p.broker_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(i: u32) -> BrokerId {
        BrokerId(i)
    }
    #[test]
    fn a_consumer_epoch_is_checked_both_ways_and_only_when_quoted() {
        let e = LeaderEpoch;
        let all = Rules::ALL;
        assert_eq!(
            check_consumer_epoch(e(3), Some(e(3)), &all),
            ConsumerEpochCheck::Current
        );
        assert_eq!(
            check_consumer_epoch(e(3), None, &all),
            ConsumerEpochCheck::Current
        );
        assert_eq!(
            check_consumer_epoch(e(3), Some(e(2)), &all),
            ConsumerEpochCheck::Fenced
        );
        assert_eq!(
            check_consumer_epoch(e(3), Some(e(4)), &all),
            ConsumerEpochCheck::Unknown
        );
        let off = Rules {
            consumer_epochs: false,
            ..Rules::ALL
        };
        assert_eq!(
            check_consumer_epoch(e(3), Some(e(4)), &off),
            ConsumerEpochCheck::Current
        );
    }

    fn fetched(end: Offset) -> Option<FollowerProgress> {
        Some(FollowerProgress {
            log_end: end,
            leader_epoch: LeaderEpoch(1),
            broker_epoch: BrokerEpoch(1),
        })
    }

    fn hw(
        current: Offset,
        leo: Offset,
        counted: &[BrokerId],
        committed: usize,
        progress: &[(BrokerId, Option<FollowerProgress>)],
    ) -> Offset {
        high_watermark(
            &HwInput {
                current,
                leader: b(0),
                leader_epoch: LeaderEpoch(1),
                leader_log_end: leo,
                counted,
                committed_isr_len: committed,
                min_insync: 2,
                progress,
            },
            &Rules::ALL,
        )
    }

    #[test]
    fn the_high_watermark_is_the_lowest_counted_log_end_and_never_goes_back() {
        let progress = [(b(1), fetched(3)), (b(2), fetched(1))];
        assert_eq!(hw(0, 5, &[b(0), b(1), b(2)], 3, &progress), 1);
        assert_eq!(hw(0, 5, &[b(0), b(1)], 2, &progress), 3);
        assert_eq!(hw(4, 5, &[b(0), b(1)], 2, &progress), 4);
        // Strict min ISR: a confirmed ISR of one holds the high watermark.
        assert_eq!(hw(0, 5, &[b(0)], 1, &progress), 0);
        // A member that has not fetched in this epoch holds it too.
        assert_eq!(
            hw(
                2,
                5,
                &[b(0), b(1), b(2)],
                3,
                &[(b(1), fetched(3)), (b(2), None)]
            ),
            2
        );
    }

    #[test]
    fn the_maximal_isr_counts_a_member_until_the_controller_answers() {
        let state = PartitionState::new(vec![b(0), b(1), b(2)]);
        let mut view = IsrView::new(&state);
        let shrink = vec![
            IsrMember {
                broker: b(0),
                broker_epoch: BrokerEpoch(1),
            },
            IsrMember {
                broker: b(1),
                broker_epoch: BrokerEpoch(1),
            },
        ];
        let request = view
            .propose(b(0), LeaderEpoch(1), shrink.clone(), 2)
            .unwrap();
        assert_eq!(
            view.propose(b(0), LeaderEpoch(1), shrink, 2),
            Err(ProposeError::Busy)
        );
        assert_eq!(view.counted(&Rules::ALL), vec![b(0), b(1), b(2)]);
        let lax = Rules {
            maximal_isr: false,
            ..Rules::ALL
        };
        assert_eq!(view.counted(&lax), vec![b(0), b(1)]);
        // A stale refusal keeps the proposal counted; a newer state settles it.
        view.on_response(&request, &Err(AlterError::StalePartitionEpoch));
        assert!(view.pending().is_some());
        let moved = state
            .fence(
                b(2),
                &crate::LiveBrokers::new(vec![(b(0), BrokerEpoch(1)), (b(1), BrokerEpoch(1))]),
                false,
            )
            .unwrap();
        view.on_state(&moved);
        assert!(view.pending().is_none());
        assert_eq!(view.committed(), &[b(0), b(1)]);
    }

    #[test]
    fn fetches_are_checked_by_epoch_and_history() {
        let mut history = EpochHistory::new();
        history.assign(LeaderEpoch(1), 0).unwrap();
        history.assign(LeaderEpoch(3), 2).unwrap();
        let fetch = |epoch, offset, last| FetchRequest {
            leader_epoch: LeaderEpoch(epoch),
            offset,
            last_epoch: last,
        };
        let rules = Rules::ALL;
        assert_eq!(
            check_fetch(LeaderEpoch(3), &history, 4, &fetch(2, 1, None), &rules),
            FetchDecision::FencedLeaderEpoch
        );
        assert_eq!(
            check_fetch(LeaderEpoch(3), &history, 4, &fetch(4, 1, None), &rules),
            FetchDecision::UnknownLeaderEpoch
        );
        assert_eq!(
            check_fetch(
                LeaderEpoch(3),
                &history,
                4,
                &fetch(3, 2, Some(LeaderEpoch(1))),
                &rules
            ),
            FetchDecision::Serve
        );
        assert_eq!(
            check_fetch(
                LeaderEpoch(3),
                &history,
                4,
                &fetch(3, 3, Some(LeaderEpoch(2))),
                &rules
            ),
            FetchDecision::Diverging {
                epoch: Some(LeaderEpoch(1)),
                end_offset: 2
            }
        );
        assert_eq!(
            check_fetch(
                LeaderEpoch(3),
                &history,
                4,
                &fetch(3, 3, Some(LeaderEpoch(1))),
                &rules
            ),
            FetchDecision::Diverging {
                epoch: Some(LeaderEpoch(1)),
                end_offset: 2
            }
        );
        let old = Rules {
            truncate_by_epoch: false,
            ..Rules::ALL
        };
        assert_eq!(
            check_fetch(
                LeaderEpoch(3),
                &history,
                4,
                &fetch(3, 5, Some(LeaderEpoch(2))),
                &old
            ),
            FetchDecision::OutOfRange { log_end: 4 }
        );
    }

    #[test]
    fn expansion_needs_a_final_hw_and_a_caught_up_fetch_in_this_epoch() {
        let state = PartitionState {
            isr: vec![b(0), b(1)],
            ..PartitionState::new(vec![b(0), b(1), b(2)])
        };
        let view = IsrView::new(&state);
        let e1 = LeaderEpoch(1);
        assert_eq!(
            expansion_member(b(1), &view, fetched(5), e1, 5, 0, 1, &Rules::ALL),
            Err(NotEligible::AlreadyInIsr)
        );
        assert_eq!(
            expansion_member(b(2), &view, None, e1, 5, 0, 1, &Rules::ALL),
            Err(NotEligible::NoFetchThisEpoch)
        );
        assert_eq!(
            expansion_member(b(2), &view, fetched(4), e1, 5, 0, 1, &Rules::ALL),
            Err(NotEligible::NotCaughtUp)
        );
        assert_eq!(
            expansion_member(b(2), &view, fetched(6), e1, 5, 6, 1, &Rules::ALL),
            Err(NotEligible::HwNotFinal)
        );
        let m = expansion_member(b(2), &view, fetched(5), e1, 5, 3, 1, &Rules::ALL).unwrap();
        assert_eq!(
            m,
            IsrMember {
                broker: b(2),
                broker_epoch: BrokerEpoch(1)
            }
        );
    }

    #[test]
    fn a_frozen_hw_does_not_keep_a_caught_up_follower_out() {
        // A leader elected alone (ISR {0}, min ISR 2) with a stale HW 2 below its epoch start 6:
        // strict min ISR holds the HW, so it can never become final on its own.
        let state = PartitionState {
            isr: vec![b(0)],
            ..PartitionState::new(vec![b(0), b(1), b(2)])
        };
        let view = IsrView::new(&state);
        let e1 = LeaderEpoch(1);
        assert!(expansion_member(b(1), &view, fetched(6), e1, 2, 6, 2, &Rules::ALL).is_ok());
        assert_eq!(
            expansion_member(b(1), &view, fetched(5), e1, 2, 6, 2, &Rules::ALL),
            Err(NotEligible::NotCaughtUp),
            "it must still have reached the epoch's start"
        );
        assert_eq!(
            expansion_member(b(1), &view, fetched(6), e1, 2, 6, 1, &Rules::ALL),
            Err(NotEligible::HwNotFinal),
            "with the ISR at its minimum the HW can move, and must be final first"
        );
    }
}
