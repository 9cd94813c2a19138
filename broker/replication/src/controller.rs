//! The partition state the controller owns, and every transition it may take.
//!
//! Owns: [`PartitionState`] (leader, leader epoch, ISR, replicas, partition epoch), the ISR
//! compare-and-set ([`PartitionState::alter_isr`]), elections ([`PartitionState::elect`]),
//! fencing ([`PartitionState::fence`], KIP-841), controlled shutdown
//! ([`PartitionState::shut_down`]), unclean restarts ([`PartitionState::on_unclean_restart`],
//! rule 7), reassignment ([`PartitionState::reassign`], [`PartitionState::complete_reassignment`],
//! rule 10) and the preferred leader's return ([`PartitionState::elect_preferred`]); [`LiveBrokers`], the controller's picture of which broker starts are registered,
//! unfenced and not shutting down.
//!
//! Invariants kept by every transition (the controller journals the returned state before it
//! takes effect; nothing here mutates in place):
//! - the partition epoch grows by exactly one with every change, and only then (rule 1);
//! - the leader epoch grows by one whenever the leader changes, to `None` included (rule 2);
//! - the ISR is a sorted subset of the replicas without duplicates; the leader, when there is
//!   one, is in it;
//! - a leader is chosen only from the ISR and only among live brokers, unless the topic allows
//!   unclean election (rule 3);
//! - an ISR addition names a live broker at its current broker epoch (rule 6, KIP-903);
//! - `removing` is a subset of the replicas and never all of them; the replicas not being
//!   removed (the reassignment's target) come first, in the target's order (rule 10);
//! - a reassignment removes replicas only once every target replica is in the ISR, so the ISR
//!   never drops below the target's size, which is at least the topic's min ISR (rule 10,
//!   `Rules::reassign_waits_for_isr`).

use crate::rules::Rules;
use crate::{BrokerEpoch, BrokerId, LeaderEpoch, PartitionEpoch};

/// One partition's replication state at the controller.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionState {
    /// The assigned replicas, preferred leader first. Distinct brokers.
    pub replicas: Vec<BrokerId>,
    /// The leader, if the partition has one.
    pub leader: Option<BrokerId>,
    /// Bumped by every leadership change.
    pub leader_epoch: LeaderEpoch,
    /// The in-sync replicas, sorted.
    pub isr: Vec<BrokerId>,
    /// Bumped by every change of this record.
    pub partition_epoch: PartitionEpoch,
    /// The replicas a reassignment in progress removes once every other replica (the target)
    /// is in the ISR (Kafka's `removingReplicas`, KIP-455); empty otherwise. Sorted.
    pub removing: Vec<BrokerId>,
}

/// The broker starts the controller considers alive: registered and not fenced, each with its
/// current broker epoch. Sorted by broker id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LiveBrokers(Vec<(BrokerId, BrokerEpoch)>);

impl LiveBrokers {
    /// From (broker, current broker epoch) pairs of the unfenced, registered brokers.
    pub fn new(mut brokers: Vec<(BrokerId, BrokerEpoch)>) -> Self {
        brokers.sort();
        brokers.dedup_by_key(|(b, _)| *b);
        LiveBrokers(brokers)
    }

    /// The current broker epoch of `broker`, if it is alive.
    pub fn epoch_of(&self, broker: BrokerId) -> Option<BrokerEpoch> {
        self.0
            .binary_search_by_key(&broker, |&(b, _)| b)
            .ok()
            .map(|i| self.0[i].1)
    }

    /// Whether `broker` is registered and unfenced.
    pub fn is_alive(&self, broker: BrokerId) -> bool {
        self.epoch_of(broker).is_some()
    }
}

/// An ISR member as the leader names it in a request: the broker and the broker epoch the
/// leader saw in its fetches (KIP-903).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IsrMember {
    pub broker: BrokerId,
    pub broker_epoch: BrokerEpoch,
}

/// The leader's ISR compare-and-set (Kafka's AlterPartition, KIP-497).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlterIsrRequest {
    /// The broker asking: it must be the current leader.
    pub leader: BrokerId,
    /// The leader epoch it leads in: it must be the current one.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch the proposal is based on: the compare in compare-and-set.
    pub partition_epoch: PartitionEpoch,
    /// The whole proposed ISR, sorted by broker.
    pub new_isr: Vec<IsrMember>,
}

