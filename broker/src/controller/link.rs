//! How a node reaches the controller: in process (the controller runs in this node) or over
//! gRPC (`--controller HOST:PORT`). Every node forwards metadata changes and group calls
//! through its link, so a client can send them to any node.
//!
//! A remote controller that cannot be reached is `CONTROLLER_UNAVAILABLE` (retriable), with
//! the address and what still works; an error the controller itself returned passes through
//! unchanged.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use weir_proto::status;
use weir_proto::v1::controller_client::ControllerClient;
use weir_proto::v1::weir_client::WeirClient;
use weir_proto::v1::{
    AclFilter, CreateAclsRequest, CreateAclsResponse, CreateUserRequest, CreateUserResponse,
    DeleteUserRequest, DeleteUserResponse, DescribeAclsResponse, ListUsersRequest,
    ListUsersResponse,
};
use weir_proto::v1::{
    AlterPartitionReassignmentsRequest, AlterPartitionRequest, AlterPartitionResponse,
    BrokerHeartbeatRequest, BrokerHeartbeatResponse, CommitOffsetsRequest, CommitOffsetsResponse,
    ControlledShutdownRequest, ControlledShutdownResponse, CreateTopicRequest, DeleteTopicRequest,
    DeleteTopicResponse, DescribeGroupRequest, Error, ErrorCode, FetchOffsetsRequest,
    FetchOffsetsResponse, GroupAssignment, GroupDescription, GroupHeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    RegisterBrokerRequest, ResetOffsetsRequest, TopicDescription,
};

use super::{ACK_WAIT, Controller};

/// How long a forwarded call may take (a create waits up to [`ACK_WAIT`] for brokers).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The way to the controller.
#[derive(Clone)]
pub enum ControllerLink {
    Local(Arc<Controller>),
    Remote(Box<RemoteController>),
}

/// A controller in another process.
#[derive(Clone)]
pub struct RemoteController {
    address: String,
    /// The broker token, sent as `authorization: Bearer` on every call.
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    weir: WeirClient<Channel>,
    control: ControllerClient<Channel>,
}

impl RemoteController {
    /// A link to the controller at `address` (`HOST:PORT`). Connects lazily: the controller
    /// may start after this node.
    /// With `tls`, the link is TLS (trusting `tls.ca_file`, presenting this broker's
    /// certificate); with `token`, every call carries it.
    pub fn new(
        address: &str,
        token: Option<String>,
        tls: Option<crate::security::tls::ClientTls>,
    ) -> Result<Self, String> {
        let token = token
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| "the broker token is not printable ASCII".to_owned())
            })
            .transpose()?;
        let uri = if address.contains("://") {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        // The scheme only says TLS or not, which `tls` decides.
        let uri = uri.replacen("https://", "http://", 1);
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| format!("invalid controller address {address:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = match tls {
            None => endpoint.connect_lazy(),
            Some(tls) => {
                endpoint.connect_with_connector_lazy(crate::security::tls::grpc_connector(tls))
            }
        };
        Ok(RemoteController {
            address: address.to_owned(),
            token,
            weir: WeirClient::new(channel.clone()),
            control: ControllerClient::new(channel),
        })
    }

    /// `message` as a request carrying the broker token.
    fn request<M>(&self, message: M) -> tonic::Request<M> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert(crate::security::guard::AUTHORIZATION, token.clone());
        }
        request
    }

    async fn call<T>(
        &self,
        timeout: Duration,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => {
                Err(status::from_status(&status)
                    .unwrap_or_else(|| self.unreachable(status.message())))
            }
            Err(_) => Err(self.unreachable(&format!("no answer within {timeout:?}"))),
        }
    }

    fn unreachable(&self, why: &str) -> Error {
        status::error(
            ErrorCode::ControllerUnavailable,
            format!(
                "the controller at {} cannot be reached ({why}); produce and fetch on existing partitions still work, metadata changes, group calls and commits wait for it",
                self.address
            ),
        )
    }
}

