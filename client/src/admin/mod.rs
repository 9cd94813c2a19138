//! [`Admin`]: topic administration (create, delete, list, describe) and offset look-ups.
//!
//! Metadata calls go to the bootstrap broker (which forwards changes to the controller);
//! offset look-ups go to each partition's owner, found through the client's cluster picture. Results are the client's own types
//! ([`TopicDescription`], [`TopicConfig`], ...) rather than the generated proto messages, so
//! enums are Rust enums and absent settings are `None`.

mod cluster;
mod group;
mod new_topic;
mod security;
mod topic;

use std::collections::BTreeMap;

use weir_proto::topic::validate_topic_name;
use weir_proto::v1;

use std::sync::Arc;

use crate::ClientError;
use crate::cluster::Cluster;

pub use cluster::{BrokerDescription, ClusterDescription};
pub(crate) use group::MemberAssignment;
pub use group::{
    CommittedOffset, GroupAssignor, GroupDescription, GroupMemberDescription, GroupSummary,
    PartitionLag, ResetTo,
};
pub use new_topic::NewTopic;
pub use security::{Acl, AclFilter, AclOperation, AclResource, NewUser, UserSummary};
pub use topic::{FlushPolicy, PartitionDescription, Placement, TopicConfig, TopicDescription};

/// Which offset [`Admin::list_offsets`] looks up in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset: the oldest record still kept.
    Earliest,
    /// The high watermark: the offset the next appended record will get.
    Latest,
    /// The first offset whose record timestamp is at or after this time (milliseconds since the
    /// Unix epoch); the high watermark when no record is that recent.
    Timestamp(i64),
}

impl OffsetSpec {
    fn to_request(self, topic: &str, partitions: &[u32]) -> v1::ListOffsetsRequest {
        let (spec, timestamp_ms) = match self {
            OffsetSpec::Earliest => (v1::OffsetSpec::Earliest, 0),
            OffsetSpec::Latest => (v1::OffsetSpec::Latest, 0),
            OffsetSpec::Timestamp(ms) => (v1::OffsetSpec::Timestamp, ms),
        };
        v1::ListOffsetsRequest {
            current_leader_epoch: None,
            topic: topic.to_owned(),
            partitions: partitions.to_vec(),
            spec: spec as i32,
            timestamp_ms,
        }
    }
}

/// Topic administration. Cheap to clone; made by [`Client::admin`](crate::Client::admin).
#[derive(Debug, Clone)]
pub struct Admin {
    grpc: crate::connection::Grpc,
    cluster: Arc<Cluster>,
}

impl Admin {
    pub(crate) fn new(cluster: Arc<Cluster>) -> Self {
        Admin {
            grpc: cluster.bootstrap(),
            cluster,
        }
    }

    /// Creates a topic. Fails with `TOPIC_EXISTS` if the name is taken, `INVALID_NAME` or
    /// `INVALID_REQUEST` for a bad name or settings (checked here first where possible).
    pub async fn create_topic(&self, topic: NewTopic) -> Result<TopicDescription, ClientError> {
        let request = topic.into_request()?;
        let created = self.grpc.clone().create_topic(request).await?.into_inner();
        self.cluster.invalidate();
        TopicDescription::from_proto(created)
    }

    /// Moves partitions onto new replica sets, preferred leader first (`(partition, replicas)`
    /// pairs; Kafka's AlterPartitionReassignments), of any size: a single copy moves
    /// (`[1] -> [2]`) and a target may have more or fewer replicas than now (`[1] -> [1, 2, 3]`,
    /// `[1, 2, 3] -> [1, 2]`). The new replicas catch up and join the in-sync set before the
    /// old ones are removed and their copies deleted; this returns once the controller
    /// accepted the move, with the topic as it now stands (`removing_replicas` set). Poll
    /// [`describe_topic`](Admin::describe_topic) until
    /// [`PartitionDescription::fully_in_sync`](crate::admin::PartitionDescription::fully_in_sync)
    /// to wait for the end. Once every partition of the topic has the same number of replicas
    /// again, that is the topic's `replication_factor`. Fails with
    /// `INVALID_REPLICATION_FACTOR` (an empty target, or one below the topic's min ISR) or
    /// `INVALID_REQUEST` (an unknown or fenced broker, a broker twice), changing nothing.
    pub async fn reassign_partitions(
        &self,
        topic: &str,
        reassignments: impl IntoIterator<Item = (u32, Vec<u32>)>,
    ) -> Result<TopicDescription, ClientError> {
        validate_topic_name(topic)?;
        let request = v1::AlterPartitionReassignmentsRequest {
            topic: topic.to_owned(),
            reassignments: reassignments
                .into_iter()
                .map(|(partition, replicas)| v1::PartitionReassignment {
                    partition,
                    replicas,
                })
                .collect(),
        };
        let changed = self
            .grpc
            .clone()
            .alter_partition_reassignments(request)
            .await?
            .into_inner();
        self.cluster.invalidate();
        TopicDescription::from_proto(changed)
    }

