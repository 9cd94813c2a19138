//! Brokers at the controller: registration, heartbeat leases and liveness, controlled shutdown
//! and a damaged leader's resignation, and the metadata they learn (its version and the long
//! poll that delivers it).
//!
//! Invariants:
//! - A broker is alive (unfenced) from its first heartbeat that carries the current metadata
//!   version until its grace lapses: every registration and heartbeat restarts the grace, and
//!   [`Controller::tick`] fences a broker not heard from for `broker_lease`
//!   ([`LeaseConfig::controller_may_fence`](weir_replication::lease::LeaseConfig)). Going down
//!   and coming back both bump the metadata version, since clients route by liveness.
//! - Fencing a broker `fence`s it in every partition it replicates (KIP-841: out of the ISR
//!   except as its last member; a new leader from the live ISR if it led), and a broker coming
//!   back (unfenced) triggers `elect` in every leaderless partition it replicates; both are
//!   journaled before they take effect (rules 2, 3, 12).
//! - Rule 12b: a heartbeat grants a lease (`lease_ms > 0`) only when the broker holds the
//!   current metadata version ([`LeaseConfig::may_grant_lease`]); otherwise it is answered with
//!   the metadata and `lease_ms` 0, and an unfenced broker stays fenced until it applied it.
//!   A registration never grants a lease: the new start has applied nothing yet.
//! - Every registration is a new broker start with a journaled broker epoch larger than every
//!   earlier one (KIP-380, KIP-903); a heartbeat of another start of the broker is answered
//!   `reregister`. A start after an unclean stop (`clean_start` false) leaves every ISR it was
//!   in (rule 7, [`PartitionState::on_unclean_restart`]), except of partitions it is the only
//!   replica of: there no other copy exists for it to be measured against, and leaving would
//!   make the partition unavailable for good.
//! - Controlled shutdown ([`Controller::controlled_shutdown`]) marks the broker's current start
//!   as shutting down (in `Liveness`, not journaled) and `shut_down`s it in every replicated
//!   partition it replicates: its leaderships move to live ISR members where there are any, and
//!   it leaves the ISRs (journaled before it takes effect, then the version bumps). While
//!   marked, the replication decisions do not see it as live (`Inner::live_brokers`) and new
//!   topics are not placed on it, so it is never elected nor added to an ISR; it stays alive
//!   (it serves until it stops, and its lease lapses as usual once it has). Registering again
//!   clears the mark: that is a new start.
//! - A leader whose own copy is damaged resigns one partition
//!   ([`Controller::resign_leadership`]): the same `shut_down` decision for that partition
//!   alone, over the live brokers without it, and without the shutting-down mark (it rejoins
//!   the ISR once it has fetched the damaged range again). Refused unless it leads the
//!   partition in the epoch it names, so a late retry never moves a later leadership.
//! - A heartbeat records the version its broker holds (what a topic change waits on, see
//!   `topics`) and is answered with the whole picture whenever that version is not current:
//!   at once, or as soon as it changes within the broker's wait (at most `MAX_HEARTBEAT_WAIT`).
//! - A heartbeat from a broker the controller does not know asks it to register again, so a
//!   controller that lost its journal learns the cluster back from its brokers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use weir_proto::v1::{
    BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerInfo, ClusterMetadata,
    ControlledShutdownRequest, ControlledShutdownResponse, ErrorCode, PlacedTopic,
    RegisterBrokerRequest, ResignLeadershipRequest, ResignLeadershipResponse, TopicPartitions,
};

use weir_replication::PartitionState;

use super::state::{self, Event};
use super::{Controller, Inner, RULES, Result, partition_changes, refuse};
use crate::wire;

/// The longest a broker heartbeat is held open.
const MAX_HEARTBEAT_WAIT: Duration = Duration::from_secs(5);

