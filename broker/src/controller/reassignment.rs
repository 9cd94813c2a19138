//! Moving partitions between brokers, and keeping leaderships where they belong.
//!
//! Owns [`Controller::alter_partition_reassignments`] (Kafka's AlterPartitionReassignments,
//! KIP-455) and [`Controller::balance`], the part of the controller's tick that finishes what
//! reassignments and failures leave: a reassignment whose target is in sync, a partition left
//! without a leader whose candidate is back, a leadership away from its preferred replica.
//!
//! Invariants (rule 10 and rule 3; the decisions are weir-replication's, checked by its model):
//! - A reassignment only adds replicas at first ([`PartitionState::reassign`]); the new ones
//!   join the ISR through the leader's ordinary expansion, after catching up (rule 6). The
//!   replicas not in the target leave only when every target replica is in the ISR
//!   ([`PartitionState::complete_reassignment`]), so the ISR never drops below the target's
//!   size, and a target is never smaller than the topic's `min_insync_replicas`.
//! - Any replica count may be moved or changed, one replica included (`[1] -> [2]`,
//!   `[1] -> [1,2,3]`, `[1,2,3] -> [1,2]`), as Kafka allows: a single copy is led by its broker
//!   like any replicated partition while the move lists several replicas, its new replicas
//!   catch up and join the ISR as above, and at completion the leadership moves to the target
//!   (`crate::replica` describes the broker's side). A target that is empty or smaller than
//!   the topic's `min_insync_replicas` is refused (INVALID_REPLICATION_FACTOR) and nothing
//!   changes.
//! - The topic's `replication_factor` is the replica count of its partitions (Kafka keeps no
//!   topic-level count; its CreatePartitions takes the existing partitions'): a change that leaves
//!   no partition of the topic being reassigned and all of them with the same number of
//!   replicas makes it that number ([`replication_factor_changes`], journaled with the
//!   change). While the counts differ (some partitions moved to another count, others not)
//!   it keeps the last count they all had; `weir topic describe` shows each partition's
//!   replicas. It counts assigned replicas, not in-sync ones: a replica still catching up
//!   counts, as in a topic created with it.
//! - Every change is journaled (one append per request or per tick) before it takes effect,
//!   like every other partition change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};
use weir_proto::v1::{AlterPartitionReassignmentsRequest, ErrorCode, TopicDescription};
use weir_replication::{BrokerId, PartitionState, ReassignError};

use super::state::{ControllerState, Event, PartitionRecord};
use super::{Controller, Inner, RULES, Result, changes_where, refuse};
use crate::wire;

impl Controller {
    /// Starts moving partitions of one topic onto new replica sets (see the module docs and
    /// the .proto): checked whole, journaled as one change, answered with the topic as it now
    /// stands. A target already in sync (a reordering, a shrink) completes at the next tick.
    pub async fn alter_partition_reassignments(
        self: &Arc<Self>,
        req: AlterPartitionReassignmentsRequest,
    ) -> Result<TopicDescription> {
        self.change(move |this, inner| {
            let Some(topic) = inner.state.topics.get(&req.topic) else {
                return Err(refuse(
                    ErrorCode::UnknownTopic,
                    format!("unknown topic {:?}", req.topic),
                ));
            };
            if req.reassignments.is_empty() {
                return Err(refuse(
                    ErrorCode::InvalidRequest,
                    "no partition to reassign was given",
                ));
            }
            let min_insync = topic.meta.settings.min_insync_replicas as usize;
            let live = inner.live_brokers(None);
            let mut events = Vec::new();
            let mut seen = Vec::new();
            for asked in &req.reassignments {
                let p = asked.partition;
                let tp = format!("{}-{p}", req.topic);
                if seen.contains(&p) {
                    return Err(refuse(
                        ErrorCode::InvalidRequest,
                        format!("partition {tp} is reassigned twice in one request"),
                    ));
                }
                seen.push(p);
                let Some(current) = topic.partition_state(p) else {
                    return Err(refuse(
                        ErrorCode::UnknownPartition,
                        format!(
                            "topic {:?} has no partition {p} (it has {})",
                            req.topic, topic.meta.partitions
                        ),
                    ));
                };
                if asked.replicas.is_empty() {
                    return Err(refuse(
                        ErrorCode::InvalidReplicationFactor,
                        format!(
                            "{tp}: the target names no replica; the topic's partitions need at least {} (min_insync_replicas {min_insync})",
                            min_insync.max(1)
                        ),
                    ));
                }
                for &broker in &asked.replicas {
                    // Replicas it already has may be down (that is why one moves them); a
                    // new one must be up to catch up.
                    let known = current.replicas.contains(&BrokerId(broker));
                    if !inner.state.brokers.contains_key(&broker)
                        || (!known && !live.is_alive(BrokerId(broker)))
                    {
                        return Err(refuse(
                            ErrorCode::InvalidRequest,
                            format!(
                                "{tp}: broker {broker} is not a registered, live broker that can take a new replica"
                            ),
                        ));
                    }
                }
                let target: Vec<BrokerId> = asked.replicas.iter().copied().map(BrokerId).collect();
                let next = match current.reassign(&target, min_insync) {
                    Ok(next) => next,
                    Err(ReassignError::NoChange) => continue,
                    Err(ReassignError::Malformed) => {
                        return Err(refuse(
                            ErrorCode::InvalidRequest,
                            format!("{tp}: the target {:?} names a broker twice", asked.replicas),
                        ));
                    }
                    Err(ReassignError::BelowMinIsr { target, min_insync }) => {
                        return Err(refuse(
                            ErrorCode::InvalidReplicationFactor,
                            format!(
                                "{tp}: a target of {target} replicas is below the topic's min_insync_replicas {min_insync}: the in-sync set could never reach the minimum"
                            ),
                        ));
                    }
                };
                info!(partition = %tp, from = ?current.replicas, to = ?target, "reassigning");
                events.push(Event::PartitionChanged {
                    topic: req.topic.clone(),
                    topic_id: topic.meta.id(),
                    partition: p,
                    state: PartitionRecord::from(&next),
                });
            }
            let changed = !events.is_empty();
            let counted = replication_factor_changes(&inner.state, &events);
            events.extend(counted);
            inner.record(events)?;
            if changed {
                this.bump(&mut inner.live);
            }
            let topic = &inner.state.topics[&req.topic];
            let states: Vec<PartitionState> =
                topic.partitions.iter().map(PartitionState::from).collect();
            Ok(wire::describe_topic(
                &topic.meta,
                topic.placement,
                &states,
                &this.broker_infos(inner),
            ))
        })
        .await
    }

