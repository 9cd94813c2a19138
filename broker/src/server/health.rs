//! The gRPC health checking protocol (`grpc.health.v1.Health`) on every gRPC listener: what
//! `grpc_health_probe`, Kubernetes' gRPC probes and load balancers ask.
//!
//! [`NodeHealth`] owns the node's serving state, one value for both names the service answers
//! for: "" (the node) and `weir.v1.Weir`. It is NOT_SERVING until [`Broker::run`] begins
//! serving (the listeners are bound but not read before that), SERVING while it serves, and
//! NOT_SERVING again, for good, from the moment shutdown begins. Any other name is NOT_FOUND on
//! Check and SERVICE_UNKNOWN on Watch, as the protocol says.
//!
//! The service is written here over tonic-health's generated server rather than tonic-health's
//! own `HealthReporter`: that one's Watch streams never end, and graceful shutdown waits for
//! every open call, so one load balancer watching would hold a stopping broker for its whole
//! shutdown timeout. A Watch here sends NOT_SERVING when shutdown begins and then ends.
//!
//! [`Broker::run`]: super::Broker::run

use std::pin::Pin;

use futures::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use weir_proto::v1::weir_server::SERVICE_NAME as WEIR_SERVICE;

/// Where the node is in its life, as the health service reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Opened, not serving yet.
    Starting,
    Serving,
    /// Shutdown has begun: final.
    Stopping,
}

impl Phase {
    fn status(self) -> ServingStatus {
        match self {
            Phase::Serving => ServingStatus::Serving,
            Phase::Starting | Phase::Stopping => ServingStatus::NotServing,
        }
    }
}

/// The node's serving state; the health services of all its listeners read it.
pub struct NodeHealth {
    phase: watch::Sender<Phase>,
}

impl Default for NodeHealth {
    fn default() -> Self {
        NodeHealth {
            phase: watch::channel(Phase::Starting).0,
        }
    }
}

impl NodeHealth {
    /// The node serves requests now (unless it is already stopping).
    pub fn set_serving(&self) {
        self.phase.send_if_modified(|phase| {
            let starting = *phase == Phase::Starting;
            if starting {
                *phase = Phase::Serving;
            }
            starting
        });
    }

    /// Whether the node serves requests (its listeners are bound and read, and shutdown has
    /// not begun).
    pub fn is_serving(&self) -> bool {
        *self.phase.borrow() == Phase::Serving
    }

    /// Shutdown has begun: NOT_SERVING from now on, and every Watch ends.
    pub fn set_stopping(&self) {
        self.phase.send_if_modified(|phase| {
            let changed = *phase != Phase::Stopping;
            *phase = Phase::Stopping;
            changed
        });
    }

    /// The `grpc.health.v1.Health` service over this state.
    pub fn service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService {
            phase: self.phase.subscribe(),
        })
    }
}

/// `grpc.health.v1.Health` for one listener.
pub struct HealthService {
    phase: watch::Receiver<Phase>,
}

fn known(service: &str) -> bool {
    service.is_empty() || service == WEIR_SERVICE
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        if !known(service) {
            return Err(Status::not_found(format!(
                "unknown service {service:?}: this node reports \"\" and \"{WEIR_SERVICE}\""
            )));
        }
        Ok(Response::new(response(self.phase.borrow().status())))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let watching = Watching {
            phase: self.phase.clone(),
            known: known(&request.get_ref().service),
            sent_first: false,
            done: false,
        };
        Ok(Response::new(Box::pin(futures::stream::unfold(
            watching,
            Watching::next,
        ))))
    }
}

/// One Watch call: the current status first, then each change, ending after NOT_SERVING for
/// shutdown (or if the node is gone).
struct Watching {
    phase: watch::Receiver<Phase>,
    known: bool,
    sent_first: bool,
    done: bool,
}

impl Watching {
    async fn next(mut self) -> Option<(Result<HealthCheckResponse, Status>, Watching)> {
        if self.done {
            return None;
        }
        if self.sent_first {
            if !self.known {
                // The protocol keeps a Watch of an unknown service open (it may appear later;
                // here none does), so until shutdown.
                let _ = self.phase.wait_for(|p| *p == Phase::Stopping).await;
                return None;
            }
            self.phase.changed().await.ok()?;
        }
        self.sent_first = true;
        let status = if self.known {
            let now = *self.phase.borrow_and_update();
            self.done = now == Phase::Stopping;
            now.status()
        } else {
            ServingStatus::ServiceUnknown
        };
        Some((Ok(response(status)), self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn ask(service: &str) -> Request<HealthCheckRequest> {
        Request::new(HealthCheckRequest {
            service: service.into(),
        })
    }

    async fn check(health: &NodeHealth, service: &str) -> Result<i32, tonic::Code> {
        let server = HealthService {
            phase: health.phase.subscribe(),
        };
        server
            .check(ask(service))
            .await
            .map(|r| r.into_inner().status)
            .map_err(|s| s.code())
    }

    #[tokio::test]
    async fn serving_between_start_and_shutdown_for_the_node_and_weir_only() {
        let health = NodeHealth::default();
        let not_serving = Ok(ServingStatus::NotServing as i32);
        assert_eq!(check(&health, "").await, not_serving);
        health.set_serving();
        for name in ["", WEIR_SERVICE] {
            assert_eq!(
                check(&health, name).await,
                Ok(ServingStatus::Serving as i32)
            );
        }
        assert_eq!(
            check(&health, "weir.v1.Nope").await,
            Err(tonic::Code::NotFound)
        );
        health.set_stopping();
        // Final: a late set_serving does not bring it back.
        health.set_serving();
        assert_eq!(check(&health, WEIR_SERVICE).await, not_serving);
    }

    #[tokio::test]
    async fn a_watch_follows_the_node_and_ends_after_shutdown() {
        let health = NodeHealth::default();
        health.set_serving();
        let server = HealthService {
            phase: health.phase.subscribe(),
        };
        let mut known = server.watch(ask(WEIR_SERVICE)).await.unwrap().into_inner();
        let mut unknown = server.watch(ask("other")).await.unwrap().into_inner();
        let status =
            |item: Option<Result<HealthCheckResponse, Status>>| item.unwrap().unwrap().status;
        assert_eq!(status(known.next().await), ServingStatus::Serving as i32);
        assert_eq!(
            status(unknown.next().await),
            ServingStatus::ServiceUnknown as i32
        );
        health.set_stopping();
        assert_eq!(status(known.next().await), ServingStatus::NotServing as i32);
        assert!(known.next().await.is_none());
        assert!(unknown.next().await.is_none());
    }
}
