//! The client's picture of the cluster, the one its admin, producers and consumers share:
//! every topic as routing needs it (partition count, partitioner, split keys, batch limit),
//! which broker owns each partition, and one connection per broker, so produce and fetch go
//! straight to a partition's owner.
//!
//! The picture comes from the `Metadata` RPC of the bootstrap broker (any node answers it, from
//! its copy of the controller's metadata). It is refreshed when a topic is not in it, and after
//! anyone [`invalidate`](Cluster::invalidate)s it: a NOT_LEADER answer, a connection to an owner
//! failing. Refreshes are serialized, and callers that queued behind one use its result instead
//! of fetching again; when the bootstrap broker does not answer, every other broker known is
//! tried. A picture that shows an owner down is rechecked at most every [`DOWN_RECHECK`]
//! ([`invalidate_if_older`](Cluster::invalidate_if_older)), however many partitions wait on
//! that owner.
//!
//! Invariants:
//! - Connections are made lazily and reused per address; an advertised address with an
//!   unspecified host (`0.0.0.0`, `::`) is dialled at the host the bootstrap broker was
//!   reached at.
//! - Owners to send to ([`Cluster::cached_leader`], [`Cluster::leader`]) are only taken from a
//!   picture that is not stale: a stale one is refreshed first. A topic's routing ([`Cluster::topic`]) is read from the
//!   picture as it is, stale or not, since partitions and partitioner do not change with
//!   brokers' liveness; a topic the broker called unknown is dropped from the picture
//!   ([`Cluster::forget_topic`]) so the next look-up fetches it again.
//! - Look-ups take the picture's read lock only and allocate nothing (a topic is shared as an
//!   `Arc`): the producer makes one per record and one per batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use weir_proto::topic::validate_topic_name;
use weir_proto::v1::{self, ErrorCode};

use crate::ClientError;
use crate::connection::{self, ConnectOptions};
use crate::partitioner::{Partitioner, PartitionerKind, Route};

/// How long a metadata refresh may take per broker tried.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// How often partitions waiting on an owner the picture shows down have it rechecked.
pub(crate) const DOWN_RECHECK: Duration = Duration::from_millis(500);

/// A partition's owner, ready to be called. Cheap to clone (shared strings, a channel handle):
/// the producer looks one up for every batch.
#[derive(Debug, Clone)]
pub(crate) struct Leader {
    pub id: u32,
    pub address: Arc<str>,
    /// Its data port, resolved; `None` if it advertises none.
    pub data_address: Option<Arc<str>>,
    pub grpc: crate::connection::Grpc,
    /// The partition's leader epoch in the picture; `None` for a partition without one (no
    /// replication). Consumers quote it (KIP-320, `FetchRequest.current_leader_epoch`).
    pub leader_epoch: Option<u32>,
}

/// A topic as the picture knows it: what routes its records, and who owns each partition.
/// Shared (`Arc`) so a look-up copies a pointer, not the topic.
#[derive(Debug)]
pub(crate) struct TopicInfo {
    /// The topic's name, shared by its batches and delivery results.
    pub name: Arc<str>,
    /// What its records are spread over (sticky routing cycles through all of them).
    pub partition_count: u32,
    /// The topic's own partitioner, or why this client cannot route the topic (a partitioner
    /// it does not know, no partitions): kept so that sending to it says so.
    partitioner: Result<Partitioner, ClientError>,
    /// The largest batch the topic accepts, if the broker says.
    pub max_batch_bytes: Option<u32>,
    /// The owner (broker id) of each partition.
    owners: Vec<u32>,
    /// Each partition's leader epoch (0: none, a partition without replication).
    leader_epochs: Vec<u32>,
}

impl TopicInfo {
    fn from_proto(t: v1::TopicDescription) -> Self {
        let partitioner = PartitionerKind::from_proto(t.partitioner)
            .and_then(|kind| Partitioner::new(kind, t.partition_count, t.split_keys));
        TopicInfo {
            owners: t.partitions.iter().map(|p| p.leader_id).collect(),
            leader_epochs: t.partitions.iter().map(|p| p.leader_epoch).collect(),
            name: t.name.into(),
            partition_count: t.partition_count,
            partitioner,
            max_batch_bytes: t.config.and_then(|c| c.max_batch_bytes),
        }
    }

