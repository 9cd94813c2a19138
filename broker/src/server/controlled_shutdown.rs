//! Controlled shutdown (Kafka's ControlledShutdown): a stopping broker first asks the
//! controller to move its leaderships of replicated partitions to in-sync followers, and keeps
//! serving until its metadata shows them moved, so a rolling restart costs clients a NOT_LEADER
//! and a retry, not a lease's worth of unavailability.
//!
//! Invariants:
//! - It runs before the gRPC servers stop accepting and before any log closes: meanwhile
//!   followers keep fetching from this broker until they lead, and in-flight `acks=all`
//!   produces finish (or fail retriably when the leadership moves under them).
//! - It is bounded by `controlled_shutdown_timeout_ms`; on expiry it logs what this broker
//!   still leads and the normal shutdown goes on. Nothing here can keep a broker from stopping.
//! - A node that leads no replicated partition (a single node, unreplicated topics) does not
//!   call the controller at all: it stops exactly as fast as without this step.
//! - Done means: every partition the metadata still names this broker the leader of is one the
//!   controller's last answer listed as remaining (no other live in-sync replica to take it).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};
use weir_proto::v1::ControlledShutdownRequest;

use super::BrokerState;

/// How often the controller is asked again while the handover is incomplete (idempotent: a
/// controller that restarted meanwhile forgot the first request; a partition may have become
/// movable since).
const ASK_AGAIN: Duration = Duration::from_secs(1);
/// How long to wait for a newer picture before looking again.
const POLL: Duration = Duration::from_millis(200);

/// Hands this broker's leaderships over before it stops, up to `timeout` (see the module docs).
pub async fn hand_over(state: &BrokerState, timeout: Duration) {
    let held = state.cluster.led_replicated();
    let broker_epoch = state.cluster.broker_epoch();
    if held.is_empty() || timeout.is_zero() || broker_epoch == 0 {
        return;
    }
    info!(
        partitions = held.len(),
        "controlled shutdown: moving leaderships to in-sync followers before stopping"
    );
    let started = Instant::now();
    let deadline = started + timeout;
    let mut updates = state.cluster.updates();
    // The controller's last answer: the partitions it could not move.
    let mut remaining: Option<BTreeSet<(String, u32)>> = None;
    let mut asked_at: Option<Instant> = None;
    let mut failures = 0u32;
    loop {
        let now = Instant::now();
        if asked_at.is_none_or(|at| now.duration_since(at) >= ASK_AGAIN) {
            asked_at = Some(now);
            let request = ControlledShutdownRequest {
                broker_id: state.cluster.node_id,
                broker_epoch,
            };
            let call = state.controller.controlled_shutdown(request);
            match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(answer)) => {
                    remaining = Some(
                        answer
                            .remaining
                            .into_iter()
                            .flat_map(|t| {
                                let topic = t.topic;
                                t.partitions.into_iter().map(move |p| (topic.clone(), p))
                            })
                            .collect(),
                    );
                }
                Ok(Err(e)) => {
                    failures += 1;
                    if failures == 1 {
                        warn!(error = %e.message, "controlled shutdown: the controller refused or cannot be reached; retrying until the timeout");
                    }
                }
                Err(_) => {}
            }
        }
        let leading: BTreeSet<(String, u32)> = state
            .cluster
            .led_replicated()
            .intersection(&held)
            .cloned()
            .collect();
        if let Some(remaining) = &remaining
            && leading.is_subset(remaining)
        {
            info!(
                moved = held.len() - leading.len(),
                kept = leading.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "controlled shutdown: leaderships handed over"
            );
            if !leading.is_empty() {
                warn!(partitions = ?leading, "controlled shutdown: no other in-sync replica is alive to lead these; they are unavailable until this broker is back or its lease lapses");
            }
            return;
        }
        if Instant::now() >= deadline {
            warn!(
                timeout_ms = timeout.as_millis() as u64,
                still_leading = ?leading,
                "controlled shutdown timed out; stopping anyway (these partitions move once this broker's lease lapses)"
            );
            return;
        }
        let wait = POLL.min(deadline.saturating_duration_since(Instant::now()));
        if let Ok(Err(_)) = tokio::time::timeout(wait, updates.changed()).await {
            // The view is gone (cannot happen while `state` lives): do not spin.
            tokio::time::sleep(wait).await;
        }
    }
}
