//! Replication on a broker: the role this broker plays for each replicated partition it holds
//! (leader or follower), and everything each role does. The controller decides the roles (its
//! metadata names each partition's replicas, leader, in-sync set and epochs); this module makes
//! the local logs follow, using weir-replication's decisions, the ones its model checker proved
//! (rule numbers are DESIGN.md's "Replication" section).
//!
//! - `mod.rs` (this file): [`ReplicaManager`], the registry of [`Replica`]s, and
//!   [`ReplicaManager::reconcile`], which turns each new metadata picture into role changes.
//! - [`leader`]: what a leader does: answer followers' fetches (check epochs, count progress,
//!   move the high watermark and the durable watermark), admit and acknowledge produce
//!   (`acks=all`, `acks=durable`), and propose in-sync set changes to the controller.
//! - [`follower`]: the follower's fetch loop over the leader's data port: append the leader's
//!   batches byte for byte, record its epochs, truncate where the logs diverge.
//!
//! A partition with one replica is not replicated: it has no [`Replica`], its high watermark
//! follows its log end as before, and no lease or in-sync set applies to it. A reassignment
//! turns one into a replicated partition and back: moving a single copy (`[1] -> [2]`, or
//! raising its count, `[1] -> [1,2,3]`) lists the new replicas beside it, so from that picture
//! on it has several and gets a [`Replica`] on each broker. The old copy leads: it records its
//! epoch over its whole log (a single copy records none, see `leader::become_leader`), and as
//! the only in-sync replica its high watermark is back at its log end with the first
//! computation. The new ones follow over the data port and join the in-sync set through the
//! leader's ordinary expansion. Once the controller completes the move the partition may have
//! one replica again (`[2]`): its [`Replica`] goes, and that copy serves as a single copy.
//!
//! Invariants:
//! - A replica has exactly one role at a time; a role change stops the old role's work before
//!   the new one touches the log: the follower task is aborted, and every write of the log by
//!   replication (a follower's append or truncation, a new leader's epoch) holds the replica's
//!   `writer` lock, so an aborted follower's last append cannot interleave with them.
//! - A new leader records its epoch at its log end before it accepts a produce (rule 2) and
//!   carries over the high watermark it had as a follower; that high watermark is not final
//!   until it reaches the epoch's start (rule 9).
//! - Only the leader of the current epoch moves a partition's high watermark, and only by
//!   `weir_replication::leader::high_watermark` (never backwards).

pub mod follower;
pub mod leader;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use weir_proto::v1::{BrokerInfo, ClusterMetadata, PartitionState as WirePartitionState};
use weir_replication::{BrokerId, LeaderEpoch};

use crate::controller::link::ControllerLink;
use crate::metrics::ReplicationMetrics;
use crate::topics::{Partition, Topics};
use leader::LeaderState;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Replication settings of a broker.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// A follower that has not reached the leader's log end for this long leaves the in-sync
    /// set (Kafka's `replica.lag.time.max.ms`).
    pub lag_time_max: Duration,
    /// How long a follower's fetch waits at the leader for new data.
    pub fetch_max_wait: Duration,
    /// How much one follower fetch asks for.
    pub fetch_max_bytes: u32,
    /// How long an `acks=all` or `acks=durable` produce waits for the in-sync replicas.
    pub produce_timeout: Duration,
    /// The broker token a follower presents to its leaders' data ports (`security.broker_token`).
    pub token: Option<String>,
    /// TLS for the connections to leaders' data ports (`tls.ca_file` set), else plaintext.
    pub tls: Option<crate::security::tls::ClientTls>,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            lag_time_max: Duration::from_secs(10),
            fetch_max_wait: Duration::from_millis(500),
            fetch_max_bytes: 8 << 20,
            produce_timeout: Duration::from_secs(30),
            token: None,
            tls: None,
        }
    }
}

/// The registry: topic -> partition -> replica. Keyed by `Arc<str>` so a lookup by `&str`
/// (every produce and fetch on a replicated partition makes one) allocates nothing.
type Registry = HashMap<Arc<str>, BTreeMap<u32, Arc<Replica>>>;

/// The replicated partitions held here and their roles.
pub struct ReplicaManager {
    node_id: u32,
    config: ReplicaConfig,
    controller: ControllerLink,
    replicas: Mutex<Registry>,
    /// This start's broker epoch (from the controller's registration answer).
    broker_epoch: watch::Sender<u64>,
    pub(crate) metrics: ReplicationMetrics,
}

/// The role of this broker for one partition.
pub(crate) enum Role {
    Leader(Box<LeaderState>),
    Follower {
        leader: u32,
        epoch: LeaderEpoch,
        task: JoinHandle<()>,
    },
    /// Leaderless, or this broker is not (or no longer) among the replicas: serve nothing.
    Offline {
        epoch: LeaderEpoch,
    },
}

