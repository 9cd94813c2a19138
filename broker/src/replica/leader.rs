//! The leader's side of replication: taking an epoch, answering followers' fetches, moving the
//! high watermark and the durable watermark, admitting and acknowledging produce, and keeping
//! the in-sync set (ISR) honest by proposals to the controller.
//!
//! Every decision is weir-replication's (`weir_replication::leader`, `Rules::ALL`):
//! - a fetch is checked against the leader's epoch and epoch history (`check_fetch`, rules 2
//!   and 8), and counts as the follower's progress only when it is served (`record_fetch`);
//! - the high watermark is `high_watermark` over the maximal ISR (rule 4), frozen while the
//!   confirmed ISR is below `min_insync_replicas` (rule 5);
//! - a follower joins only through `expansion_member` (rule 6, with the broker epoch of its
//!   fetch for the controller to check, KIP-903; rule 9: not before the high watermark is
//!   final) and leaves through `out_of_sync` after `replica_lag_time_max`;
//! - produce with `acks=all`/`durable` is admitted by `may_accept_produce` (NOT_ENOUGH_REPLICAS
//!   while the ISR is too small, rule 5; refused once the lease lapsed, rule 12);
//! - a fetch below the leader's log start (or diverging below it) is answered `OutOfRange`
//!   with the log start and its epoch: the follower starts over there.
//!
//! Self-healing of the leader's own copy: once damage in it is known (`known_damage`: found by
//! the scrub, or by checking the batch a follower keeps fetching without appending, since a
//! follower CRC-checks every batch it appends and the fetch path never reads what it sends),
//! reads stop before it, so neither a consumer nor a follower is ever served the damaged
//! bytes again; the leader asks the controller to hand the partition to another live in-sync
//! replica and to take it out of the ISR (`resign`); as a follower it then cuts the damaged
//! range and fetches it again, and rejoins the ISR like any follower catching up. With no
//! other live in-sync replica it keeps leading (the partition stays available below the
//! damage) and asks again every [`RESIGN_RETRY`].
//!
//! The durable watermark (for `acks=durable` on a replicated topic) is the lowest synced offset
//! over the same counted members: the leader's recovery point and each follower's
//! `durable_offset` from its latest fetch in this epoch, never above the high watermark.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use weir_proto::data_port::{EpochEntry, FetchFrame, ReplicaFetch};
use weir_proto::status;
use weir_proto::v1::{AlterPartitionRequest, Error, ErrorCode, IsrMember as WireIsrMember};
use weir_replication::leader::{
    ConsumerEpochCheck, FetchDecision, FetchRequest, FollowerProgress, HwInput, IsrView,
    ProduceError, check_consumer_epoch, check_fetch, expansion_member, high_watermark,
    may_accept_produce, out_of_sync, record_fetch,
};
use weir_replication::{
    AlterError, BrokerEpoch, BrokerId, EpochHistory, IsrMember, LeaderEpoch, PartitionState, Rules,
};

use super::{Replica, ReplicaManager, Role, lock};

/// How often leaders check their followers' lag and eligibility.
const ISR_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// How long an ISR proposal waits for its outcome before it is sent again.
const PROPOSAL_RESEND: Duration = Duration::from_secs(2);
/// How often a produce waiting for the replicas rechecks that this broker still leads.
const LEADERSHIP_RECHECK: Duration = Duration::from_millis(100);
/// How long a leader whose copy is damaged waits before asking the controller again to hand
/// the partition over (no other in-sync replica was alive, or the answer was lost).
const RESIGN_RETRY: Duration = Duration::from_secs(5);
/// A follower that fetches from the same offset this many times in a row, each time after an
/// answer that had data from there, did not append what it got; the leader then CRC-checks
/// its own batch there (see [`on_replica_fetch`]).
const REFETCHES_BEFORE_VERIFY: u32 = 2;
/// The leader checks the same offset again only after this long.
const VERIFY_AGAIN: Duration = Duration::from_secs(60);

/// What a leader keeps about one follower.
#[derive(Debug, Clone)]
pub(crate) struct FollowerInfo {
    progress: Option<FollowerProgress>,
    /// The last time the follower's fetch reached the leader's log end (Kafka's
    /// lastCaughtUpTimeMs): the fetch offset was at or past the log end the leader had when it
    /// answered the follower's previous fetch.
    caught_up_at: Instant,
    /// The leader's log end when it answered this follower's last fetch.
    log_end_at_last_fetch: u64,
    last_fetch_at: Instant,
    /// The follower's log is synced below this (from its latest fetch in this epoch).
    durable: u64,
    /// Consecutive fetches from the same offset after answers that had data from it.
    refetches: u32,
}

/// The leader's state for one partition.
pub(crate) struct LeaderState {
    pub(crate) epoch: LeaderEpoch,
    /// The log end when this broker took the epoch: the epoch's first offset.
    epoch_start: u64,
    /// The partition state as last learned from the controller.
    state: PartitionState,
    isr: IsrView,
    followers: BTreeMap<BrokerId, FollowerInfo>,
    /// The epoch history as of taking the epoch (a leader never truncates).
    history: EpochHistory,
    /// When the outstanding ISR proposal was last sent (it is sent again after
    /// [`PROPOSAL_RESEND`] without an outcome: an answer may have been lost).
    proposal_sent_at: Option<Instant>,
    /// When this leader last asked to resign because its copy is damaged (see
    /// [`resignation`]), and whether it has warned that no one could take over.
    resign_asked_at: Option<Instant>,
    resign_warned: bool,
    /// The offset whose batch this leader last CRC-checked for a stuck follower, and when.
    verified: Option<(u64, Instant)>,
}

