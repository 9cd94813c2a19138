//! The producer's topic metadata cache: what it needs to route a topic's records (partition
//! count, partitioner, split keys, batch limit), fetched once per topic with DescribeTopic.
//!
//! Concurrent first sends to a topic share one DescribeTopic call (a `OnceCell` per topic). A
//! failed look-up is not cached, so the next send asks again. The sender drops a topic's entry
//! when the broker says the topic or partition is unknown (deleted, recreated), so the next send
//! re-describes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;
use tonic::transport::Channel;
use weir_proto::topic::validate_topic_name;
use weir_proto::v1::{self, weir_client::WeirClient};

use super::config::BROKER_MAX_BATCH_BYTES;
use crate::partitioner::{Partitioner, Route};
use crate::{ClientError, PartitionerKind, TopicDescription};

/// How to route one topic's records.
#[derive(Debug)]
pub(crate) struct TopicRouting {
    /// The topic's name, shared by its batches and delivery results.
    pub topic: Arc<str>,
    pub partitioner: Partitioner,
    /// The largest batch the topic accepts.
    pub max_batch_bytes: usize,
}

impl TopicRouting {
    fn new(
        description: TopicDescription,
        partitioner_override: Option<PartitionerKind>,
    ) -> Result<Self, ClientError> {
        let kind = partitioner_override.unwrap_or(description.partitioner);
        let partitioner =
            Partitioner::new(kind, description.partition_count, description.split_keys)?;
        let max_batch_bytes = description
            .config
            .max_batch_bytes
            .map_or(BROKER_MAX_BATCH_BYTES, |limit| limit as usize);
        Ok(TopicRouting {
            topic: description.name.into(),
            partitioner,
            max_batch_bytes,
        })
    }

    /// Where a record with `key` and optional explicit `partition` goes.
    pub fn route(&self, key: Option<&[u8]>, partition: Option<u32>) -> Result<Route, ClientError> {
        match partition {
            Some(p) if p >= self.partitioner.partitions() => Err(ClientError::refused(
                v1::ErrorCode::UnknownPartition,
                format!(
                    "topic {} has partitions 0..{}; there is no partition {p}",
                    self.topic,
                    self.partitioner.partitions()
                ),
            )),
            Some(p) => Ok(Route::Partition(p)),
            None => Ok(self.partitioner.route(key)),
        }
    }
}

/// Topic name -> routing, filled on first use.
#[derive(Debug)]
pub(crate) struct MetadataCache {
    grpc: WeirClient<Channel>,
    partitioner_override: Option<PartitionerKind>,
    topics: Mutex<HashMap<String, Arc<OnceCell<Arc<TopicRouting>>>>>,
}

impl MetadataCache {
    pub fn new(grpc: WeirClient<Channel>, partitioner_override: Option<PartitionerKind>) -> Self {
        MetadataCache {
            grpc,
            partitioner_override,
            topics: Mutex::new(HashMap::new()),
        }
    }

    /// The routing of `topic`, described by the broker on first use. Fails with
    /// `UNKNOWN_TOPIC` for a topic that does not exist.
    pub async fn routing(&self, topic: &str) -> Result<Arc<TopicRouting>, ClientError> {
        let cell = {
            let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
            match topics.get(topic) {
                Some(cell) => cell.clone(),
                None => {
                    validate_topic_name(topic)?;
                    topics.entry(topic.to_owned()).or_default().clone()
                }
            }
        };
        let routing = cell
            .get_or_try_init(|| async {
                let described = self
                    .grpc
                    .clone()
                    .describe_topic(v1::DescribeTopicRequest {
                        name: topic.to_owned(),
                    })
                    .await?
                    .into_inner();
                let description = TopicDescription::from_proto(described)?;
                TopicRouting::new(description, self.partitioner_override).map(Arc::new)
            })
            .await?;
        Ok(routing.clone())
    }

    /// Forgets `topic`, so the next send describes it again.
    pub fn invalidate(&self, topic: &str) {
        self.topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TopicConfig;

    fn description(partitioner: PartitionerKind) -> TopicDescription {
        TopicDescription {
            name: "orders".into(),
            partition_count: 4,
            partitioner,
            split_keys: vec![],
            config: TopicConfig {
                max_batch_bytes: Some(1 << 20),
                ..Default::default()
            },
            partitions: vec![],
            created_ms: 0,
            placement: crate::Placement::Hash,
        }
    }

    #[test]
    fn explicit_partitions_override_and_are_checked() {
        let routing = TopicRouting::new(description(PartitionerKind::Hash), None).unwrap();
        assert_eq!(routing.max_batch_bytes, 1 << 20);
        assert_eq!(
            routing.route(Some(b"k"), Some(3)).unwrap(),
            Route::Partition(3)
        );
        let err = routing.route(None, Some(4)).unwrap_err();
        assert_eq!(err.code(), Some(v1::ErrorCode::UnknownPartition));
    }

    #[test]
    fn the_producer_may_override_the_partitioner() {
        let routing = TopicRouting::new(
            description(PartitionerKind::Hash),
            Some(PartitionerKind::RoundRobin),
        )
        .unwrap();
        assert_eq!(routing.route(Some(b"k"), None).unwrap(), Route::Sticky);
    }
}
