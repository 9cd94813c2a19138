//! The replication protocol, checked exhaustively with stateright.
//!
//! Owns the model: one controller, three brokers, one partition (by default replicated on all
//! three, RF=3, min ISR=2), a producer writing `Bounds::records` records with acks=all (one in
//! flight, no retries), one consumer (it keeps the leader epoch it last read in and quotes it,
//! rule 2's client half, KIP-320; any leader with a final HW serves it unless that epoch is
//! newer than its own, lease or no lease, as the broker serves reads), follower fetches, the
//! leader's ISR requests, lease lapses (a per-broker clock of ticks since the last answered
//! heartbeat), fencing, elections, ISR shrinks and expansions, and crashes that lose any
//! unsynced suffix (the broker comes back at once with a new broker epoch and knows nothing
//! until it registers, rule 7). Every decision is one of the crate's functions, called as the
//! broker and the controller will call them; the model itself only moves records (appends,
//! cuts) and messages, and keeps the ghost state the properties read.
//!
//! Two more kinds of controller moves, each bounded (zero in the default bounds, so the original
//! checks explore exactly what they did before):
//! - handovers (`Bounds::handovers`): a controlled shutdown of the leader
//!   (`PartitionState::shut_down`) and the preferred leader's return
//!   (`PartitionState::elect_preferred`). Unlike fencing, they move the leadership while the old
//!   leader is alive, holds its lease and believes it leads; it learns otherwise only from its
//!   metadata (`Learn`), which may come late or never, and until then serves a consumer that
//!   has not read from its successor (one that has quotes a newer epoch and is refused, so the
//!   HW that consumer sees never goes back). A broker shutting down stays registered
//!   and serving (as the broker does until its metadata shows the move) and is left out of the
//!   controller's live picture until it registers again. [`ReplicationModel::handover`] starts
//!   with broker 1 preferred and broker 0 leading, so both kinds are one step away;
//! - reassignment (`Bounds::reassignments`, [`ReplicationModel::reassignment`]): the partition
//!   starts on brokers {0,1} (RF=2, min ISR=2) and broker 2, registered but holding nothing,
//!   may become a replica by `PartitionState::reassign` to a target in `ReplicationModel::targets`;
//!   it catches up by fetching and joins the ISR only through the leader's own expansion, and
//!   the controller finishes with `PartitionState::complete_reassignment` whenever that allows.
//!   Min ISR 2 because it is the value rule 10 is about (a target must have at least min ISR
//!   replicas, and completing must not leave the ISR below it; with min ISR 1 that floor holds
//!   trivially) and because it keeps the state space small: the leader of an ISR of two may not
//!   shrink it, so only the controller's removals (fencing, restarts) and the move change it.
//!   [`ReplicationModel::single_copy`] starts it on broker 0 alone (RF=1, min ISR=1) instead,
//!   moved onto broker 1 (`[1]`) or raised to all three (`[0,1,2]`), as the broker does for a
//!   single copy once a move lists several replicas.
//!
//! The network: fetch answers and ISR requests are messages that can be lost, delayed and
//! reordered (a set of at most `Bounds::network` in flight; a send into a full network is a
//! loss). To keep the state space small enough for CI, three things are atomic, each argued safe:
//! - a fetch *request* reaches the leader when it is sent (its answer travels). A delayed request
//!   would only report an older log end, which the never-backwards HW ignores; a request from a
//!   previous start of the follower is modelled by what the leader keeps of it (its progress
//!   entry, with the old broker epoch), which is what KIP-903 is about;
//! - the controller's *answer* to an ISR request reaches the leader at once: its delay is a
//!   `Learn` that comes late, its loss a retry;
//! - an ISR change that keeps the leader epoch reaches the *followers* at once (they do nothing
//!   with the ISR; the leader, which does, learns it in its own time).
//!
//! What else is abstract: time (`Tick`; the broker's lease and the controller's grace are both
//! read from the clock through `LeaseConfig`: "the lease lapses at the broker before the
//! controller may fence it" is `lease < grace`); the lag timer (a leader may deem any follower
//! that has not reached its log end out of sync); metadata propagation (a registered broker may at
//! any time learn the controller's current partition state; stale notifications are refused by
//! epoch, so only the latest matters, and a lost one is a `Learn` that never happens).
//!
//! Ghost state (for the properties, not the protocol): the committed log (the longest prefix any
//! leader's high watermark has covered), the acknowledged records, what the consumer saw, and
//! flags set when a step violates a property as it happens (an election of a replica missing
//! committed records, a consumer's high watermark going back).
//!
//! Invariants checked (`always`, the `P_*` constants) and the `sometimes` properties that show
//! the model is not vacuous (`S_*`). The tests at the bottom: the full check with every rule on
//! for two sets of bounds, then one check per rule turned off, asserting the property the checker
//! breaks and printing its shortest trace (`--nocapture`; `COUNTEREXAMPLES.md` walks through
//! them). Larger bounds, in release: `cargo test -p weir-replication --release --test model --
//! --ignored`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use stateright::{Checker, HasDiscoveries, Model, Path, Property};
use weir_replication::controller::{
    AlterError, AlterIsrRequest, IsrMember, LiveBrokers, PartitionState,
};
use weir_replication::epochs::EpochHistory;
use weir_replication::follower;
use weir_replication::leader::{
    self, ConsumerEpochCheck, FetchDecision, FetchRequest, FollowerProgress, HwInput, IsrView,
};
use weir_replication::lease::LeaseConfig;
use weir_replication::{BrokerEpoch, BrokerId, LeaderEpoch, Offset, Rules};

/// Brokers in the cluster; the partition is replicated on some or all of them.
const BROKERS: usize = 3;

/// How far the model explores.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    /// Records the producer writes (values 1..=records).
    records: u8,
    /// Crashes (each may lose any unsynced suffix). Rule 11: one survives with min ISR 2.
    crashes: u8,
    /// Lease lapses, over all brokers (a broker's clock leaving 0).
    lapses: u8,
    /// ISR proposals by leaders (shrinks and expansions; retries are free).
    isr_changes: u8,
    /// Messages in flight at once; a send into a full network is a loss.
    network: usize,
    /// Leadership moves away from a live leader: controlled shutdowns and preferred elections.
    handovers: u8,
    /// Reassignments the controller starts (each to one of `ReplicationModel::targets`).
    reassignments: u8,
}

/// The default test's bounds.
const SMALL: Bounds = Bounds {
    records: 1,
    crashes: 1,
    lapses: 1,
    isr_changes: 1,
    network: 2,
    handovers: 0,
    reassignments: 0,
};

#[derive(Clone, Debug)]
struct ReplicationModel {
    rules: Rules,
    bounds: Bounds,
    lease: LeaseConfig,
    /// The topic setting (rule 3); off unless a test turns it on.
    unclean_election: bool,
    /// The partition's state at the start (journaled, learned by every broker).
    initial: PartitionState,
    /// The topic's `min_insync_replicas`.
    min_insync: usize,
    /// The replica lists the controller may reassign the partition to.
    targets: Vec<Vec<BrokerId>>,
    /// Whether a leader serves consumers only within its lease (`leader::may_serve_reads`'s
    /// second argument). Off, as in the broker (`replica::leader::check_reads` serves reads
    /// without the lease, so a partition stays readable while the controller is down), unless a
    /// test turns it on: only rule 12's counterexamples do, with `consumer_epochs` off, since
    /// consumer epochs keep the consumer's HW from going back without it.
    reads_need_lease: bool,
    /// In a counterexample run: the property the run stops at, and whether a state has violated
    /// it yet. The checker records a discovery each time a state violates a property, until it
    /// stops (only between batches of states), and reports the last one; breadth-first on one
    /// thread, the first is a shortest, so the property fails only there (`reported`).
    first_violation: Option<(&'static str, Arc<AtomicBool>)>,
}

impl ReplicationModel {
    fn new(rules: Rules, bounds: Bounds) -> Self {
        // Lease 1 tick, grace 2 (rule 12). Without the rule: lease 2, grace 1.
        let lease = if rules.fence_after_lease {
            LeaseConfig::new(1, 2).expect("grace longer than lease")
        } else {
            LeaseConfig::unchecked(2, 1)
        };
        ReplicationModel {
            rules,
            bounds,
            lease,
            unclean_election: false,
            initial: PartitionState::new((0..BROKERS).map(id).collect()),
            min_insync: 2,
            targets: Vec::new(),
            reads_need_lease: false,
            first_violation: None,
        }
    }

    /// RF=3 as in [`ReplicationModel::new`], but broker 1 is the preferred replica while broker 0
    /// leads (as after a failover from 1 to 0 and 1's return), so the controller may hand the
    /// leadership over at once, by 0's controlled shutdown or by the preferred election. The
    /// start is reached through the production transition, a reassignment that only reorders.
    fn handover(rules: Rules, bounds: Bounds) -> Self {
        let mut model = ReplicationModel::new(rules, bounds);
        model.initial = model
            .initial
            .reassign(&[id(1), id(0), id(2)], model.min_insync)
            .expect("a reordering is a valid reassignment");
        model
    }

