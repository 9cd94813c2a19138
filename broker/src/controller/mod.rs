//! The controller: the cluster's metadata, owned by one process (embedded in a single-node
//! broker by default, or alone with `--role controller`). Raft-free: there is exactly one.
//!
//! It owns brokers (registration, heartbeat leases), topics (partition counts, partitioner,
//! split keys, settings) and their placement (partition -> broker), consumer groups (members,
//! generations, assignments) and committed offsets. Everything but leases and member
//! heartbeat times is journaled ([`journal`]) before it is acknowledged, so a restarted
//! controller recovers it all.
//!
//! The requests, by concern (each file adds an `impl Controller` block):
//! - `brokers`: registration, heartbeat leases and liveness, controlled shutdown, the metadata
//!   version and its long poll.
//! - `topics`: create and delete, placement, and the wait for brokers to acknowledge.
//! - `groups`: join, heartbeat, leave, assignment (through [`handover`]), list and describe.
//! - `offsets`: commit, reset and fetch committed offsets.
//! - `security`: users (token hashes) and ACL entries, and the bootstrap user.
//! - `reassignment`: moving partitions between brokers (rule 10), and the periodic balancing
//!   of leaderships: completed moves, leaderless partitions, preferred leaders.
//!
//! What they build on:
//! - [`state`]: the persisted state and its events; [`journal`]: their log and snapshots.
//! - [`placement`]: partition -> broker; [`assignor`]: partition -> group member;
//!   [`handover`]: when a member may start on a partition another member had.
//! - [`link`]: how a node reaches the controller (in process, or over gRPC).
//!
//! This file holds what every concern shares: the [`Controller`], its one lock over the state,
//! the journal and the liveness (`Inner`), and the way a change is made (`Inner::record`).
//!
//! Brokers learn the metadata by long-polling [`Controller::broker_heartbeat`]; the reply is
//! the whole picture whenever its version differs from the broker's. Metadata changes
//! (create, delete) wait until every live broker has acknowledged the new version (bounded by
//! [`ACK_WAIT`]), so a topic is usable on every broker once its creation returns.
//!
//! Invariants:
//! - One mutex serializes every change and every read of the state. Changes run off the async
//!   threads (`Controller::change`), because journaling syncs to disk.
//! - `Inner::record` is the only way the persisted state changes: the events of one call are
//!   one durable journal append, applied to the state only once it succeeded. A refused or
//!   failed request therefore changes nothing that survives, and the state never shows what
//!   a crash could take back.
//! - What is not journaled (`Liveness`: leases, liveness, which brokers are shutting down,
//!   acknowledged versions, heartbeat times, what members hold) is rebuilt on open so as to refuse nothing too early: every
//!   registered broker starts alive with a full lease, every recovered member with a full
//!   session and unknown holdings.
//! - The metadata version is `(incarnation << 32) | counter`: it changes with every change of
//!   what brokers see (brokers, liveness, topics; not groups or offsets), and a restarted
//!   controller never reuses one a broker may hold.
//! - A group's offsets are only committed by its current generation's members, or from outside
//!   while it has none; a reset from outside needs it empty, or `force`.
//! - A partition is given to a group member only once no other member may still be reading it
//!   ([`handover`]).
//! - Every refusal is a wire [`Error`] with its reason code (made here or by
//!   [`crate::wire::errors`]); the controller never reaches into the server layer.
//! - After [`Controller::close`] (state snapshotted) every call fails with
//!   CONTROLLER_UNAVAILABLE, so nothing is journaled past the final snapshot.

pub mod assignor;
mod brokers;
mod groups;
pub mod handover;
pub mod journal;
pub mod link;
mod offsets;
pub mod placement;
mod reassignment;
#[cfg(test)]
mod replication_tests;
mod security;
pub mod state;
mod topics;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tracing::warn;
use weir_proto::status;
use weir_proto::v1::{Error, ErrorCode};

use crate::topics::random_u64;
use journal::Journal;
use state::{ControllerState, Event, PartitionRecord, TopicRecord};
use weir_replication::lease::LeaseConfig;
use weir_replication::{BrokerEpoch, BrokerId, LiveBrokers, PartitionState, Rules};
use weir_storage::{LogConfig, StorageError};

/// How long a metadata change waits for live brokers to acknowledge it.
pub const ACK_WAIT: Duration = Duration::from_secs(5);

