//! This node's view of the cluster: its copy of the controller's metadata, and the loop that
//! keeps it current and makes the local partition logs match it.
//!
//! A broker registers with the controller and then long-polls `BrokerHeartbeat`; each newer
//! picture replaces the view and is applied to the local [`Topics`]: partitions placed here
//! are created, topics whose ids the controller lists as deleted are deleted. A topic the
//! controller does not know is left alone (the next registration offers it for adoption),
//! so a controller that lost its state never makes a broker delete data.
//!
//! The view is what Metadata, ListTopics and DescribeTopic answer from and what turns a
//! request for a partition held elsewhere into NOT_LEADER naming the owner, so all of that
//! keeps working while the controller is down.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};
use weir_proto::status;
use weir_proto::v1::{
    BrokerHeartbeatRequest, BrokerInfo, ClusterMetadata, Error, ErrorCode, LocalTopic, PlacedTopic,
    RegisterBrokerRequest,
};

use crate::controller::link::ControllerLink;
use crate::replica::ReplicaManager;
use crate::topics::{PlacementKind, TopicError, TopicMeta, Topics};
use crate::wire;

/// How long a heartbeat long poll waits for news (a third of the default lease).
const HEARTBEAT_WAIT: Duration = Duration::from_millis(2000);
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// The node's copy of the cluster metadata.
pub struct ClusterView {
    pub node_id: u32,
    metadata: RwLock<Arc<ClusterMetadata>>,
    controller_reachable: AtomicBool,
    updates: watch::Sender<u64>,
}

impl ClusterView {
    pub fn new(node_id: u32) -> Self {
        ClusterView {
            node_id,
            metadata: RwLock::new(Arc::new(ClusterMetadata::default())),
            controller_reachable: AtomicBool::new(false),
            updates: watch::channel(0).0,
        }
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

    /// Whether this broker's lease with the controller is valid (rule 12).
    pub fn lease_valid(&self) -> bool {
        self.controller_reachable()
    }

    fn replace(&self, metadata: Arc<ClusterMetadata>) {
        let version = metadata.version;
        *self.metadata.write().unwrap_or_else(|e| e.into_inner()) = metadata;
        self.updates.send_replace(version);
    }

    /// Waits until the view holds a picture (the node's first sync), up to `timeout`.
    pub async fn wait_for_first(&self, timeout: Duration) -> bool {
        let mut updates = self.updates.subscribe();
        tokio::time::timeout(timeout, updates.wait_for(|&v| v != 0))
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
    let mut known_version = 0;
    let mut failures = 0u32;
    // A third of the lease, so a broker renews it about three times per lease.
    let mut wait = HEARTBEAT_WAIT;
    loop {
        if *stop.borrow() {
            return;
        }
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
                    clean_start: true,
                };
                tokio::select! {
                    r = link.register_broker(request) => r,
                    _ = stop.changed() => return,
                }
            }
            _ => {
                let request = BrokerHeartbeatRequest {
                    broker_id: view.node_id,
                    known_version,
                    wait_ms: wait.as_millis() as u32,
                    broker_epoch: 0,
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
                    wait = Duration::from_millis(u64::from(answer.lease_ms / 3));
                }
                view.controller_reachable.store(true, Ordering::Relaxed);
                if matches!(role, SyncRole::Broker { .. }) {
                    if answer.reregister {
                        info!("the controller does not know this broker; registering again");
                        registered = false;
                        continue;
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
                }
            }
            Err(error) => {
                failures += 1;
                view.controller_reachable.store(false, Ordering::Relaxed);
                if failures == 1 {
                    warn!(error = %error.message, "cannot reach the controller; serving the partitions held here meanwhile");
                }
                if error.code == ErrorCode::UnknownMember as i32 {
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
        let here: Vec<u32> = t
            .leaders
            .iter()
            .enumerate()
            .filter(|&(_, &leader)| leader == node_id)
            .map(|(p, _)| p as u32)
            .collect();
        if here.is_empty() || topics.get(name).is_ok() {
            continue;
        }
        let Some(description) = &t.description else {
            continue;
        };
        let meta = wire::meta_from_description(description, &t.topic_id, topics.default_settings())
            .map(|meta| TopicMeta {
                local_partitions: Some(here.clone()),
                ..meta
            });
        match meta
            .map_err(|e| e.to_string())
            .and_then(|m| topics.install(m).map_err(|e| e.to_string()))
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