/// Why the controller refused an ISR change. See [`AlterError::is_definite`] for what the
/// leader does with each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlterError {
    /// The request's leader epoch is not the current one: the sender was deposed, or has not
    /// yet learned it leads again (rule 2).
    FencedLeaderEpoch,
    /// The sender is not the leader of the current epoch.
    NotLeader,
    /// The request is based on an older partition epoch: the state moved meanwhile (rule 1).
    StalePartitionEpoch,
    /// The proposed ISR does not contain the leader, or is not sorted and distinct.
    Malformed,
    /// A proposed member is not a replica of the partition.
    NotAReplica(BrokerId),
    /// A member to be added is fenced or unregistered (KIP-841).
    NotAlive(BrokerId),
    /// A member to be added is named with a broker epoch that is not its current one: the fetch
    /// the leader judged it by came from an earlier start of the broker (KIP-903, rule 6).
    StaleBrokerEpoch(BrokerId),
    /// A shrink would leave fewer than `min_insync_replicas` members (see
    /// [`isr_floor_allows`]).
    BelowMinIsr,
    /// The proposal equals the current ISR.
    NoChange,
}

impl AlterError {
    /// Whether the refusal proves that the request was not applied and will not be: the leader
    /// rolls its proposal back at once. The other refusals (a stale leader or partition epoch)
    /// mean the state moved, perhaps by this very request (a retried one): the leader keeps
    /// counting its maximal ISR until it learns the newer state (rule 4). The controller checks
    /// epochs before anything else, so a retry of an applied request is always a stale one.
    pub fn is_definite(self) -> bool {
        !matches!(
            self,
            AlterError::FencedLeaderEpoch | AlterError::NotLeader | AlterError::StalePartitionEpoch
        )
    }
}

/// Whether an ISR of `new_len` members may replace one of `current_len` given
/// `min_insync_replicas`: growing is always allowed, shrinking only down to the minimum.
///
/// Decision (the issue is silent; KIP-966's eligible leader replicas in their simplest form):
/// while the ISR is at the minimum, strict min ISR (rule 5) stops the high watermark, so a
/// member the leader would drop still holds every committed record. Keeping it in the ISR keeps
/// it electable when the others fail, instead of leaving a single member whose loss makes the
/// partition unavailable for good. Fencing (KIP-841) and unclean restarts (rule 7) are the
/// controller's own removals and do not obey this floor.
pub fn isr_floor_allows(new_len: usize, current_len: usize, min_insync: usize) -> bool {
    new_len >= current_len || new_len >= min_insync
}

impl PartitionState {
    /// A new partition: every replica in sync (all logs empty), the first one leading, epochs 1.
    pub fn new(replicas: Vec<BrokerId>) -> Self {
        let mut isr = replicas.clone();
        isr.sort();
        PartitionState {
            leader: replicas.first().copied(),
            replicas,
            leader_epoch: LeaderEpoch(1),
            isr,
            partition_epoch: PartitionEpoch(1),
            removing: Vec::new(),
        }
    }

