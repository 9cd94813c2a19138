//! Topics at the controller: create and delete, where partitions are placed, topics adopted
//! from a registering broker, and the wait until brokers hold the change.
//!
//! Invariants:
//! - A topic is placed once, at creation, over the brokers alive then ([`super::placement`]):
//!   `replication_factor` distinct live brokers per partition, every one in the ISR, the first
//!   leading in epoch 1 ([`PartitionState::new`]); its replicas move (and their count changes)
//!   only by reassignment (`super::reassignment`).
//! - A topic's replication settings are checked against the cluster at creation: 1 <=
//!   `min_insync_replicas` <= `replication_factor` <= live brokers, else
//!   INVALID_REPLICATION_FACTOR and nothing changes. Unset, they default from the live
//!   brokers (see [`replication_defaults`]).
//! - An ISR change ([`Controller::alter_partition`]) is the compare-and-set
//!   [`PartitionState::alter_isr`] decides, with the topic's min ISR and the unfenced brokers at
//!   their current epochs; it is journaled, then the version bumps, then it is answered.
//! - Create and delete return only once every live broker acknowledged the new metadata
//!   version, or after [`ACK_WAIT`] (a broker that misses it catches up with its next
//!   heartbeat): a topic is then usable on every broker that is up.
//! - A deleted topic's id is remembered (the newest 10,000, see [`super::state`]), so a broker
//!   that held it and comes back deletes it instead of having it adopted again.
//! - Adoption takes a reported topic only whole (every partition on the reporting broker):
//!   a partial copy of an unknown topic is left alone, never made the truth.

use std::sync::Arc;

use tracing::{info, warn};
use weir_proto::v1::{
    AlterPartitionRequest, AlterPartitionResponse, CreateTopicRequest, DeleteTopicRequest,
    DeleteTopicResponse, Error, ErrorCode, LocalTopic, TopicDescription,
};
use weir_replication::{
    AlterError, AlterIsrRequest, BrokerEpoch, BrokerId, IsrMember, LeaderEpoch, PartitionEpoch,
    PartitionState,
};

use super::state::{ControllerState, Event, PartitionRecord, TopicRecord};
use super::{ACK_WAIT, Controller, RULES, Result, placement, refuse};
use crate::topics::{NewTopic, PlacementKind, TopicSettings};
use crate::wire;

