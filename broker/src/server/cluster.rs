//! This node's view of the cluster: its copy of the controller's metadata, and the loop that
//! keeps it current and makes the local partition logs match it.
//!
//! A broker registers with the controller and then long-polls `BrokerHeartbeat`; each newer
//! picture replaces the view and is applied to the local [`Topics`]: partitions placed here
//! are created, partitions a reassignment moved off this broker are deleted (only once the
//! controller's metadata no longer lists this broker among their replicas, which is after the
//! move completed), topics whose ids the controller lists as deleted are deleted. A topic the
//! controller does not know is left alone (the next registration offers it for adoption),
//! so a controller that lost its state never makes a broker delete data.
//!
//! The view is what Metadata, ListTopics and DescribeTopic answer from and what turns a
//! request for a partition held elsewhere into NOT_LEADER naming the owner, so all of that
//! keeps working while the controller is down.
//!
//! Replication: every broker that is one of a partition's replicas holds it locally (the
//! leader and its followers alike); each new picture is handed to the replica roles
//! (`crate::replica::ReplicaManager::reconcile`), and the view keeps this start's broker epoch
//! ([`ClusterView::broker_epoch`]) and whether the broker's lease holds
//! ([`ClusterView::lease_valid`]).
//!
//! Invariants:
//! - The lease (rule 12) runs from when the broker *sent* the heartbeat whose answer granted it
//!   (`lease_ms > 0`), for [`crate::controller::LEASE_RATIO`] of `lease_ms`; the controller's
//!   grace runs the whole `lease_ms` from when it *received* it, so the lease lapses first. It
//!   is set only after the metadata that came before it is applied; registering again drops it.
//! - A broker without a valid lease heartbeats without waiting, so it gets one as soon as the
//!   controller grants it.
//! - `clean_start` is what the storage reported at this process's open for its first
//!   registration; later registrations of the same process report a clean start (its logs
//!   have not been cut since, and a start that was unclean already left the ISRs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};
use weir_proto::status;
use weir_proto::v1::{
    BrokerHeartbeatRequest, BrokerInfo, ClusterMetadata, Error, ErrorCode, LocalTopic, PlacedTopic,
    RegisterBrokerRequest,
};

use weir_replication::lease::LeaseConfig;

use crate::controller::lease_config;
use crate::controller::link::ControllerLink;
use crate::replica::ReplicaManager;
use crate::topics::{PlacementKind, TopicError, TopicMeta, Topics};
use crate::wire;

/// How long a heartbeat long poll waits for news before the first answer says the lease
/// (then a sixth of it, see `run_sync`).
const HEARTBEAT_WAIT: Duration = Duration::from_millis(1000);
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// The node's copy of the cluster metadata.
pub struct ClusterView {
    pub node_id: u32,
    metadata: RwLock<Arc<ClusterMetadata>>,
    controller_reachable: AtomicBool,
    updates: watch::Sender<u64>,
    /// When the heartbeat that granted the current lease was sent, and the lease's length.
    lease: Mutex<Option<(Instant, LeaseConfig)>>,
    /// This start's broker epoch (0 until registered).
    broker_epoch: AtomicU64,
    /// True once the node is in service: a broker holds its first lease, an observer its
    /// first picture.
    ready: watch::Sender<bool>,
}

impl ClusterView {
    pub fn new(node_id: u32) -> Self {
        ClusterView {
            node_id,
            metadata: RwLock::new(Arc::new(ClusterMetadata::default())),
            controller_reachable: AtomicBool::new(false),
            updates: watch::channel(0).0,
            lease: Mutex::new(None),
            broker_epoch: AtomicU64::new(0),
            ready: watch::channel(false).0,
        }
    }

    /// Whether this broker's lease with the controller holds now (rule 12): without it, it
    /// neither accepts, acknowledges nor serves as a partition's leader.
    pub fn lease_valid(&self) -> bool {
        let lease = *self.lease.lock().unwrap_or_else(|e| e.into_inner());
        lease.is_some_and(|(sent, config)| {
            config.broker_lease_valid(sent.elapsed().as_millis() as u64)
        })
    }

    /// The broker epoch the controller gave this start (0 before the first registration):
    /// what a follower's fetch carries (KIP-903).
    pub fn broker_epoch(&self) -> u64 {
        self.broker_epoch.load(Ordering::Relaxed)
    }