impl LeaderState {
    /// A newer partition state from the controller (same leader epoch).
    pub(crate) fn on_state(&mut self, state: &PartitionState) {
        self.isr.on_state(state);
        if state.partition_epoch >= self.state.partition_epoch {
            self.state = state.clone();
        }
        let now = Instant::now();
        for &replica in &state.replicas {
            self.followers
                .entry(replica)
                .or_insert_with(|| new_follower(now));
        }
    }
}

fn new_follower(now: Instant) -> FollowerInfo {
    FollowerInfo {
        progress: None,
        caught_up_at: now,
        log_end_at_last_fetch: 0,
        last_fetch_at: now,
        durable: 0,
        refetches: 0,
    }
}

fn name(replica: &Replica) -> String {
    format!("{}-{}", replica.topic, replica.index)
}

/// Takes leadership of `replica` in `state.leader_epoch`: records the epoch at the log end
/// (durably, rule 2) once no follower write can still be running, then starts leading.
pub(crate) fn become_leader(
    manager: Arc<ReplicaManager>,
    replica: Arc<Replica>,
    state: PartitionState,
) {
    tokio::spawn(async move {
        let writer = Arc::clone(&replica.writer).lock_owned().await;
        let log = Arc::clone(&replica.partition.log);
        let epoch = state.leader_epoch;
        let taken = tokio::task::spawn_blocking(move || {
            let _writer = writer;
            let start = log.high_watermark();
            let at = epoch_recorded_at(log.latest_epoch(), log.log_start_offset(), start);
            log.assign_epoch(epoch, at)?;
            Ok::<_, weir_storage::StorageError>((start, log.epoch_history()))
        })
        .await;
        let (start, history) = match taken {
            Ok(Ok(taken)) => taken,
            Ok(Err(e)) => {
                warn!(partition = %name(&replica), error = %e, "cannot record the new leader epoch; not leading");
                return;
            }
            Err(e) => {
                warn!(partition = %name(&replica), error = %e, "epoch task failed; not leading");
                return;
            }
        };
        {
            let mut role = lock(&replica.role);
            match &mut *role {
                Role::Offline { epoch: e } if *e == epoch => {}
                // A newer picture of the same epoch arrived meanwhile and took the lead first.
                Role::Leader(l) if l.epoch == epoch => {
                    l.on_state(&state);
                    return;
                }
                _ => return, // the epoch moved on while the epoch was recorded
            }
            let now = Instant::now();
            let followers = state
                .replicas
                .iter()
                .filter(|&&b| b != BrokerId(manager.node_id()))
                .map(|&b| (b, new_follower(now)))
                .collect();
            info!(partition = %name(&replica), epoch = epoch.0, epoch_start = start, high_watermark = replica.partition.high_watermark(), "took the leader epoch");
            *role = Role::Leader(Box::new(LeaderState {
                epoch,
                epoch_start: start,
                isr: IsrView::new(&state),
                state,
                followers,
                history,
                proposal_sent_at: None,
                resign_asked_at: None,
                resign_warned: false,
                verified: None,
            }));
        }
        recompute(&replica, &manager);
    });
}

/// Where a new leader records its epoch: at its log end (rule 2), unless no epoch covers its
/// records yet (a single copy, which records none, taking its first followers; or a log from
/// before epochs were kept): then at its log start, so its epoch covers them. Otherwise a
/// follower that fetched only those records would have no last epoch, be told its log diverges
/// at offset 0, cut them and fetch them again, round after round, until the leader appends
/// past its epoch's start. Safe: a replica holding any of them has no epoch for them either,
/// so it is told the same and fetches this leader's copy. The epoch's start for rule 9 stays
/// the log end.
fn epoch_recorded_at(latest: Option<LeaderEpoch>, log_start: u64, log_end: u64) -> u64 {
    match latest {
        Some(_) => log_end,
        None => log_start,
    }
}

/// Recomputes the high watermark and the durable watermark of a partition this broker leads
/// (after an append, a follower's fetch, or a new ISR).
pub(crate) fn recompute(replica: &Replica, manager: &ReplicaManager) {
    let role = lock(&replica.role);
    let Role::Leader(l) = &*role else {
        return;
    };
    let me = BrokerId(manager.node_id());
    let log_end = replica.partition.log_end();
    let counted = l.isr.counted(&Rules::ALL);
    let progress: Vec<(BrokerId, Option<FollowerProgress>)> = counted
        .iter()
        .filter(|&&b| b != me)
        .map(|&b| (b, l.followers.get(&b).and_then(|f| f.progress)))
        .collect();
    let min_insync = *lock(&replica.min_insync);
    let hw = high_watermark(
        &HwInput {
            current: replica.partition.high_watermark(),
            leader: me,
            leader_epoch: l.epoch,
            leader_log_end: log_end,
            counted: &counted,
            committed_isr_len: l.isr.committed().len(),
            min_insync,
            progress: &progress,
        },
        &Rules::ALL,
    );
    debug_assert!(hw >= replica.partition.high_watermark().min(log_end));
    // The lowest synced offset over the counted members, never above the high watermark.
    let mut durable = replica.partition.log.recovery_point().min(hw);
    for (b, p) in &progress {
        let synced = match (p, l.followers.get(b)) {
            (Some(p), Some(f)) if p.leader_epoch == l.epoch => f.durable,
            _ => 0,
        };
        durable = durable.min(synced);
    }
    drop(role);
    replica.partition.set_high_watermark(hw);
    replica.durable.send_if_modified(|seen| {
        let moved = durable > *seen;
        if moved {
            *seen = durable;
        }
        moved
    });
}

