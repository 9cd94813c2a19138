//! The controller: the cluster's metadata, owned by one process (embedded in a single-node
//! broker by default, or alone with `--role controller`). Raft-free: there is exactly one.
//!
//! It owns brokers (registration, heartbeat leases), topics (partition counts, partitioner,
//! split keys, settings) and their placement (partition -> broker), consumer groups (members,
//! generations, assignments) and committed offsets. Everything but leases and member
//! heartbeat times is journaled ([`journal`]) before it is acknowledged, so a restarted
//! controller recovers it all.
//!
//! - [`state`]: the persisted state and its events; [`journal`]: their log and snapshots.
//! - [`placement`]: partition -> broker; [`assignor`]: partition -> group member;
//!   [`handover`]: when a member may start on a partition another member had.
//! - [`link`]: how a node reaches the controller (in process, or over gRPC).
//!
//! Brokers learn the metadata by long-polling [`Controller::broker_heartbeat`]; the reply is
//! the whole picture whenever its version differs from the broker's. Metadata changes
//! (create, delete) wait until every live broker has acknowledged the new version (bounded by
//! [`ACK_WAIT`]), so a topic is usable on every broker once its creation returns.
//!
//! Invariants:
//! - One mutex serializes every change; an event is durable before the state shows it.
//! - The metadata version is `(incarnation << 32) | counter`: it changes with every change of
//!   what brokers see (brokers, liveness, topics), and a restarted controller never reuses one
//!   a broker may hold.
//! - A group's offsets are only committed by its current generation's members, or from outside
//!   while it has none.
//! - A partition is given to a group member only once no other member may still be reading it
//!   ([`handover`]).

pub mod assignor;
pub mod handover;
pub mod journal;
pub mod link;
pub mod placement;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tracing::{info, warn};
use weir_proto::status;
use weir_proto::v1::{
    BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerInfo, ClusterMetadata,
    CommitOffsetsRequest, CommitOffsetsResponse, CommittedOffset, CreateTopicRequest,
    DeleteTopicRequest, DeleteTopicResponse, DescribeGroupRequest, Error, ErrorCode,
    FetchOffsetsRequest, FetchOffsetsResponse, GroupAssignment, GroupDescription,
    GroupHeartbeatRequest, GroupMember, GroupSummary, JoinGroupRequest, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommit, PlacedTopic,
    RegisterBrokerRequest, ResetOffsetsRequest, TopicDescription, TopicPartitions,
};

use crate::group_strategy::AssignorKind;
use crate::topics::{NewTopic, PlacementKind, TopicSettings, random_u64};
use crate::wire;
use assignor::{AssignInput, Slot};
use journal::Journal;
use state::{CommitRecord, ControllerState, Event, GroupRecord, MemberRecord, TopicRecord};
use weir_storage::fs::now_ms;
use weir_storage::{LogConfig, StorageError};

/// How long a metadata change waits for live brokers to acknowledge it.
pub const ACK_WAIT: Duration = Duration::from_secs(5);
/// The longest a broker heartbeat is held open.
const MAX_HEARTBEAT_WAIT: Duration = Duration::from_secs(5);
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_SESSION_TIMEOUT: Duration = Duration::from_millis(500);
const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_GROUP_NAME: usize = 255;
/// How often a member that waits for partitions another member is letting go of heartbeats.
const HANDOVER_HEARTBEAT_MS: u32 = 200;

/// The controller's settings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// A broker not heard from for this long is marked down.
    pub broker_lease: Duration,
    /// Settings of topics created without their own.
    pub topic_defaults: LogConfig,
    /// A topic's max_batch_bytes must fit in a request of this size (with 4 KiB to spare).
    pub max_request_bytes: u64,
}

/// What is not journaled: leases, liveness, heartbeat times, acknowledged versions.
struct Liveness {
    lease_until: HashMap<u32, Instant>,
    alive: BTreeSet<u32>,
    acked_version: HashMap<u32, u64>,
    /// (group, member) -> last heard from.
    member_seen: HashMap<(String, String), Instant>,
    /// What group members may still be reading (the revocation barrier).
    holdings: handover::Holdings,
    counter: u64,
}

impl Liveness {
    /// A member left its group or was evicted: it is no longer watched and holds nothing.
    fn forget_member(&mut self, group: &str, member: &str) {
        self.member_seen
            .remove(&(group.to_owned(), member.to_owned()));
        self.holdings.release(group, member);
    }
}

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
}

