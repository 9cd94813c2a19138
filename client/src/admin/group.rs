//! Consumer-group administration on [`Admin`]: list and describe groups, read committed
//! offsets, reset them, and compute lag; plus the crate-internal member calls (join,
//! heartbeat, commit, leave) that [`GroupConsumer`](crate::consumer::GroupConsumer) drives.
//!
//! Invariants: the public API speaks the client's own types ([`TopicPartition`], Rust enums,
//! `Duration`), never the generated proto messages; every call is one or a few unary RPCs and
//! nothing is cached. Offsets are Kafka's: a committed offset is the *next* record to read.
//! Resets are resolved client-side with ListOffsets and sent as one ResetOffsets call, so a
//! reset either sets every listed partition or none.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use weir_proto::v1::{self, ErrorCode};

use super::{Admin, OffsetSpec};
use crate::{ClientError, TopicPartition};

/// How the controller deals a group's partitions out to its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupAssignor {
    /// Per topic, contiguous ranges of partitions to members in member-id order (Kafka's
    /// default). The default.
    #[default]
    Range,
    /// All subscribed partitions dealt out in turn.
    RoundRobin,
    /// Balanced like round-robin, but members keep the partitions they had when others come
    /// and go.
    Sticky,
}

impl GroupAssignor {
    pub(crate) fn to_wire(self) -> v1::Assignor {
        match self {
            GroupAssignor::Range => v1::Assignor::Range,
            GroupAssignor::RoundRobin => v1::Assignor::RoundRobin,
            GroupAssignor::Sticky => v1::Assignor::Sticky,
        }
    }

    fn from_wire(value: i32) -> Self {
        match v1::Assignor::try_from(value) {
            Ok(v1::Assignor::RoundRobin) => GroupAssignor::RoundRobin,
            Ok(v1::Assignor::Sticky) => GroupAssignor::Sticky,
            _ => GroupAssignor::Range,
        }
    }

    /// `range`, `round-robin` or `sticky`.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupAssignor::Range => "range",
            GroupAssignor::RoundRobin => "round-robin",
            GroupAssignor::Sticky => "sticky",
        }
    }
}

/// One group, as [`Admin::list_groups`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// The group's name.
    pub group: String,
    /// Active members (0 for a group that only has committed offsets).
    pub members: u32,
    /// The current generation (bumped at every rebalance).
    pub generation: u32,
    /// The group's assignor.
    pub assignor: GroupAssignor,
}

/// One active member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberDescription {
    /// The id the controller gave it.
    pub member_id: String,
    /// Its label for humans.
    pub client_id: String,
    /// The topics it subscribes to.
    pub topics: Vec<String>,
    /// Its partitions in the current generation, sorted.
    pub assignment: Vec<TopicPartition>,
    /// How long since the controller last heard from it.
    pub last_heartbeat_ago: Duration,
}

/// A committed offset: the next record the group will read in that partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset to read (last processed + 1).
    pub offset: u64,
    /// Whatever the committer attached.
    pub metadata: String,
    /// When it was committed, milliseconds since the Unix epoch.
    pub commit_ms: i64,
}

/// A group's members, assignments and committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group's name.
    pub group: String,
    /// The current generation.
    pub generation: u32,
    /// The group's assignor.
    pub assignor: GroupAssignor,
    /// Active members, by member id.
    pub members: Vec<GroupMemberDescription>,
    /// Committed offsets; partitions without a commit are absent.
    pub offsets: BTreeMap<TopicPartition, CommittedOffset>,
}

impl GroupDescription {
    /// The member that owns `tp` in the current generation, if any.
    pub fn owner(&self, tp: &TopicPartition) -> Option<&GroupMemberDescription> {
        self.members.iter().find(|m| m.assignment.contains(tp))
    }
}

/// Where [`Admin::reset_offsets`] moves a group's committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The oldest record still kept.
    Earliest,
    /// The high watermark: the group skips everything there is now.
    Latest,
    /// This offset, clamped into the partition's `[earliest, latest]`.
    Offset(u64),
    /// The first record at or after this time (milliseconds since the Unix epoch); the high
    /// watermark when no record is that recent.
    Time(i64),
}