    /// Where a record with `key` and optional explicit `partition` goes: by `kind` (a
    /// producer's override) over the topic's partitions and split keys, or by the topic's own
    /// partitioner. Fails with UNKNOWN_PARTITION for a partition the topic does not have.
    pub fn route(
        &self,
        kind: Option<PartitionerKind>,
        key: Option<&[u8]>,
        partition: Option<u32>,
    ) -> Result<Route, ClientError> {
        let partitioner = self.partitioner.as_ref().map_err(Clone::clone)?;
        match partition {
            Some(p) if p >= partitioner.partitions() => Err(ClientError::refused(
                ErrorCode::UnknownPartition,
                format!(
                    "topic {} has partitions 0..{}; there is no partition {p}",
                    self.name,
                    partitioner.partitions()
                ),
            )),
            Some(p) => Ok(Route::Partition(p)),
            None => Ok(partitioner.route_as(kind.unwrap_or(partitioner.kind()), key)),
        }
    }
}

#[derive(Debug, Clone)]
struct Broker {
    address: Arc<str>,
    data_address: Option<Arc<str>>,
    alive: bool,
    /// The connection to `address`, made when the picture is installed (lazily connected),
    /// or why its address cannot be dialled.
    grpc: Result<crate::connection::Grpc, ClientError>,
}

#[derive(Debug, Default)]
struct View {
    brokers: BTreeMap<u32, Broker>,
    topics: HashMap<String, Arc<TopicInfo>>,
    stale: bool,
    /// When it was fetched (`None`: never).
    fetched_at: Option<std::time::Instant>,
}