    /// The replicas the partition keeps once a reassignment in progress completes (all of
    /// them when none is): preferred leader first.
    pub fn target(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.removing.contains(b))
            .collect()
    }

    /// Whether a reassignment is in progress: replicas wait to be removed, or target replicas
    /// to join the ISR.
    pub fn reassigning(&self) -> bool {
        !self.removing.is_empty()
    }

    /// Whether `broker` is in the ISR.
    pub fn in_isr(&self, broker: BrokerId) -> bool {
        self.isr.binary_search(&broker).is_ok()
    }

    /// The leader's compare-and-set of the ISR (rules 1, 6; KIP-497, KIP-841, KIP-903).
    ///
    /// Checked in this order, so that a retry of an applied request is refused as stale (see
    /// [`AlterError::is_definite`]): the leader epoch and leader; the partition epoch
    /// (`rules.cas_partition_epoch`); the shape (sorted, distinct, containing the leader); every
    /// member a replica; every member being added alive and, with
    /// `rules.broker_epoch_on_expand`, at its current broker epoch; the min-ISR floor
    /// ([`isr_floor_allows`]); and that something changes. On success the ISR is replaced and
    /// the partition epoch bumped; leader and leader epoch stay.
    pub fn alter_isr(
        &self,
        request: &AlterIsrRequest,
        live: &LiveBrokers,
        min_insync: usize,
        rules: &Rules,
    ) -> Result<PartitionState, AlterError> {
        if request.leader_epoch != self.leader_epoch {
            return Err(AlterError::FencedLeaderEpoch);
        }
        if self.leader != Some(request.leader) {
            return Err(AlterError::NotLeader);
        }
        if rules.cas_partition_epoch && request.partition_epoch != self.partition_epoch {
            return Err(AlterError::StalePartitionEpoch);
        }
        let sorted = request
            .new_isr
            .windows(2)
            .all(|w| w[0].broker < w[1].broker);
        if !sorted || !request.new_isr.iter().any(|m| m.broker == request.leader) {
            return Err(AlterError::Malformed);
        }
        for member in &request.new_isr {
            if !self.replicas.contains(&member.broker) {
                return Err(AlterError::NotAReplica(member.broker));
            }
        }
        for member in request.new_isr.iter().filter(|m| !self.in_isr(m.broker)) {
            match live.epoch_of(member.broker) {
                None => return Err(AlterError::NotAlive(member.broker)),
                Some(current) if rules.broker_epoch_on_expand && current != member.broker_epoch => {
                    return Err(AlterError::StaleBrokerEpoch(member.broker));
                }
                Some(_) => {}
            }
        }
        if !isr_floor_allows(request.new_isr.len(), self.isr.len(), min_insync) {
            return Err(AlterError::BelowMinIsr);
        }
        let isr: Vec<BrokerId> = request.new_isr.iter().map(|m| m.broker).collect();
        if isr == self.isr {
            return Err(AlterError::NoChange);
        }
        Ok(PartitionState {
            isr,
            partition_epoch: self.partition_epoch.next(),
            ..self.clone()
        })
    }

    /// The candidate the controller would pick: the first replica (preferred order) that is in
    /// the ISR and alive; with `unclean`, else the first live replica (rule 3: unclean election
    /// is a topic setting, off by default, documented as losing data).
    fn candidate(&self, live: &LiveBrokers, unclean: bool) -> Option<(BrokerId, bool)> {
        let clean = self
            .replicas
            .iter()
            .copied()
            .find(|&b| self.in_isr(b) && live.is_alive(b));
        match clean {
            Some(b) => Some((b, true)),
            None if unclean => self
                .replicas
                .iter()
                .copied()
                .find(|&b| live.is_alive(b))
                .map(|b| (b, false)),
            None => None,
        }
    }

    /// Elects a leader for a partition that has none (rule 3): from the ISR's live members
    /// only, unless `unclean` (then the ISR becomes the new leader alone). Bumps both epochs.
    /// `None` when the partition has a leader or no one may lead.
    pub fn elect(&self, live: &LiveBrokers, unclean: bool) -> Option<PartitionState> {
        if self.leader.is_some() {
            return None;
        }
        let (leader, clean) = self.candidate(live, unclean)?;
        Some(PartitionState {
            leader: Some(leader),
            leader_epoch: self.leader_epoch.next(),
            isr: if clean {
                self.isr.clone()
            } else {
                vec![leader]
            },
            partition_epoch: self.partition_epoch.next(),
            replicas: self.replicas.clone(),
            removing: self.removing.clone(),
        })
    }

    /// Removes `broker` from the ISR (keeping it when `keep_last` and it is the last member)
    /// and, if it led, elects another leader from what remains, or none. `live` must no longer
    /// contain the broker start being removed.
    fn remove(
        &self,
        broker: BrokerId,
        keep_last: bool,
        live: &LiveBrokers,
        unclean: bool,
    ) -> Option<PartitionState> {
        let mut next = self.clone();
        if next.in_isr(broker) && !(keep_last && next.isr.len() == 1) {
            next.isr.retain(|&b| b != broker);
        }
        if next.leader == Some(broker) {
            next.leader = None;
            next.leader_epoch = next.leader_epoch.next();
            if let Some((leader, clean)) = next.candidate(live, unclean) {
                next.leader = Some(leader);
                if !clean {
                    next.isr = vec![leader];
                }
            }
        }
        if next == *self {
            return None;
        }
        next.partition_epoch = self.partition_epoch.next();
        Some(next)
    }

    /// The controller fenced `broker` (its lease lapsed past the grace, rule 12). KIP-841: it
    /// leaves the ISR, except as the last member (then the partition has no leader until that
    /// member returns, since no one else is known to hold the committed log). If it led, a new
    /// leader comes from the remaining live ISR (rule 3). `live` excludes the fenced broker.
    /// `None` if nothing changes.
    pub fn fence(
        &self,
        broker: BrokerId,
        live: &LiveBrokers,
        unclean: bool,
    ) -> Option<PartitionState> {
        self.remove(broker, true, live, unclean)
    }

    /// `broker` is shutting down under control (Kafka's ControlledShutdown): it is still alive
    /// and serving, and asks to be relieved before it stops. If it leads and another ISR member
    /// is alive, the leadership moves to that member (preferred order, a new leader epoch) and
    /// `broker` leaves the ISR; if it leads and no other live ISR member exists, nothing
    /// changes (handing over would leave the partition leaderless, or need an unclean election,
    /// while the broker can still serve it: it stays leader until it stops, then fencing
    /// decides). If it follows, it leaves the ISR, except as the last member, like
    /// [`PartitionState::fence`]: the controller's own removals do not obey the min-ISR floor
    /// (see [`isr_floor_allows`]). Never an unclean election. `live` excludes the broker.
    /// `None` if nothing changes.
    pub fn shut_down(&self, broker: BrokerId, live: &LiveBrokers) -> Option<PartitionState> {
        if self.leader == Some(broker) && self.candidate(live, false).is_none() {
            return None;
        }
        self.remove(broker, true, live, false)
    }

    /// `broker` registered with a new broker epoch after an unclean stop: whatever it held past
    /// its last sync may be gone (rule 7). With `rules.unclean_restart_leaves_isr` it leaves the
    /// ISR even as the last member (the partition then has no clean candidate at all: unclean
    /// election, or an operator, must decide; KIP-966 would keep such members in an "eligible"
    /// set instead). It rejoins only through the leader's expansion, after catching up. Without
    /// the rule it is treated like [`PartitionState::fence`]. `live` is the picture after the
    /// registration (it may contain the new start). `None` if nothing changes.
    pub fn on_unclean_restart(
        &self,
        broker: BrokerId,
        live: &LiveBrokers,
        rules: &Rules,
        unclean: bool,
    ) -> Option<PartitionState> {
        // The new start must not be elected in place of the one that left.
        let others = LiveBrokers(
            live.0
                .iter()
                .copied()
                .filter(|&(b, _)| b != broker)
                .collect(),
        );
        self.remove(broker, !rules.unclean_restart_leaves_isr, &others, unclean)
    }
}