/// The share of the controller's grace (`broker_lease`, the `lease_ms` of a heartbeat answer)
/// for which a broker holds its lease, from when it sent the answered heartbeat: 2/3. The
/// other third covers the heartbeat's time on the wire and in the controller's queue (the
/// grace starts at receipt, the lease at sending), clock rate differences, and the broker's
/// own scheduling delay before it stops acknowledging; a broker renews several times per
/// lease (its long poll waits a sixth of the grace), so the lease does not lapse in normal
/// operation.
pub const LEASE_RATIO: (u64, u64) = (2, 3);

/// The lease and grace for a controller grace of `lease_ms` (see [`LEASE_RATIO`]).
pub fn lease_config(lease_ms: u64) -> LeaseConfig {
    let grace = lease_ms.max(1);
    let lease = grace * LEASE_RATIO.0 / LEASE_RATIO.1;
    // 2/3 of a grace of at least one tick is always shorter than it.
    LeaseConfig::new(lease, grace).expect("the lease is shorter than the grace")
}

/// The controller's settings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// A broker not heard from for this long is marked down.
    pub broker_lease: Duration,
    /// Settings of topics created without their own.
    pub topic_defaults: LogConfig,
    /// A topic's max_batch_bytes must fit in a request of this size (with 4 KiB to spare).
    pub max_request_bytes: u64,
    /// How often the leadership of each replicated partition moves back to its preferred
    /// replica when that one is in sync (Kafka's `auto.leader.rebalance.enable` with
    /// `leader.imbalance.check.interval.seconds`); `None` turns it off.
    pub leader_rebalance_interval: Option<Duration>,
}

/// What is not journaled: leases, liveness, heartbeat times, acknowledged versions.
struct Liveness {
    /// When each broker was last heard from (registration or heartbeat received): the
    /// controller's grace runs from here.
    heard_at: HashMap<u32, Instant>,
    /// The unfenced brokers.
    alive: BTreeSet<u32>,
    /// Brokers whose current start asked for a controlled shutdown: still alive (they serve
    /// until they stop), but never elected, placed or added to an ISR; registering again (a
    /// new start) clears it. Forgotten by a restarted controller: the broker asks again.
    shutting_down: BTreeSet<u32>,
    acked_version: HashMap<u32, u64>,
    /// (group, member) -> last heard from.
    member_seen: HashMap<(String, String), Instant>,
    /// What group members may still be reading (the revocation barrier).
    holdings: handover::Holdings,
    /// The low half of the metadata version (see `Controller::bump`).
    counter: u64,
    /// When leaderships last moved back to preferred replicas.
    rebalanced_at: Instant,
}

/// Everything the controller's one lock guards.
struct Inner {
    state: ControllerState,
    journal: Journal,
    live: Liveness,
    closed: bool,
}

impl Inner {
    /// Journals `events` (durably) and applies them to the state.
    fn record(&mut self, events: Vec<Event>) -> Result<()> {
        self.journal
            .append(&mut self.state, events)
            .map_err(|e| storage_failed(&e))
    }

    /// The unfenced brokers at their current broker epochs, as the replication decisions take
    /// them; `except` is left out (a broker being fenced), and so is every broker shutting
    /// down: no decision may elect one or add it to an ISR.
    fn live_brokers(&self, except: Option<u32>) -> LiveBrokers {
        LiveBrokers::new(
            self.live
                .alive
                .iter()
                .copied()
                .filter(|&id| Some(id) != except && !self.live.shutting_down.contains(&id))
                .map(|id| {
                    let epoch = self.state.broker_epochs.get(&id).copied().unwrap_or(0);
                    (BrokerId(id), BrokerEpoch(epoch))
                })
                .collect(),
        )
    }
}

/// The `PartitionChanged` events of applying `decide` to every partition of every topic (in
/// `state`) that `broker` replicates; `decide` gets the topic and the partition's state and
/// returns its next state, or `None` for no change.
fn partition_changes(
    state: &ControllerState,
    broker: u32,
    decide: impl FnMut(&TopicRecord, &PartitionState) -> Option<PartitionState>,
) -> Vec<Event> {
    changes_where(state, |record| record.replicas.contains(&broker), decide)
}

/// [`partition_changes`] over the partitions whose record passes `filter`.
fn changes_where(
    state: &ControllerState,
    mut filter: impl FnMut(&PartitionRecord) -> bool,
    mut decide: impl FnMut(&TopicRecord, &PartitionState) -> Option<PartitionState>,
) -> Vec<Event> {
    let mut events = Vec::new();
    for topic in state.topics.values() {
        for (p, record) in topic.partitions.iter().enumerate() {
            if !filter(record) {
                continue;
            }
            let current = PartitionState::from(record);
            if let Some(next) = decide(topic, &current) {
                debug_assert!(
                    next.partition_epoch > current.partition_epoch,
                    "every change bumps the partition epoch (rule 1)"
                );
                events.push(Event::PartitionChanged {
                    topic: topic.meta.name.clone(),
                    topic_id: topic.meta.id(),
                    partition: p as u32,
                    state: PartitionRecord::from(&next),
                });
            }
        }
    }
    events
}