/// How a leader answers a follower's fetch.
pub enum ReplicaFetchAnswer {
    /// Serve from the fetch offset; first send these epochs the follower lacks.
    Serve {
        epochs: Vec<EpochEntry>,
    },
    /// The follower's log diverges: the leader's end of the follower's last epoch.
    Diverging(EpochEntry),
    /// Nothing the follower holds can be kept: its fetch offset is below the leader's log
    /// start, or the logs diverge below it. The leader's log start and the epoch it is in; the
    /// follower empties its log and starts over there.
    OutOfRange(EpochEntry),
    Refuse(Error),
}

/// Whether a follower fetching from `offset`, as `decision` answers it, can keep nothing it
/// holds: retention deleted what it needs next (Kafka's OFFSET_OUT_OF_RANGE for a follower),
/// or the last offset both logs agree on is below the leader's log start. It is told to start
/// over at the log start (`OutOfRange`). Never for a fenced or unknown epoch: the follower
/// learns of its stale epoch first.
fn below_log_start(decision: &FetchDecision, offset: u64, log_start: u64) -> bool {
    match *decision {
        FetchDecision::FencedLeaderEpoch | FetchDecision::UnknownLeaderEpoch => false,
        FetchDecision::Diverging { end_offset, .. } => end_offset.min(offset) < log_start,
        _ => offset < log_start,
    }
}

/// The epoch of the leader's first kept offset, `log_start`: the newest entry of `history`
/// starting at or below it (0: none, a log written before epochs were kept).
fn epoch_at(history: &EpochHistory, log_start: u64) -> u32 {
    history
        .entries()
        .iter()
        .rev()
        .find(|&&(_, start)| start <= log_start)
        .map_or(0, |&(epoch, _)| epoch.0)
}

/// Checks a follower's fetch and, when it is served, counts it as the follower's progress.
pub fn on_replica_fetch(
    replica: &Replica,
    manager: &ReplicaManager,
    frame: &FetchFrame,
    fetch: &ReplicaFetch,
) -> ReplicaFetchAnswer {
    let follower = BrokerId(fetch.replica_id);
    let mut verify = None;
    let answer = {
        let mut role = lock(&replica.role);
        let Role::Leader(l) = &mut *role else {
            let code = if role.epoch().0 < fetch.leader_epoch {
                ErrorCode::UnknownLeaderEpoch
            } else {
                ErrorCode::NotLeader
            };
            return ReplicaFetchAnswer::Refuse(status::error(
                code,
                format!(
                    "{}: broker {} does not lead epoch {}",
                    name(replica),
                    manager.node_id(),
                    fetch.leader_epoch
                ),
            ));
        };
        if follower.0 == manager.node_id() || !l.state.replicas.contains(&follower) {
            return ReplicaFetchAnswer::Refuse(status::error(
                ErrorCode::InvalidRequest,
                format!(
                    "{}: broker {} is not one of its followers",
                    name(replica),
                    follower.0
                ),
            ));
        }
        let log_end = replica.partition.log_end();
        let request = FetchRequest {
            leader_epoch: LeaderEpoch(fetch.leader_epoch),
            offset: frame.offset,
            last_epoch: (fetch.last_fetched_epoch > 0)
                .then_some(LeaderEpoch(fetch.last_fetched_epoch)),
        };
        let log_start = replica.partition.log.log_start_offset();
        let decision = check_fetch(l.epoch, &l.history, log_end, &request, &Rules::ALL);
        if below_log_start(&decision, frame.offset, log_start) {
            return ReplicaFetchAnswer::OutOfRange(EpochEntry {
                epoch: epoch_at(&l.history, log_start),
                offset: log_start,
            });
        }
        match decision {
            FetchDecision::FencedLeaderEpoch => ReplicaFetchAnswer::Refuse(status::error(
                ErrorCode::FencedLeaderEpoch,
                format!(
                    "{}: the follower fetches in epoch {}, the leader is in {}",
                    name(replica),
                    fetch.leader_epoch,
                    l.epoch.0
                ),
            )),
            FetchDecision::UnknownLeaderEpoch => ReplicaFetchAnswer::Refuse(status::error(
                ErrorCode::UnknownLeaderEpoch,
                format!(
                    "{}: the follower fetches in epoch {}, this leader knows only {}",
                    name(replica),
                    fetch.leader_epoch,
                    l.epoch.0
                ),
            )),
            FetchDecision::Diverging { epoch, end_offset } => {
                ReplicaFetchAnswer::Diverging(EpochEntry {
                    epoch: epoch.map_or(0, |e| e.0),
                    offset: end_offset,
                })
            }
            // Only without the epoch check (a rule the model turns off): cut to the log end.
            FetchDecision::OutOfRange { log_end } => ReplicaFetchAnswer::Diverging(EpochEntry {
                epoch: l.epoch.0,
                offset: log_end,
            }),
            FetchDecision::Serve => {
                let now = Instant::now();
                let epoch = l.epoch;
                let info = l
                    .followers
                    .entry(follower)
                    .or_insert_with(|| new_follower(now));
                let progress = FollowerProgress {
                    log_end: frame.offset,
                    leader_epoch: epoch,
                    broker_epoch: BrokerEpoch(fetch.broker_epoch),
                };
                let stale_start = info
                    .progress
                    .is_some_and(|p| p.broker_epoch > progress.broker_epoch);
                if !stale_start {
                    // The follower did not append what the last answer sent from here: it
                    // refuses a batch that fails its CRC (the fetch path never reads the
                    // bytes it sends, and the scrub may not have got there yet).
                    let again = info.progress.is_some_and(|p| {
                        p.leader_epoch == epoch
                            && p.broker_epoch == progress.broker_epoch
                            && p.log_end == frame.offset
                    }) && frame.offset < info.log_end_at_last_fetch;
                    info.refetches = if again { info.refetches + 1 } else { 0 };
                    if info.refetches >= REFETCHES_BEFORE_VERIFY
                        && l.verified.is_none_or(|(offset, at)| {
                            offset != frame.offset || now.duration_since(at) >= VERIFY_AGAIN
                        })
                    {
                        l.verified = Some((frame.offset, now));
                        verify = Some(frame.offset);
                    }
                    if let Some(p) = record_fetch(info.progress, progress) {
                        info.progress = Some(p);
                    }
                    info.durable = fetch.durable_offset.min(frame.offset);
                    if frame.offset >= info.log_end_at_last_fetch || frame.offset >= log_end {
                        info.caught_up_at = if frame.offset >= log_end {
                            now
                        } else {
                            info.last_fetch_at
                        };
                    }
                    info.log_end_at_last_fetch = log_end;
                    info.last_fetch_at = now;
                }
                let epochs = l
                    .history
                    .entries()
                    .iter()
                    .filter(|&&(e, _)| e.0 > fetch.last_fetched_epoch)
                    .map(|&(e, start)| EpochEntry {
                        epoch: e.0,
                        offset: start,
                    })
                    .collect();
                ReplicaFetchAnswer::Serve { epochs }
            }
        }
    };
    if matches!(answer, ReplicaFetchAnswer::Serve { .. }) {
        recompute(replica, manager);
    }
    if let Some(offset) = verify {
        let log = Arc::clone(&replica.partition.log);
        let partition = name(replica);
        tokio::spawn(verify_for_follower(log, partition, follower, offset));
    }
    answer
}