impl Controller {
    pub async fn create_topic(
        self: &Arc<Self>,
        req: CreateTopicRequest,
    ) -> Result<TopicDescription> {
        let invalid = |m: String| refuse(ErrorCode::InvalidRequest, m);
        let partitioner = wire::partitioner_from_wire(req.partitioner).map_err(invalid)?;
        let placement = wire::placement_from_wire(req.placement).map_err(invalid)?;
        let defaults = TopicSettings::from_log_config(&self.config.topic_defaults);
        let config = req.config.unwrap_or_default();
        // Unset, these depend on the brokers alive at creation (decided under the lock).
        let (asked_rf, asked_min_isr) = (config.replication_factor, config.min_insync_replicas);
        let settings = wire::settings_from_wire(defaults, config).map_err(invalid)?;
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
        let mut meta = new
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
                // A broker shutting down would lead the new partitions it is placed on first.
                let live: Vec<u32> = inner
                    .live
                    .alive
                    .iter()
                    .copied()
                    .filter(|id| !inner.live.shutting_down.contains(id))
                    .collect();
                if live.is_empty() {
                    return Err(refuse(
                        ErrorCode::PartitionUnavailable,
                        "no broker is alive to hold the partitions; start a broker and retry",
                    ));
                }
                let (rf, min_isr) = replication_defaults(live.len(), asked_rf, asked_min_isr)?;
                meta.settings.replication_factor = rf;
                meta.settings.min_insync_replicas = min_isr;
                let replicas =
                    placement::place_replicas(placement, &meta.name, meta.partitions, &live, rf);
                let states: Vec<PartitionState> = replicas
                    .into_iter()
                    .map(|r| PartitionState::new(r.into_iter().map(BrokerId).collect()))
                    .collect();
                let leaders: Vec<u32> = states.iter().map(wire::leader_or_first).collect();
                info!(topic = %meta.name, partitions = meta.partitions, replication_factor = rf, min_insync_replicas = min_isr, ?placement, ?leaders, "creating topic");
                let description =
                    wire::describe_topic(&meta, placement, &states, &this.broker_infos(inner));
                let record = TopicRecord {
                    meta,
                    placement,
                    leaders,
                    partitions: states.iter().map(PartitionRecord::from).collect(),
                };
                inner.record(vec![Event::TopicCreated(record)])?;
                Ok((this.bump(&mut inner.live), description))
            })
            .await?;
        self.wait_for_acks(version).await;
        Ok(description)
    }

    /// The leader's in-sync set change (compare-and-set on the partition epoch, KIP-497; see
    /// the module docs).
    pub async fn alter_partition(
        self: &Arc<Self>,
        req: AlterPartitionRequest,
    ) -> Result<AlterPartitionResponse> {
        self.change(move |this, inner| {
            let Some(topic) = inner.state.topics.get(&req.topic) else {
                return Err(refuse(
                    ErrorCode::UnknownTopic,
                    format!("unknown topic {:?}", req.topic),
                ));
            };
            if !req.topic_id.is_empty() && req.topic_id != topic.meta.id() {
                return Err(refuse(
                    ErrorCode::UnknownTopic,
                    format!(
                        "topic {:?} is now another topic (id {}, not {}): the one asked about was deleted",
                        req.topic,
                        topic.meta.id(),
                        req.topic_id
                    ),
                ));
            }
            let Some(current) = topic.partition_state(req.partition) else {
                return Err(refuse(
                    ErrorCode::UnknownPartition,
                    format!(
                        "topic {:?} has no partition {} (it has {})",
                        req.topic, req.partition, topic.meta.partitions
                    ),
                ));
            };
            let request = AlterIsrRequest {
                leader: BrokerId(req.leader),
                leader_epoch: LeaderEpoch(req.leader_epoch),
                partition_epoch: PartitionEpoch(req.partition_epoch),
                new_isr: req
                    .new_isr
                    .iter()
                    .map(|m| IsrMember {
                        broker: BrokerId(m.broker),
                        broker_epoch: BrokerEpoch(m.broker_epoch),
                    })
                    .collect(),
            };
            let min_isr = topic.meta.settings.min_insync_replicas as usize;
            let live = inner.live_brokers(None);
            let next = current
                .alter_isr(&request, &live, min_isr, &RULES)
                .map_err(|e| alter_refused(&req, &current, min_isr, e))?;
            debug_assert_eq!(next.partition_epoch, current.partition_epoch.next());
            let event = Event::PartitionChanged {
                topic: req.topic.clone(),
                topic_id: topic.meta.id(),
                partition: req.partition,
                state: PartitionRecord::from(&next),
            };
            let min_insync = topic.meta.settings.min_insync_replicas;
            inner.record(vec![event])?;
            info!(topic = %req.topic, partition = req.partition, isr = ?next.isr, partition_epoch = next.partition_epoch.0, "in-sync set changed");
            this.bump(&mut inner.live);
            Ok(AlterPartitionResponse {
                state: Some(wire::partition_state_to_wire(&next, min_insync)),
            })
        })
        .await
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

    /// Waits (up to [`ACK_WAIT`]) until every live broker holds `version` or newer.
    pub(super) async fn wait_for_acks(&self, version: u64) {
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

    /// Adds to `events` the topics `broker` reports holding that the controller neither knows
    /// nor deleted (see the module docs), placed on `broker`.
    pub(super) fn adopt_local_topics(
        &self,
        state: &ControllerState,
        broker: u32,
        local_topics: &[LocalTopic],
        events: &mut Vec<Event>,
    ) {
        let defaults = TopicSettings::from_log_config(&self.config.topic_defaults);
        for local in local_topics {
            let Some(d) = &local.description else {
                continue;
            };
            if state.topics.contains_key(&d.name)
                || state.deleted_topic_ids.contains(&local.topic_id)
                || events
                    .iter()
                    .any(|e| matches!(e, Event::TopicCreated(t) if t.meta.name == d.name))
            {
                continue;
            }
            let all: Vec<u32> = (0..d.partition_count).collect();
            if local.partitions != all {
                warn!(topic = %d.name, broker, "a broker holds part of a topic the controller does not know; left alone");
                continue;
            }
            match wire::meta_from_description(d, &local.topic_id, defaults.clone()) {
                Ok(meta) => {
                    info!(topic = %d.name, broker, "adopting a topic the broker holds");
                    // Held by this broker alone: one replica, leading in epoch 1.
                    let settings = TopicSettings {
                        replication_factor: 1,
                        min_insync_replicas: 1,
                        ..meta.settings
                    };
                    let state = PartitionRecord::from(&PartitionState::new(vec![BrokerId(broker)]));
                    events.push(Event::TopicCreated(TopicRecord {
                        meta: crate::topics::TopicMeta { settings, ..meta },
                        placement: PlacementKind::Hash,
                        leaders: vec![broker; d.partition_count as usize],
                        partitions: vec![state; d.partition_count as usize],
                    }));
                }
                Err(e) => warn!(topic = %d.name, error = %e, "cannot adopt a reported topic"),
            }
        }
    }
}

/// A topic's replication factor and min ISR: as asked, or the defaults for `live` brokers
/// (RF 3 with 3 or more, else all of them; min ISR 2 with RF 3 or more, else 1), checked:
/// 1 <= min ISR <= RF <= live.
pub(super) fn replication_defaults(
    live: usize,
    asked_rf: Option<u32>,
    asked_min_isr: Option<u32>,
) -> Result<(u32, u32)> {
    let live = live as u32;
    let rf = asked_rf.unwrap_or(live.min(3));
    let min_isr = asked_min_isr.unwrap_or(if rf >= 3 { 2 } else { 1 });
    let bad = |m: String| Err(refuse(ErrorCode::InvalidReplicationFactor, m));
    if rf == 0 {
        return bad("replication_factor must be at least 1".into());
    }
    if rf > live {
        return bad(format!(
            "replication_factor {rf} needs {rf} live brokers, but {live} are alive; start more brokers or ask for fewer replicas"
        ));
    }
    if min_isr == 0 {
        return bad("min_insync_replicas must be at least 1".into());
    }
    if min_isr > rf {
        return bad(format!(
            "min_insync_replicas {min_isr} exceeds replication_factor {rf}: no partition could ever accept acks=all"
        ));
    }
    Ok((rf, min_isr))
}

/// The wire refusal of an ISR change, saying what and why.
fn alter_refused(
    req: &AlterPartitionRequest,
    current: &PartitionState,
    min_isr: usize,
    e: AlterError,
) -> Error {
    let tp = format!("{}-{}", req.topic, req.partition);
    let leader = current
        .leader
        .map_or_else(|| "no leader".to_owned(), |b| format!("leader {}", b.0));
    let isr: Vec<u32> = current.isr.iter().map(|b| b.0).collect();
    let (code, message) = match e {
        AlterError::FencedLeaderEpoch => (
            ErrorCode::FencedLeaderEpoch,
            format!(
                "{tp}: leader epoch {} is not the current {} ({leader}); refresh the metadata",
                req.leader_epoch, current.leader_epoch.0
            ),
        ),
        AlterError::NotLeader => (
            ErrorCode::NotLeader,
            format!("{tp}: broker {} does not lead it ({leader})", req.leader),
        ),
        AlterError::StalePartitionEpoch => (
            ErrorCode::StalePartitionEpoch,
            format!(
                "{tp}: based on partition epoch {}, but it is {} now (ISR {isr:?}); refresh the metadata",
                req.partition_epoch, current.partition_epoch.0
            ),
        ),
        AlterError::NotAReplica(b) => (
            ErrorCode::IneligibleReplica,
            format!("{tp}: broker {} is not one of its replicas", b.0),
        ),
        AlterError::NotAlive(b) => (
            ErrorCode::IneligibleReplica,
            format!(
                "{tp}: broker {} may not join the ISR: it is fenced or not registered",
                b.0
            ),
        ),
        AlterError::StaleBrokerEpoch(b) => (
            ErrorCode::IneligibleReplica,
            format!(
                "{tp}: broker {} may not join the ISR: the broker epoch it was judged by is not its current start's",
                b.0
            ),
        ),
        AlterError::BelowMinIsr => (
            ErrorCode::IneligibleReplica,
            format!(
                "{tp}: an ISR of {} would be below min_insync_replicas {min_isr} (ISR now {isr:?})",
                req.new_isr.len()
            ),
        ),
        AlterError::Malformed => (
            ErrorCode::InvalidRequest,
            format!(
                "{tp}: the proposed ISR must be sorted by broker, without duplicates, and contain the leader"
            ),
        ),
        AlterError::NoChange => (
            ErrorCode::InvalidRequest,
            format!("{tp}: the proposed ISR is the current one ({isr:?})"),
        ),
    };
    refuse(code, message)
}
