//! Brokers at the controller: registration, heartbeat leases and liveness, and the metadata
//! they learn (its version and the long poll that delivers it).
//!
//! Invariants:
//! - A broker is alive while its lease runs: registration and every heartbeat renew it, and
//!   [`Controller::tick`] marks down a broker whose lease lapsed. Going down and coming back
//!   both bump the metadata version, since clients route by liveness.
//! - A heartbeat records the version its broker holds (what a topic change waits on, see
//!   `topics`) and is answered with the whole picture whenever that version is not current:
//!   at once, or as soon as it changes within the broker's wait (at most `MAX_HEARTBEAT_WAIT`).
//! - A heartbeat from a broker the controller does not know asks it to register again, so a
//!   controller that lost its journal learns the cluster back from its brokers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use weir_proto::v1::{
    BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerInfo, ClusterMetadata, ErrorCode,
    PlacedTopic, RegisterBrokerRequest,
};

use super::state::{self, Event};
use super::{Controller, Inner, Result, refuse};
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
            .map(|t| PlacedTopic {
                description: Some(wire::describe_topic(
                    &t.meta,
                    t.placement,
                    &t.leaders,
                    &brokers,
                )),
                topic_id: t.meta.id(),
                leaders: t.leaders.clone(),
                partitions: Vec::new(),
            })
            .collect();
        ClusterMetadata {
            version: self.current_version(inner.live.counter),
            brokers: brokers.into_values().collect(),
            topics,
            deleted_topic_ids: inner.state.deleted_topic_ids.clone(),
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

    fn heartbeat_answer(&self, inner: &Inner, with_metadata: bool) -> BrokerHeartbeatResponse {
        BrokerHeartbeatResponse {
            metadata: with_metadata.then(|| self.metadata_locked(inner)),
            reregister: false,
            lease_ms: self.config.broker_lease.as_millis() as u32,
            broker_epoch: 0,
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
            this.adopt_local_topics(&inner.state, req.broker_id, &req.local_topics, &mut events);
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

    /// Marks down every broker whose lease lapsed by `now` (part of [`Controller::tick`]).
    pub(super) fn expire_leases(&self, inner: &mut Inner, now: Instant) {
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
            self.bump(&mut inner.live);
        }
    }
}