/// CRC-checks this leader's batch at `offset`, which `follower` keeps fetching without
/// appending it. Damage found is recorded as the scrub's would be: reads stop before it and
/// the leader resigns the partition ([`resignation`]). An intact batch means the trouble is
/// the follower's own (its disk, its connection); it sorts that out, or leaves the ISR.
async fn verify_for_follower(
    log: Arc<weir_storage::PartitionLog>,
    partition: String,
    follower: BrokerId,
    offset: u64,
) {
    match tokio::task::spawn_blocking(move || log.verify_batch_at(offset)).await {
        Ok(Ok(Some(damage))) => {
            warn!(partition, follower = follower.0, offset = damage.offset, segment = %damage.segment.display(), reason = %damage.reason, "a follower keeps fetching this leader's batch without appending it: this copy is damaged there (reads stop before it; the leader hands the partition over once another in-sync replica can take it)");
        }
        Ok(Ok(None)) => {
            debug!(
                partition,
                follower = follower.0,
                offset,
                "a follower keeps fetching from here, but this leader's batch is intact"
            );
        }
        Ok(Err(e)) => {
            debug!(partition, follower = follower.0, offset, error = %e, "could not check the batch a follower keeps fetching");
        }
        Err(e) => {
            debug!(partition, error = %e, "batch check task failed");
        }
    }
}

/// Why a produce is not admitted on a replicated partition.
pub enum ProduceRefusal {
    /// This broker does not lead the partition (the caller names the leader).
    NotLeading,
    Refused(Error),
}

/// Admits a produce on a partition this broker leads. With `needs_isr` (`acks=all`,
/// `acks=durable`): NOT_ENOUGH_REPLICAS while the confirmed ISR is below the minimum (rule 5);
/// such a batch is acknowledged only once every counted replica has it, so a deposed leader
/// cannot acknowledge it (the model: no acknowledged record is lost without rule 12), and it
/// goes on while the controller is unreachable. Without (`acks=leader`): refused once the lease
/// lapsed (rule 12: the controller may have elected another leader, and the batch would be
/// acknowledged into a log that is about to be cut). Returns the epoch it is admitted in.
pub fn admit_produce(
    replica: &Replica,
    needs_isr: bool,
    lease_valid: bool,
) -> Result<LeaderEpoch, ProduceRefusal> {
    let role = lock(&replica.role);
    let Role::Leader(l) = &*role else {
        return Err(ProduceRefusal::NotLeading);
    };
    let min_insync = *lock(&replica.min_insync);
    let isr_len = if needs_isr {
        l.isr.committed().len()
    } else {
        usize::MAX
    };
    match may_accept_produce(isr_len, min_insync, lease_valid || needs_isr) {
        Ok(()) => Ok(l.epoch),
        Err(ProduceError::NotEnoughReplicas) => Err(ProduceRefusal::Refused(status::error(
            ErrorCode::NotEnoughReplicas,
            format!(
                "{}: {} in-sync replica(s) {:?}, the topic needs {min_insync}; nothing was appended",
                name(replica),
                l.isr.committed().len(),
                l.isr.committed().iter().map(|b| b.0).collect::<Vec<_>>()
            ),
        ))),
        Err(ProduceError::LeaseExpired) => Err(ProduceRefusal::Refused(status::error(
            ErrorCode::PartitionUnavailable,
            format!(
                "{}: this leader cannot reach the controller and its lease lapsed, so another \
                 replica may lead by now; nothing was appended. Retry (clients refresh metadata)",
                name(replica)
            ),
        ))),
    }
}