impl Controller {
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
            .map(|t| {
                let states: Vec<PartitionState> =
                    t.partitions.iter().map(PartitionState::from).collect();
                let min_insync = t.meta.settings.min_insync_replicas;
                PlacedTopic {
                    description: Some(wire::describe_topic(
                        &t.meta,
                        t.placement,
                        &states,
                        &brokers,
                    )),
                    topic_id: t.meta.id(),
                    leaders: t.leaders.clone(),
                    partitions: states
                        .iter()
                        .map(|s| wire::partition_state_to_wire(s, min_insync))
                        .collect(),
                }
            })
            .collect();
        ClusterMetadata {
            version: self.current_version(inner.live.counter),
            brokers: brokers.into_values().collect(),
            topics,
            deleted_topic_ids: inner.state.deleted_topic_ids.clone(),
            users: inner
                .state
                .users
                .values()
                .map(|u| weir_proto::v1::UserCredential {
                    name: u.name.clone(),
                    token_hash: u.token_hash.clone(),
                })
                .collect(),
            acls: inner
                .state
                .acls
                .iter()
                .map(crate::security::wire::entry_to_wire)
                .collect(),
        }
    }

    pub(super) fn broker_infos(&self, inner: &Inner) -> BTreeMap<u32, BrokerInfo> {
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

    /// Whether a broker holding metadata `known` may get a lease now (rule 12b). A version of
    /// another controller incarnation was never this one's, so it counts as nothing applied.
    fn may_grant_lease(&self, inner: &Inner, known: u64) -> bool {
        let applied = (known >> 32 == self.incarnation).then_some(known);
        self.lease
            .may_grant_lease(applied, self.current_version(inner.live.counter), &RULES)
    }

    /// The answer to `broker`'s registration or heartbeat. It grants a lease only with `grant`
    /// (the caller checked rule 12b).
    fn heartbeat_answer(
        &self,
        inner: &Inner,
        broker: u32,
        with_metadata: bool,
        grant: bool,
    ) -> BrokerHeartbeatResponse {
        BrokerHeartbeatResponse {
            metadata: with_metadata.then(|| self.metadata_locked(inner)),
            reregister: false,
            lease_ms: if grant {
                self.config.broker_lease.as_millis() as u32
            } else {
                0
            },
            broker_epoch: inner.state.broker_epochs.get(&broker).copied().unwrap_or(0),
        }
    }

    /// A broker (re)announces itself: a new start, with a new broker epoch (see the module
    /// docs). Topics it holds that the controller does not know (and that were not deleted)
    /// are adopted as placed on it.
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
            let id = req.broker_id;
            let mut events = Vec::new();
            let record = state::BrokerRecord {
                id,
                address: req.address.clone(),
                data_address: req.data_address.clone(),
                external_address: req.external_address.clone(),
                external_data_address: req.external_data_address.clone(),
            };
            if inner.state.brokers.get(&id) != Some(&record) {
                events.push(Event::BrokerRegistered(record));
            }
            this.adopt_local_topics(&inner.state, id, &req.local_topics, &mut events);
            let epoch = inner.state.next_broker_epoch();
            debug_assert!(inner.state.broker_epochs.values().all(|&e| e < epoch));
            if !req.clean_start {
                // `on_unclean_restart` leaves the broker's new start out of the picture
                // anyway (it must not be elected in place of the one that left).
                let live = inner.live_brokers(Some(id));
                let broker = weir_replication::BrokerId(id);
                events.extend(partition_changes(&inner.state, id, |topic, s| {
                    if s.replicas.len() < 2 {
                        return None;
                    }
                    s.on_unclean_restart(
                        broker,
                        &live,
                        &RULES,
                        topic.meta.settings.unclean_leader_election,
                    )
                }));
            }
            let visible = !events.is_empty();
            events.push(Event::BrokerStarted {
                broker: id,
                broker_epoch: epoch,
            });
            inner.record(events)?;
            debug_assert_eq!(inner.state.broker_epochs.get(&id), Some(&epoch));
            inner.live.heard_at.insert(id, Instant::now());
            // A new start: whatever an earlier one asked at its shutdown no longer holds.
            inner.live.shutting_down.remove(&id);
            info!(
                broker = id,
                address = %req.address,
                broker_epoch = epoch,
                clean_start = req.clean_start,
                "broker registered"
            );
            if visible {
                this.bump(&mut inner.live);
            }
            Ok(this.heartbeat_answer(inner, id, true, false))
        })
        .await
    }

    /// A broker's lease renewal and metadata long poll (see the module docs).
    pub async fn broker_heartbeat(
        self: &Arc<Self>,
        req: BrokerHeartbeatRequest,
    ) -> Result<BrokerHeartbeatResponse> {
        let mut version = self.version.subscribe();
        let immediate = self
            .change(move |this, inner| this.heartbeat_received(inner, &req))
            .await?;
        if let Some(answer) = immediate {
            return Ok(answer);
        }
        let wait = Duration::from_millis(u64::from(req.wait_ms)).min(MAX_HEARTBEAT_WAIT);
        let _ = tokio::time::timeout(wait, version.wait_for(|&v| v != req.known_version)).await;
        let inner = self.lock()?;
        if inner.state.broker_epochs.get(&req.broker_id) != Some(&req.broker_epoch) {
            // Another start registered meanwhile.
            return Ok(BrokerHeartbeatResponse {
                reregister: true,
                ..BrokerHeartbeatResponse::default()
            });
        }
        let changed = req.known_version != self.current_version(inner.live.counter);
        // Rule 12b again at answer time: after a change the broker has not applied it.
        let grant = self.may_grant_lease(&inner, req.known_version)
            && inner.live.alive.contains(&req.broker_id);
        Ok(self.heartbeat_answer(&inner, req.broker_id, changed, grant))
    }

    /// The heartbeat's effect, under the lock: the grace restarts; a broker that holds the
    /// current metadata is unfenced (electing leaders where it lets partitions have one).
    /// Returns the answer when it is due at once, `None` to long-poll.
    fn heartbeat_received(
        &self,
        inner: &mut Inner,
        req: &BrokerHeartbeatRequest,
    ) -> Result<Option<BrokerHeartbeatResponse>> {
        let id = req.broker_id;
        let current_epoch = inner.state.broker_epochs.get(&id).copied();
        if !inner.state.brokers.contains_key(&id) || current_epoch != Some(req.broker_epoch) {
            // Unknown (a controller that lost its journal), or another start of the broker
            // (an older one, or a journal that lost the newer registration): a registration
            // gives it a consistent epoch.
            return Ok(Some(BrokerHeartbeatResponse {
                reregister: true,
                ..BrokerHeartbeatResponse::default()
            }));
        }
        inner.live.heard_at.insert(id, Instant::now());
        inner.live.acked_version.insert(id, req.known_version);
        self.acked.notify_waiters();
        if !self.may_grant_lease(inner, req.known_version) {
            // Rule 12b: the metadata first; the lease (and unfencing) once it is applied.
            return Ok(Some(self.heartbeat_answer(inner, id, true, false)));
        }
        if !inner.live.alive.contains(&id) {
            self.unfence(inner, id)?;
            // The broker's view is now behind (its liveness changed): it learns that, and
            // gets its lease with its next heartbeat.
            return Ok(Some(self.heartbeat_answer(inner, id, true, false)));
        }
        Ok(None)
    }

    /// `id` is unfenced: alive again, and the leader of every leaderless partition it may lead
    /// (`elect`, rule 3), journaled before it takes effect.
    fn unfence(&self, inner: &mut Inner, id: u32) -> Result<()> {
        let newly = inner.live.alive.insert(id);
        let picture = inner.live_brokers(None);
        let events = partition_changes(&inner.state, id, |topic, s| {
            s.elect(&picture, topic.meta.settings.unclean_leader_election)
        });
        let elected = events.len();
        if let Err(e) = inner.record(events) {
            // Fenced as it was: nothing of this took effect.
            if newly {
                inner.live.alive.remove(&id);
            }
            return Err(e);
        }
        info!(broker = id, elected, "broker is back");
        self.bump(&mut inner.live);
        Ok(())
    }

    /// A stopping broker's request to be relieved of its leaderships (see the module docs and
    /// the .proto). Answers with the replicated partitions it still leads.
    pub async fn controlled_shutdown(
        self: &Arc<Self>,
        req: ControlledShutdownRequest,
    ) -> Result<ControlledShutdownResponse> {
        self.change(move |this, inner| {
            let id = req.broker_id;
            let current = inner.state.broker_epochs.get(&id).copied();
            if !inner.state.brokers.contains_key(&id) || current != Some(req.broker_epoch) {
                return Err(refuse(
                    ErrorCode::StaleBrokerEpoch,
                    format!(
                        "broker {id} asked for a controlled shutdown with broker epoch {}, but its current start has {}; nothing was changed",
                        req.broker_epoch,
                        current.map_or_else(|| "none (not registered)".to_owned(), |e| e.to_string())
                    ),
                ));
            }
            let newly = inner.live.shutting_down.insert(id);
            // The picture without it (and without any other broker shutting down).
            let live = inner.live_brokers(None);
            let broker = weir_replication::BrokerId(id);
            let events = partition_changes(&inner.state, id, |_, s| {
                if s.replicas.len() < 2 {
                    return None;
                }
                s.shut_down(broker, &live)
            });
            let moved = events.len();
            if let Err(e) = inner.record(events) {
                // Nothing took effect: not shutting down either, so a retry starts afresh.
                if newly {
                    inner.live.shutting_down.remove(&id);
                }
                return Err(e);
            }
            if moved > 0 {
                this.bump(&mut inner.live);
            }
            let remaining = still_leads(&inner.state, id);
            info!(
                broker = id,
                partitions_changed = moved,
                remaining = remaining.iter().map(|t| t.partitions.len()).sum::<usize>(),
                "controlled shutdown"
            );
            Ok(ControlledShutdownResponse { remaining })
        })
        .await
    }

    /// A leader's request to hand one partition over because its own copy is damaged (see the
    /// module docs and the .proto): [`PartitionState::shut_down`] of that partition over the
    /// live brokers without the asking one, so it is never its own successor. The broker is not
    /// marked shutting down: once healed it may rejoin the ISR and lead again.
    pub async fn resign_leadership(
        self: &Arc<Self>,
        req: ResignLeadershipRequest,
    ) -> Result<ResignLeadershipResponse> {
        self.change(move |this, inner| {
            let id = req.broker_id;
            let current = inner.state.broker_epochs.get(&id).copied();
            if current != Some(req.broker_epoch) {
                return Err(refuse(
                    ErrorCode::StaleBrokerEpoch,
                    format!(
                        "broker {id} asked to resign a leadership with broker epoch {}, but its current start has {}; nothing was changed",
                        req.broker_epoch,
                        current.map_or_else(|| "none (not registered)".to_owned(), |e| e.to_string())
                    ),
                ));
            }
            let topic = inner
                .state
                .topics
                .get(&req.topic)
                .filter(|t| req.topic_id.is_empty() || t.meta.id() == req.topic_id)
                .ok_or_else(|| {
                    refuse(
                        ErrorCode::UnknownTopic,
                        format!("unknown topic {:?} (id {:?})", req.topic, req.topic_id),
                    )
                })?;
            let Some(current) = topic.partition_state(req.partition) else {
                return Err(refuse(
                    ErrorCode::UnknownPartition,
                    format!(
                        "topic {:?} has no partition {} (it has {})",
                        req.topic, req.partition, topic.meta.partitions
                    ),
                ));
            };
            let broker = weir_replication::BrokerId(id);
            if current.leader != Some(broker) || current.leader_epoch.0 != req.leader_epoch {
                return Err(refuse(
                    ErrorCode::NotLeader,
                    format!(
                        "{}-{}: broker {id} asked to resign leader epoch {}, but the partition is led by {:?} in epoch {}; nothing was changed",
                        req.topic,
                        req.partition,
                        req.leader_epoch,
                        current.leader.map(|b| b.0),
                        current.leader_epoch.0
                    ),
                ));
            }
            let min_insync = topic.meta.settings.min_insync_replicas;
            let topic_id = topic.meta.id();
            let live = inner.live_brokers(Some(id));
            let next = if current.replicas.len() < 2 {
                None
            } else {
                current.shut_down(broker, &live)
            };
            let Some(next) = next else {
                // The broker warns once and asks again every few seconds: no line per ask here.
                debug!(topic = %req.topic, partition = req.partition, broker = id, isr = ?current.isr, "a leader asked to resign (its copy is damaged), but no other in-sync replica is alive to take over; it keeps leading");
                return Ok(ResignLeadershipResponse {
                    state: Some(wire::partition_state_to_wire(&current, min_insync)),
                });
            };
            inner.record(vec![Event::PartitionChanged {
                topic: req.topic.clone(),
                topic_id,
                partition: req.partition,
                state: state::PartitionRecord::from(&next),
            }])?;
            this.bump(&mut inner.live);
            info!(topic = %req.topic, partition = req.partition, from = id, to = ?next.leader.map(|b| b.0), leader_epoch = next.leader_epoch.0, isr = ?next.isr, "leadership resigned (the leader's copy is damaged)");
            Ok(ResignLeadershipResponse {
                state: Some(wire::partition_state_to_wire(&next, min_insync)),
            })
        })
        .await
    }

    /// The metadata once its version differs from `known` (at once if it already does), or
    /// `None` after `wait` without a change.
    pub async fn wait_for_change(&self, known: u64, wait: Duration) -> Option<ClusterMetadata> {
        let mut version = self.version.subscribe();
        let _ = tokio::time::timeout(wait, version.wait_for(|&v| v != known)).await;
        let metadata = self.metadata();
        (metadata.version != known).then_some(metadata)
    }

    /// Fences every broker whose grace lapsed by `now` (part of [`Controller::tick`]): it
    /// leaves the ISRs and leaderships it held (journaled first), then the unfenced set.
    pub(super) fn expire_leases(&self, inner: &mut Inner, now: Instant) {
        let lapsed: Vec<u32> = inner
            .live
            .alive
            .iter()
            .copied()
            .filter(|id| {
                inner.live.heard_at.get(id).is_none_or(|&t| {
                    self.lease
                        .controller_may_fence(now.saturating_duration_since(t).as_millis() as u64)
                })
            })
            .collect();
        let mut fenced = false;
        for &id in &lapsed {
            // Fenced one at a time, each decision over the picture without it and without
            // those fenced before it.
            let live = inner.live_brokers(Some(id));
            let broker = weir_replication::BrokerId(id);
            let events = partition_changes(&inner.state, id, |topic, s| {
                s.fence(broker, &live, topic.meta.settings.unclean_leader_election)
            });
            let moved = events.len();
            if let Err(e) = inner.record(events) {
                // It stays unfenced (so still in every ISR); the next tick tries again.
                warn!(broker = id, error = %e.message, "could not journal fencing a broker");
                continue;
            }
            warn!(
                broker = id,
                partitions_changed = moved,
                "broker lease lapsed; fenced"
            );
            inner.live.alive.remove(&id);
            fenced = true;
        }
        if fenced {
            self.bump(&mut inner.live);
        }
    }
}

/// The replicated partitions `broker` leads in `state`, by topic.
fn still_leads(state: &state::ControllerState, broker: u32) -> Vec<TopicPartitions> {
    state
        .topics
        .values()
        .filter_map(|t| {
            let partitions: Vec<u32> = t
                .partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.replicas.len() >= 2 && p.leader == Some(broker))
                .map(|(i, _)| i as u32)
                .collect();
            (!partitions.is_empty()).then(|| TopicPartitions {
                topic: t.meta.name.clone(),
                partitions,
            })
        })
        .collect()
}