/// Every production decision runs with every rule on.
const RULES: Rules = Rules::ALL;

/// The controller (see the module docs).
pub struct Controller {
    inner: Mutex<Inner>,
    config: ControllerConfig,
    /// `config.broker_lease` as the broker's lease and the controller's grace.
    lease: LeaseConfig,
    /// The high half of every metadata version this process hands out (random per start).
    incarnation: u64,
    /// The current metadata version, for long polls to wait on.
    version: watch::Sender<u64>,
    /// Raised when a broker acknowledges a version (topic changes wait on it).
    acked: Notify,
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn refuse(code: ErrorCode, message: impl Into<String>) -> Error {
    status::error(code, message)
}

fn storage_failed(e: &StorageError) -> Error {
    refuse(
        ErrorCode::Internal,
        format!("the controller could not persist the change: {e}"),
    )
}

impl Controller {
    /// Opens the journal under `dir` and recovers the state. Registered brokers start alive
    /// with a full lease (so a restarted controller does not mark the cluster down).
    pub fn open(dir: &Path, config: ControllerConfig) -> Result<Arc<Controller>, StorageError> {
        let (journal, state) = Journal::open(dir)?;
        let now = Instant::now();
        let mut live = Liveness {
            heard_at: HashMap::new(),
            alive: BTreeSet::new(),
            shutting_down: BTreeSet::new(),
            acked_version: HashMap::new(),
            member_seen: HashMap::new(),
            holdings: handover::Holdings::default(),
            counter: 1,
            rebalanced_at: now,
        };
        for &id in state.brokers.keys() {
            live.heard_at.insert(id, now);
            live.alive.insert(id);
        }
        for (group, record) in &state.groups {
            for member in record.members.keys() {
                live.member_seen
                    .insert((group.clone(), member.clone()), now);
                live.holdings.recover(group, member);
            }
        }
        let incarnation = random_u64() & 0x7fff_ffff;
        let (version, _) = watch::channel(incarnation << 32 | 1);
        Ok(Arc::new(Controller {
            inner: Mutex::new(Inner {
                state,
                journal,
                live,
                closed: false,
            }),
            lease: lease_config(config.broker_lease.as_millis() as u64),
            config,
            incarnation,
            version,
            acked: Notify::new(),
        }))
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.closed {
            return Err(refuse(
                ErrorCode::ControllerUnavailable,
                "the controller is shutting down",
            ));
        }
        Ok(inner)
    }

    fn current_version(&self, counter: u64) -> u64 {
        self.incarnation << 32 | counter
    }

    /// Marks a change brokers must see; returns the new version.
    fn bump(&self, live: &mut Liveness) -> u64 {
        live.counter += 1;
        let version = self.current_version(live.counter);
        self.version.send_replace(version);
        version
    }

    /// Runs `change` under the lock off the async threads (journal appends sync to disk).
    async fn change<T: Send + 'static>(
        self: &Arc<Self>,
        change: impl FnOnce(&Controller, &mut Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut inner = this.lock()?;
            change(&this, &mut inner)
        })
        .await
        .map_err(|e| refuse(ErrorCode::Internal, format!("controller task failed: {e}")))?
    }

    /// Periodic housekeeping: expires broker leases and silent group members, finishes
    /// reassignments and balances leaderships (each its own change).
    pub async fn tick(self: &Arc<Self>) {
        let result = self
            .change(|this, inner| {
                let now = Instant::now();
                this.expire_leases(inner, now);
                this.balance(inner, now);
                let events = groups::expire_members(inner, now);
                inner.record(events)
            })
            .await;
        if let Err(e) = result
            && e.code != ErrorCode::ControllerUnavailable as i32
        {
            warn!(error = %e.message, "controller housekeeping failed");
        }
    }

    /// Snapshots the state and closes the journal. Later calls fail with
    /// CONTROLLER_UNAVAILABLE.
    pub fn close(&self) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.closed {
            return Ok(());
        }
        inner.closed = true;
        let inner = &mut *inner;
        inner.journal.close(&inner.state)
    }
}