/// Whether the leader may answer a consumer now that quotes `consumer_epoch` (the leader
/// epoch it last read in, KIP-320): the epoch is this leader's (rule 2, its client half:
/// FENCED_LEADER_EPOCH for an older one, UNKNOWN_LEADER_EPOCH, retriable, for a newer one),
/// and its high watermark is final (rule 9: a new leader's carried-over one may be lower than
/// what its predecessor announced; PARTITION_UNAVAILABLE, retriable; final after its
/// followers' first fetch round).
///
/// Decision: reads are not refused when the lease lapsed (which `may_serve_reads` would do):
/// a leader cut off from the controller, perhaps deposed, serves only records below its own
/// high watermark, which are committed, so a consumer may read a stale view but never a record
/// that vanishes, and a consumer that already read from a successor quotes its newer epoch and
/// is refused here, so the high watermark it sees never goes back; refusing would make every
/// replicated partition unreadable while the controller is down.
pub fn check_reads(replica: &Replica, consumer_epoch: Option<u32>) -> Result<(), Error> {
    let role = lock(&replica.role);
    let Role::Leader(l) = &*role else {
        return Ok(()); // the caller refuses non-leaders with NOT_LEADER
    };
    match check_consumer_epoch(l.epoch, consumer_epoch.map(LeaderEpoch), &Rules::ALL) {
        ConsumerEpochCheck::Current => {}
        ConsumerEpochCheck::Fenced => {
            return Err(status::error(
                ErrorCode::FencedLeaderEpoch,
                format!(
                    "{}: the fetch quotes leader epoch {}, older than this leader's {}; refresh metadata and fetch again",
                    name(replica),
                    consumer_epoch.unwrap_or_default(),
                    l.epoch.0
                ),
            ));
        }
        ConsumerEpochCheck::Unknown => {
            return Err(status::error(
                ErrorCode::UnknownLeaderEpoch,
                format!(
                    "{}: the fetch quotes leader epoch {}, newer than this broker's {} (it was deposed or has not learned the new epoch); refresh metadata and retry",
                    name(replica),
                    consumer_epoch.unwrap_or_default(),
                    l.epoch.0
                ),
            ));
        }
    }
    let hw = replica.partition.high_watermark();
    let hw_final = weir_replication::leader::hw_is_final(hw, l.epoch_start, &Rules::ALL);
    if weir_replication::leader::may_serve_reads(hw_final, true) {
        return Ok(());
    }
    let why = format!(
        "the leader of epoch {} is confirming its high watermark ({hw}, below the epoch's start {})",
        l.epoch.0, l.epoch_start
    );
    Err(status::error(
        ErrorCode::PartitionUnavailable,
        format!("{}: {why}; retry", name(replica)),
    ))
}

/// After a leader's append: the high watermark may move at once (an ISR of one).
pub fn on_leader_append(replica: &Replica, manager: &ReplicaManager) {
    recompute(replica, manager);
}

/// Which watermark an acknowledgement waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckLevel {
    /// `acks=all`: the high watermark (in every counted replica's log).
    Replicated,
    /// `acks=durable`: the durable watermark (synced by every counted replica).
    Durable,
}

/// Waits until the batch ending before `offset_after`, appended in `epoch`, may be
/// acknowledged at `level`: the watermark passed it while this broker still led that epoch
/// (`may_acknowledge`; the watermark counts every ISR member, so no lease is needed, see
/// [`admit_produce`]). Fails with NOT_ENOUGH_REPLICAS_AFTER_APPEND when leadership is lost
/// first, or after the produce timeout.
pub async fn wait_acknowledgeable(
    replica: &Replica,
    manager: &ReplicaManager,
    epoch: LeaderEpoch,
    offset_after: u64,
    level: AckLevel,
) -> Result<(), Error> {
    let mut moved = match level {
        AckLevel::Replicated => replica.partition.subscribe_committed(),
        AckLevel::Durable => {
            want_sync(replica, offset_after);
            replica.durable.subscribe()
        }
    };
    let deadline = tokio::time::Instant::now() + manager.config().produce_timeout;
    let failed = |why: String| {
        status::error(
            ErrorCode::NotEnoughReplicasAfterAppend,
            format!(
                "{}: the batch ending at offset {} was appended but {why}; it may or may not be \
                 committed (an idempotent producer's retry is stored once)",
                name(replica),
                offset_after.saturating_sub(1)
            ),
        )
    };
    loop {
        let mark = match level {
            AckLevel::Replicated => replica.partition.high_watermark(),
            AckLevel::Durable => *replica.durable.borrow(),
        };
        if replica.leading() != Some(epoch) {
            return Err(failed(format!(
                "this broker stopped leading epoch {} before the in-sync replicas confirmed it",
                epoch.0
            )));
        }
        if weir_replication::leader::may_acknowledge(offset_after - 1, mark, true) {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(failed(format!(
                "the in-sync replicas did not confirm it within {:?}",
                manager.config().produce_timeout
            )));
        }
        let wake = deadline.min(now + LEADERSHIP_RECHECK);
        let _ = tokio::time::timeout_at(wake, moved.changed()).await;
    }
}

