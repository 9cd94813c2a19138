//! Topics at the controller: create and delete, where partitions are placed, topics adopted
//! from a registering broker, and the wait until brokers hold the change.
//!
//! Invariants:
//! - A topic is placed once, at creation, over the brokers alive then ([`super::placement`]);
//!   its partitions never move afterwards.
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
    DeleteTopicResponse, ErrorCode, LocalTopic, TopicDescription,
};

use super::state::{ControllerState, Event, TopicRecord};
use super::{ACK_WAIT, Controller, Result, placement, refuse};
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

    /// The leader's in-sync set change (compare-and-set on the partition epoch).
    pub async fn alter_partition(
        self: &Arc<Self>,
        req: AlterPartitionRequest,
    ) -> Result<AlterPartitionResponse> {
        Err(refuse(
            ErrorCode::UnknownPartition,
            format!(
                "{}-{} is not replicated: it has no in-sync set to change",
                req.topic, req.partition
            ),
        ))
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
                    events.push(Event::TopicCreated(TopicRecord {
                        meta,
                        placement: PlacementKind::Hash,
                        leaders: vec![broker; d.partition_count as usize],
                    }));
                }
                Err(e) => warn!(topic = %d.name, error = %e, "cannot adopt a reported topic"),
            }
        }
    }
}