/// See the module docs. Shared (`Arc`) by a client's admin, producers and consumers.
#[derive(Debug)]
pub(crate) struct Cluster {
    bootstrap: crate::connection::Grpc,
    bootstrap_address: String,
    bootstrap_host: String,
    options: ConnectOptions,
    view: RwLock<View>,
    connections: Mutex<HashMap<String, crate::connection::Grpc>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl Cluster {
    pub fn new(
        bootstrap: crate::connection::Grpc,
        bootstrap_address: &str,
        bootstrap_host: String,
        options: ConnectOptions,
    ) -> Self {
        let mut connections = HashMap::new();
        connections.insert(bootstrap_address.to_owned(), bootstrap.clone());
        Cluster {
            bootstrap,
            bootstrap_address: bootstrap_address.to_owned(),
            bootstrap_host,
            options,
            view: RwLock::new(View {
                stale: true,
                ..View::default()
            }),
            connections: Mutex::new(connections),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The connection the client was made with.
    /// The token every connection presents, if any.
    pub fn token(&self) -> Option<&str> {
        self.options.token.as_deref()
    }

    pub fn bootstrap(&self) -> crate::connection::Grpc {
        self.bootstrap.clone()
    }

    /// Marks the picture stale: the next look-up refreshes it.
    pub fn invalidate(&self) {
        self.view.write().unwrap_or_else(|e| e.into_inner()).stale = true;
    }

    /// Marks the picture stale if it was fetched more than `age` ago: for rechecking what it
    /// says (an owner down) without a refresh per waiting partition.
    pub fn invalidate_if_older(&self, age: Duration) {
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        if view.fetched_at.is_none_or(|at| at.elapsed() >= age) {
            view.stale = true;
        }
    }

    /// True if the picture shows `topic`'s `partition` on a broker that is down (its lease
    /// lapsed), as opposed to an owner that is up but not answering as expected.
    pub fn owner_known_down(&self, topic: &str, partition: u32) -> bool {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        view.topics
            .get(topic)
            .and_then(|t| t.owners.get(partition as usize))
            .and_then(|id| view.brokers.get(id))
            .is_some_and(|broker| !broker.alive)
    }

    /// Fetches the picture again (see the module docs).
    pub async fn refresh(&self) -> Result<(), ClientError> {
        let asked_at = std::time::Instant::now();
        let _one_at_a_time = self.refreshing.lock().await;
        {
            // Queued behind a refresh that finished after this one was asked for: use it.
            let view = self.view.read().unwrap_or_else(|e| e.into_inner());
            if !view.stale && view.fetched_at.is_some_and(|at| at >= asked_at) {
                return Ok(());
            }
        }
        let mut candidates = vec![self.bootstrap.clone()];
        {
            let view = self.view.read().unwrap_or_else(|e| e.into_inner());
            for broker in view.brokers.values() {
                if *broker.address != *self.bootstrap_address
                    && let Ok(c) = &broker.grpc
                {
                    candidates.push(c.clone());
                }
            }
        }
        let mut last_error = None;
        for mut grpc in candidates {
            let call = grpc.metadata(v1::MetadataRequest { topics: Vec::new() });
            match tokio::time::timeout(REFRESH_TIMEOUT, call).await {
                Ok(Ok(response)) => {
                    self.install(response.into_inner());
                    return Ok(());
                }
                Ok(Err(status)) => last_error = Some(ClientError::from(status)),
                Err(_) => {
                    last_error = Some(ClientError::Timeout {
                        what: "Metadata",
                        after: REFRESH_TIMEOUT,
                    })
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ClientError::Connect {
            addr: self.bootstrap_address.clone(),
            reason: "no broker answered".into(),
        }))
    }

    fn install(&self, metadata: v1::MetadataResponse) {
        let brokers = metadata
            .brokers
            .into_iter()
            .map(|b| {
                let address = resolve_advertised(&b.address, &self.bootstrap_host)
                    .unwrap_or_else(|| self.bootstrap_address.clone());
                let broker = Broker {
                    grpc: self.connection(&address),
                    address: address.into(),
                    data_address: resolve_advertised(&b.data_address, &self.bootstrap_host)
                        .map(Into::into),
                    alive: b.alive,
                };
                (b.id, broker)
            })
            .collect();
        let topics = metadata
            .topics
            .into_iter()
            .map(|t| (t.name.clone(), Arc::new(TopicInfo::from_proto(t))))
            .collect();
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = View {
            brokers,
            topics,
            stale: false,
            fetched_at: Some(std::time::Instant::now()),
        };
    }

    /// The owner of a partition from the picture as it is: `None` when the picture is stale
    /// or does not know the topic (refresh, then ask again).
    pub fn cached_leader(
        &self,
        topic: &str,
        partition: u32,
    ) -> Option<Result<Leader, ClientError>> {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        if view.stale {
            return None;
        }
        let info = view.topics.get(topic)?;
        let owners = &info.owners;
        let Some(&id) = owners.get(partition as usize) else {
            return Some(Err(ClientError::refused(
                ErrorCode::UnknownPartition,
                format!(
                    "topic {topic} has partitions 0..{}; there is no partition {partition}",
                    owners.len()
                ),
            )));
        };
        let Some(broker) = view.brokers.get(&id) else {
            return Some(Err(ClientError::refused(
                ErrorCode::PartitionUnavailable,
                format!("{topic}-{partition} is on broker {id}, which is not registered"),
            )));
        };
        if !broker.alive {
            return Some(Err(ClientError::refused(
                ErrorCode::PartitionUnavailable,
                format!(
                    "{topic}-{partition} is on broker {id} ({}), which is down; it comes back with its data when the broker does",
                    broker.address
                ),
            )));
        }
        Some(broker.grpc.clone().map(|grpc| {
            Leader {
                id,
                address: Arc::clone(&broker.address),
                data_address: broker.data_address.clone(),
                grpc,
                leader_epoch: info
                    .leader_epochs
                    .get(partition as usize)
                    .copied()
                    .filter(|&e| e > 0),
            }
        }))
    }

    /// The owner of a partition, refreshing the picture if it does not know the topic. Fails
    /// with UNKNOWN_TOPIC for a topic the cluster does not have, PARTITION_UNAVAILABLE (with
    /// the owner named) for one whose broker is down.
    pub async fn leader(&self, topic: &str, partition: u32) -> Result<Leader, ClientError> {
        if let Some(found) = self.cached_leader(topic, partition) {
            return found;
        }
        self.refresh().await?;
        self.cached_leader(topic, partition)
            .unwrap_or_else(|| Err(unknown_topic(topic)))
    }

    /// `topic` as the picture knows it (stale or not, see the module docs), fetching the
    /// picture first when it does not know the topic. Fails with
    /// [`ClientError::InvalidTopicName`] before asking anyone, or UNKNOWN_TOPIC for a topic the
    /// cluster does not have.
    pub async fn topic(&self, topic: &str) -> Result<Arc<TopicInfo>, ClientError> {
        if let Some(known) = self.known_topic(topic) {
            return Ok(known);
        }
        validate_topic_name(topic)?;
        self.refresh().await?;
        self.known_topic(topic).ok_or_else(|| unknown_topic(topic))
    }

    fn known_topic(&self, topic: &str) -> Option<Arc<TopicInfo>> {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        view.topics.get(topic).cloned()
    }

    /// Drops `topic` from the picture, so the next look-up fetches it again: a broker said it
    /// (or a partition of it) is unknown, so it was deleted or recreated with another layout.
    pub fn forget_topic(&self, topic: &str) {
        self.view
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .topics
            .remove(topic);
    }

    /// The partition count of `topic` in the picture (refreshing when unknown).
    pub async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        let known = |view: &View| view.topics.get(topic).map(|t| t.owners.len() as u32);
        {
            let view = self.view.read().unwrap_or_else(|e| e.into_inner());
            if !view.stale
                && let Some(n) = known(&view)
            {
                return Ok(n);
            }
        }
        self.refresh().await?;
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        known(&view).ok_or_else(|| {
            ClientError::refused(ErrorCode::UnknownTopic, format!("unknown topic {topic:?}"))
        })
    }

    /// The connection to a broker at an address as the cluster advertises it.
    pub fn connection_to_advertised(
        &self,
        advertised: &str,
    ) -> Result<crate::connection::Grpc, ClientError> {
        let address = resolve_advertised(advertised, &self.bootstrap_host)
            .unwrap_or_else(|| self.bootstrap_address.clone());
        self.connection(&address)
    }

    /// The TLS every connection uses, if any (data ports dial with it too).
    pub fn tls(&self) -> Option<&crate::connection::ClientTls> {
        self.options.tls.as_ref()
    }

    /// The connection to `address` (made lazily, then reused).
    pub fn connection(&self, address: &str) -> Result<crate::connection::Grpc, ClientError> {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = connections.get(address) {
            return Ok(c.clone());
        }
        let c = connection::lazy(address, &self.options)?;
        connections.insert(address.to_owned(), c.clone());
        Ok(c)
    }
}

fn unknown_topic(topic: &str) -> ClientError {
    ClientError::refused(
        ErrorCode::UnknownTopic,
        format!(
            "unknown topic {topic:?}; create it with `weir topic create {topic} --partitions N`"
        ),
    )
}

/// Where to dial an advertised address: as is, or with an unspecified host (`0.0.0.0`, `::`)
/// replaced by `reached_host`, the host the client reached the cluster at. `None` if empty.
pub(crate) fn resolve_advertised(advertised: &str, reached_host: &str) -> Option<String> {
    if advertised.is_empty() {
        return None;
    }
    let (host, port) = advertised.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host {
        "0.0.0.0" | "::" | "" => {
            if reached_host.contains(':') && !reached_host.starts_with('[') {
                Some(format!("[{reached_host}]:{port}"))
            } else {
                Some(format!("{reached_host}:{port}"))
            }
        }
        _ => Some(advertised.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(partitioner: v1::Partitioner) -> TopicInfo {
        TopicInfo::from_proto(v1::TopicDescription {
            name: "orders".into(),
            partition_count: 4,
            partitioner: partitioner as i32,
            config: Some(v1::TopicConfig {
                max_batch_bytes: Some(1 << 20),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn explicit_partitions_override_and_are_checked() {
        let routing = topic(v1::Partitioner::Hash);
        assert_eq!(routing.max_batch_bytes, Some(1 << 20));
        assert_eq!(
            routing.route(None, Some(b"k"), Some(3)).unwrap(),
            Route::Partition(3)
        );
        let err = routing.route(None, None, Some(4)).unwrap_err();
        assert_eq!(err.code(), Some(v1::ErrorCode::UnknownPartition));
    }

    #[test]
    fn the_producer_may_override_the_partitioner() {
        let routing = topic(v1::Partitioner::Hash);
        assert!(matches!(
            routing.route(None, Some(b"k"), None).unwrap(),
            Route::Partition(_)
        ));
        assert_eq!(
            routing
                .route(Some(PartitionerKind::RoundRobin), Some(b"k"), None)
                .unwrap(),
            Route::Sticky
        );
    }

    #[test]
    fn a_topic_this_client_cannot_route_says_why_on_send() {
        let mut description = v1::TopicDescription {
            name: "orders".into(),
            partition_count: 2,
            partitioner: 99,
            ..Default::default()
        };
        let unknown = TopicInfo::from_proto(description.clone());
        assert!(matches!(
            unknown.route(None, None, Some(0)),
            Err(ClientError::InvalidArgument(_))
        ));
        description.partitioner = v1::Partitioner::Hash as i32;
        description.partition_count = 0;
        assert!(
            TopicInfo::from_proto(description)
                .route(None, None, None)
                .is_err()
        );
    }

    #[test]
    fn unspecified_hosts_take_the_grpc_host() {
        assert_eq!(
            resolve_advertised("0.0.0.0:7071", "broker-1").as_deref(),
            Some("broker-1:7071")
        );
        assert_eq!(
            resolve_advertised("[::]:7071", "::1").as_deref(),
            Some("[::1]:7071")
        );
        assert_eq!(
            resolve_advertised("10.0.0.5:7071", "localhost").as_deref(),
            Some("10.0.0.5:7071")
        );
        assert_eq!(resolve_advertised("", "localhost"), None);
    }
}