/// Records that an `acks=durable` produce waits for the replicas to sync below
/// `offset_after`. Called right after the append, before fetches are woken, so the answer that
/// carries the batch to a follower also asks it to sync.
pub fn want_sync(replica: &Replica, offset_after: u64) {
    replica
        .sync_wanted
        .fetch_max(offset_after, Ordering::AcqRel);
}

/// Whether a follower whose log is synced below `durable_offset` should sync now: an
/// `acks=durable` produce waits past it.
pub fn sync_wanted(replica: &Replica, durable_offset: u64) -> bool {
    replica.sync_wanted.load(Ordering::Acquire) > durable_offset
}

/// Runs the leaders' ISR checks until shutdown: every [`ISR_CHECK_INTERVAL`], each partition
/// led here proposes dropping followers that lag past `replica_lag_time_max` or adding one
/// that caught up (one proposal in flight per partition).
pub async fn maintain(manager: Arc<ReplicaManager>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(ISR_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|&s| s) => return,
        }
        for replica in manager.all() {
            if let Some((request, shrinks)) = proposal(&replica, &manager) {
                let manager = Arc::clone(&manager);
                let replica = Arc::clone(&replica);
                tokio::spawn(
                    async move { send_proposal(&manager, &replica, request, shrinks).await },
                );
            }
            if let Some((epoch, damage)) = resignation(&replica) {
                let manager = Arc::clone(&manager);
                tokio::spawn(async move { resign(&manager, &replica, epoch, damage).await });
            }
        }
    }
}

/// Whether the leader of `replica` should ask now to hand it over, and in which epoch: its own
/// copy is damaged (the scrub found a batch failing its checks; reads, followers' included,
/// stop before it, so the damaged bytes are never served). Healing needs a copy that is not
/// damaged, which only another replica has: this broker steps down, follows, cuts its log at
/// the damage and fetches the range again (`follower::cut_damage`). Asked at most once per
/// [`RESIGN_RETRY`].
fn resignation(replica: &Replica) -> Option<(LeaderEpoch, weir_storage::KnownDamage)> {
    let mut role = lock(&replica.role);
    let Role::Leader(l) = &mut *role else {
        return None;
    };
    let damage = replica.partition.log.known_damage()?;
    let now = Instant::now();
    if l.resign_asked_at
        .is_some_and(|t| now.duration_since(t) < RESIGN_RETRY)
    {
        return None;
    }
    l.resign_asked_at = Some(now);
    Some((l.epoch, damage))
}

/// Asks the controller to move the leadership of `replica` (led here in `epoch`) to another
/// live in-sync replica and to take this broker out of the ISR (`ResignLeadership`). The new
/// metadata then makes this broker a follower (`ReplicaManager::reconcile`); until it arrives
/// it goes on leading. When no other in-sync replica is alive it keeps leading, warns once,
/// and the next [`maintain`] round past [`RESIGN_RETRY`] asks again.
async fn resign(
    manager: &ReplicaManager,
    replica: &Replica,
    epoch: LeaderEpoch,
    damage: weir_storage::KnownDamage,
) {
    let request = weir_proto::v1::ResignLeadershipRequest {
        broker_id: manager.node_id(),
        broker_epoch: manager.broker_epoch(),
        topic: replica.topic.to_string(),
        topic_id: replica.topic_id.clone(),
        partition: replica.index,
        leader_epoch: epoch.0,
    };
    let answer = manager.controller().resign_leadership(request).await;
    let me = BrokerId(manager.node_id());
    match answer.map(|a| a.state.as_ref().map(crate::wire::partition_state_from_wire)) {
        Ok(Some(Ok(state))) if state.leader != Some(me) => {
            info!(partition = %name(replica), offset = damage.offset, segment = %damage.segment.display(), new_leader = ?state.leader.map(|b| b.0), leader_epoch = state.leader_epoch.0, "this leader's copy is damaged: handed the leadership over, to fetch the damaged range again as a follower");
        }
        Ok(Some(Ok(_))) => {
            let first = {
                let mut role = lock(&replica.role);
                match &mut *role {
                    Role::Leader(l) if l.epoch == epoch => {
                        !std::mem::replace(&mut l.resign_warned, true)
                    }
                    _ => false,
                }
            };
            if first {
                warn!(partition = %name(replica), offset = damage.offset, segment = %damage.segment.display(), reason = %damage.reason, retry = ?RESIGN_RETRY, "this leader's copy is damaged, but no other in-sync replica is alive to take over: it keeps leading, the damaged range cannot be repaired now (reads stop before it); asking again periodically");
            } else {
                debug!(partition = %name(replica), offset = damage.offset, "still no other in-sync replica to hand the damaged partition to");
            }
        }
        // No state, or one that breaks its invariants: the metadata will tell.
        Ok(_) => {}
        Err(e) => {
            debug!(partition = %name(replica), error = %e.message, "resigning the damaged partition's leadership failed; asking again later");
        }
    }
}