    /// The partition on brokers 0 and 1 (RF=2, min ISR=2; see the module docs for why), broker 0
    /// leading; the controller may move it onto `targets` (broker 2 holds nothing yet).
    fn reassignment(rules: Rules, bounds: Bounds, targets: &[[u32; 2]]) -> Self {
        let targets: Vec<&[u32]> = targets.iter().map(|t| &t[..]).collect();
        ReplicationModel::moving(rules, bounds, &[0, 1], 2, &targets)
    }

    /// A single copy on broker 0 (RF=1, min ISR=1), which the controller may move onto
    /// `targets` (brokers 1 and 2 hold nothing yet): moved (`[1]`) or raised (`[0, 1, 2]`).
    fn single_copy(rules: Rules, bounds: Bounds, targets: &[&[u32]]) -> Self {
        ReplicationModel::moving(rules, bounds, &[0], 1, targets)
    }

    /// The partition on `replicas` (the first leading), with `min_insync`, movable onto
    /// `targets`.
    fn moving(
        rules: Rules,
        bounds: Bounds,
        replicas: &[u32],
        min_insync: usize,
        targets: &[&[u32]],
    ) -> Self {
        let mut model = ReplicationModel::new(rules, bounds);
        model.initial = PartitionState::new(replicas.iter().copied().map(BrokerId).collect());
        model.min_insync = min_insync;
        model.targets = targets
            .iter()
            .map(|t| t.iter().map(|&b| BrokerId(b)).collect())
            .collect();
        model
    }
}

/// One record in a replica's log: the leader epoch that appended it and the producer's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Entry {
    epoch: u32,
    value: u8,
}