/// The controller (see the module docs).
pub struct Controller {
    inner: Mutex<Inner>,
    config: ControllerConfig,
    incarnation: u64,
    version: watch::Sender<u64>,
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
            lease_until: HashMap::new(),
            alive: BTreeSet::new(),
            acked_version: HashMap::new(),
            member_seen: HashMap::new(),
            holdings: handover::Holdings::default(),
            counter: 1,
        };
        for &id in state.brokers.keys() {
            live.lease_until.insert(id, now + config.broker_lease);
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

    /// The metadata as brokers hold it.
    pub fn metadata(&self) -> ClusterMetadata {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.metadata_locked(&inner)
    }

    fn metadata_locked(&self, inner: &Inner) -> ClusterMetadata {
        let brokers = self.broker_infos(inner);
        let topics = inner
            .state
            .topics
            .values()
            .map(|t| PlacedTopic {
                description: Some(wire::describe_topic(
                    &t.meta,
                    t.placement,
                    &t.leaders,
                    &brokers,
                )),
                topic_id: t.meta.id(),
                leaders: t.leaders.clone(),
            })
            .collect();
        ClusterMetadata {
            version: self.current_version(inner.live.counter),
            brokers: brokers.into_values().collect(),
            topics,
            deleted_topic_ids: inner.state.deleted_topic_ids.clone(),
        }
    }

    fn broker_infos(&self, inner: &Inner) -> BTreeMap<u32, BrokerInfo> {
        inner
            .state
            .brokers
            .values()
            .map(|b| {
                (
                    b.id,
                    BrokerInfo {
                        id: b.id,
                        address: b.address.clone(),
                        data_address: b.data_address.clone(),
                        alive: inner.live.alive.contains(&b.id),
                        external_address: b.external_address.clone(),
                        external_data_address: b.external_data_address.clone(),
                    },
                )
            })
            .collect()
    }

    fn heartbeat_answer(&self, inner: &Inner, with_metadata: bool) -> BrokerHeartbeatResponse {
        BrokerHeartbeatResponse {
            metadata: with_metadata.then(|| self.metadata_locked(inner)),
            reregister: false,
            lease_ms: self.config.broker_lease.as_millis() as u32,
        }
    }

    /// A broker (re)announces itself; topics it holds that the controller does not know (and
    /// that were not deleted) are adopted as placed on it.
    pub async fn register_broker(
        self: &Arc<Self>,
        req: RegisterBrokerRequest,
    ) -> Result<BrokerHeartbeatResponse> {
        if req.address.is_empty() {
            return Err(refuse(
                ErrorCode::InvalidRequest,
                "a broker must register with its address",
            ));
        }
        self.change(move |this, inner| {
            let mut events = Vec::new();
            let record = state::BrokerRecord {
                id: req.broker_id,
                address: req.address.clone(),
                data_address: req.data_address.clone(),
                external_address: req.external_address.clone(),
                external_data_address: req.external_data_address.clone(),
            };
            if inner.state.brokers.get(&req.broker_id) != Some(&record) {
                events.push(Event::BrokerRegistered(record));
            }
            let defaults = TopicSettings::from_log_config(&this.config.topic_defaults);
            for local in &req.local_topics {
                let Some(d) = &local.description else { continue };
                if inner.state.topics.contains_key(&d.name)
                    || inner.state.deleted_topic_ids.contains(&local.topic_id)
                    || events.iter().any(|e| matches!(e, Event::TopicCreated(t) if t.meta.name == d.name))
                {
                    continue;
                }
                let all: Vec<u32> = (0..d.partition_count).collect();
                if local.partitions != all {
                    warn!(topic = %d.name, broker = req.broker_id, "a broker holds part of a topic the controller does not know; left alone");
                    continue;
                }
                match wire::meta_from_description(d, &local.topic_id, defaults.clone()) {
                    Ok(meta) => {
                        info!(topic = %d.name, broker = req.broker_id, "adopting a topic the broker holds");
                        events.push(Event::TopicCreated(TopicRecord {
                            meta,
                            placement: PlacementKind::Hash,
                            leaders: vec![req.broker_id; d.partition_count as usize],
                        }));
                    }
                    Err(e) => warn!(topic = %d.name, error = %e, "cannot adopt a reported topic"),
                }
            }
            let changed = !events.is_empty();
            inner.record(events)?;
            let newly_alive = inner.live.alive.insert(req.broker_id);
            inner
                .live
                .lease_until
                .insert(req.broker_id, Instant::now() + this.config.broker_lease);
            if changed || newly_alive {
                info!(broker = req.broker_id, address = %req.address, "broker registered");
                this.bump(&mut inner.live);
            }
            Ok(this.heartbeat_answer(inner, true))
        })
        .await
    }

    /// A broker's lease renewal and metadata long poll (see the module docs).
    pub async fn broker_heartbeat(
        &self,
        req: BrokerHeartbeatRequest,
    ) -> Result<BrokerHeartbeatResponse> {
        let mut version = self.version.subscribe();
        {
            let mut inner = self.lock()?;
            if !inner.state.brokers.contains_key(&req.broker_id) {
                return Ok(BrokerHeartbeatResponse {
                    reregister: true,
                    ..BrokerHeartbeatResponse::default()
                });
            }
            let inner = &mut *inner;
            inner
                .live
                .lease_until
                .insert(req.broker_id, Instant::now() + self.config.broker_lease);
            inner
                .live
                .acked_version
                .insert(req.broker_id, req.known_version);
            if inner.live.alive.insert(req.broker_id) {
                info!(broker = req.broker_id, "broker is back");
                self.bump(&mut inner.live);
            }
            self.acked.notify_waiters();
            if req.known_version != self.current_version(inner.live.counter) {
                return Ok(self.heartbeat_answer(inner, true));
            }
        }
        let wait = Duration::from_millis(u64::from(req.wait_ms)).min(MAX_HEARTBEAT_WAIT);
        let _ = tokio::time::timeout(wait, version.wait_for(|&v| v != req.known_version)).await;
        let inner = self.lock()?;
        let changed = req.known_version != self.current_version(inner.live.counter);
        Ok(self.heartbeat_answer(&inner, changed))
    }

    /// The metadata once its version differs from `known` (at once if it already does), or
    /// `None` after `wait` without a change.
    pub async fn wait_for_change(&self, known: u64, wait: Duration) -> Option<ClusterMetadata> {
        let mut version = self.version.subscribe();
        let _ = tokio::time::timeout(wait, version.wait_for(|&v| v != known)).await;
        let metadata = self.metadata();
        (metadata.version != known).then_some(metadata)
    }

    /// Waits (up to [`ACK_WAIT`]) until every live broker holds `version` or newer.
    async fn wait_for_acks(&self, version: u64) {
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        loop {
            let notified = self.acked.notified();
            let pending: Vec<u32> = {
                let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                inner
                    .live
                    .alive
                    .iter()
                    .copied()
                    .filter(|id| {
                        let acked = inner.live.acked_version.get(id).copied().unwrap_or(0);
                        acked >> 32 != version >> 32 || acked < version
                    })
                    .collect()
            };
            if pending.is_empty() {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                warn!(
                    ?pending,
                    "brokers did not acknowledge a metadata change in time"
                );
                return;
            }
        }
    }

    /// Periodic housekeeping: expires broker leases and silent group members.
    pub async fn tick(self: &Arc<Self>) {
        let result = self
            .change(|this, inner| {
                let now = Instant::now();
                let lapsed: Vec<u32> = inner
                    .live
                    .alive
                    .iter()
                    .copied()
                    .filter(|id| inner.live.lease_until.get(id).is_none_or(|&t| t <= now))
                    .collect();
                for id in &lapsed {
                    warn!(
                        broker = id,
                        "broker lease lapsed; its partitions are unavailable"
                    );
                    inner.live.alive.remove(id);
                }
                if !lapsed.is_empty() {
                    this.bump(&mut inner.live);
                }
                let mut events = Vec::new();
                for (group, record) in &inner.state.groups {
                    let expired: Vec<String> = record
                        .members
                        .iter()
                        .filter(|(id, m)| {
                            let timeout = Duration::from_millis(u64::from(m.session_timeout_ms));
                            inner
                                .live
                                .member_seen
                                .get(&(group.clone(), (*id).clone()))
                                .is_none_or(|&seen| seen + timeout <= now)
                        })
                        .map(|(id, _)| id.clone())
                        .collect();
                    if expired.is_empty() {
                        continue;
                    }
                    info!(%group, members = ?expired, "group members timed out; rebalancing");
                    let mut record = record.clone();
                    for id in &expired {
                        record.members.remove(id);
                        inner.live.forget_member(group, id);
                    }
                    events.push(group_change(group, record, &inner.state));
                }
                inner.record(events)
            })
            .await;
        if let Err(e) = result
            && e.code != ErrorCode::ControllerUnavailable as i32
        {
            warn!(error = %e.message, "controller housekeeping failed");
        }
    }

    pub async fn create_topic(
        self: &Arc<Self>,
        req: CreateTopicRequest,
    ) -> Result<TopicDescription> {
        let invalid = |m: String| refuse(ErrorCode::InvalidRequest, m);
        let partitioner = wire::partitioner_from_wire(req.partitioner).map_err(invalid)?;
        let placement = wire::placement_from_wire(req.placement).map_err(invalid)?;
        let defaults = TopicSettings::from_log_config(&self.config.topic_defaults);
        let settings =
            wire::settings_from_wire(defaults, req.config.unwrap_or_default()).map_err(invalid)?;
        if u64::from(settings.max_batch_bytes) + 4096 > self.config.max_request_bytes {
            return Err(invalid(format!(
                "max_batch_bytes {} does not fit in the brokers' max_request_bytes {} (with 4 KiB to spare)",
                settings.max_batch_bytes, self.config.max_request_bytes
            )));
        }
        let new = NewTopic {
            name: req.name,
            partitions: req.partitions,
            partitioner,
            split_keys: req.split_keys.into_iter().map(|k| k.to_vec()).collect(),
            settings,
        };
        let meta = new
            .into_meta(&self.config.topic_defaults)
            .map_err(|e| crate::wire::errors::wire_error(&e))?;
        let (version, description) = self
            .change(move |this, inner| {
                if inner.state.topics.contains_key(&meta.name) {
                    return Err(refuse(
                        ErrorCode::TopicExists,
                        format!("topic {:?} already exists", meta.name),
                    ));
                }
                let live: Vec<u32> = inner.live.alive.iter().copied().collect();
                if live.is_empty() {
                    return Err(refuse(
                        ErrorCode::PartitionUnavailable,
                        "no broker is alive to hold the partitions; start a broker and retry",
                    ));
                }
                let leaders = placement::place(placement, &meta.name, meta.partitions, &live);
                info!(topic = %meta.name, partitions = meta.partitions, ?placement, ?leaders, "creating topic");
                let record = TopicRecord {
                    meta,
                    placement,
                    leaders,
                };
                let description = wire::describe_topic(
                    &record.meta,
                    record.placement,
                    &record.leaders,
                    &this.broker_infos(inner),
                );
                inner.record(vec![Event::TopicCreated(record)])?;
                Ok((this.bump(&mut inner.live), description))
            })
            .await?;
        self.wait_for_acks(version).await;
        Ok(description)
    }

    pub async fn delete_topic(
        self: &Arc<Self>,
        req: DeleteTopicRequest,
    ) -> Result<DeleteTopicResponse> {
        let version = self
            .change(move |this, inner| {
                let Some(topic) = inner.state.topics.get(&req.name) else {
                    return Err(refuse(
                        ErrorCode::UnknownTopic,
                        format!("unknown topic {:?}", req.name),
                    ));
                };
                let event = Event::TopicDeleted {
                    name: req.name.clone(),
                    topic_id: topic.meta.id(),
                };
                inner.record(vec![event])?;
                info!(topic = %req.name, "deleted topic");
                Ok(this.bump(&mut inner.live))
            })
            .await?;
        self.wait_for_acks(version).await;
        Ok(DeleteTopicResponse {})
    }

    pub async fn join_group(self: &Arc<Self>, req: JoinGroupRequest) -> Result<GroupAssignment> {
        check_group_name(&req.group)?;
        if req.topics.is_empty() {
            return Err(refuse(
                ErrorCode::InvalidRequest,
                "a member must subscribe to at least one topic",
            ));
        }
        let assignor = wire::assignor_from_wire(req.assignor)
            .map_err(|m| refuse(ErrorCode::InvalidRequest, m))?;
        let session = match req.session_timeout_ms {
            0 => DEFAULT_SESSION_TIMEOUT,
            ms => {
                Duration::from_millis(u64::from(ms)).clamp(MIN_SESSION_TIMEOUT, MAX_SESSION_TIMEOUT)
            }
        };
        self.change(move |_, inner| {
            let mut record = inner
                .state
                .groups
                .get(&req.group)
                .cloned()
                .unwrap_or(GroupRecord {
                    generation: 0,
                    assignor,
                    members: BTreeMap::new(),
                    partition_counts: BTreeMap::new(),
                });
            if record.members.is_empty() {
                record.assignor = assignor;
            } else if record.assignor != assignor {
                return Err(refuse(
                    ErrorCode::InvalidRequest,
                    format!(
                        "group {:?} uses the {:?} assignor; a member asked for {:?}",
                        req.group, record.assignor, assignor
                    ),
                ));
            }
            let member_id = if req.member_id.is_empty() {
                let label = if req.client_id.is_empty() {
                    "member"
                } else {
                    &req.client_id
                };
                format!("{label}-{:08x}", random_u64() as u32)
            } else {
                req.member_id.clone()
            };
            let member = MemberRecord {
                client_id: req.client_id.clone(),
                topics: req.topics.iter().cloned().collect(),
                session_timeout_ms: session.as_millis() as u32,
                assignment: record
                    .members
                    .get(&member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default(),
            };
            let changed = record.members.get(&member_id) != Some(&member);
            record.members.insert(member_id.clone(), member);
            inner
                .live
                .member_seen
                .insert((req.group.clone(), member_id.clone()), Instant::now());
            let needs_rebalance =
                changed || record.partition_counts != subscribed_counts(&record, &inner.state);
            if needs_rebalance {
                let event = group_change(&req.group, record, &inner.state);
                inner.record(vec![event])?;
            }
            answer_member(inner, &req.group, &member_id)
        })
        .await
    }

    pub async fn group_heartbeat(
        self: &Arc<Self>,
        req: GroupHeartbeatRequest,
    ) -> Result<GroupAssignment> {
        self.change(move |_, inner| {
            let record = member_group(&inner.state, &req.group, &req.member_id)?;
            inner
                .live
                .member_seen
                .insert((req.group.clone(), req.member_id.clone()), Instant::now());
            if req.reports_owned {
                let owned = req
                    .owned
                    .iter()
                    .flat_map(|tp| tp.partitions.iter().map(|&p| (tp.topic.clone(), p)));
                inner
                    .live
                    .holdings
                    .report(&req.group, &req.member_id, req.report_seq, owned);
            } else {
                // A client that does not say what it holds may hold anything.
                inner.live.holdings.recover(&req.group, &req.member_id);
            }
            if record.partition_counts != subscribed_counts(record, &inner.state) {
                info!(group = %req.group, "partition counts changed; rebalancing");
                let event = group_change(&req.group, record.clone(), &inner.state);
                inner.record(vec![event])?;
            }
            answer_member(inner, &req.group, &req.member_id)
        })
        .await
    }

    pub async fn leave_group(
        self: &Arc<Self>,
        req: LeaveGroupRequest,
    ) -> Result<LeaveGroupResponse> {
        self.change(move |_, inner| {
            let mut record = member_group(&inner.state, &req.group, &req.member_id)?.clone();
            record.members.remove(&req.member_id);
            inner.live.forget_member(&req.group, &req.member_id);
            info!(group = %req.group, member = %req.member_id, "member left; rebalancing");
            let event = group_change(&req.group, record, &inner.state);
            inner.record(vec![event])?;
            Ok(LeaveGroupResponse {})
        })
        .await
    }

    pub async fn commit_offsets(
        self: &Arc<Self>,
        req: CommitOffsetsRequest,
    ) -> Result<CommitOffsetsResponse> {
        check_group_name(&req.group)?;
        self.change(move |_, inner| {
            if req.member_id.is_empty() {
                let n = inner.state.groups.get(&req.group).map_or(0, |g| g.members.len());
                if n > 0 {
                    return Err(refuse(
                        ErrorCode::GroupNotEmpty,
                        format!("group {:?} has {n} active members; only they may commit", req.group),
                    ));
                }
            } else {
                let record = member_group(&inner.state, &req.group, &req.member_id)?;
                if record.generation != req.generation {
                    return Err(refuse(
                        ErrorCode::StaleGeneration,
                        format!(
                            "group {:?} is in generation {}, not {}: a rebalance happened; heartbeat for the new assignment",
                            req.group, record.generation, req.generation
                        ),
                    ));
                }
            }
            let event = commit_event(&inner.state, &req.group, req.offsets)?;
            inner.record(vec![event])?;
            Ok(CommitOffsetsResponse {})
        })
        .await
    }

    pub async fn reset_offsets(
        self: &Arc<Self>,
        req: ResetOffsetsRequest,
    ) -> Result<CommitOffsetsResponse> {
        check_group_name(&req.group)?;
        self.change(move |_, inner| {
            let members = inner.state.groups.get(&req.group).map_or(0, |g| g.members.len());
            if members > 0 && !req.force {
                return Err(refuse(
                    ErrorCode::GroupNotEmpty,
                    format!(
                        "group {:?} has {members} active members; stop them first, or reset with --force",
                        req.group
                    ),
                ));
            }
            let event = commit_event(&inner.state, &req.group, req.offsets)?;
            info!(group = %req.group, "offsets reset");
            inner.record(vec![event])?;
            Ok(CommitOffsetsResponse {})
        })
        .await
    }

    pub async fn fetch_offsets(&self, req: FetchOffsetsRequest) -> Result<FetchOffsetsResponse> {
        let inner = self.lock()?;
        Ok(FetchOffsetsResponse {
            offsets: committed(&inner.state, &req.group, &req.topics),
        })
    }

    pub async fn list_groups(&self, _req: ListGroupsRequest) -> Result<ListGroupsResponse> {
        let inner = self.lock()?;
        let names: BTreeSet<&String> = inner
            .state
            .groups
            .keys()
            .chain(inner.state.offsets.keys())
            .collect();
        let groups = names
            .into_iter()
            .map(|name| {
                let record = inner.state.groups.get(name);
                GroupSummary {
                    group: name.clone(),
                    members: record.map_or(0, |r| r.members.len() as u32),
                    generation: record.map_or(0, |r| r.generation),
                    assignor: wire::assignor_to_wire(
                        record.map_or(AssignorKind::Range, |r| r.assignor),
                    ) as i32,
                }
            })
            .collect();
        Ok(ListGroupsResponse { groups })
    }

    pub async fn describe_group(&self, req: DescribeGroupRequest) -> Result<GroupDescription> {
        let inner = self.lock()?;
        let record = inner.state.groups.get(&req.group);
        if record.is_none() && !inner.state.offsets.contains_key(&req.group) {
            return Err(refuse(
                ErrorCode::UnknownGroup,
                format!("unknown group {:?}", req.group),
            ));
        }
        let now = Instant::now();
        let members = record
            .map(|r| {
                r.members
                    .iter()
                    .map(|(id, m)| GroupMember {
                        member_id: id.clone(),
                        client_id: m.client_id.clone(),
                        topics: m.topics.iter().cloned().collect(),
                        assignment: to_topic_partitions(&m.assignment),
                        last_heartbeat_ago_ms: inner
                            .live
                            .member_seen
                            .get(&(req.group.clone(), id.clone()))
                            .map_or(0, |&seen| now.duration_since(seen).as_millis() as u64),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(GroupDescription {
            group: req.group.clone(),
            generation: record.map_or(0, |r| r.generation),
            assignor: wire::assignor_to_wire(record.map_or(AssignorKind::Range, |r| r.assignor))
                as i32,
            members,
            offsets: committed(&inner.state, &req.group, &[]),
        })
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

fn check_group_name(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > MAX_GROUP_NAME || group.chars().any(char::is_control) {
        return Err(refuse(
            ErrorCode::InvalidName,
            format!("invalid group name {group:?}: 1-{MAX_GROUP_NAME} printable characters"),
        ));
    }
    Ok(())
}

/// The group of a member that must exist.
fn member_group<'a>(
    state: &'a ControllerState,
    group: &str,
    member: &str,
) -> Result<&'a GroupRecord> {
    state
        .groups
        .get(group)
        .filter(|g| g.members.contains_key(member))
        .ok_or_else(|| {
            refuse(
                ErrorCode::UnknownMember,
                format!(
                    "group {group:?} has no member {member:?} (it left or timed out): join again"
                ),
            )
        })
}

/// The partition counts of the topics a group's members subscribe to.
fn subscribed_counts(record: &GroupRecord, state: &ControllerState) -> BTreeMap<String, u32> {
    let topics: BTreeSet<&String> = record.members.values().flat_map(|m| &m.topics).collect();
    topics
        .into_iter()
        .filter_map(|t| state.topics.get(t).map(|r| (t.clone(), r.meta.partitions)))
        .collect()
}

/// The event for a group's new membership: a new generation with a fresh assignment (or no
/// membership record once the last member is gone).
fn group_change(group: &str, mut record: GroupRecord, state: &ControllerState) -> Event {
    if record.members.is_empty() {
        return Event::GroupChanged {
            group: group.to_owned(),
            record: None,
        };
    }
    let counts = subscribed_counts(&record, state);
    let members: BTreeMap<String, BTreeSet<String>> = record
        .members
        .iter()
        .map(|(id, m)| (id.clone(), m.topics.clone()))
        .collect();
    let previous: BTreeMap<String, Vec<Slot>> = record
        .members
        .iter()
        .map(|(id, m)| (id.clone(), m.assignment.clone()))
        .collect();
    let assigned = assignor::assign(
        record.assignor,
        &AssignInput {
            members: &members,
            partition_counts: &counts,
            previous: &previous,
        },
    );
    for (id, slots) in assigned {
        if let Some(m) = record.members.get_mut(&id) {
            m.assignment = slots;
        }
    }
    record.generation += 1;
    record.partition_counts = counts;
    info!(%group, generation = record.generation, members = record.members.len(), "group rebalanced");
    Event::GroupChanged {
        group: group.to_owned(),
        record: Some(record),
    }
}

/// The answer to a member's join or heartbeat: its target assignment, less the partitions
/// other members have not let go of yet ([`handover`]).
fn answer_member(inner: &mut Inner, group: &str, member: &str) -> Result<GroupAssignment> {
    let record = member_group(&inner.state, group, member)?;
    let member_record = &record.members[member];
    let (given, complete) = inner
        .live
        .holdings
        .give(group, member, &member_record.assignment);
    // A third of the session timeout: two heartbeats may be lost before eviction.
    let interval = (member_record.session_timeout_ms / 3).max(100);
    Ok(GroupAssignment {
        member_id: member.to_owned(),
        generation: record.generation,
        assignment: to_topic_partitions(&given),
        pending: !complete,
        // Partitions are on their way from another member: ask again soon.
        heartbeat_interval_ms: if complete {
            interval
        } else {
            interval.min(HANDOVER_HEARTBEAT_MS)
        },
    })
}

fn to_topic_partitions(slots: &[Slot]) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<&String, Vec<u32>> = BTreeMap::new();
    for (topic, p) in slots {
        by_topic.entry(topic).or_default().push(*p);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| TopicPartitions {
            topic: topic.clone(),
            partitions,
        })
        .collect()
}

/// The event storing `offsets`, each checked against the topics.
fn commit_event(state: &ControllerState, group: &str, offsets: Vec<OffsetCommit>) -> Result<Event> {
    let commit_ms = now_ms();
    let mut checked = Vec::with_capacity(offsets.len());
    for o in offsets {
        let Some(topic) = state.topics.get(&o.topic) else {
            return Err(refuse(
                ErrorCode::UnknownTopic,
                format!("unknown topic {:?}", o.topic),
            ));
        };
        if o.partition >= topic.meta.partitions {
            return Err(refuse(
                ErrorCode::UnknownPartition,
                format!("topic {:?} has no partition {}", o.topic, o.partition),
            ));
        }
        checked.push((
            o.topic,
            o.partition,
            CommitRecord {
                offset: o.offset,
                metadata: o.metadata,
                commit_ms,
            },
        ));
    }
    Ok(Event::OffsetsCommitted {
        group: group.to_owned(),
        offsets: checked,
    })
}

fn committed(state: &ControllerState, group: &str, topics: &[String]) -> Vec<CommittedOffset> {
    let Some(offsets) = state.offsets.get(group) else {
        return Vec::new();
    };
    offsets
        .iter()
        .filter(|(t, _)| topics.is_empty() || topics.contains(t))
        .flat_map(|(topic, partitions)| {
            partitions
                .iter()
                .map(move |(&partition, c)| CommittedOffset {
                    topic: topic.clone(),
                    partition,
                    offset: c.offset,
                    metadata: c.metadata.clone(),
                    commit_ms: c.commit_ms,
                })
        })
        .collect()
}