/// The ISR change `replica`'s leader should propose now, if any (or the outstanding one, to
/// send again).
/// The proposal to send now, if any, and whether it shrinks the in-sync set: judged here,
/// against the state the proposal is based on, since by the time the controller's answer comes
/// the metadata may already show the new set.
fn proposal(
    replica: &Replica,
    manager: &ReplicaManager,
) -> Option<(weir_replication::AlterIsrRequest, bool)> {
    let mut role = lock(&replica.role);
    let Role::Leader(l) = &mut *role else {
        return None;
    };
    let now = Instant::now();
    if let Some(pending) = l.isr.pending() {
        let due = l
            .proposal_sent_at
            .is_none_or(|t| now.duration_since(t) >= PROPOSAL_RESEND);
        if !due {
            return None;
        }
        let pending = pending.clone();
        l.proposal_sent_at = Some(now);
        let shrinks = pending.new_isr.len() < l.state.isr.len();
        return Some((pending, shrinks));
    }
    let me = BrokerId(manager.node_id());
    let log_end = replica.partition.log_end();
    let hw = replica.partition.high_watermark();
    let lag_max = manager.config().lag_time_max;
    let min_insync = *lock(&replica.min_insync);
    let maximal = l.isr.maximal();
    // Out: a follower lagging past lag_max, and at once one whose fetch in this epoch is below
    // the high watermark. An ISR member's log end never falls below it unless the member lost
    // committed records (its disk was damaged and it cut the damaged range to fetch it again):
    // electable, it would lose them.
    let lagging: Vec<BrokerId> = maximal
        .iter()
        .copied()
        .filter(|&b| b != me)
        .filter(|b| {
            let (progress, caught_up_at) = l
                .followers
                .get(b)
                .map_or((None, now), |f| (f.progress, f.caught_up_at));
            let lost_committed =
                progress.is_some_and(|p| p.leader_epoch == l.epoch && p.log_end < hw);
            lost_committed
                || out_of_sync(
                    progress,
                    l.epoch,
                    log_end,
                    now.duration_since(caught_up_at) > lag_max,
                )
        })
        .collect();
    let new_isr: Vec<BrokerId> = if !lagging.is_empty() {
        maximal
            .iter()
            .copied()
            .filter(|b| !lagging.contains(b))
            .collect()
    } else {
        let joining = l.state.replicas.iter().copied().find_map(|b| {
            let progress = l.followers.get(&b).and_then(|f| f.progress);
            expansion_member(
                b,
                &l.isr,
                progress,
                l.epoch,
                hw,
                l.epoch_start,
                min_insync,
                &Rules::ALL,
            )
            .ok()
        })?;
        let mut isr = maximal.clone();
        isr.push(joining.broker);
        isr.sort();
        isr
    };
    let members: Vec<IsrMember> = new_isr
        .iter()
        .map(|&b| IsrMember {
            broker: b,
            broker_epoch: if b == me {
                BrokerEpoch(manager.broker_epoch())
            } else {
                l.followers
                    .get(&b)
                    .and_then(|f| f.progress)
                    .map_or(BrokerEpoch(0), |p| p.broker_epoch)
            },
        })
        .collect();
    let request = l.isr.propose(me, l.epoch, members, min_insync).ok()?;
    l.proposal_sent_at = Some(now);
    if lagging.is_empty() {
        info!(partition = %name(replica), isr = ?new_isr, "proposing to add a caught-up follower to the in-sync set");
    } else {
        warn!(partition = %name(replica), ?lagging, lag_max = ?lag_max, "proposing to drop lagging followers from the in-sync set");
    }
    let shrinks = request.new_isr.len() < l.state.isr.len();
    Some((request, shrinks))
}

/// Sends an ISR proposal to the controller and settles it with the answer (rule 4: rolled
/// back only on a definite refusal; a lost or stale answer leaves it counting until a newer
/// partition state arrives).
async fn send_proposal(
    manager: &ReplicaManager,
    replica: &Replica,
    request: weir_replication::AlterIsrRequest,
    shrinks: bool,
) {
    let wire = AlterPartitionRequest {
        topic: replica.topic.to_string(),
        topic_id: replica.topic_id.clone(),
        partition: replica.index,
        leader: request.leader.0,
        leader_epoch: request.leader_epoch.0,
        partition_epoch: request.partition_epoch.0,
        new_isr: request
            .new_isr
            .iter()
            .map(|m| WireIsrMember {
                broker: m.broker.0,
                broker_epoch: m.broker_epoch.0,
            })
            .collect(),
    };
    let result: Result<PartitionState, AlterError> = match manager
        .controller()
        .alter_partition(wire)
        .await
    {
        Ok(answer) => match answer
            .state
            .as_ref()
            .map(crate::wire::partition_state_from_wire)
        {
            Some(Ok(state)) => Ok(state),
            // No state, or one that breaks its invariants: learn it from the metadata.
            _ => return,
        },
        Err(e) => match ErrorCode::try_from(e.code) {
            Ok(ErrorCode::FencedLeaderEpoch) => Err(AlterError::FencedLeaderEpoch),
            Ok(ErrorCode::NotLeader) => Err(AlterError::NotLeader),
            Ok(ErrorCode::StalePartitionEpoch) => Err(AlterError::StalePartitionEpoch),
            Ok(ErrorCode::IneligibleReplica | ErrorCode::InvalidRequest) => {
                debug!(partition = %name(replica), error = %e.message, "the controller refused the in-sync set change");
                Err(AlterError::Malformed)
            }
            // Unreachable controller, or a refusal that says nothing of the proposal:
            // keep it outstanding; it is sent again.
            _ => {
                debug!(partition = %name(replica), error = %e.message, "in-sync set change not answered");
                return;
            }
        },
    };
    {
        let mut role = lock(&replica.role);
        let Role::Leader(l) = &mut *role else {
            return;
        };
        l.isr.on_response(&request, &result);
        if let Ok(state) = &result {
            let counter = if shrinks {
                &manager.metrics.isr_shrinks
            } else {
                &manager.metrics.isr_expands
            };
            counter.inc();
            l.on_state(state);
            info!(partition = %name(replica), isr = ?state.isr.iter().map(|b| b.0).collect::<Vec<_>>(), partition_epoch = state.partition_epoch.0, "in-sync set changed");
        }
        if l.isr.pending().is_none() {
            l.proposal_sent_at = None;
        }
    }
    recompute(replica, manager);
}