/// Why the controller refused a reassignment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReassignError {
    /// The target names no broker, or a broker twice.
    Malformed,
    /// The target has fewer replicas than the topic's `min_insync_replicas`: completing it
    /// would leave an ISR below the minimum (rule 10).
    BelowMinIsr { target: usize, min_insync: usize },
    /// The target equals the replicas and nothing is being removed.
    NoChange,
}

impl PartitionState {
    /// Starts moving the partition onto `target` (preferred leader first), Kafka's
    /// AlterPartitionReassignments (KIP-455), rule 10: the replicas become the target followed
    /// by the current replicas not in it, which are marked `removing`; the ISR and the leader
    /// stay. New replicas start out of the ISR; the leader adds each one once it caught up
    /// (rule 6), and [`PartitionState::complete_reassignment`] removes the others only once the
    /// whole target is in sync. A reassignment given while one is in progress replaces it (to
    /// cancel one, reassign to the replicas it started from). Bumps the partition epoch.
    pub fn reassign(
        &self,
        target: &[BrokerId],
        min_insync: usize,
    ) -> Result<PartitionState, ReassignError> {
        let mut seen = target.to_vec();
        seen.sort();
        seen.dedup();
        if target.is_empty() || seen.len() != target.len() {
            return Err(ReassignError::Malformed);
        }
        if target.len() < min_insync {
            return Err(ReassignError::BelowMinIsr {
                target: target.len(),
                min_insync,
            });
        }
        let mut replicas = target.to_vec();
        let mut removing: Vec<BrokerId> = self
            .replicas
            .iter()
            .copied()
            .filter(|b| !target.contains(b))
            .collect();
        replicas.extend(removing.iter().copied());
        removing.sort();
        if replicas == self.replicas && removing == self.removing {
            return Err(ReassignError::NoChange);
        }
        Ok(PartitionState {
            replicas,
            removing,
            partition_epoch: self.partition_epoch.next(),
            ..self.clone()
        })
    }

