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

use crate::controller::Controller;
use crate::wire::errors::to_status;

pub struct ControllerService {
    pub controller: Arc<Controller>,
}

#[tonic::async_trait]
impl ControllerRpc for ControllerService {
    async fn register_broker(
        &self,
        request: Request<RegisterBrokerRequest>,
    ) -> Result<Response<BrokerHeartbeatResponse>, Status> {
        let answer = self.controller.register_broker(request.into_inner()).await;
        answer.map(Response::new).map_err(to_status)
    }

    async fn broker_heartbeat(
        &self,
        request: Request<BrokerHeartbeatRequest>,
    ) -> Result<Response<BrokerHeartbeatResponse>, Status> {
        let answer = self.controller.broker_heartbeat(request.into_inner()).await;
        answer.map(Response::new).map_err(to_status)
    }

    async fn alter_partition(
        &self,
        request: Request<AlterPartitionRequest>,
    ) -> Result<Response<AlterPartitionResponse>, Status> {
        let answer = self.controller.alter_partition(request.into_inner()).await;
        answer.map(Response::new).map_err(to_status)
    }

    async fn controlled_shutdown(
        &self,
        request: Request<ControlledShutdownRequest>,
    ) -> Result<Response<ControlledShutdownResponse>, Status> {
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
        let answer = self
            .controller
            .resign_leadership(request.into_inner())
            .await;
        answer.map(Response::new).map_err(to_status)
    }
}