/// How far each follower of a partition this broker leads is behind the leader's log end, in
/// records, as of its last fetch in this epoch (for the metrics); empty unless leading.
pub fn follower_lags(replica: &Replica, me: u32) -> Vec<(u32, u64)> {
    let role = lock(&replica.role);
    let Role::Leader(l) = &*role else {
        return Vec::new();
    };
    let log_end = replica.partition.log_end();
    l.followers
        .iter()
        .filter(|(b, _)| b.0 != me)
        .map(|(b, f)| {
            let fetched = f.progress.as_ref().map_or(0, |p| p.log_end);
            (b.0, log_end.saturating_sub(fetched))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_is_told_to_start_over_only_when_it_can_keep_nothing() {
        let serve = FetchDecision::Serve;
        assert!(below_log_start(&serve, 99, 100), "retention passed it");
        assert!(!below_log_start(&serve, 100, 100), "at the log start");
        assert!(!below_log_start(&serve, 0, 0));
        let diverging = |end_offset| FetchDecision::Diverging {
            epoch: None,
            end_offset,
        };
        // The logs agree only below the log start: cutting there would leave a fetch below it.
        assert!(below_log_start(&diverging(0), 150, 100));
        assert!(below_log_start(&diverging(120), 90, 100));
        // A cut at or past the log start is an ordinary truncation.
        assert!(!below_log_start(&diverging(100), 150, 100));
        assert!(!below_log_start(&diverging(0), 0, 0), "an empty leader");
        for fenced in [
            FetchDecision::FencedLeaderEpoch,
            FetchDecision::UnknownLeaderEpoch,
        ] {
            assert!(!below_log_start(&fenced, 5, 100));
        }
    }

    #[test]
    fn a_leader_without_epochs_records_its_epoch_over_its_whole_log() {
        assert_eq!(epoch_recorded_at(Some(LeaderEpoch(3)), 10, 500), 500);
        assert_eq!(
            epoch_recorded_at(None, 10, 500),
            10,
            "a single copy's records"
        );
        assert_eq!(epoch_recorded_at(None, 0, 0), 0, "a new partition");
        // Why: a follower that fetched a single copy's 500 records, and nothing past them.
        let fetch = |last_epoch| FetchRequest {
            leader_epoch: LeaderEpoch(1),
            offset: 500,
            last_epoch,
        };
        let mut at_end = EpochHistory::new();
        at_end.assign(LeaderEpoch(1), 500).unwrap();
        // Recorded at the log end, the epoch covers none of them: the follower has no last
        // epoch, and is told to cut everything.
        assert_eq!(
            check_fetch(LeaderEpoch(1), &at_end, 500, &fetch(None), &Rules::ALL),
            FetchDecision::Diverging {
                epoch: None,
                end_offset: 0
            }
        );
        // Recorded at the log start, the follower learned it with the first batch: served.
        let mut at_start = EpochHistory::new();
        at_start.assign(LeaderEpoch(1), 0).unwrap();
        assert_eq!(
            check_fetch(
                LeaderEpoch(1),
                &at_start,
                500,
                &fetch(Some(LeaderEpoch(1))),
                &Rules::ALL
            ),
            FetchDecision::Serve
        );
    }

    #[test]
    fn the_epoch_at_the_log_start_is_the_newest_starting_at_or_below_it() {
        let mut history = EpochHistory::new();
        history.assign(LeaderEpoch(1), 0).unwrap();
        history.assign(LeaderEpoch(3), 40).unwrap();
        history.assign(LeaderEpoch(4), 90).unwrap();
        assert_eq!(epoch_at(&history, 0), 1);
        assert_eq!(epoch_at(&history, 39), 1);
        assert_eq!(epoch_at(&history, 40), 3);
        assert_eq!(epoch_at(&history, 1000), 4);
        let mut late = EpochHistory::new();
        late.assign(LeaderEpoch(2), 50).unwrap();
        assert_eq!(epoch_at(&late, 10), 0, "no epoch that old");
        assert_eq!(epoch_at(&EpochHistory::new(), 10), 0);
    }
}