/// One partition's progress in a group, from [`Admin::group_lag`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub tp: TopicPartition,
    /// The group's committed offset, if it committed one.
    pub committed: Option<u64>,
    /// The partition's high watermark (offset of the next record to be appended).
    pub high_watermark: u64,
    /// Records the group has yet to read: `high_watermark - committed` (0 if the commit is
    /// ahead, e.g. after a reset past the end), `None` without a commit.
    pub lag: Option<u64>,
    /// The member that owns the partition now, if any.
    pub member: Option<String>,
}

/// `high_watermark - committed`, never negative.
pub(crate) fn lag(committed: Option<u64>, high_watermark: u64) -> Option<u64> {
    committed.map(|c| high_watermark.saturating_sub(c))
}

/// Clamps a wanted offset into `[earliest, latest]`.
pub(crate) fn clamp_offset(wanted: u64, earliest: u64, latest: u64) -> u64 {
    wanted.max(earliest).min(latest.max(earliest))
}

/// The wire's grouping of `tps` by topic (the inverse of [`tp_list`]).
fn wire_tp_list(tps: &[TopicPartition]) -> Vec<v1::TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for tp in tps {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| v1::TopicPartitions {
            topic: topic.to_owned(),
            partitions,
        })
        .collect()
}

fn tp_list(assignment: Vec<v1::TopicPartitions>) -> Vec<TopicPartition> {
    let mut out = Vec::new();
    for tps in assignment {
        let topic: std::sync::Arc<str> = tps.topic.into();
        out.extend(
            tps.partitions
                .into_iter()
                .map(|p| TopicPartition::new(topic.clone(), p)),
        );
    }
    out.sort();
    out
}

fn check_group(group: &str) -> Result<(), ClientError> {
    if group.is_empty() {
        return Err(ClientError::InvalidArgument(
            "a group name must not be empty".into(),
        ));
    }
    Ok(())
}

fn commits(offsets: &BTreeMap<TopicPartition, u64>) -> Vec<v1::OffsetCommit> {
    offsets
        .iter()
        .map(|(tp, &offset)| v1::OffsetCommit {
            topic: tp.topic.to_string(),
            partition: tp.partition,
            offset,
            metadata: String::new(),
        })
        .collect()
}

/// A member's view of its group after a join or a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberAssignment {
    pub member_id: String,
    pub generation: u32,
    pub assignment: BTreeSet<TopicPartition>,
    pub heartbeat_interval: Duration,
    /// Partitions of this member's are still being let go of by their previous owners.
    pub pending: bool,
}

impl MemberAssignment {
    fn from_proto(answer: v1::GroupAssignment) -> Self {
        MemberAssignment {
            member_id: answer.member_id,
            generation: answer.generation,
            assignment: tp_list(answer.assignment).into_iter().collect(),
            heartbeat_interval: Duration::from_millis(u64::from(
                answer.heartbeat_interval_ms.max(100),
            )),
            pending: answer.pending,
        }
    }
}

impl Admin {
    /// Every group (with members, or only committed offsets), sorted by name.
    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>, ClientError> {
        let listed = self
            .grpc
            .clone()
            .list_groups(v1::ListGroupsRequest {})
            .await?
            .into_inner();
        Ok(listed
            .groups
            .into_iter()
            .map(|g| GroupSummary {
                group: g.group,
                members: g.members,
                generation: g.generation,
                assignor: GroupAssignor::from_wire(g.assignor),
            })
            .collect())
    }

