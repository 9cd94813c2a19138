//! The `weir.v1.Controller` gRPC service: how brokers in other processes register, heartbeat,
//! change in-sync sets, hand their leaderships over before they stop, and resign one whose
//! copy is damaged. Served only by a node that runs the controller.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use weir_proto::v1::controller_server::Controller as ControllerRpc;
use weir_proto::v1::{
    AlterPartitionRequest, AlterPartitionResponse, BrokerHeartbeatRequest, BrokerHeartbeatResponse,
    ControlledShutdownRequest, ControlledShutdownResponse, RegisterBrokerRequest,
};

use super::BrokerState;
use crate::controller::Controller;
use crate::security::guard::{Credentials, Door};
use crate::wire::errors::to_status;

pub struct ControllerService {
    pub controller: Arc<Controller>,
    /// The node's state, for its guard and its copy of the users and ACLs.
    pub state: Arc<BrokerState>,
}

impl ControllerService {
    /// The one check every call makes first: its principal (the broker token's user, under the
    /// internal listener's mode) may alter the cluster (Kafka's ClusterAction).
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let credentials = Credentials::of_request(request, Door::Internal).map_err(to_status)?;
        self.state
            .security
            .check_cluster_action(&self.state.cluster.current(), &credentials)
            .map(drop)
            .map_err(to_status)
    }
}

#[tonic::async_trait]
impl ControllerRpc for ControllerService {
    async fn register_broker(
        &self,
        request: Request<RegisterBrokerRequest>,
    ) -> Result<Response<BrokerHeartbeatResponse>, Status> {
        self.authorize(&request)?;
        let answer = self.controller.register_broker(request.into_inner()).await;
        answer.map(Response::new).map_err(to_status)
    }

    async fn broker_heartbeat(
        &self,
        request: Request<BrokerHeartbeatRequest>,
    ) -> Result<Response<BrokerHeartbeatResponse>, Status> {
        self.authorize(&request)?;
        let answer = self.controller.broker_heartbeat(request.into_inner()).await;
        answer.map(Response::new).map_err(to_status)
    }

    async fn alter_partition(
        &self,
        request: Request<AlterPartitionRequest>,
    ) -> Result<Response<AlterPartitionResponse>, Status> {
        self.authorize(&request)?;
        let answer = self.controller.alter_partition(request.into_inner()).await;
        answer.map(Response::new).map_err(to_status)
    }

    async fn controlled_shutdown(
        &self,
        request: Request<ControlledShutdownRequest>,
    ) -> Result<Response<ControlledShutdownResponse>, Status> {
        self.authorize(&request)?;
        let answer = self
            .controller
            .controlled_shutdown(request.into_inner())
            .await;
        answer.map(Response::new).map_err(to_status)
    }

    async fn resign_leadership(
        &self,
        request: Request<weir_proto::v1::ResignLeadershipRequest>,
    ) -> Result<Response<weir_proto::v1::ResignLeadershipResponse>, Status> {
        self.authorize(&request)?;
        let answer = self
            .controller
            .resign_leadership(request.into_inner())
            .await;
        answer.map(Response::new).map_err(to_status)
    }
}
