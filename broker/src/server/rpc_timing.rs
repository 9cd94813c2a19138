//! Latency of every unary RPC of `weir.v1.Weir`, by method: a tower wrapper around the service
//! that observes `weir_request_duration_seconds{rpc, transport="grpc"}` when the handler's
//! answer is ready. Produce times itself (its handler splits the time into append, sync and
//! replication waits, and ProduceStream times each request), and the streaming Fetch times its
//! first answer in the fetch session; both are left to those.
//!
//! Cost per call: one lookup of the method's histogram in a map built at start (by `&str`, no
//! allocation), one boxed future, one observation.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use super::request_limit::weir_method;
use crate::metrics::{Metrics, Timer};
use tonic::body::Body;
use tonic::server::NamedService;
use tower_service::Service;

/// The unary methods timed here, with the `rpc` label each gets.
const TIMED: [(&str, &str); 22] = [
    ("InitProducer", "init_producer"),
    ("ListOffsets", "list_offsets"),
    ("CreateTopic", "create_topic"),
    ("DeleteTopic", "delete_topic"),
    ("ListTopics", "list_topics"),
    ("DescribeTopic", "describe_topic"),
    (
        "AlterPartitionReassignments",
        "alter_partition_reassignments",
    ),
    ("Metadata", "metadata"),
    ("JoinGroup", "join_group"),
    ("GroupHeartbeat", "group_heartbeat"),
    ("LeaveGroup", "leave_group"),
    ("CommitOffsets", "commit_offsets"),
    ("FetchOffsets", "fetch_offsets"),
    ("ListGroups", "list_groups"),
    ("DescribeGroup", "describe_group"),
    ("ResetOffsets", "reset_offsets"),
    ("CreateUser", "create_user"),
    ("DeleteUser", "delete_user"),
    ("ListUsers", "list_users"),
    ("CreateAcls", "create_acls"),
    ("DescribeAcls", "describe_acls"),
    ("DeleteAcls", "delete_acls"),
];

/// The Weir service with its unary calls timed.
#[derive(Clone)]
pub struct RpcTiming<S> {
    inner: S,
    timers: Arc<HashMap<&'static str, Timer>>,
}

impl<S> RpcTiming<S> {
    pub fn new(inner: S, metrics: &Metrics) -> Self {
        let timers = TIMED
            .iter()
            .map(|&(method, rpc)| (method, metrics.grpc_timer(rpc)))
            .collect();
        RpcTiming {
            inner,
            timers: Arc::new(timers),
        }
    }
}

impl<S: NamedService> NamedService for RpcTiming<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for RpcTiming<S>
where
    S: Service<http::Request<Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let timer = weir_method(request.uri())
            .and_then(|method| self.timers.get(method))
            .cloned();
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            if let Some(timer) = timer {
                timer.observe_since(started);
            }
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unary_rpc_but_produce_is_timed() {
        // The service's methods from its descriptor, so a new RPC cannot be left untimed.
        use prost::Message;
        let set =
            prost_types::FileDescriptorSet::decode(weir_proto::v1::FILE_DESCRIPTOR_SET).unwrap();
        let service = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .find(|s| s.name() == "Weir")
            .unwrap();
        let mut unary: Vec<&str> = service
            .method
            .iter()
            .filter(|m| !m.client_streaming() && !m.server_streaming())
            .map(|m| m.name())
            .filter(|&m| m != "Produce")
            .collect();
        unary.sort_unstable();
        let mut timed: Vec<&str> = TIMED.iter().map(|(m, _)| *m).collect();
        timed.sort_unstable();
        assert_eq!(unary, timed);
    }
}