    /// A group's members, their assignments and its committed offsets. Fails with
    /// `UNKNOWN_GROUP` if the group has neither members nor offsets.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        check_group(group)?;
        let d = self
            .grpc
            .clone()
            .describe_group(v1::DescribeGroupRequest {
                group: group.to_owned(),
            })
            .await?
            .into_inner();
        Ok(GroupDescription {
            group: d.group,
            generation: d.generation,
            assignor: GroupAssignor::from_wire(d.assignor),
            members: d
                .members
                .into_iter()
                .map(|m| GroupMemberDescription {
                    member_id: m.member_id,
                    client_id: m.client_id,
                    topics: m.topics,
                    assignment: tp_list(m.assignment),
                    last_heartbeat_ago: Duration::from_millis(m.last_heartbeat_ago_ms),
                })
                .collect(),
            offsets: d
                .offsets
                .into_iter()
                .map(|o| {
                    (
                        TopicPartition::new(o.topic, o.partition),
                        CommittedOffset {
                            offset: o.offset,
                            metadata: o.metadata,
                            commit_ms: o.commit_ms,
                        },
                    )
                })
                .collect(),
        })
    }

    /// The group's committed offsets in `topics` (every topic when empty). Partitions without
    /// a commit are absent; an unknown group has none.
    pub async fn fetch_committed(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<BTreeMap<TopicPartition, u64>, ClientError> {
        check_group(group)?;
        let fetched = self
            .grpc
            .clone()
            .fetch_offsets(v1::FetchOffsetsRequest {
                group: group.to_owned(),
                topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            })
            .await?
            .into_inner();
        Ok(fetched
            .offsets
            .into_iter()
            .map(|o| (TopicPartition::new(o.topic, o.partition), o.offset))
            .collect())
    }

    /// Commits `offsets` (next offset to read, per partition) for `group`. As a member, pass
    /// `Some((member_id, generation))`: refused with `STALE_GENERATION` after a rebalance and
    /// `UNKNOWN_MEMBER` once evicted. From outside the group pass `None`: refused with
    /// `GROUP_NOT_EMPTY` while it has members.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member: Option<(&str, u32)>,
        offsets: &BTreeMap<TopicPartition, u64>,
    ) -> Result<(), ClientError> {
        check_group(group)?;
        let (member_id, generation) = member.unwrap_or(("", 0));
        self.grpc
            .clone()
            .commit_offsets(v1::CommitOffsetsRequest {
                group: group.to_owned(),
                member_id: member_id.to_owned(),
                generation,
                offsets: commits(offsets),
            })
            .await?;
        Ok(())
    }

    /// Moves the group's committed offsets in every partition of `topic` (or, when `None`, of
    /// every topic the group has committed offsets for) to `to`, resolved here with
    /// ListOffsets, and returns what was set. Refused with `GROUP_NOT_EMPTY` while the group
    /// has members unless `force` (members are not told; they keep their positions until they
    /// rejoin or are reassigned).
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: Option<&str>,
        to: ResetTo,
        force: bool,
    ) -> Result<BTreeMap<TopicPartition, u64>, ClientError> {
        check_group(group)?;
        let topics: Vec<String> = match topic {
            Some(topic) => vec![topic.to_owned()],
            None => {
                let committed = self.fetch_committed(group, &[]).await?;
                let topics: BTreeSet<String> =
                    committed.keys().map(|tp| tp.topic.to_string()).collect();
                if topics.is_empty() {
                    return Err(ClientError::InvalidArgument(format!(
                        "group {group:?} has no committed offsets; name the topic to reset"
                    )));
                }
                topics.into_iter().collect()
            }
        };
        let mut offsets = BTreeMap::new();
        for topic in &topics {
            let resolved: BTreeMap<u32, u64> = match to {
                ResetTo::Earliest => self.list_offsets(topic, &[], OffsetSpec::Earliest).await?,
                ResetTo::Latest => self.list_offsets(topic, &[], OffsetSpec::Latest).await?,
                ResetTo::Time(ms) => {
                    self.list_offsets(topic, &[], OffsetSpec::Timestamp(ms))
                        .await?
                }
                ResetTo::Offset(wanted) => {
                    let earliest = self.list_offsets(topic, &[], OffsetSpec::Earliest).await?;
                    let latest = self.list_offsets(topic, &[], OffsetSpec::Latest).await?;
                    earliest
                        .iter()
                        .map(|(&p, &e)| {
                            let l = latest.get(&p).copied().unwrap_or(e);
                            (p, clamp_offset(wanted, e, l))
                        })
                        .collect()
                }
            };
            let shared: std::sync::Arc<str> = topic.as_str().into();
            offsets.extend(
                resolved
                    .into_iter()
                    .map(|(p, o)| (TopicPartition::new(shared.clone(), p), o)),
            );
        }
        self.grpc
            .clone()
            .reset_offsets(v1::ResetOffsetsRequest {
                group: group.to_owned(),
                offsets: commits(&offsets),
                force,
            })
            .await?;
        Ok(offsets)
    }

    /// Per partition of every topic the group has committed offsets for or its members
    /// subscribe to: the committed offset, the high watermark, the lag and the owner. Fails
    /// with `UNKNOWN_GROUP` for an unknown group.
    pub async fn group_lag(&self, group: &str) -> Result<Vec<PartitionLag>, ClientError> {
        let description = self.describe_group(group).await?;
        let topics: BTreeSet<String> = description
            .offsets
            .keys()
            .map(|tp| tp.topic.to_string())
            .chain(description.members.iter().flat_map(|m| m.topics.clone()))
            .collect();
        let mut out = Vec::new();
        for topic in topics {
            let high = match self.list_offsets(&topic, &[], OffsetSpec::Latest).await {
                Ok(high) => high,
                // A member may subscribe to a topic that does not exist (yet).
                Err(e) if e.code() == Some(ErrorCode::UnknownTopic) => continue,
                Err(e) => return Err(e),
            };
            let shared: std::sync::Arc<str> = topic.as_str().into();
            for (partition, high_watermark) in high {
                let tp = TopicPartition::new(shared.clone(), partition);
                let committed = description.offsets.get(&tp).map(|c| c.offset);
                out.push(PartitionLag {
                    committed,
                    high_watermark,
                    lag: lag(committed, high_watermark),
                    member: description.owner(&tp).map(|m| m.member_id.clone()),
                    tp,
                });
            }
        }
        Ok(out)
    }

    pub(crate) async fn join_group(
        &self,
        request: v1::JoinGroupRequest,
    ) -> Result<MemberAssignment, ClientError> {
        check_group(&request.group)?;
        let answer = self.grpc.clone().join_group(request).await?.into_inner();
        Ok(MemberAssignment::from_proto(answer))
    }

    pub(crate) async fn group_heartbeat(
        &self,
        group: &str,
        member_id: &str,
        generation: u32,
        owned: &[TopicPartition],
        report_seq: u64,
    ) -> Result<MemberAssignment, ClientError> {
        let answer = self
            .grpc
            .clone()
            .group_heartbeat(v1::GroupHeartbeatRequest {
                group: group.to_owned(),
                member_id: member_id.to_owned(),
                generation,
                owned: wire_tp_list(owned),
                reports_owned: true,
                report_seq,
            })
            .await?
            .into_inner();
        Ok(MemberAssignment::from_proto(answer))
    }

    pub(crate) async fn leave_group(
        &self,
        group: &str,
        member_id: &str,
    ) -> Result<(), ClientError> {
        self.grpc
            .clone()
            .leave_group(v1::LeaveGroupRequest {
                group: group.to_owned(),
                member_id: member_id.to_owned(),
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_distance_to_the_high_watermark() {
        assert_eq!(lag(Some(300), 1000), Some(700));
        assert_eq!(lag(Some(1000), 1000), Some(0));
        // A commit past the end (a reset, or truncation) is no negative lag.
        assert_eq!(lag(Some(1200), 1000), Some(0));
        assert_eq!(lag(None, 1000), None);
    }

    #[test]
    fn offsets_are_clamped_into_the_log() {
        assert_eq!(clamp_offset(50, 10, 100), 50);
        assert_eq!(clamp_offset(5, 10, 100), 10);
        assert_eq!(clamp_offset(500, 10, 100), 100);
        // An empty partition: earliest == latest.
        assert_eq!(clamp_offset(7, 0, 0), 0);
    }

    #[test]
    fn assignments_are_flattened_and_sorted() {
        let tps = tp_list(vec![
            v1::TopicPartitions {
                topic: "b".into(),
                partitions: vec![1, 0],
            },
            v1::TopicPartitions {
                topic: "a".into(),
                partitions: vec![3],
            },
        ]);
        assert_eq!(
            tps,
            vec![
                TopicPartition::new("a", 3),
                TopicPartition::new("b", 0),
                TopicPartition::new("b", 1)
            ]
        );
        assert_eq!(tp_list(wire_tp_list(&tps)), tps, "the two forms round-trip");
    }
}