impl Role {
    fn epoch(&self) -> LeaderEpoch {
        match self {
            Role::Leader(l) => l.epoch,
            Role::Follower { epoch, .. } | Role::Offline { epoch } => *epoch,
        }
    }
}

/// One replicated partition held here.
pub struct Replica {
    pub partition: Arc<Partition>,
    pub topic: Arc<str>,
    pub index: u32,
    pub topic_id: String,
    pub(crate) role: Mutex<Role>,
    /// Held by every write replication makes to the log (see the module docs), for as long as
    /// the write runs: the guard moves into the blocking task that writes, so aborting the task
    /// that asked for it does not release it early.
    pub(crate) writer: Arc<tokio::sync::Mutex<()>>,
    /// The durable watermark: below it every counted in-sync replica has synced (leader only).
    pub(crate) durable: watch::Sender<u64>,
    /// The topic's `min_insync_replicas`, as the controller's metadata last said.
    pub(crate) min_insync: Mutex<usize>,
    /// The highest offset an `acks=durable` produce waits for the followers to sync.
    pub(crate) sync_wanted: std::sync::atomic::AtomicU64,
}

impl Replica {
    /// The leader epoch this broker is in for the partition, and whether it leads.
    pub fn leading(&self) -> Option<LeaderEpoch> {
        match &*lock(&self.role) {
            Role::Leader(l) => Some(l.epoch),
            _ => None,
        }
    }
}

impl ReplicaManager {
    pub fn new(
        node_id: u32,
        config: ReplicaConfig,
        controller: ControllerLink,
        metrics: ReplicationMetrics,
    ) -> Arc<Self> {
        Arc::new(ReplicaManager {
            node_id,
            config,
            controller,
            replicas: Mutex::new(HashMap::new()),
            broker_epoch: watch::channel(0).0,
            metrics,
        })
    }

    pub fn node_id(&self) -> u32 {
        self.node_id
    }

    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    pub(crate) fn controller(&self) -> &ControllerLink {
        &self.controller
    }

    /// This start's broker epoch, once registered (0 before).
    pub fn broker_epoch(&self) -> u64 {
        *self.broker_epoch.borrow()
    }

    /// Records the broker epoch the controller gave this start.
    pub fn set_broker_epoch(&self, epoch: u64) {
        self.broker_epoch.send_replace(epoch);
    }

    /// The replicated partition `topic`-`partition`, if it is replicated and held here.
    pub fn get(&self, topic: &str, partition: u32) -> Option<Arc<Replica>> {
        lock(&self.replicas)
            .get(topic)
            .and_then(|partitions| partitions.get(&partition))
            .cloned()
    }

    /// Makes the roles match `metadata` (called with every newer picture, after the local
    /// partitions were created): a partition with several replicas gets a [`Replica`], led or
    /// followed as the controller says; one that is no longer replicated here loses it; one
    /// with a single replica, here, has its high watermark at its log end.
    pub fn reconcile(self: &Arc<Self>, topics: &Topics, metadata: &ClusterMetadata) {
        let mut seen: HashSet<(Arc<str>, u32)> = HashSet::new();
        for placed in &metadata.topics {
            let Some(description) = &placed.description else {
                continue;
            };
            let Ok(topic) = topics.get(&description.name) else {
                continue;
            };
            if topic.meta.id() != placed.topic_id {
                continue;
            }
            let name: Arc<str> = Arc::from(description.name.as_str());
            for (index, wire) in placed.partitions.iter().enumerate() {
                let index = index as u32;
                if !wire.replicas.contains(&self.node_id) {
                    continue;
                }
                let Ok(partition) = topic.partition(index) else {
                    continue;
                };
                if wire.replicas.len() < 2 {
                    // A single copy, here: its high watermark is its log end. One opened as
                    // possibly replicated is served from now on; one that had a role until
                    // this picture is handed back below, once that role stopped.
                    if self.get(&name, index).is_none() {
                        partition.set_replicated(false);
                    }
                    continue;
                }
                seen.insert((Arc::clone(&name), index));
                let replica = {
                    let mut replicas = lock(&self.replicas);
                    let partitions = replicas.entry(Arc::clone(&name)).or_default();
                    let existing = partitions
                        .get(&index)
                        .filter(|r| Arc::ptr_eq(&r.partition, partition))
                        .cloned();
                    match existing {
                        Some(r) => r,
                        None => {
                            partition.set_replicated(true);
                            let r = Arc::new(Replica {
                                partition: Arc::clone(partition),
                                topic: Arc::clone(&name),
                                index,
                                topic_id: placed.topic_id.clone(),
                                role: Mutex::new(Role::Offline {
                                    epoch: LeaderEpoch(0),
                                }),
                                writer: Arc::new(tokio::sync::Mutex::new(())),
                                durable: watch::channel(0).0,
                                min_insync: Mutex::new(1),
                                sync_wanted: std::sync::atomic::AtomicU64::new(0),
                            });
                            partitions.insert(index, Arc::clone(&r));
                            r
                        }
                    }
                };
                self.apply_state(&replica, wire, &metadata.brokers);
            }
        }
        let mut replicas = lock(&self.replicas);
        for (topic, partitions) in replicas.iter_mut() {
            partitions.retain(|&index, replica| {
                let keep = seen.contains(&(Arc::clone(topic), index));
                if !keep {
                    info!(partition = %format!("{topic}-{index}"), "no longer replicated here");
                    stop_role(&mut lock(&replica.role));
                    replica.partition.set_replicated(false);
                }
                keep
            });
        }
        replicas.retain(|_, partitions| !partitions.is_empty());
    }