/// A client-facing call: run by the local controller, or forwarded to the remote one's
/// `weir.v1.Weir` service under the same name.
macro_rules! forward {
    ($(#[$doc:meta])* $name:ident($req:ty) -> $resp:ty) => {
        $(#[$doc])*
        pub async fn $name(&self, req: $req) -> Result<$resp, Error> {
            match self {
                ControllerLink::Local(c) => c.$name(req).await,
                ControllerLink::Remote(r) => r.call(CALL_TIMEOUT, r.weir.clone().$name(r.request(req))).await,
            }
        }
    };
}

impl ControllerLink {
    forward!(create_topic(CreateTopicRequest) -> TopicDescription);
    forward!(delete_topic(DeleteTopicRequest) -> DeleteTopicResponse);
    forward!(alter_partition_reassignments(AlterPartitionReassignmentsRequest) -> TopicDescription);
    forward!(join_group(JoinGroupRequest) -> GroupAssignment);
    forward!(group_heartbeat(GroupHeartbeatRequest) -> GroupAssignment);
    forward!(leave_group(LeaveGroupRequest) -> LeaveGroupResponse);
    forward!(commit_offsets(CommitOffsetsRequest) -> CommitOffsetsResponse);
    forward!(reset_offsets(ResetOffsetsRequest) -> CommitOffsetsResponse);
    forward!(fetch_offsets(FetchOffsetsRequest) -> FetchOffsetsResponse);
    forward!(list_groups(ListGroupsRequest) -> ListGroupsResponse);
    forward!(describe_group(DescribeGroupRequest) -> GroupDescription);
    forward!(create_user(CreateUserRequest) -> CreateUserResponse);
    forward!(delete_user(DeleteUserRequest) -> DeleteUserResponse);
    forward!(list_users(ListUsersRequest) -> ListUsersResponse);
    forward!(create_acls(CreateAclsRequest) -> CreateAclsResponse);
    forward!(describe_acls(AclFilter) -> DescribeAclsResponse);
    forward!(delete_acls(AclFilter) -> DescribeAclsResponse);

    pub async fn register_broker(
        &self,
        req: RegisterBrokerRequest,
    ) -> Result<BrokerHeartbeatResponse, Error> {
        match self {
            ControllerLink::Local(c) => c.register_broker(req).await,
            ControllerLink::Remote(r) => {
                r.call(
                    CALL_TIMEOUT,
                    r.control.clone().register_broker(r.request(req)),
                )
                .await
            }
        }
    }

    pub async fn alter_partition(
        &self,
        req: AlterPartitionRequest,
    ) -> Result<AlterPartitionResponse, Error> {
        match self {
            ControllerLink::Local(c) => c.alter_partition(req).await,
            ControllerLink::Remote(r) => {
                r.call(
                    CALL_TIMEOUT,
                    r.control.clone().alter_partition(r.request(req)),
                )
                .await
            }
        }
    }

    pub async fn controlled_shutdown(
        &self,
        req: ControlledShutdownRequest,
    ) -> Result<ControlledShutdownResponse, Error> {
        match self {
            ControllerLink::Local(c) => c.controlled_shutdown(req).await,
            ControllerLink::Remote(r) => {
                r.call(
                    CALL_TIMEOUT,
                    r.control.clone().controlled_shutdown(r.request(req)),
                )
                .await
            }
        }
    }

    pub async fn broker_heartbeat(
        &self,
        req: BrokerHeartbeatRequest,
    ) -> Result<BrokerHeartbeatResponse, Error> {
        match self {
            ControllerLink::Local(c) => c.broker_heartbeat(req).await,
            ControllerLink::Remote(r) => {
                let timeout = Duration::from_millis(u64::from(req.wait_ms)) + ACK_WAIT;
                r.call(timeout, r.control.clone().broker_heartbeat(r.request(req)))
                    .await
            }
        }
    }

    pub async fn resign_leadership(
        &self,
        req: weir_proto::v1::ResignLeadershipRequest,
    ) -> Result<weir_proto::v1::ResignLeadershipResponse, Error> {
        match self {
            ControllerLink::Local(c) => c.resign_leadership(req).await,
            ControllerLink::Remote(r) => {
                r.call(
                    CALL_TIMEOUT,
                    r.control.clone().resign_leadership(r.request(req)),
                )
                .await
            }
        }
    }
}