    /// The replicated partitions (several replicas) the metadata names this broker the leader
    /// of: what a controlled shutdown hands over.
    pub fn led_replicated(&self) -> BTreeSet<(String, u32)> {
        let me = self.node_id;
        self.current()
            .topics
            .iter()
            .filter_map(|t| Some((t.description.as_ref()?.name.clone(), t)))
            .flat_map(|(name, t)| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.replicas.len() >= 2 && s.leader == Some(me))
                    .map(move |(p, _)| (name.clone(), p as u32))
            })
            .collect()
    }

    /// A receiver that sees every newer picture's version (the view has been replaced).
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.updates.subscribe()
    }

    fn grant_lease(&self, sent: Instant, lease_ms: u32) {
        let config = lease_config(u64::from(lease_ms));
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some((sent, config));
        self.ready.send_replace(true);
    }

    fn drop_lease(&self) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn current(&self) -> Arc<ClusterMetadata> {
        self.metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn controller_reachable(&self) -> bool {
        self.controller_reachable.load(Ordering::Relaxed)
    }

    fn replace(&self, metadata: Arc<ClusterMetadata>) {
        let version = metadata.version;
        *self.metadata.write().unwrap_or_else(|e| e.into_inner()) = metadata;
        self.updates.send_replace(version);
    }

    /// Waits until the node is in service (a broker: registered, its metadata applied and its
    /// first lease granted; an observer: it holds a picture), up to `timeout`.
    pub async fn wait_for_first(&self, timeout: Duration) -> bool {
        let mut ready = self.ready.subscribe();
        tokio::time::timeout(timeout, ready.wait_for(|&r| r))
            .await
            .is_ok()
    }

    pub fn topic(&self, name: &str) -> Option<PlacedTopic> {
        self.current()
            .topics
            .iter()
            .find(|t| t.description.as_ref().is_some_and(|d| d.name == name))
            .cloned()
    }

    /// The wire error for a request about a partition this node does not hold: NOT_LEADER
    /// naming the owner, or what `local` said when the view does not know better.
    pub fn not_here(&self, topic: &str, partition: u32, local: TopicError) -> Error {
        let Some(placed) = self.topic(topic) else {
            return crate::wire::errors::wire_error(&local);
        };
        if let Some(state) = placed.partitions.get(partition as usize)
            && state.leader.is_none()
        {
            return status::error(
                ErrorCode::PartitionUnavailable,
                format!(
                    "{topic}-{partition} has no leader: none of its in-sync replicas {:?} is alive; retry once one is back",
                    state.isr
                ),
            );
        }
        // The current leader (`leaders` follows it).
        let Some(&leader) = placed.leaders.get(partition as usize) else {
            return status::error(
                ErrorCode::UnknownPartition,
                format!(
                    "topic {topic:?} has no partition {partition} (it has {})",
                    placed.leaders.len()
                ),
            );
        };
        let owner = self
            .current()
            .brokers
            .iter()
            .find(|b| b.id == leader)
            .cloned()
            .unwrap_or(BrokerInfo {
                id: leader,
                ..BrokerInfo::default()
            });
        let mut error = if leader == self.node_id {
            // Placed here, not created yet (the metadata arrived a moment ago): retry.
            status::error(
                ErrorCode::PartitionUnavailable,
                format!("{topic}-{partition} is being created on this broker; retry"),
            )
        } else {
            status::error(
                ErrorCode::NotLeader,
                format!(
                    "{topic}-{partition} is on broker {} ({}), not on broker {}",
                    owner.id, owner.address, self.node_id
                ),
            )
        };
        error.leader = Some(Box::new(owner));
        error
    }
}

/// The addresses a broker registers with: the internal pair, and the external pair (empty
/// without an external listener; see [`super::listener`]).
#[derive(Debug, Clone, Default)]
pub struct BrokerAddresses {
    pub address: String,
    pub data_address: String,
    pub external_address: String,
    pub external_data_address: String,
}

/// What a node does with the controller's metadata.
pub enum SyncRole {
    /// Registers as a broker and holds the partitions placed on it.
    Broker {
        addresses: BrokerAddresses,
        topics: Arc<Topics>,
        replicas: Arc<ReplicaManager>,
        /// Whether the logs were closed cleanly before this start (the storage's open report).
        clean_start: bool,
    },
    /// The controller-only node: mirrors the metadata, holds nothing.
    Observer,
}

