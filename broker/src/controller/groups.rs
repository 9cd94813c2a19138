//! Consumer groups at the controller: join, heartbeat, leave, eviction of silent members,
//! the assignment each member is given, and the group listings.
//!
//! Each change of membership (a join that changes a member, a leave, an eviction) or of the
//! subscribed topics' partition counts starts a new generation with a fresh assignment
//! ([`super::assignor`]), journaled with the group. What a member is *given* is that target
//! less what other members may still hold ([`super::handover`]).
//!
//! Invariants:
//! - A group runs one assignor: a member that asks for another one while the group has members
//!   is refused; the first member of an empty group chooses it.
//! - A member not heard from for its session timeout is evicted (by [`Controller::tick`]), and
//!   a member that left or was evicted holds nothing.
//! - Join and heartbeat answers ask for the next heartbeat at a third of the session timeout
//!   (two may be lost before eviction), and sooner while partitions are still on their way.
//! - Group names are 1-255 printable characters. Heartbeat and leave (and a member's commit)
//!   need the member to exist: one that left or timed out is told UNKNOWN_MEMBER, to join again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;
use weir_proto::v1::{
    DescribeGroupRequest, ErrorCode, GroupAssignment, GroupDescription, GroupHeartbeatRequest,
    GroupMember, GroupSummary, JoinGroupRequest, LeaveGroupRequest, LeaveGroupResponse,
    ListGroupsRequest, ListGroupsResponse, TopicPartitions,
};

use super::assignor::{self, AssignInput, Slot};
use super::offsets::committed;
use super::state::{ControllerState, Event, GroupRecord, MemberRecord};
use super::{Controller, Inner, Liveness, Result, refuse};
use crate::group_strategy::AssignorKind;
use crate::topics::random_u64;
use crate::wire;

const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_SESSION_TIMEOUT: Duration = Duration::from_millis(500);
const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_GROUP_NAME: usize = 255;
/// How often a member that waits for partitions another member is letting go of heartbeats.
const HANDOVER_HEARTBEAT_MS: u32 = 200;

impl Liveness {
    /// A member left its group or was evicted: it is no longer watched and holds nothing.
    fn forget_member(&mut self, group: &str, member: &str) {
        self.member_seen
            .remove(&(group.to_owned(), member.to_owned()));
        self.holdings.release(group, member);
    }
}

impl Controller {
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
}

/// Removes every member not heard from within its session timeout by `now` and returns the
/// events of the groups' new generations (part of [`Controller::tick`]).
pub(super) fn expire_members(inner: &mut Inner, now: Instant) -> Vec<Event> {
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
    events
}

pub(super) fn check_group_name(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > MAX_GROUP_NAME || group.chars().any(char::is_control) {
        return Err(refuse(
            ErrorCode::InvalidName,
            format!("invalid group name {group:?}: 1-{MAX_GROUP_NAME} printable characters"),
        ));
    }
    Ok(())
}

/// The group of a member that must exist.
pub(super) fn member_group<'a>(
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
