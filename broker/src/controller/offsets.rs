//! Committed offsets at the controller: commit (by a group's members, or from outside), reset
//! (an operator's replay) and fetch.
//!
//! Offsets outlive membership: a group whose last member left keeps them, and listing and
//! describing groups shows groups that only have offsets.
//!
//! Invariants:
//! - A member commits only in its group's current generation (STALE_GENERATION otherwise: a
//!   rebalance may have moved the partition); a commit without a member id is accepted only
//!   while the group has no members (GROUP_NOT_EMPTY otherwise).
//! - A reset is refused while the group has members, unless forced.
//! - Every offset names an existing topic and partition; one bad entry refuses the whole
//!   request, and a request's offsets are journaled as one event (all or none).

use std::sync::Arc;

use tracing::info;
use weir_proto::v1::{
    CommitOffsetsRequest, CommitOffsetsResponse, CommittedOffset, ErrorCode, FetchOffsetsRequest,
    FetchOffsetsResponse, OffsetCommit, ResetOffsetsRequest,
};

use super::groups::{check_group_name, member_group};
use super::state::{CommitRecord, ControllerState, Event};
use super::{Controller, Result, refuse};
use weir_storage::fs::now_ms;

impl Controller {
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

pub(super) fn committed(
    state: &ControllerState,
    group: &str,
    topics: &[String],
) -> Vec<CommittedOffset> {
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