    /// Part of the tick: completes every reassignment whose target is in sync, elects a leader
    /// for every leaderless partition that has a candidate again (a controller restarted while
    /// a partition's last in-sync replica was away would otherwise wait for that broker to
    /// register anew), and, every `leader_rebalance_interval`, moves leaderships back to
    /// preferred replicas. One journal append for all of it.
    pub(super) fn balance(&self, inner: &mut Inner, now: Instant) {
        let live = inner.live_brokers(None);
        let rebalance = self
            .config
            .leader_rebalance_interval
            .is_some_and(|every| now.saturating_duration_since(inner.live.rebalanced_at) >= every);
        let mut events = changes_where(
            &inner.state,
            // A single copy with a leader has nothing to complete, elect or move back (one
            // being moved lists several replicas until the move completes).
            |record| record.replicas.len() >= 2 || record.leader.is_none(),
            |topic, s| {
                // One decision per partition per tick, so every change is one partition epoch
                // step; the next tick takes the next decision.
                s.complete_reassignment(&live, &RULES)
                    .or_else(|| s.elect(&live, topic.meta.settings.unclean_leader_election))
                    .or_else(|| rebalance.then(|| s.elect_preferred(&live)).flatten())
            },
        );
        if rebalance {
            inner.live.rebalanced_at = now;
        }
        if events.is_empty() {
            return;
        }
        let changed = events.len();
        let counted = replication_factor_changes(&inner.state, &events);
        events.extend(counted);
        if let Err(e) = inner.record(events) {
            warn!(error = %e.message, "could not journal balancing partitions; the next tick retries");
            return;
        }
        info!(
            partitions_changed = changed,
            "balanced partitions (reassignments completed, leaders elected or moved back to preferred replicas)"
        );
        self.bump(&mut inner.live);
    }
}

/// The `replication_factor` changes that go with `events` (see the module docs): for each topic
/// whose partitions `events` change, once they are applied, if none is being reassigned and all
/// have the same number of replicas, which differs from the topic's setting, the event that
/// makes the setting that number.
pub(super) fn replication_factor_changes(state: &ControllerState, events: &[Event]) -> Vec<Event> {
    let mut changed: BTreeMap<&str, BTreeMap<u32, &PartitionRecord>> = BTreeMap::new();
    for event in events {
        if let Event::PartitionChanged {
            topic,
            topic_id,
            partition,
            state: record,
        } = event
            && state
                .topics
                .get(topic)
                .is_some_and(|t| t.meta.id() == *topic_id)
        {
            changed
                .entry(topic.as_str())
                .or_default()
                .insert(*partition, record);
        }
    }
    let mut out = Vec::new();
    for (name, changed) in changed {
        let topic = &state.topics[name];
        let records = topic
            .partitions
            .iter()
            .enumerate()
            .map(|(p, record)| changed.get(&(p as u32)).copied().unwrap_or(record));
        let mut count = None;
        let mut uniform = true;
        for record in records {
            let n = record.replicas.len();
            if !record.removing.is_empty() || count.is_some_and(|c| c != n) {
                uniform = false;
                break;
            }
            count = Some(n);
        }
        let Some(count) = count.filter(|_| uniform).map(|c| c as u32) else {
            continue;
        };
        if count != topic.meta.settings.replication_factor {
            info!(topic = %name, from = topic.meta.settings.replication_factor, to = count, "every partition of the topic has a new replica count: the topic's replication factor follows");
            out.push(Event::ReplicationFactorChanged {
                topic: name.to_owned(),
                topic_id: topic.meta.id(),
                replication_factor: count,
            });
        }
    }
    out
}