    /// Finishes a reassignment once every target replica is in the ISR (rule 10,
    /// `rules.reassign_waits_for_isr`): the replicas become the target, the removed ones leave
    /// the ISR, and if the leader was one of them the leadership moves to the first target
    /// replica that is alive (a new leader epoch; it is in the ISR, so it holds the committed
    /// log, rule 3). `None` while a target replica is out of the ISR, when no target replica is
    /// alive to take over a moving leadership, or when nothing is in progress. `live` excludes
    /// brokers shutting down. Without the rule (the model's counterexample only) it completes
    /// whenever asked: the ISR may drop below the minimum, and the new leader may lack
    /// committed records.
    pub fn complete_reassignment(
        &self,
        live: &LiveBrokers,
        rules: &Rules,
    ) -> Option<PartitionState> {
        if !self.reassigning() {
            return None;
        }
        let target = self.target();
        if rules.reassign_waits_for_isr && !target.iter().all(|&b| self.in_isr(b)) {
            return None;
        }
        let mut next = PartitionState {
            isr: self
                .isr
                .iter()
                .copied()
                .filter(|b| target.contains(b))
                .collect(),
            replicas: target,
            removing: Vec::new(),
            partition_epoch: self.partition_epoch.next(),
            ..self.clone()
        };
        if let Some(leader) = self.leader
            && !next.replicas.contains(&leader)
        {
            let successor = next.replicas.iter().copied().find(|&b| live.is_alive(b))?;
            next.leader = Some(successor);
            next.leader_epoch = self.leader_epoch.next();
        }
        Some(next)
    }