    /// Deletes a topic and all its data. Irreversible. Fails with `UNKNOWN_TOPIC` if there is
    /// no such topic.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        validate_topic_name(name)?;
        self.grpc
            .clone()
            .delete_topic(v1::DeleteTopicRequest {
                name: name.to_owned(),
            })
            .await?;
        self.cluster.invalidate();
        Ok(())
    }

    /// Every topic, sorted by name. Per-partition details are left empty (use
    /// [`describe_topic`](Admin::describe_topic)).
    pub async fn list_topics(&self) -> Result<Vec<TopicDescription>, ClientError> {
        let listed = self
            .grpc
            .clone()
            .list_topics(v1::ListTopicsRequest {})
            .await?
            .into_inner();
        listed
            .topics
            .into_iter()
            .map(TopicDescription::from_proto)
            .collect()
    }

    /// One topic: partitioner, placement, settings and each partition's owner, offsets and
    /// size (read from each owner; `offsets_known` is false where the owner is down). Fails
    /// with `UNKNOWN_TOPIC` if there is no such topic.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        validate_topic_name(name)?;
        let request = v1::DescribeTopicRequest {
            name: name.to_owned(),
        };
        let mut described = self
            .grpc
            .clone()
            .describe_topic(request.clone())
            .await?
            .into_inner();
        // Partitions the bootstrap broker does not hold: ask their owners, one call each.
        let mut owners: BTreeMap<u32, String> = BTreeMap::new();
        for p in &described.partitions {
            if !p.offsets_known && p.leader_alive && !p.leader_address.is_empty() {
                owners.insert(p.leader_id, p.leader_address.clone());
            }
        }
        for (_, address) in owners {
            let Ok(mut grpc) = self.cluster.connection_to_advertised(&address) else {
                continue;
            };
            // An owner that does not answer leaves its partitions' offsets unknown.
            let Ok(answer) = grpc.describe_topic(request.clone()).await else {
                continue;
            };
            let answer = answer.into_inner();
            for p in answer.partitions.into_iter().filter(|p| p.offsets_known) {
                if let Some(slot) = described.partitions.get_mut(p.partition as usize) {
                    *slot = p;
                }
            }
        }
        TopicDescription::from_proto(described)
    }

    /// The offset `spec` names in each of `partitions` (all of the topic's partitions when
    /// empty), by partition. Fails if any partition's owner cannot answer.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[u32],
        spec: OffsetSpec,
    ) -> Result<BTreeMap<u32, u64>, ClientError> {
        self.list_offsets_each(topic, partitions, spec)
            .await?
            .into_iter()
            .map(|(p, offset)| offset.map(|o| (p, o)))
            .collect()
    }

    /// [`list_offsets`](Admin::list_offsets) with a result per partition, so the partitions of
    /// owners that answer are known while another owner is down. The outer error is about the
    /// topic or the whole cluster (an invalid name, an unknown topic, no broker answering
    /// Metadata).
    pub async fn list_offsets_each(
        &self,
        topic: &str,
        partitions: &[u32],
        spec: OffsetSpec,
    ) -> Result<BTreeMap<u32, Result<u64, ClientError>>, ClientError> {
        validate_topic_name(topic)?;
        let wanted: Vec<u32> = if partitions.is_empty() {
            (0..self.cluster.partition_count(topic).await?).collect()
        } else {
            partitions.to_vec()
        };
        let mut results: BTreeMap<u32, Result<u64, ClientError>> = BTreeMap::new();
        // One call per owner, for the partitions it holds.
        let mut by_owner: BTreeMap<u32, (crate::cluster::Leader, Vec<u32>)> = BTreeMap::new();
        for &p in &wanted {
            match self.cluster.leader(topic, p).await {
                Ok(leader) => {
                    by_owner
                        .entry(leader.id)
                        .or_insert_with(|| (leader, Vec::new()))
                        .1
                        .push(p);
                }
                // About this partition (its owner is down, it does not exist).
                Err(error)
                    if error.code().is_some()
                        && error.code() != Some(v1::ErrorCode::UnknownTopic) =>
                {
                    results.insert(p, Err(error));
                }
                // The topic's, or no broker answers at all.
                Err(error) => return Err(error),
            }
        }
        for (_, (leader, held)) in by_owner {
            let listed = leader
                .grpc
                .clone()
                .list_offsets(spec.to_request(topic, &held))
                .await;
            let listed = match listed {
                Ok(listed) => listed.into_inner(),
                Err(status) => {
                    // The picture may be old (NOT_LEADER, a broker gone): the next call refreshes.
                    self.cluster.invalidate();
                    let error = ClientError::from(status);
                    if error.code() == Some(v1::ErrorCode::UnknownTopic) {
                        return Err(error);
                    }
                    for p in held {
                        results.insert(p, Err(error.clone()));
                    }
                    continue;
                }
            };
            for o in listed.offsets {
                results.insert(o.partition, Ok(o.offset));
            }
            for p in held {
                results.entry(p).or_insert_with(|| {
                    Err(ClientError::refused(
                        v1::ErrorCode::Internal,
                        format!(
                            "the broker answered ListOffsets for {topic} without partition {p}"
                        ),
                    ))
                });
            }
        }
        Ok(results)
    }
}