    /// Applies one partition's state from the controller to its replica.
    fn apply_state(
        self: &Arc<Self>,
        replica: &Arc<Replica>,
        wire: &WirePartitionState,
        brokers: &[BrokerInfo],
    ) {
        let state = match crate::wire::partition_state_from_wire(wire) {
            Ok(state) => state,
            Err(e) => {
                warn!(partition = %format!("{}-{}", replica.topic, replica.index), error = %e, "ignoring a partition state from the controller");
                return;
            }
        };
        *lock(&replica.min_insync) = (wire.min_insync_replicas as usize).max(1);
        let me = BrokerId(self.node_id);
        let mut role = lock(&replica.role);
        // Epochs only grow; a picture older than the role's epoch (a reordered answer) is
        // ignored.
        if state.leader_epoch < role.epoch() {
            return;
        }
        match state.leader {
            Some(leader) if leader == me => {
                if let Role::Leader(l) = &mut *role
                    && l.epoch == state.leader_epoch
                {
                    l.on_state(&state);
                    drop(role);
                    leader::recompute(replica, self);
                    return;
                }
                stop_role(&mut role);
                info!(partition = %format!("{}-{}", replica.topic, replica.index), epoch = state.leader_epoch.0, isr = ?state.isr, "leading");
                *role = Role::Offline {
                    epoch: state.leader_epoch,
                };
                drop(role);
                leader::become_leader(Arc::clone(self), Arc::clone(replica), state);
            }
            Some(leader) => {
                if let Role::Follower {
                    leader: l, epoch, ..
                } = &*role
                    && *l == leader.0
                    && *epoch == state.leader_epoch
                {
                    return;
                }
                stop_role(&mut role);
                let Some(address) = brokers
                    .iter()
                    .find(|b| b.id == leader.0)
                    .map(|b| b.data_address.clone())
                else {
                    warn!(partition = %format!("{}-{}", replica.topic, replica.index), leader = leader.0, "the leader is not in the metadata; not following");
                    *role = Role::Offline {
                        epoch: state.leader_epoch,
                    };
                    return;
                };
                info!(partition = %format!("{}-{}", replica.topic, replica.index), leader = leader.0, epoch = state.leader_epoch.0, "following");
                let task = tokio::spawn(follower::follow(
                    Arc::clone(self),
                    Arc::clone(replica),
                    leader.0,
                    address,
                    state.leader_epoch,
                ));
                *role = Role::Follower {
                    leader: leader.0,
                    epoch: state.leader_epoch,
                    task,
                };
            }
            None => {
                if !matches!(&*role, Role::Offline { .. }) {
                    info!(partition = %format!("{}-{}", replica.topic, replica.index), "no leader; waiting for the controller to elect one");
                }
                stop_role(&mut role);
                *role = Role::Offline {
                    epoch: state.leader_epoch,
                };
            }
        }
    }

    /// Every replica held here (for the leaders' periodic in-sync set checks).
    pub(crate) fn all(&self) -> Vec<Arc<Replica>> {
        lock(&self.replicas)
            .values()
            .flat_map(|partitions| partitions.values().cloned())
            .collect()
    }

    /// Stops every role (shutdown): followers stop fetching.
    pub fn stop(&self) {
        for replica in self.all() {
            stop_role(&mut lock(&replica.role));
        }
    }
}

/// Ends what a role runs (the follower's fetch task); the caller replaces the role.
fn stop_role(role: &mut Role) {
    if let Role::Follower { task, .. } = role {
        task.abort();
    }
    let epoch = role.epoch();
    *role = Role::Offline { epoch };
}