    /// Moves the leadership back to the preferred replica (the first one) when it is in the
    /// ISR, alive and not leading (Kafka's preferred leader election,
    /// `auto.leader.rebalance.enable`): a new leader epoch, the ISR unchanged. A replica being
    /// removed is never preferred. Safe for the same reason as a controlled shutdown's
    /// handover: an ISR member holds every committed record (rules 3, 4). `None` if the
    /// preferred replica already leads or may not.
    pub fn elect_preferred(&self, live: &LiveBrokers) -> Option<PartitionState> {
        let preferred = *self.replicas.first()?;
        if self.leader == Some(preferred)
            || self.removing.contains(&preferred)
            || !self.in_isr(preferred)
            || !live.is_alive(preferred)
        {
            return None;
        }
        Some(PartitionState {
            leader: Some(preferred),
            leader_epoch: self.leader_epoch.next(),
            partition_epoch: self.partition_epoch.next(),
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(i: u32) -> BrokerId {
        BrokerId(i)
    }
    fn live(ids: &[(u32, u64)]) -> LiveBrokers {
        LiveBrokers::new(ids.iter().map(|&(i, e)| (b(i), BrokerEpoch(e))).collect())
    }
    fn member(i: u32, e: u64) -> IsrMember {
        IsrMember {
            broker: b(i),
            broker_epoch: BrokerEpoch(e),
        }
    }
    fn request(state: &PartitionState, isr: &[(u32, u64)]) -> AlterIsrRequest {
        AlterIsrRequest {
            leader: state.leader.unwrap(),
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            new_isr: isr.iter().map(|&(i, e)| member(i, e)).collect(),
        }
    }

    #[test]
    fn alter_isr_is_a_compare_and_set_from_the_current_leader() {
        let all = live(&[(0, 1), (1, 1), (2, 1)]);
        let s = PartitionState::new(vec![b(0), b(1), b(2)]);
        let shrunk = s
            .alter_isr(&request(&s, &[(0, 1), (1, 1)]), &all, 2, &Rules::ALL)
            .unwrap();
        assert_eq!(shrunk.isr, vec![b(0), b(1)]);
        assert_eq!(shrunk.partition_epoch, PartitionEpoch(2));
        assert_eq!(shrunk.leader_epoch, s.leader_epoch);
        // The same request again is stale, not "no change": the leader must wait for metadata.
        let again = shrunk.alter_isr(&request(&s, &[(0, 1), (1, 1)]), &all, 2, &Rules::ALL);
        assert_eq!(again, Err(AlterError::StalePartitionEpoch));
        assert!(!AlterError::StalePartitionEpoch.is_definite());
        let mut old_epoch = request(&shrunk, &[(0, 1), (1, 1), (2, 1)]);
        old_epoch.leader_epoch = LeaderEpoch(0);
        assert_eq!(
            shrunk.alter_isr(&old_epoch, &all, 2, &Rules::ALL),
            Err(AlterError::FencedLeaderEpoch)
        );
    }

    #[test]
    fn alter_isr_refuses_ineligible_members_and_the_floor() {
        let s = PartitionState::new(vec![b(0), b(1), b(2)]);
        let s = s
            .alter_isr(
                &request(&s, &[(0, 1), (1, 1)]),
                &live(&[(0, 1), (1, 1), (2, 1)]),
                2,
                &Rules::ALL,
            )
            .unwrap();
        // Broker 2 restarted (epoch 2): the leader's fetch picture (epoch 1) is stale.
        let restarted = live(&[(0, 1), (1, 1), (2, 2)]);
        let add = request(&s, &[(0, 1), (1, 1), (2, 1)]);
        assert_eq!(
            s.alter_isr(&add, &restarted, 2, &Rules::ALL),
            Err(AlterError::StaleBrokerEpoch(b(2)))
        );
        let lax = Rules {
            broker_epoch_on_expand: false,
            ..Rules::ALL
        };
        assert!(s.alter_isr(&add, &restarted, 2, &lax).is_ok());
        assert_eq!(
            s.alter_isr(&add, &live(&[(0, 1), (1, 1)]), 2, &Rules::ALL),
            Err(AlterError::NotAlive(b(2)))
        );
        assert_eq!(
            s.alter_isr(&request(&s, &[(0, 1), (3, 1)]), &restarted, 1, &Rules::ALL),
            Err(AlterError::NotAReplica(b(3)))
        );
        assert_eq!(
            s.alter_isr(&request(&s, &[(0, 1)]), &restarted, 2, &Rules::ALL),
            Err(AlterError::BelowMinIsr)
        );
        assert_eq!(
            s.alter_isr(&request(&s, &[(1, 1)]), &restarted, 1, &Rules::ALL),
            Err(AlterError::Malformed)
        );
        assert_eq!(
            s.alter_isr(&request(&s, &[(0, 1), (1, 1)]), &restarted, 2, &Rules::ALL),
            Err(AlterError::NoChange)
        );
        assert!(AlterError::BelowMinIsr.is_definite());
    }

    #[test]
    fn fencing_removes_from_the_isr_except_the_last_member() {
        let s = PartitionState::new(vec![b(0), b(1), b(2)]);
        let f = s.fence(b(0), &live(&[(1, 1), (2, 1)]), false).unwrap();
        assert_eq!(
            (f.leader, f.leader_epoch, f.isr.clone()),
            (Some(b(1)), LeaderEpoch(2), vec![b(1), b(2)])
        );
        let f = f.fence(b(2), &live(&[(1, 1)]), false).unwrap();
        assert_eq!((f.leader, f.isr.clone()), (Some(b(1)), vec![b(1)]));
        // The last member stays, and the partition has no leader.
        let f = f.fence(b(1), &live(&[]), false).unwrap();
        assert_eq!(
            (f.leader, f.leader_epoch, f.isr.clone()),
            (None, LeaderEpoch(3), vec![b(1)])
        );
        assert_eq!(f.elect(&live(&[(0, 1), (2, 1)]), false), None);
        let back = f.elect(&live(&[(0, 1), (1, 1)]), false).unwrap();
        assert_eq!(
            (back.leader, back.leader_epoch),
            (Some(b(1)), LeaderEpoch(4))
        );
        let unclean = f.elect(&live(&[(0, 1)]), true).unwrap();
        assert_eq!((unclean.leader, unclean.isr), (Some(b(0)), vec![b(0)]));
    }

    #[test]
    fn a_controlled_shutdown_hands_the_leadership_to_a_live_isr_member() {
        let s = PartitionState::new(vec![b(0), b(1), b(2)]);
        let others = live(&[(1, 1), (2, 1)]);
        let moved = s.shut_down(b(0), &others).unwrap();
        assert_eq!(
            (moved.leader, moved.leader_epoch, moved.isr.clone()),
            (Some(b(1)), LeaderEpoch(2), vec![b(1), b(2)])
        );
        assert_eq!(moved.partition_epoch, PartitionEpoch(2));
        // Asked again: nothing left to do.
        assert_eq!(moved.shut_down(b(0), &others), None);
        // The preferred live ISR member, skipping one that is down.
        let moved = s.shut_down(b(0), &live(&[(2, 1)])).unwrap();
        assert_eq!((moved.leader, moved.isr), (Some(b(2)), vec![b(1), b(2)]));

        // A follower leaves the ISR; leader and leader epoch stay.
        let followed = s.shut_down(b(2), &live(&[(0, 1), (1, 1)])).unwrap();
        assert_eq!(
            (followed.leader, followed.leader_epoch, followed.isr),
            (Some(b(0)), LeaderEpoch(1), vec![b(0), b(1)])
        );

        // The only live ISR member keeps leading: there is no one to hand to, and no unclean
        // election happens while it can still serve.
        let alone = s.fence(b(1), &live(&[(0, 1), (2, 1)]), false).unwrap();
        let alone = alone.fence(b(2), &live(&[(0, 1)]), false).unwrap();
        assert_eq!(alone.isr, vec![b(0)]);
        assert_eq!(alone.shut_down(b(0), &live(&[(1, 1), (2, 1)])), None);
        // ISR members that are down do not count either.
        assert_eq!(s.shut_down(b(0), &live(&[])), None);
        // A broker that is not a replica, or out of the ISR and not leading: no change.
        assert_eq!(s.shut_down(b(3), &others), None);
        assert_eq!(moved_out_of_isr(&s).shut_down(b(2), &others), None);
    }

    fn moved_out_of_isr(s: &PartitionState) -> PartitionState {
        s.fence(b(2), &live(&[(0, 1), (1, 1)]), false).unwrap()
    }

    #[test]
    fn an_unclean_restart_leaves_the_isr_even_as_last_member() {
        let s = PartitionState::new(vec![b(0), b(1), b(2)]);
        let s = s.fence(b(1), &live(&[(0, 1), (2, 1)]), false).unwrap();
        let s = s.fence(b(2), &live(&[(0, 1)]), false).unwrap();
        assert_eq!(s.isr, vec![b(0)]);
        let r = s
            .on_unclean_restart(b(0), &live(&[(0, 2), (1, 1), (2, 1)]), &Rules::ALL, false)
            .unwrap();
        assert_eq!((r.leader, r.isr.clone()), (None, vec![]));
        let lax = Rules {
            unclean_restart_leaves_isr: false,
            ..Rules::ALL
        };
        let r = s
            .on_unclean_restart(b(0), &live(&[(0, 2), (1, 1), (2, 1)]), &lax, false)
            .unwrap();
        assert_eq!((r.leader, r.isr), (None, vec![b(0)]));
    }

    #[test]
    fn a_reassignment_removes_replicas_only_once_the_whole_target_is_in_sync() {
        let s = PartitionState::new(vec![b(0), b(1), b(2)]);
        assert_eq!(
            s.reassign(&[b(1), b(2)], 3),
            Err(ReassignError::BelowMinIsr {
                target: 2,
                min_insync: 3
            })
        );
        assert_eq!(
            s.reassign(&[b(1), b(1), b(3)], 2),
            Err(ReassignError::Malformed)
        );
        assert_eq!(s.reassign(&[], 1), Err(ReassignError::Malformed));
        assert_eq!(
            s.reassign(&[b(0), b(1), b(2)], 2),
            Err(ReassignError::NoChange)
        );
        // Replace broker 0 (the leader) by broker 3.
        let moving = s.reassign(&[b(3), b(1), b(2)], 2).unwrap();
        assert_eq!(moving.replicas, vec![b(3), b(1), b(2), b(0)]);
        assert_eq!(
            (moving.removing.clone(), moving.target()),
            (vec![b(0)], vec![b(3), b(1), b(2)])
        );
        assert_eq!(
            (moving.leader, moving.isr.clone()),
            (Some(b(0)), vec![b(0), b(1), b(2)])
        );
        assert_eq!(moving.partition_epoch, PartitionEpoch(2));
        assert!(moving.reassigning());
        let all = live(&[(0, 1), (1, 1), (2, 1), (3, 1)]);
        // Broker 3 is not in sync yet: nothing is removed, and it may not lead.
        assert_eq!(moving.complete_reassignment(&all, &Rules::ALL), None);
        // Without rule 10 the leadership goes to broker 3, which holds nothing yet.
        let eager = Rules {
            reassign_waits_for_isr: false,
            ..Rules::ALL
        };
        let unsafe_done = moving.complete_reassignment(&all, &eager).unwrap();
        assert_eq!(
            (unsafe_done.leader, unsafe_done.isr),
            (Some(b(3)), vec![b(1), b(2)])
        );
        assert_eq!(moving.elect_preferred(&all), None);
        let caught_up = moving
            .alter_isr(
                &request(&moving, &[(0, 1), (1, 1), (2, 1), (3, 1)]),
                &all,
                2,
                &Rules::ALL,
            )
            .unwrap();
        let done = caught_up.complete_reassignment(&all, &Rules::ALL).unwrap();
        assert_eq!(done.replicas, vec![b(3), b(1), b(2)]);
        assert_eq!(
            (done.isr.clone(), done.removing.clone()),
            (vec![b(1), b(2), b(3)], vec![])
        );
        assert_eq!(
            (done.leader, done.leader_epoch),
            (Some(b(3)), LeaderEpoch(2))
        );
        assert_eq!(done.partition_epoch, caught_up.partition_epoch.next());
        assert_eq!(done.complete_reassignment(&all, &Rules::ALL), None);
        // A leader that stays keeps its epoch; the successor skips a target replica that is down.
        let keep = s.reassign(&[b(0), b(1), b(3)], 2).unwrap();
        let keep = PartitionState {
            isr: vec![b(0), b(1), b(2), b(3)],
            ..keep
        };
        let kept = keep.complete_reassignment(&all, &Rules::ALL).unwrap();
        assert_eq!(
            (kept.leader, kept.leader_epoch, kept.isr),
            (Some(b(0)), LeaderEpoch(1), vec![b(0), b(1), b(3)])
        );
        let down = PartitionState {
            isr: vec![b(0), b(1), b(2), b(3)],
            ..moving.clone()
        };
        let next = down
            .complete_reassignment(&live(&[(0, 1), (1, 1), (2, 1)]), &Rules::ALL)
            .unwrap();
        assert_eq!(next.leader, Some(b(1)));
        assert_eq!(
            down.complete_reassignment(&live(&[(0, 1)]), &Rules::ALL),
            None,
            "no target replica is alive to lead"
        );
        // A second reassignment replaces the first; back to the start cancels it.
        let cancelled = moving.reassign(&[b(0), b(1), b(2)], 2).unwrap();
        assert_eq!(
            (cancelled.replicas.clone(), cancelled.removing.clone()),
            (vec![b(0), b(1), b(2), b(3)], vec![b(3)])
        );
        let cancelled = cancelled.complete_reassignment(&all, &Rules::ALL).unwrap();
        assert_eq!(
            (cancelled.replicas, cancelled.leader),
            (vec![b(0), b(1), b(2)], Some(b(0)))
        );
    }

    #[test]
    fn the_preferred_replica_takes_the_leadership_back_once_in_sync() {
        let s = PartitionState::new(vec![b(0), b(1), b(2)]);
        let all = live(&[(0, 1), (1, 1), (2, 1)]);
        assert_eq!(s.elect_preferred(&all), None, "it already leads");
        let failed_over = s.fence(b(0), &live(&[(1, 1), (2, 1)]), false).unwrap();
        assert_eq!(failed_over.leader, Some(b(1)));
        assert_eq!(failed_over.elect_preferred(&all), None, "out of the ISR");
        let back = PartitionState {
            isr: vec![b(0), b(1), b(2)],
            ..failed_over.clone()
        };
        assert_eq!(
            back.elect_preferred(&live(&[(1, 1), (2, 1)])),
            None,
            "not alive"
        );
        let preferred = back.elect_preferred(&all).unwrap();
        assert_eq!(
            (
                preferred.leader,
                preferred.leader_epoch,
                preferred.isr.clone()
            ),
            (Some(b(0)), back.leader_epoch.next(), back.isr.clone())
        );
        assert_eq!(preferred.partition_epoch, back.partition_epoch.next());
        // Reordering the replicas by reassignment changes who is preferred.
        let reordered = s.reassign(&[b(2), b(0), b(1)], 2).unwrap();
        assert!(!reordered.reassigning());
        assert_eq!(reordered.elect_preferred(&all).unwrap().leader, Some(b(2)));
    }
}