/// What a broker holds while it believes it leads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Leading {
    epoch: LeaderEpoch,
    /// Its log end when it took the epoch.
    epoch_start: Offset,
    isr: IsrView,
    progress: Vec<(BrokerId, Option<FollowerProgress>)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Broker {
    /// The broker epoch of this start (registered or about to be).
    start: BrokerEpoch,
    log: Vec<Entry>,
    history: EpochHistory,
    /// The local high watermark (checkpointed: it survives a crash, capped by the log).
    hw: Offset,
    /// The partition state it last learned; `None` after a restart until it learns again.
    known: Option<PartitionState>,
    leading: Option<Leading>,
    /// Ticks since its last answered heartbeat (of the previous start, until it registers).
    clock: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Registration {
    start: BrokerEpoch,
    fenced: bool,
    /// It asked for a controlled shutdown: out of the controller's live picture (no election,
    /// no ISR addition) until it registers again, though still serving meanwhile.
    shutting_down: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Body {
    Data {
        entries: Vec<Entry>,
        hw: Offset,
    },
    Diverging {
        epoch: Option<LeaderEpoch>,
        end_offset: Offset,
    },
    OutOfRange {
        log_end: Offset,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Msg {
    Fetch {
        from: BrokerId,
        to: BrokerId,
        leader_epoch: LeaderEpoch,
        broker_epoch: BrokerEpoch,
        offset: Offset,
        last_epoch: Option<LeaderEpoch>,
    },
    FetchAnswer {
        to: BrokerId,
        from: BrokerId,
        leader_epoch: LeaderEpoch,
        offset: Offset,
        body: Body,
    },
    Alter(AlterIsrRequest),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct InFlight {
    value: u8,
    offset: Offset,
    broker: usize,
    epoch: LeaderEpoch,
}

/// Hashed (so it tells states apart) only for what the properties read back: the committed log
/// and the flags of violations. The flags that only mark that something happened, for the
/// `sometimes` properties, are left out of the hash: a state reached with and without one is
/// one state (the checker then may miss a `sometimes`, never an `always`; the full check asserts
/// every `sometimes` is found).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ghost {
    /// The longest log prefix any leader's high watermark has covered.
    committed: Vec<Entry>,
    /// Two leaders' high watermarks covered different records at one offset.
    committed_conflict: bool,
    /// A replica missing committed records was elected.
    bad_election: bool,
    /// The consumer read a lower high watermark than before.
    consumer_hw_back: bool,
    /// The consumer read a record that differs from one it read before at that offset.
    consumer_conflict: bool,
    /// The replicas completed reassignments removed, sorted.
    removed: Vec<BrokerId>,
    /// A replica a reassignment removed was elected afterwards.
    removed_elected: bool,
    /// A completed reassignment left the ISR below `min_insync_replicas` (rule 10).
    completion_below_min: bool,
    failover_after_ack: bool,
    shrunk: bool,
    expanded: bool,
    lossy_crash: bool,
    diverged: bool,
    /// The leadership moved while the old leader was registered and unfenced and led in its
    /// own eyes.
    handed_over: bool,
    /// A controlled shutdown moved the leadership.
    shut_down_moved: bool,
    /// The preferred replica took the leadership back.
    preferred_elected: bool,
    /// A replica that was not one at the start joined the ISR.
    newcomer_in_sync: bool,
    /// A reassignment completed.
    reassigned: bool,
    /// A reassignment completed that moved the leadership off a removed leader, after an
    /// acknowledged record.
    removed_leader_moved_after_ack: bool,
}

impl std::hash::Hash for Ghost {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (
            &self.committed,
            self.committed_conflict,
            self.bad_election,
            self.consumer_hw_back,
            self.consumer_conflict,
            &self.removed,
            self.removed_elected,
            self.completion_below_min,
        )
            .hash(state);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    controller: PartitionState,
    registry: Vec<Registration>,
    brokers: Vec<Broker>,
    /// Sorted and without duplicates: a set.
    network: Vec<Msg>,
    next_value: u8,
    in_flight: Option<InFlight>,
    /// (offset, value) of every acknowledged record.
    acked: Vec<(Offset, u8)>,
    consumer_hw: Offset,
    consumer_seen: Vec<Entry>,
    /// The leader epoch the consumer last read in (rule 2's client half, KIP-320): it quotes it,
    /// and a leader of an older epoch refuses it. It starts at the first leader's epoch, which
    /// is what a consumer that has not read yet is told by its metadata (no leader is older).
    consumer_epoch: LeaderEpoch,
    crashes: u8,
    lapses: u8,
    isr_changes: u8,
    handovers: u8,
    reassignments: u8,
    ghost: Ghost,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    Produce(usize),
    Ack,
    Fetch(usize),
    Deliver(Msg),
    Lose(Msg),
    Learn(usize),
    Shrink(usize, usize),
    Expand(usize, usize),
    Retry(usize),
    Tick(usize),
    Heartbeat(usize),
    Fence(usize),
    Elect,
    Crash(usize, Offset),
    Register(usize),
    Consume(usize),
    /// The leader asks for a controlled shutdown.
    ShutDown(usize),
    ElectPreferred,
    /// The controller starts moving the partition onto `targets[i]`.
    Reassign(usize),
    CompleteReassignment,
}

fn id(b: usize) -> BrokerId {
    BrokerId(b as u32)
}

fn ix(b: BrokerId) -> usize {
    b.0 as usize
}

fn prefix_conflict(a: &[Entry], b: &[Entry]) -> bool {
    a.iter().zip(b).any(|(x, y)| x != y)
}

impl State {
    /// The controller's picture: registered, unfenced and not shutting down.
    fn live(&self) -> LiveBrokers {
        LiveBrokers::new(
            self.registry
                .iter()
                .enumerate()
                .filter(|(_, r)| !r.fenced && !r.shutting_down)
                .map(|(b, r)| (id(b), r.start))
                .collect(),
        )
    }

    /// Whether the broker's current start is the one the controller has registered.
    fn registered(&self, b: usize) -> bool {
        self.brokers[b].start == self.registry[b].start
    }

    fn lease_valid(&self, m: &ReplicationModel, b: usize) -> bool {
        self.registered(b) && m.lease.broker_lease_valid(self.brokers[b].clock)
    }

    /// The (leader, epoch) a broker follows, as it believes: only a replica follows.
    fn following(&self, b: usize) -> Option<(BrokerId, LeaderEpoch)> {
        let known = self.brokers[b].known.as_ref()?;
        match known.leader {
            Some(l) if l != id(b) && known.replicas.contains(&id(b)) => {
                Some((l, known.leader_epoch))
            }
            _ => None,
        }
    }

    /// While the consumer's epoch refuses no broker that leads in its own eyes, it is raised to
    /// the oldest epoch still in play: the controller's or one a broker leads, whichever is lower.
    /// That one refuses no broker either, now or later (a broker leads later only the
    /// controller's epoch, which never goes back), and the next read that raises the consumer's
    /// HW records the same epoch from either, so the two states have the same futures; making
    /// them one keeps the state space near what it was without consumer epochs.
    fn canonical_consumer_epoch(&mut self) {
        let oldest = self
            .brokers
            .iter()
            .filter_map(|br| br.leading.as_ref().map(|l| l.epoch))
            .fold(self.controller.leader_epoch, LeaderEpoch::min);
        self.consumer_epoch = self.consumer_epoch.max(oldest);
    }

    fn hw_final(&self, m: &ReplicationModel, b: usize) -> bool {
        let br = &self.brokers[b];
        br.leading
            .as_ref()
            .is_some_and(|l| leader::hw_is_final(br.hw, l.epoch_start, &m.rules))
    }

    /// The controller's leader, if that broker has learned it leads this epoch.
    fn acting_leader(&self) -> Option<usize> {
        let l = ix(self.controller.leader?);
        let leading = self.brokers[l].leading.as_ref()?;
        (self.registered(l) && leading.epoch == self.controller.leader_epoch).then_some(l)
    }

    fn send(&mut self, m: &ReplicationModel, msg: Msg) {
        if self.network.len() < m.bounds.network
            && let Err(at) = self.network.binary_search(&msg)
        {
            self.network.insert(at, msg);
        }
    }

    fn remove(&mut self, msg: &Msg) {
        if let Ok(at) = self.network.binary_search(msg) {
            self.network.remove(at);
        }
    }

    fn merge_committed(&mut self, prefix: Vec<Entry>) {
        let committed = &self.ghost.committed;
        if prefix_conflict(committed, &prefix) {
            self.ghost.committed_conflict = true;
        } else if prefix.len() > committed.len() {
            self.ghost.committed = prefix;
        }
    }

    /// The controller journals a new partition state; elections are checked against the ghost.
    fn set_partition(&mut self, next: PartitionState) {
        if next.leader_epoch != self.controller.leader_epoch {
            if let Some(l) = next.leader {
                // A start that crashed before the controller noticed is elected as a dead one:
                // it never acts on it (it re-registers first), so only a live start is checked.
                if self.registered(ix(l))
                    && !self.brokers[ix(l)].log.starts_with(&self.ghost.committed)
                {
                    self.ghost.bad_election = true;
                }
                if self.ghost.removed.contains(&l) {
                    self.ghost.removed_elected = true;
                }
                if !self.acked.is_empty() {
                    self.ghost.failover_after_ack = true;
                }
            }
            if let Some(old) = self.controller.leader.map(ix)
                && self.registered(old)
                && !self.registry[old].fenced
                && self.brokers[old]
                    .leading
                    .as_ref()
                    .is_some_and(|l| l.epoch == self.controller.leader_epoch)
            {
                self.ghost.handed_over = true;
            }
        }
        // A replica a later reassignment adds back is a replica like any other.
        self.ghost.removed.retain(|b| !next.replicas.contains(b));
        let same_epoch = next.leader_epoch == self.controller.leader_epoch;
        self.controller = next;
        if same_epoch {
            // A change that keeps the leader epoch (the ISR, or a reassignment's replica set)
            // reaches the followers of this epoch at once: a follower does nothing with the ISR
            // (when it becomes leader it learns the whole state), and a replica added or removed
            // only starts or stops fetching, which a delay would only postpone (a removed
            // follower's fetches count only while the leader still counts it anyway). The
            // leader, which acts on the ISR, learns it in its own time.
            for b in 0..BROKERS {
                let br = &mut self.brokers[b];
                if br.start == self.registry[b].start
                    && br.leading.is_none()
                    && br
                        .known
                        .as_ref()
                        .is_some_and(|k| k.leader_epoch == self.controller.leader_epoch)
                {
                    br.known = Some(self.controller.clone());
                }
            }
        }
    }

    fn truncate(&mut self, b: usize, to: Offset) {
        let br = &mut self.brokers[b];
        br.log.truncate(to as usize);
        br.history.truncate_from_end(to);
        br.hw = br.hw.min(to);
    }

    /// The leader recomputes its high watermark (rules 4, 5).
    fn recompute_hw(&mut self, m: &ReplicationModel, b: usize) {
        let br = &self.brokers[b];
        let Some(l) = &br.leading else { return };
        let counted = l.isr.counted(&m.rules);
        let hw = leader::high_watermark(
            &HwInput {
                current: br.hw,
                leader: id(b),
                leader_epoch: l.epoch,
                leader_log_end: br.log.len() as Offset,
                counted: &counted,
                committed_isr_len: l.isr.committed().len(),
                min_insync: m.min_insync,
                progress: &l.progress,
            },
            &m.rules,
        );
        let prefix = br.log[..hw as usize].to_vec();
        self.brokers[b].hw = hw;
        self.merge_committed(prefix);
    }

    /// A broker learns a partition state (metadata, or the controller's answer to its request).
    fn learn(&mut self, m: &ReplicationModel, b: usize, state: PartitionState) {
        let br = &mut self.brokers[b];
        let new_epoch = match &br.known {
            Some(k) if state.partition_epoch <= k.partition_epoch => return,
            Some(k) => state.leader_epoch != k.leader_epoch,
            None => true,
        };
        if new_epoch {
            if state.leader == Some(id(b)) {
                let leo = br.log.len() as Offset;
                br.history
                    .assign(state.leader_epoch, leo)
                    .expect("leader epochs only grow");
                br.leading = Some(Leading {
                    epoch: state.leader_epoch,
                    epoch_start: leo,
                    isr: IsrView::new(&state),
                    progress: (0..BROKERS)
                        .filter(|&f| f != b)
                        .map(|f| (id(f), None))
                        .collect(),
                });
            } else {
                br.leading = None;
                let cut = follower::on_leader_epoch_change(&m.rules, br.hw, br.log.len() as Offset);
                br.known = Some(state);
                if let Some(to) = cut {
                    self.truncate(b, to);
                }
                return;
            }
        } else if let Some(l) = &mut br.leading {
            l.isr.on_state(&state);
        }
        br.known = Some(state);
        self.recompute_hw(m, b);
    }

    /// A member of the leader's proposal: the broker epoch it knows for it.
    fn member(&self, leader: usize, b: usize) -> IsrMember {
        let broker_epoch = if b == leader {
            self.brokers[b].start
        } else {
            self.brokers[leader]
                .leading
                .as_ref()
                .and_then(|l| l.progress.iter().find(|(f, _)| *f == id(b)))
                .and_then(|(_, p)| p.map(|p| p.broker_epoch))
                .unwrap_or(BrokerEpoch(0))
        };
        IsrMember {
            broker: id(b),
            broker_epoch,
        }
    }

    fn progress_of(&self, leader: usize, f: usize) -> Option<FollowerProgress> {
        self.brokers[leader]
            .leading
            .as_ref()?
            .progress
            .iter()
            .find(|(b, _)| *b == id(f))?
            .1
    }

    fn deliver(&mut self, m: &ReplicationModel, msg: Msg) {
        self.remove(&msg);
        match msg {
            Msg::Fetch {
                from,
                to,
                leader_epoch,
                broker_epoch,
                offset,
                last_epoch,
            } => {
                let l = ix(to);
                let br = &self.brokers[l];
                let Some(leading) = &br.leading else { return };
                let my_epoch = leading.epoch;
                let request = FetchRequest {
                    leader_epoch,
                    offset,
                    last_epoch,
                };
                let body = match leader::check_fetch(
                    my_epoch,
                    &br.history,
                    br.log.len() as Offset,
                    &request,
                    &m.rules,
                ) {
                    FetchDecision::FencedLeaderEpoch | FetchDecision::UnknownLeaderEpoch => return,
                    FetchDecision::Diverging { epoch, end_offset } => {
                        Body::Diverging { epoch, end_offset }
                    }
                    FetchDecision::OutOfRange { log_end } => Body::OutOfRange { log_end },
                    FetchDecision::Serve => {
                        let fetch = FollowerProgress {
                            log_end: offset,
                            leader_epoch,
                            broker_epoch,
                        };
                        let previous = self.progress_of(l, ix(from));
                        if let Some(p) = leader::record_fetch(previous, fetch) {
                            let leading = self.brokers[l].leading.as_mut().expect("leading");
                            let slot = leading
                                .progress
                                .iter_mut()
                                .find(|(f, _)| *f == from)
                                .expect("a replica");
                            slot.1 = Some(p);
                            self.recompute_hw(m, l);
                        }
                        let br = &self.brokers[l];
                        let entries = br.log[offset as usize..].to_vec();
                        let f = &self.brokers[ix(from)];
                        if entries.is_empty() && follower::follower_hw(br.hw, offset) == f.hw {
                            // An answer that would change nothing is as good as a lost one.
                            return;
                        }
                        Body::Data { entries, hw: br.hw }
                    }
                };
                self.send(
                    m,
                    Msg::FetchAnswer {
                        to: from,
                        from: to,
                        leader_epoch: my_epoch,
                        offset,
                        body,
                    },
                );
            }
            Msg::FetchAnswer {
                to,
                from,
                leader_epoch,
                offset,
                body,
            } => {
                let f = ix(to);
                let leo = self.brokers[f].log.len() as Offset;
                if !follower::accepts_response(self.following(f), leo, from, leader_epoch, offset) {
                    return;
                }
                match body {
                    Body::Data { entries, hw } => {
                        let br = &mut self.brokers[f];
                        for e in entries {
                            let epoch = LeaderEpoch(e.epoch);
                            if br.history.latest_epoch() != Some(epoch) {
                                br.history
                                    .assign(epoch, br.log.len() as Offset)
                                    .expect("a leader's records come in epoch order");
                            }
                            br.log.push(e);
                        }
                        br.hw = follower::follower_hw(hw, br.log.len() as Offset);
                    }
                    Body::Diverging { epoch, end_offset } => {
                        let to = follower::truncation_offset(
                            &self.brokers[f].history,
                            leo,
                            epoch,
                            end_offset,
                        );
                        if to < leo {
                            self.ghost.diverged = true;
                            self.truncate(f, to);
                        }
                    }
                    Body::OutOfRange { log_end } => self.truncate(f, log_end.min(leo)),
                }
            }
            Msg::Alter(request) => {
                let result =
                    self.controller
                        .alter_isr(&request, &self.live(), m.min_insync, &m.rules);
                if let Ok(next) = &result {
                    if next.isr.len() < self.controller.isr.len() {
                        self.ghost.shrunk = true;
                    } else {
                        self.ghost.expanded = true;
                    }
                    if next.isr.iter().any(|b| !m.initial.replicas.contains(b)) {
                        self.ghost.newcomer_in_sync = true;
                    }
                    self.set_partition(next.clone());
                }
                // The answer reaches the leader at once: its delay is a `Learn` that comes late,
                // its loss a retry.
                self.answer_alter(m, request, result);
            }
        }
    }

    /// The controller's answer reaches the leader that asked (rule 4: accepted or stale, it waits
    /// for the state; refused for good, it rolls back).
    fn answer_alter(
        &mut self,
        m: &ReplicationModel,
        request: AlterIsrRequest,
        result: Result<PartitionState, AlterError>,
    ) {
        let l = ix(request.leader);
        let Some(leading) = &mut self.brokers[l].leading else {
            return;
        };
        if leading.epoch != request.leader_epoch {
            return;
        }
        match result {
            Ok(state) => self.learn(m, l, state),
            Err(_) => {
                leading.isr.on_response(&request, &result);
                self.recompute_hw(m, l);
            }
        }
    }
}

impl ReplicationModel {
    /// Whether the `always` property `name` is reported to hold, given whether it `holds`: in a
    /// counterexample run, a violation of the property the run stops at is reported only the
    /// first time.
    fn reported(&self, name: &'static str, holds: bool) -> bool {
        holds
            || self
                .first_violation
                .as_ref()
                .is_some_and(|(stop_at, seen)| {
                    *stop_at == name && seen.swap(true, Ordering::Relaxed)
                })
    }
}

impl Model for ReplicationModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let controller = self.initial.clone();
        let brokers = (0..BROKERS)
            .map(|b| {
                let mut history = EpochHistory::new();
                let leading = (controller.leader == Some(id(b))).then(|| {
                    history
                        .assign(controller.leader_epoch, 0)
                        .expect("empty history");
                    Leading {
                        epoch: controller.leader_epoch,
                        epoch_start: 0,
                        isr: IsrView::new(&controller),
                        progress: (0..BROKERS)
                            .filter(|&f| f != b)
                            .map(|f| (id(f), None))
                            .collect(),
                    }
                });
                Broker {
                    start: BrokerEpoch(1),
                    log: Vec::new(),
                    history,
                    hw: 0,
                    known: Some(controller.clone()),
                    leading,
                    clock: 0,
                }
            })
            .collect();
        vec![State {
            controller,
            registry: vec![
                Registration {
                    start: BrokerEpoch(1),
                    fenced: false,
                    shutting_down: false,
                };
                BROKERS
            ],
            brokers,
            network: Vec::new(),
            next_value: 1,
            in_flight: None,
            acked: Vec::new(),
            consumer_hw: 0,
            consumer_seen: Vec::new(),
            consumer_epoch: self.initial.leader_epoch,
            crashes: self.bounds.crashes,
            lapses: self.bounds.lapses,
            isr_changes: self.bounds.isr_changes,
            handovers: self.bounds.handovers,
            reassignments: self.bounds.reassignments,
            ghost: Ghost {
                committed: Vec::new(),
                committed_conflict: false,
                bad_election: false,
                consumer_hw_back: false,
                consumer_conflict: false,
                removed: Vec::new(),
                removed_elected: false,
                completion_below_min: false,
                failover_after_ack: false,
                shrunk: false,
                expanded: false,
                lossy_crash: false,
                diverged: false,
                handed_over: false,
                shut_down_moved: false,
                preferred_elected: false,
                newcomer_in_sync: false,
                reassigned: false,
                removed_leader_moved_after_ack: false,
            },
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        let room = s.network.len() < self.bounds.network;
        for b in 0..BROKERS {
            let br = &s.brokers[b];
            if let Some(l) = &br.leading {
                let leo = br.log.len() as Offset;
                if s.in_flight.is_none()
                    && s.next_value <= self.bounds.records
                    && leader::may_accept_produce(
                        l.isr.committed().len(),
                        self.min_insync,
                        s.lease_valid(self, b),
                    )
                    .is_ok()
                {
                    actions.push(Action::Produce(b));
                }
                let lease = !self.reads_need_lease || s.lease_valid(self, b);
                if leader::may_serve_reads(s.hw_final(self, b), lease)
                    && leader::check_consumer_epoch(l.epoch, Some(s.consumer_epoch), &self.rules)
                        != ConsumerEpochCheck::Unknown
                {
                    actions.push(Action::Consume(b));
                }
                if room && s.lease_valid(self, b) {
                    match l.isr.pending() {
                        None if s.isr_changes > 0 => {
                            let committed = l.isr.committed();
                            for f in (0..BROKERS).filter(|&f| f != b) {
                                let progress = s.progress_of(b, f);
                                if committed.contains(&id(f)) {
                                    if leader::out_of_sync(progress, l.epoch, leo, true)
                                        && weir_replication::controller::isr_floor_allows(
                                            committed.len() - 1,
                                            committed.len(),
                                            self.min_insync,
                                        )
                                    {
                                        actions.push(Action::Shrink(b, f));
                                    }
                                } else if leader::expansion_member(
                                    id(f),
                                    &l.isr,
                                    progress,
                                    l.epoch,
                                    br.hw,
                                    l.epoch_start,
                                    self.min_insync,
                                    &self.rules,
                                )
                                .is_ok()
                                {
                                    actions.push(Action::Expand(b, f));
                                }
                            }
                        }
                        Some(p) => {
                            let outstanding = s.network.iter().any(|msg| match msg {
                                Msg::Alter(r) => r == p,
                                _ => false,
                            });
                            if !outstanding {
                                actions.push(Action::Retry(b));
                            }
                        }
                        None => {}
                    }
                }
            }
            // One fetch at a time per follower and leader epoch (its answer may be in flight).
            if let Some((leader, epoch)) = s.following(b).filter(|_| s.registered(b))
                && !s.network.iter().any(|msg| {
                    matches!(msg, Msg::FetchAnswer { to, from, leader_epoch, .. }
                        if *to == id(b) && *from == leader && *leader_epoch == epoch)
                })
            {
                actions.push(Action::Fetch(b));
            }
            if s.registered(b)
                && br
                    .known
                    .as_ref()
                    .is_none_or(|k| k.partition_epoch < s.controller.partition_epoch)
            {
                actions.push(Action::Learn(b));
            }
            if br.clock < self.lease.horizon() && (br.clock > 0 || s.lapses > 0) {
                actions.push(Action::Tick(b));
            }
            if s.registered(b)
                && s.registry[b].fenced
                && self.lease.may_grant_lease(
                    br.known.as_ref().map(|k| k.partition_epoch),
                    s.controller.partition_epoch,
                    &self.rules,
                )
            {
                actions.push(Action::Heartbeat(b));
            }
            if !s.registry[b].fenced && self.lease.controller_may_fence(br.clock) {
                actions.push(Action::Fence(b));
            }
            if s.crashes > 0 {
                for keep in 0..=br.log.len() as Offset {
                    actions.push(Action::Crash(b, keep));
                }
            }
            if !s.registered(b) {
                actions.push(Action::Register(b));
            }
            // The leader asks, or asks again (the broker retries until its leaderships moved,
            // since one may become movable meanwhile). A follower's controlled shutdown is left
            // out: for its partition it is fencing without the lapse (`shut_down` removes it
            // from the ISR as `fence` does).
            if s.handovers > 0
                && s.controller.leader == Some(id(b))
                && s.registered(b)
                && !s.registry[b].fenced
            {
                actions.push(Action::ShutDown(b));
            }
        }
        if s.controller
            .elect(&s.live(), self.unclean_election)
            .is_some()
        {
            actions.push(Action::Elect);
        }
        if s.handovers > 0 && s.controller.elect_preferred(&s.live()).is_some() {
            actions.push(Action::ElectPreferred);
        }
        if s.reassignments > 0 {
            for (i, target) in self.targets.iter().enumerate() {
                if s.controller.reassign(target, self.min_insync).is_ok() {
                    actions.push(Action::Reassign(i));
                }
            }
        }
        if s.controller
            .complete_reassignment(&s.live(), &self.rules)
            .is_some()
        {
            actions.push(Action::CompleteReassignment);
        }
        if let Some(p) = s.in_flight {
            let br = &s.brokers[p.broker];
            let same_epoch = br.leading.as_ref().is_some_and(|l| l.epoch == p.epoch);
            if same_epoch && leader::may_acknowledge(p.offset, br.hw, s.lease_valid(self, p.broker))
            {
                actions.push(Action::Ack);
            }
        }
        for msg in &s.network {
            actions.push(Action::Deliver(msg.clone()));
            actions.push(Action::Lose(msg.clone()));
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Produce(b) => {
                let br = &mut s.brokers[b];
                let epoch = br.leading.as_ref()?.epoch;
                let offset = br.log.len() as Offset;
                br.log.push(Entry {
                    epoch: epoch.0,
                    value: s.next_value,
                });
                s.in_flight = Some(InFlight {
                    value: s.next_value,
                    offset,
                    broker: b,
                    epoch,
                });
                s.next_value += 1;
                s.recompute_hw(self, b);
            }
            Action::Ack => {
                let p = s.in_flight.take()?;
                s.acked.push((p.offset, p.value));
            }
            Action::Fetch(f) => {
                let (leader, leader_epoch) = s.following(f)?;
                let br = &s.brokers[f];
                let msg = Msg::Fetch {
                    from: id(f),
                    to: leader,
                    leader_epoch,
                    broker_epoch: br.start,
                    offset: br.log.len() as Offset,
                    last_epoch: br.history.latest_epoch(),
                };
                // The request reaches the leader at once (see the module docs); the answer travels.
                s.deliver(self, msg);
            }
            Action::Deliver(msg) => s.deliver(self, msg),
            Action::Lose(msg) => s.remove(&msg),
            Action::Learn(b) => {
                let state = s.controller.clone();
                s.learn(self, b, state);
            }
            Action::Shrink(b, f) | Action::Expand(b, f) => {
                let l = s.brokers[b].leading.as_ref()?;
                let mut members: BTreeSet<usize> =
                    l.isr.committed().iter().map(|&m| ix(m)).collect();
                if !members.remove(&f) {
                    members.insert(f);
                }
                let mut new_isr: Vec<IsrMember> = members.iter().map(|&m| s.member(b, m)).collect();
                if let Action::Expand(..) = action {
                    let progress = s.progress_of(b, f);
                    let br = &s.brokers[b];
                    let added = leader::expansion_member(
                        id(f),
                        &l.isr,
                        progress,
                        l.epoch,
                        br.hw,
                        l.epoch_start,
                        self.min_insync,
                        &self.rules,
                    )
                    .ok()?;
                    for m in &mut new_isr {
                        if m.broker == added.broker {
                            *m = added;
                        }
                    }
                }
                let epoch = l.epoch;
                let request = s.brokers[b]
                    .leading
                    .as_mut()?
                    .isr
                    .propose(id(b), epoch, new_isr, self.min_insync)
                    .ok()?;
                s.isr_changes -= 1;
                s.send(self, Msg::Alter(request));
                s.recompute_hw(self, b);
            }
            Action::Retry(b) => {
                let request = s.brokers[b].leading.as_ref()?.isr.pending()?.clone();
                s.send(self, Msg::Alter(request));
            }
            Action::Tick(b) => {
                if s.brokers[b].clock == 0 {
                    s.lapses -= 1;
                }
                s.brokers[b].clock += 1;
            }
            Action::Heartbeat(b) => {
                s.registry[b].fenced = false;
                s.brokers[b].clock = 0;
            }
            Action::Fence(b) => {
                s.registry[b].fenced = true;
                if let Some(next) = s.controller.fence(id(b), &s.live(), self.unclean_election) {
                    s.set_partition(next);
                }
            }
            Action::Elect => {
                let next = s.controller.elect(&s.live(), self.unclean_election)?;
                s.set_partition(next);
            }
            Action::Crash(b, keep) => {
                s.crashes -= 1;
                if keep < s.brokers[b].log.len() as Offset {
                    s.ghost.lossy_crash = true;
                }
                s.truncate(b, keep);
                let br = &mut s.brokers[b];
                br.start = BrokerEpoch(br.start.0 + 1);
                br.known = None;
                br.leading = None;
            }
            Action::Register(b) => {
                // A new start: whatever an earlier one asked at its shutdown no longer holds.
                s.registry[b] = Registration {
                    start: s.brokers[b].start,
                    fenced: false,
                    shutting_down: false,
                };
                s.brokers[b].clock = 0;
                if let Some(next) = s.controller.on_unclean_restart(
                    id(b),
                    &s.live(),
                    &self.rules,
                    self.unclean_election,
                ) {
                    s.set_partition(next);
                }
            }
            Action::Consume(b) => {
                let br = &s.brokers[b];
                let epoch = br.leading.as_ref()?.epoch;
                let seen = br.log[..br.hw as usize].to_vec();
                if br.hw < s.consumer_hw {
                    s.ghost.consumer_hw_back = true;
                }
                if prefix_conflict(&seen, &s.consumer_seen) {
                    s.ghost.consumer_conflict = true;
                }
                if br.hw > s.consumer_hw {
                    s.consumer_hw = br.hw;
                    s.consumer_seen = seen;
                    // The epoch check passed (Current, or Fenced: the consumer refreshed its
                    // metadata and retried here), so this is at least the consumer's epoch.
                    // Only a read that raises the consumer's HW records it: one that shows
                    // nothing new leaves the state as if the consumer had not read, a state the
                    // real consumer reaches too, and from which it may do all that the one that
                    // read could (its lower epoch refuses fewer leaders, and its next read that
                    // shows something new records that leader's epoch either way).
                    s.consumer_epoch = s.consumer_epoch.max(epoch);
                }
            }
            Action::ShutDown(b) => {
                s.handovers -= 1;
                s.registry[b].shutting_down = true;
                // The picture without it: it may neither keep nor take a leadership.
                if let Some(next) = s.controller.shut_down(id(b), &s.live()) {
                    s.ghost.shut_down_moved |= next.leader != s.controller.leader;
                    s.set_partition(next);
                }
            }
            Action::ElectPreferred => {
                s.handovers -= 1;
                let next = s.controller.elect_preferred(&s.live())?;
                s.ghost.preferred_elected = true;
                s.set_partition(next);
            }
            Action::Reassign(i) => {
                s.reassignments -= 1;
                let next = s
                    .controller
                    .reassign(&self.targets[i], self.min_insync)
                    .ok()?;
                s.set_partition(next);
            }
            Action::CompleteReassignment => {
                let before = s.controller.clone();
                let next = before.complete_reassignment(&s.live(), &self.rules)?;
                s.ghost.reassigned = true;
                if next.isr.len() < self.min_insync {
                    s.ghost.completion_below_min = true;
                }
                if before.leader.is_some_and(|l| !next.replicas.contains(&l)) && !s.acked.is_empty()
                {
                    s.ghost.removed_leader_moved_after_ack = true;
                }
                let removed = before
                    .replicas
                    .iter()
                    .copied()
                    .filter(|b| !next.replicas.contains(b));
                s.ghost.removed.extend(removed);
                s.ghost.removed.sort();
                s.ghost.removed.dedup();
                // `set_partition` drops from `removed` whatever `next` keeps: set it first.
                s.set_partition(next);
            }
        }
        s.canonical_consumer_epoch();
        // The producer learns at once that its leader is gone (NOT_LEADER): it gives the record up.
        if let Some(p) = s.in_flight
            && s.brokers[p.broker]
                .leading
                .as_ref()
                .is_none_or(|l| l.epoch != p.epoch)
        {
            s.in_flight = None;
        }
        (s != *last).then_some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always(P_ACKED, |m: &Self, s: &State| {
                m.reported(P_ACKED, acked_survive(s))
            }),
            Property::always(P_ISR_ACKED, |m: &Self, s: &State| {
                m.reported(P_ISR_ACKED, isr_holds_acked(s))
            }),
            Property::always(P_AGREE, |m: &Self, s: &State| {
                m.reported(P_AGREE, isr_agrees(s))
            }),
            Property::always(P_ELECTION, |m: &Self, s: &State| {
                m.reported(P_ELECTION, !s.ghost.bad_election)
            }),
            Property::always(P_HW_MONOTONE, |m: &Self, s: &State| {
                m.reported(P_HW_MONOTONE, !s.ghost.consumer_hw_back)
            }),
            Property::always(P_NO_VANISH, |m: &Self, s: &State| {
                m.reported(P_NO_VANISH, seen_survives(s))
            }),
            Property::always(P_FLOOR, |m: &Self, s: &State| {
                m.reported(P_FLOOR, !s.ghost.completion_below_min)
            }),
            Property::always(P_REMOVED, |m: &Self, s: &State| {
                m.reported(P_REMOVED, !s.ghost.removed_elected)
            }),
            Property::sometimes(S_ACKED, |_, s: &State| !s.acked.is_empty()),
            Property::sometimes(S_FAILOVER, |_, s: &State| {
                s.ghost.failover_after_ack && s.acting_leader().is_some()
            }),
            Property::sometimes(S_SHRINK, |_, s: &State| s.ghost.shrunk),
            Property::sometimes(S_EXPAND, |_, s: &State| s.ghost.expanded),
            Property::sometimes(S_LOSSY, |_, s: &State| s.ghost.lossy_crash),
            Property::sometimes(S_DIVERGED, |_, s: &State| s.ghost.diverged),
            Property::sometimes(S_CONSUMED, |_, s: &State| s.consumer_hw > 0),
            Property::sometimes(S_REFUSED, |m: &ReplicationModel, s: &State| {
                s.brokers.iter().any(|br| {
                    br.leading.as_ref().is_some_and(|l| {
                        leader::check_consumer_epoch(l.epoch, Some(s.consumer_epoch), &m.rules)
                            == ConsumerEpochCheck::Unknown
                    })
                })
            }),
        ];
        // Only where the bounds allow them, so that `assert_properties` keeps meaning "every
        // `sometimes` is reached".
        if self.bounds.handovers > 0 || self.bounds.reassignments > 0 {
            properties.push(Property::sometimes(S_HANDOVER, |_, s: &State| {
                s.ghost.handed_over
            }));
        }
        if self.bounds.handovers > 0 {
            properties.push(Property::sometimes(S_SHUT_DOWN, |_, s: &State| {
                s.ghost.shut_down_moved && s.acting_leader().is_some()
            }));
            properties.push(Property::sometimes(S_PREFERRED, |_, s: &State| {
                s.ghost.preferred_elected && s.acting_leader().is_some()
            }));
        }
        if self.bounds.reassignments > 0 {
            properties.push(Property::sometimes(S_NEWCOMER, |_, s: &State| {
                s.ghost.newcomer_in_sync
            }));
            properties.push(Property::sometimes(S_REASSIGNED, |_, s: &State| {
                s.ghost.reassigned
            }));
            properties.push(Property::sometimes(S_REMOVED_LEADER, |_, s: &State| {
                s.ghost.removed_leader_moved_after_ack && s.acting_leader().is_some()
            }));
        }
        properties
    }
}

const P_ACKED: &str = "no acknowledged record is lost";
const P_ISR_ACKED: &str = "every ISR member holds every acknowledged record";
const P_AGREE: &str = "ISR members agree with the leader below its HW";
const P_ELECTION: &str = "a leader is elected only from replicas holding the committed log";
const P_HW_MONOTONE: &str = "the HW a consumer that keeps its leader epoch sees never goes back";
const P_NO_VANISH: &str = "no consumer sees a record that later vanishes";
const P_FLOOR: &str = "completing a reassignment leaves at least min ISR members in the ISR";
const P_REMOVED: &str = "a replica a reassignment removed is never elected afterwards";
const S_ACKED: &str = "a record is acknowledged";
const S_FAILOVER: &str = "a new leader serves after an acknowledged record";
const S_SHRINK: &str = "an ISR shrink is committed";
const S_EXPAND: &str = "an ISR expansion is committed";
const S_LOSSY: &str = "a crash loses an unsynced suffix";
const S_DIVERGED: &str = "a follower truncates a divergent suffix";
const S_CONSUMED: &str = "a consumer reads a record";
const S_REFUSED: &str = "a broker that leads in its own eyes refuses the consumer's epoch";
const S_HANDOVER: &str = "the leadership moves while the old leader believes it leads";
const S_SHUT_DOWN: &str = "a new leader serves after a controlled shutdown";
const S_PREFERRED: &str = "the preferred replica leads again and serves";
const S_NEWCOMER: &str = "a replica added by a reassignment joins the ISR";
const S_REASSIGNED: &str = "a reassignment completes";
const S_REMOVED_LEADER: &str =
    "a new leader serves after a reassignment removed the leader that acknowledged a record";

fn holds_acked(log: &[Entry], acked: &[(Offset, u8)]) -> bool {
    acked
        .iter()
        .all(|&(o, v)| log.get(o as usize).is_some_and(|e| e.value == v))
}

/// Whenever a leader exists, has learned it leads and has a final HW, every acknowledged record
/// is in its log at its offset.
fn acked_survive(s: &State) -> bool {
    let Some(l) = s.acting_leader() else {
        return true;
    };
    let br = &s.brokers[l];
    let final_hw = br.leading.as_ref().is_some_and(|x| br.hw >= x.epoch_start);
    !final_hw || holds_acked(&br.log, &s.acked)
}

/// Every acknowledged record is in the log of every ISR member (of a start the controller knows:
/// a crash the controller has not noticed yet is not counted).
fn isr_holds_acked(s: &State) -> bool {
    s.controller
        .isr
        .iter()
        .map(|&m| ix(m))
        .filter(|&m| s.registered(m))
        .all(|m| holds_acked(&s.brokers[m].log, &s.acked))
}

/// The acting leader's log below its HW is in every registered ISR member's log; and no two
/// leaders ever covered different records with their HWs.
fn isr_agrees(s: &State) -> bool {
    if s.ghost.committed_conflict {
        return false;
    }
    let Some(l) = s.acting_leader() else {
        return true;
    };
    let leader = &s.brokers[l];
    let below = &leader.log[..leader.hw as usize];
    s.controller
        .isr
        .iter()
        .map(|&m| ix(m))
        .filter(|&m| m != l && s.registered(m))
        .all(|m| s.brokers[m].log.starts_with(below))
}

/// What the consumer saw stays in the acting leader's log.
fn seen_survives(s: &State) -> bool {
    if s.ghost.consumer_conflict {
        return false;
    }
    match s.acting_leader() {
        Some(l) => s.brokers[l].log.starts_with(&s.consumer_seen),
        None => true,
    }
}

/// One line per broker and the controller: enough to follow a trace.
fn summary(s: &State) -> String {
    let c = &s.controller;
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
    let mut out = format!(
        "controller: leader {:?} epoch {} isr {:?} pe {} replicas {:?}{}",
        c.leader.map(|b| b.0),
        c.leader_epoch.0,
        ids(&c.isr),
        c.partition_epoch.0,
        ids(&c.replicas),
        if c.removing.is_empty() {
            String::new()
        } else {
            format!(" removing {:?}", ids(&c.removing))
        }
    );
    for (b, br) in s.brokers.iter().enumerate() {
        let log: Vec<String> = br
            .log
            .iter()
            .map(|e| format!("v{}@e{}", e.value, e.epoch))
            .collect();
        let role = match (&br.leading, &br.known) {
            (Some(l), _) => format!("leads e{} (start {})", l.epoch.0, l.epoch_start),
            (None, Some(k)) if !k.replicas.contains(&id(b)) => {
                format!("no replica (knows pe {})", k.partition_epoch.0)
            }
            (None, Some(k)) => format!("follows {:?} e{}", k.leader.map(|b| b.0), k.leader_epoch.0),
            (None, None) => "restarted".to_string(),
        };
        out += &format!(
            "\n      b{b}: [{}] hw {} {role}, start {}{}{}",
            log.join(" "),
            br.hw,
            br.start.0,
            if s.registry[b].fenced { ", fenced" } else { "" },
            if s.registry[b].shutting_down {
                ", shutting down"
            } else {
                ""
            }
        );
    }
    out += &format!(
        "\n      acked {:?}, consumer hw {} epoch e{}",
        s.acked, s.consumer_hw, s.consumer_epoch.0
    );
    out
}

fn describe(action: &Action) -> String {
    match action {
        Action::Deliver(msg) => format!("deliver {}", describe_msg(msg)),
        Action::Lose(msg) => format!("lose {}", describe_msg(msg)),
        other => format!("{other:?}"),
    }
}

fn describe_msg(msg: &Msg) -> String {
    match msg {
        Msg::Fetch {
            from,
            to,
            leader_epoch,
            broker_epoch,
            offset,
            last_epoch,
        } => format!(
            "Fetch b{}->b{} e{} start {} offset {offset} last epoch {:?}",
            from.0,
            to.0,
            leader_epoch.0,
            broker_epoch.0,
            last_epoch.map(|e| e.0)
        ),
        Msg::FetchAnswer {
            to,
            from,
            leader_epoch,
            offset,
            body,
        } => {
            format!(
                "FetchAnswer b{}->b{} e{} offset {offset} {body:?}",
                from.0, to.0, leader_epoch.0
            )
        }
        Msg::Alter(r) => format!(
            "AlterIsr from b{} e{} pe {} isr {:?}",
            r.leader.0,
            r.leader_epoch.0,
            r.partition_epoch.0,
            r.new_isr.iter().map(|m| m.broker.0).collect::<Vec<_>>()
        ),
    }
}

fn trace(path: &Path<State, Action>) -> String {
    let steps = path.clone().into_vec();
    let mut out = format!("   0. init\n      {}\n", summary(&steps[0].0));
    for (i, window) in steps.windows(2).enumerate() {
        let action = window[0]
            .1
            .as_ref()
            .expect("every step but the last has an action");
        out += &format!(
            "  {:>2}. {}\n      {}\n",
            i + 1,
            describe(action),
            summary(&window[1].0)
        );
    }
    out
}

/// Checks `model` exhaustively (or until `stop_at` fails) and reports.
fn check(
    model: ReplicationModel,
    stop_at: Option<&'static str>,
    threads: usize,
) -> impl Checker<ReplicationModel> {
    let started = Instant::now();
    let rules = model.rules;
    let bounds = model.bounds;
    let mut builder = model.checker().threads(threads);
    if let Some(name) = stop_at {
        builder = builder.finish_when(HasDiscoveries::AnyOf([name].into_iter().collect()));
    }
    let checker = builder.spawn_bfs().join();
    println!(
        "{bounds:?} {rules:?}: {} unique states ({} generated), depth {}, {:.1?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    checker
}

/// Turns one rule off and asserts the checker breaks `property`; prints the shortest trace.
fn counterexample(rules: Rules, bounds: Bounds, property: &'static str) {
    counterexample_of(ReplicationModel::new(rules, bounds), property);
}

fn counterexample_of(mut model: ReplicationModel, property: &'static str) {
    model.first_violation = Some((property, Arc::new(AtomicBool::new(false))));
    let checker = check(model, Some(property), 1);
    let failed: Vec<&str> = checker
        .discoveries()
        .keys()
        .copied()
        .filter(|name| name.starts_with(|c: char| c.is_lowercase()) && ALWAYS.contains(name))
        .collect();
    let path = checker
        .discovery(property)
        .unwrap_or_else(|| panic!("no counterexample to {property:?}; failed: {failed:?}"));
    println!(
        "counterexample to {property:?} ({} steps, a shortest):\n{}",
        path.clone().into_actions().len(),
        trace(&path)
    );
}

const ALWAYS: [&str; 8] = [
    P_ACKED,
    P_ISR_ACKED,
    P_AGREE,
    P_ELECTION,
    P_HW_MONOTONE,
    P_NO_VANISH,
    P_FLOOR,
    P_REMOVED,
];

/// The default bounds: every `always` holds, every `sometimes` is reached.
#[test]
fn every_rule_on_no_property_fails() {
    let checker = check(ReplicationModel::new(Rules::ALL, SMALL), None, 2);
    checker.assert_properties();
}

/// Two lease lapses, no crash: failover twice.
#[test]
fn every_rule_on_two_failovers() {
    let bounds = Bounds {
        crashes: 0,
        lapses: 2,
        ..SMALL
    };
    let checker = check(ReplicationModel::new(Rules::ALL, bounds), None, 2);
    for name in ALWAYS {
        checker.assert_no_discovery(name);
    }
}

/// Two records (so two leaders can write different records at one offset), in release:
/// `cargo test -p weir-replication --release --test model -- --ignored every_rule_on_larger_bounds`.
#[test]
#[ignore]
fn every_rule_on_larger_bounds() {
    // 9.0 million states, about 4 minutes on two cores.
    let bounds = Bounds {
        records: 2,
        ..SMALL
    };
    let checker = check(ReplicationModel::new(Rules::ALL, bounds), None, 2);
    checker.assert_properties();
}

fn without(change: impl FnOnce(&mut Rules)) -> Rules {
    let mut rules = Rules::ALL;
    change(&mut rules);
    rules
}

/// Rule 8: truncating to the local HW instead of by epoch loses an acknowledged record.
#[test]
fn without_epoch_truncation_an_acked_record_is_lost() {
    let bounds = Bounds {
        crashes: 0,
        lapses: 2,
        isr_changes: 0,
        ..SMALL
    };
    counterexample(without(|r| r.truncate_by_epoch = false), bounds, P_ACKED);
}

/// Rule 4: counting the proposed ISR at once lets the HW pass a member the controller keeps.
#[test]
fn without_maximal_isr_an_acked_record_is_lost() {
    let bounds = Bounds {
        crashes: 0,
        lapses: 1,
        isr_changes: 1,
        ..SMALL
    };
    counterexample(without(|r| r.maximal_isr = false), bounds, P_ACKED);
}

/// Rule 6 (KIP-903): adding a follower on a fetch of its previous start.
#[test]
fn without_broker_epoch_check_an_acked_record_is_lost() {
    let bounds = Bounds {
        crashes: 1,
        lapses: 1,
        isr_changes: 1,
        ..SMALL
    };
    counterexample(
        without(|r| r.broker_epoch_on_expand = false),
        bounds,
        P_ACKED,
    );
}

/// Rule 7: a restarted last ISR member that lost its suffix is elected.
#[test]
fn without_unclean_restart_rule_an_acked_record_is_lost() {
    let bounds = Bounds {
        crashes: 1,
        lapses: 1,
        isr_changes: 1,
        ..SMALL
    };
    counterexample(
        without(|r| r.unclean_restart_leaves_isr = false),
        bounds,
        P_ELECTION,
    );
}

/// Rule 5 with rule 7 off too: the KIP-966 case.
#[test]
fn without_strict_min_isr_and_rule_7_an_acked_record_is_lost() {
    let bounds = Bounds {
        crashes: 1,
        lapses: 1,
        isr_changes: 1,
        ..SMALL
    };
    counterexample(
        without(|r| {
            r.strict_min_isr = false;
            r.unclean_restart_leaves_isr = false;
        }),
        bounds,
        P_ELECTION,
    );
}

/// Rule 9: a new leader serving its carried-over HW.
#[test]
fn without_final_hw_a_consumer_sees_the_hw_go_back() {
    let bounds = Bounds {
        crashes: 0,
        lapses: 1,
        isr_changes: 0,
        ..SMALL
    };
    counterexample(
        without(|r| r.hw_final_at_epoch_start = false),
        bounds,
        P_HW_MONOTONE,
    );
}

/// The bounds of rule 12's checks.
const LEASE_BOUNDS: Bounds = Bounds {
    crashes: 0,
    lapses: 1,
    isr_changes: 0,
    ..SMALL
};

/// Reads bound by the lease and a consumer whose epoch no leader checks: the lease is then all
/// that keeps a deposed leader from serving its older HW, which is what rule 12 was for. (The
/// broker serves reads without the lease, and consumer epochs protect them instead: see
/// `without_fence_after_lease_consumer_epochs_keep_the_hw`.)
fn lease_bound_reads(change: impl FnOnce(&mut Rules)) -> ReplicationModel {
    let rules = without(|r| {
        change(r);
        r.consumer_epochs = false;
    });
    let mut model = ReplicationModel::new(rules, LEASE_BOUNDS);
    model.reads_need_lease = true;
    model
}

/// Rule 12: a grace shorter than the lease, with reads bound by the lease and no consumer
/// epochs (`lease_bound_reads`).
#[test]
fn without_fence_after_lease_a_consumer_without_epochs_sees_the_hw_go_back() {
    counterexample_of(
        lease_bound_reads(|r| r.fence_after_lease = false),
        P_HW_MONOTONE,
    );
}

/// Rule 12, second half: a lease renewed for a deposed leader that has not learned it, with
/// reads bound by the lease and no consumer epochs (`lease_bound_reads`).
#[test]
fn without_lease_after_metadata_a_consumer_without_epochs_sees_the_hw_go_back() {
    counterexample_of(
        lease_bound_reads(|r| r.lease_after_metadata = false),
        P_HW_MONOTONE,
    );
}

/// Rule 12 off (and its second half), consumer epochs on, reads without the lease as in the
/// broker: no property fails. The lease protects nothing this model states once consumers
/// carry their epoch (acknowledgements never needed it: acks=all waits for every ISR member,
/// and the successor is one; it still bounds `acks=leader`, not modelled). The same holds at
/// the default bounds, two lapses, one handover and one reassignment (`COUNTEREXAMPLES.md`).
#[test]
fn without_fence_after_lease_consumer_epochs_keep_the_hw() {
    for rules in [
        without(|r| r.fence_after_lease = false),
        without(|r| r.lease_after_metadata = false),
    ] {
        let checker = check(ReplicationModel::new(rules, LEASE_BOUNDS), None, 1);
        assert_always_holds(&checker, &[S_CONSUMED, S_REFUSED]);
    }
}

/// Rule 1: applying a request based on an older partition epoch puts back in the ISR a member
/// that misses an acknowledged record.
#[test]
fn without_compare_and_set_an_isr_member_misses_an_acked_record() {
    let bounds = Bounds {
        crashes: 0,
        lapses: 1,
        isr_changes: 2,
        ..SMALL
    };
    counterexample(
        without(|r| r.cas_partition_epoch = false),
        bounds,
        P_ISR_ACKED,
    );
}

/// Rule 3: unclean election elects a replica without the committed log.
#[test]
fn with_unclean_election_a_leader_lacks_the_committed_log() {
    let bounds = Bounds {
        crashes: 0,
        lapses: 2,
        isr_changes: 1,
        ..SMALL
    };
    let mut model = ReplicationModel::new(Rules::ALL, bounds);
    model.unclean_election = true;
    counterexample_of(model, P_ELECTION);
}

/// Rule 5 alone: no counterexample within the default bounds, because rule 7 covers it (see
/// `COUNTEREXAMPLES.md`). A full run: `cargo test -p weir-replication --release --test model --
/// --ignored without_strict_min_isr_rule_7_still_protects`.
#[test]
#[ignore]
fn without_strict_min_isr_rule_7_still_protects() {
    let checker = check(
        ReplicationModel::new(without(|r| r.strict_min_isr = false), SMALL),
        None,
        2,
    );
    for name in ALWAYS {
        checker.assert_no_discovery(name);
    }
}

/// Asserts that no `always` property failed and that each of `reached` was reached.
fn assert_always_holds(checker: &impl Checker<ReplicationModel>, reached: &[&'static str]) {
    for name in ALWAYS {
        checker.assert_no_discovery(name);
    }
    for &name in reached {
        checker.assert_any_discovery(name);
    }
}

/// Handovers: the leader's controlled shutdown and the preferred replica's return move the
/// leadership while the old leader still leads in its own eyes, with a valid lease. Every
/// property holds, the consumer's HW too: the old leader refuses a consumer that read from its
/// successor (rule 2's client half; without it,
/// `without_consumer_epochs_a_handover_lets_a_consumer_see_the_hw_go_back`).
#[test]
fn handovers_keep_every_property() {
    let bounds = Bounds {
        crashes: 0,
        handovers: 1,
        ..SMALL
    };
    let checker = check(ReplicationModel::handover(Rules::ALL, bounds), None, 2);
    assert_always_holds(
        &checker,
        &[
            S_ACKED,
            S_HANDOVER,
            S_SHUT_DOWN,
            S_PREFERRED,
            S_FAILOVER,
            S_EXPAND,
            S_CONSUMED,
            S_REFUSED,
        ],
    );
}

/// The same with a crash that may lose an unsynced suffix, in release:
/// `cargo test -p weir-replication --release --test model -- --ignored handovers_with_a_crash`.
#[test]
#[ignore]
fn handovers_with_a_crash() {
    // 16.7 million states, about 6 minutes on two cores shared with other builds.
    let bounds = Bounds {
        handovers: 1,
        ..SMALL
    };
    let checker = check(ReplicationModel::handover(Rules::ALL, bounds), None, 2);
    assert_always_holds(&checker, &[S_HANDOVER, S_SHUT_DOWN, S_PREFERRED, S_LOSSY]);
}

/// Rule 2's client half (KIP-320): without consumer epochs, a handover lets the consumer read
/// a lower HW from the old leader after a higher one from the new: the old leader serves, its
/// lease valid, until it learns.
#[test]
fn without_consumer_epochs_a_handover_lets_a_consumer_see_the_hw_go_back() {
    let bounds = Bounds {
        crashes: 0,
        lapses: 0,
        isr_changes: 0,
        handovers: 1,
        ..SMALL
    };
    let rules = without(|r| r.consumer_epochs = false);
    counterexample_of(ReplicationModel::handover(rules, bounds), P_HW_MONOTONE);
}

/// Both targets the reassignment model offers: onto {1,2} with 1 preferred (the leader moves to
/// a replica that was already in sync) and with 2 preferred (to the newcomer).
const TARGETS: [[u32; 2]; 2] = [[1, 2], [2, 1]];

/// Reassignment from {0,1} to {1,2} or {2,1} (rule 10): the newcomer catches up and joins
/// through the leader's expansion, the controller completes, the removed leader hands over.
/// Every property holds, the consumer's HW too, as for a handover (without consumer epochs,
/// `without_consumer_epochs_a_reassignment_moving_the_leader_lets_a_consumer_see_the_hw_go_back`).
#[test]
fn a_reassignment_keeps_every_property() {
    let bounds = Bounds {
        crashes: 0,
        reassignments: 1,
        ..SMALL
    };
    let model = ReplicationModel::reassignment(Rules::ALL, bounds, &TARGETS);
    let checker = check(model, None, 2);
    assert_always_holds(
        &checker,
        &[
            S_ACKED,
            S_NEWCOMER,
            S_REASSIGNED,
            S_REMOVED_LEADER,
            S_HANDOVER,
            S_CONSUMED,
            S_REFUSED,
        ],
    );
}

/// A single copy moved onto another broker, or raised to three (Kafka allows both; rule 10 as
/// for any reassignment): the newcomers catch up and join through the leader's expansion, and
/// the move onto broker 1 completes with the leadership handed over. Every property holds, the
/// consumer's HW too, as for the other reassignments.
#[test]
fn a_single_copy_moved_or_raised_keeps_every_property() {
    let bounds = Bounds {
        crashes: 0,
        reassignments: 1,
        ..SMALL
    };
    let model = ReplicationModel::single_copy(Rules::ALL, bounds, &[&[1], &[0, 1, 2]]);
    let checker = check(model, None, 2);
    assert_always_holds(
        &checker,
        &[
            S_ACKED,
            S_NEWCOMER,
            S_REASSIGNED,
            S_REMOVED_LEADER,
            S_HANDOVER,
            S_CONSUMED,
        ],
    );
}

/// The same with a crash, and with a handover besides, in release:
/// `cargo test -p weir-replication --release --test model -- --ignored a_reassignment_with`.
#[test]
#[ignore]
fn a_reassignment_with_a_crash() {
    // 3.5 million states, under a minute.
    let bounds = Bounds {
        reassignments: 1,
        ..SMALL
    };
    let model = ReplicationModel::reassignment(Rules::ALL, bounds, &TARGETS);
    let checker = check(model, None, 2);
    assert_always_holds(&checker, &[S_REMOVED_LEADER, S_LOSSY]);
}

#[test]
#[ignore]
fn a_reassignment_with_a_crash_and_a_handover() {
    // 33.4 million states, about 15 minutes and 10 GB.
    let bounds = Bounds {
        reassignments: 1,
        handovers: 1,
        ..SMALL
    };
    let model = ReplicationModel::reassignment(Rules::ALL, bounds, &TARGETS);
    let checker = check(model, None, 2);
    assert_always_holds(&checker, &[S_REMOVED_LEADER, S_PREFERRED, S_LOSSY]);
}

/// A reassignment that removes the leader is a handover too: without consumer epochs, the same.
#[test]
fn without_consumer_epochs_a_reassignment_moving_the_leader_lets_a_consumer_see_the_hw_go_back() {
    let bounds = Bounds {
        crashes: 0,
        lapses: 0,
        reassignments: 1,
        ..SMALL
    };
    let rules = without(|r| r.consumer_epochs = false);
    let model = ReplicationModel::reassignment(rules, bounds, &TARGETS);
    counterexample_of(model, P_HW_MONOTONE);
}

/// Rule 10: completing before the target is in sync hands the leadership to the newcomer, which
/// holds nothing.
#[test]
fn without_reassign_waiting_for_isr_an_acked_record_is_lost() {
    let bounds = Bounds {
        crashes: 0,
        lapses: 0,
        isr_changes: 0,
        reassignments: 1,
        ..SMALL
    };
    let rules = without(|r| r.reassign_waits_for_isr = false);
    counterexample_of(
        ReplicationModel::reassignment(rules, bounds, &TARGETS),
        P_ACKED,
    );
}

/// Rule 10, the floor: the same completion leaves an ISR of one.
#[test]
fn without_reassign_waiting_for_isr_the_isr_drops_below_min() {
    let bounds = Bounds {
        crashes: 0,
        lapses: 0,
        isr_changes: 0,
        reassignments: 1,
        ..SMALL
    };
    let rules = without(|r| r.reassign_waits_for_isr = false);
    counterexample_of(
        ReplicationModel::reassignment(rules, bounds, &TARGETS),
        P_FLOOR,
    );
}

/// Any bounds, from the environment (RECORDS, CRASHES, LAPSES, ISR, NET, HANDOVERS, REASSIGN),
/// every rule on; with REASSIGN > 0 the reassignment model (both targets), else with
/// HANDOVERS > 0 the handover one; every `always` property is asserted:
/// `RECORDS=2 cargo test -p weir-replication --release --test model -- --ignored --exact
/// check_bounds_from_env --nocapture`.
#[test]
#[ignore]
fn check_bounds_from_env() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(d)
    };
    let bounds = Bounds {
        records: env("RECORDS", SMALL.records as u64) as u8,
        crashes: env("CRASHES", SMALL.crashes as u64) as u8,
        lapses: env("LAPSES", SMALL.lapses as u64) as u8,
        isr_changes: env("ISR", SMALL.isr_changes as u64) as u8,
        network: env("NET", SMALL.network as u64) as usize,
        handovers: env("HANDOVERS", SMALL.handovers as u64) as u8,
        reassignments: env("REASSIGN", SMALL.reassignments as u64) as u8,
    };
    let model = if bounds.reassignments > 0 {
        ReplicationModel::reassignment(Rules::ALL, bounds, &TARGETS)
    } else if bounds.handovers > 0 {
        ReplicationModel::handover(Rules::ALL, bounds)
    } else {
        ReplicationModel::new(Rules::ALL, bounds)
    };
    let checker = check(model, None, 2);
    for name in ALWAYS {
        checker.assert_no_discovery(name);
    }
    let mut found: Vec<&str> = checker.discoveries().into_keys().collect();
    found.sort();
    println!("sometimes found: {found:?}");
}