/// Keeps `view` current until `stop` turns true (see the module docs).
pub async fn run_sync(
    view: Arc<ClusterView>,
    link: ControllerLink,
    role: SyncRole,
    mut stop: watch::Receiver<bool>,
) {
    let mut registered = false;
    let mut clean_start = match &role {
        SyncRole::Broker { clean_start, .. } => *clean_start,
        SyncRole::Observer => true,
    };
    let mut known_version = 0;
    let mut failures = 0u32;
    // A third of the lease, so a broker renews it about three times per lease.
    let mut wait = HEARTBEAT_WAIT;
    loop {
        if *stop.borrow() {
            return;
        }
        let sent = Instant::now();
        let answer = match (&role, registered) {
            (
                SyncRole::Broker {
                    addresses, topics, ..
                },
                false,
            ) => {
                let request = RegisterBrokerRequest {
                    broker_id: view.node_id,
                    address: addresses.address.clone(),
                    data_address: addresses.data_address.clone(),
                    external_address: addresses.external_address.clone(),
                    external_data_address: addresses.external_data_address.clone(),
                    local_topics: local_topics(topics),
                    clean_start,
                };
                tokio::select! {
                    r = link.register_broker(request) => r,
                    _ = stop.changed() => return,
                }
            }
            _ => {
                // Without a lease, ask for one at once rather than after a long poll.
                let wait = match role {
                    SyncRole::Broker { .. } if !view.lease_valid() => Duration::ZERO,
                    _ => wait,
                };
                let request = BrokerHeartbeatRequest {
                    broker_id: view.node_id,
                    known_version,
                    wait_ms: wait.as_millis() as u32,
                    broker_epoch: view.broker_epoch(),
                };
                let call = async {
                    match (&role, &link) {
                        // The controller-only node is not a broker: it reads the metadata.
                        (SyncRole::Observer, ControllerLink::Local(c)) => {
                            Ok(weir_proto::v1::BrokerHeartbeatResponse {
                                metadata: c.wait_for_change(known_version, wait).await,
                                ..Default::default()
                            })
                        }
                        _ => link.broker_heartbeat(request).await,
                    }
                };
                tokio::select! {
                    r = call => r,
                    _ = stop.changed() => return,
                }
            }
        };
        match answer {
            Ok(answer) => {
                if failures > 0 {
                    info!("controller reachable again");
                }
                failures = 0;
                if answer.lease_ms > 0 {
                    // About four renewals per lease (2/3 of lease_ms): one late answer still
                    // leaves time for the next.
                    wait = Duration::from_millis(u64::from(answer.lease_ms / 6));
                }
                view.controller_reachable.store(true, Ordering::Relaxed);
                if matches!(role, SyncRole::Broker { .. }) {
                    if answer.reregister {
                        info!(
                            "the controller does not know this start of the broker; registering again"
                        );
                        view.drop_lease();
                        registered = false;
                        continue;
                    }
                    if !registered {
                        info!(
                            broker_epoch = answer.broker_epoch,
                            "registered with the controller"
                        );
                        view.broker_epoch
                            .store(answer.broker_epoch, Ordering::Relaxed);
                        clean_start = true;
                    }
                    registered = true;
                    if let SyncRole::Broker { replicas, .. } = &role
                        && answer.broker_epoch > 0
                    {
                        replicas.set_broker_epoch(answer.broker_epoch);
                    }
                }
                if let Some(metadata) = answer.metadata {
                    known_version = metadata.version;
                    let metadata = Arc::new(metadata);
                    if let SyncRole::Broker {
                        topics, replicas, ..
                    } = &role
                    {
                        let node = view.node_id;
                        let applied = Arc::clone(&metadata);
                        let local = Arc::clone(topics);
                        let _ = tokio::task::spawn_blocking(move || apply(&local, &applied, node))
                            .await;
                        // Roles follow the partitions just created.
                        replicas.reconcile(topics, &metadata);
                    }
                    view.replace(metadata);
                    if matches!(role, SyncRole::Observer) {
                        view.ready.send_replace(true);
                    }
                }
                if answer.lease_ms > 0 && matches!(role, SyncRole::Broker { .. }) {
                    view.grant_lease(sent, answer.lease_ms);
                }
            }
            Err(error) => {
                failures += 1;
                view.controller_reachable.store(false, Ordering::Relaxed);
                let refused = [ErrorCode::Unauthenticated, ErrorCode::PermissionDenied]
                    .map(|c| c as i32)
                    .contains(&error.code);
                if failures == 1 && refused {
                    warn!(error = %error.message, "the controller refused this node's credentials: set security.broker_token (WEIR_BROKER_TOKEN) to a super user's token; serving the partitions held here meanwhile");
                } else if failures == 1 {
                    warn!(error = %error.message, "cannot reach the controller; serving the partitions held here meanwhile");
                }
                if error.code == ErrorCode::UnknownMember as i32 {
                    view.drop_lease();
                    registered = false;
                }
                tokio::select! {
                    () = tokio::time::sleep(RETRY_DELAY) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// The topics held here, as reported at registration.
fn local_topics(topics: &Topics) -> Vec<LocalTopic> {
    topics
        .list()
        .iter()
        .map(|t| LocalTopic {
            description: Some(wire::describe_topic(
                &t.meta,
                PlacementKind::Hash,
                &[],
                &BTreeMap::new(),
            )),
            partitions: t.local_partitions().map(|(p, _)| p).collect(),
            topic_id: t.meta.id(),
        })
        .collect()
}

/// Makes the local topics match `metadata` (see the module docs). Failures are logged and
/// retried with the next picture.
fn apply(topics: &Topics, metadata: &ClusterMetadata, node_id: u32) {
    let deleted: BTreeSet<&String> = metadata.deleted_topic_ids.iter().collect();
    let placed: BTreeMap<&str, &PlacedTopic> = metadata
        .topics
        .iter()
        .filter_map(|t| t.description.as_ref().map(|d| (d.name.as_str(), t)))
        .collect();
    for local in topics.list() {
        let id = local.meta.id();
        match placed.get(local.meta.name.as_str()) {
            Some(t) if t.topic_id == id => {}
            _ if deleted.contains(&id) => {
                info!(topic = %local.meta.name, "deleting a topic the controller deleted");
                if let Err(e) = topics.delete(&local.meta.name) {
                    warn!(topic = %local.meta.name, error = %e, "deleting the topic failed");
                }
            }
            Some(_) => {
                warn!(topic = %local.meta.name, "this broker holds an older topic of the same name that the controller does not know; left alone")
            }
            None => {}
        }
    }
    for (name, t) in placed {
        // Every replica holds its partition, the leader and the followers alike.
        let here: Vec<u32> = if t.partitions.is_empty() {
            t.leaders
                .iter()
                .enumerate()
                .filter(|&(_, &leader)| leader == node_id)
                .map(|(p, _)| p as u32)
                .collect()
        } else {
            t.partitions
                .iter()
                .enumerate()
                .filter(|(_, s)| s.replicas.contains(&node_id))
                .map(|(p, _)| p as u32)
                .collect()
        };
        if let Ok(local) = topics.get(name) {
            // Held already: a reassignment may have moved replicas onto or off this broker.
            if local.meta.id() == t.topic_id {
                match topics.set_local_partitions(name, &t.topic_id, &here) {
                    Ok(true) => {
                        info!(topic = %name, partitions = ?here, "the partitions held here changed")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        warn!(topic = %name, error = %e, "changing the partitions held here failed")
                    }
                }
            }
            continue;
        }
        if here.is_empty() {
            continue;
        }
        let Some(description) = &t.description else {
            continue;
        };
        // Those with several replicas are led or followed as the replica roles say, never
        // served as a single copy meanwhile (a topic created with one replica may be moving
        // onto this broker).
        let replicated: Vec<u32> = here
            .iter()
            .copied()
            .filter(|&p| {
                t.partitions
                    .get(p as usize)
                    .is_some_and(|s| s.replicas.len() >= 2)
            })
            .collect();
        let meta = wire::meta_from_description(description, &t.topic_id, topics.default_settings())
            .map(|meta| TopicMeta {
                local_partitions: Some(here.clone()),
                ..meta
            });
        match meta
            .map_err(|e| e.to_string())
            .and_then(|m| topics.install(m, &replicated).map_err(|e| e.to_string()))
        {
            Ok(_) => {
                info!(topic = %name, partitions = ?here, "created the partitions placed on this broker")
            }
            Err(e) => {
                warn!(topic = %name, error = %e, "creating the partitions placed on this broker failed")
            }
        }
    }
}
