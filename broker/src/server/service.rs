//! The `weir.v1.Weir` gRPC service: request checking and translation between the wire messages
//! and [`Topics`](crate::topics::Topics). The produce and fetch paths live in their own files;
//! metadata changes and group calls go to the controller through the node's
//! [`ControllerLink`](crate::controller::link::ControllerLink); metadata reads are answered
//! from the node's [`ClusterView`](super::cluster::ClusterView).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weir_proto::v1::weir_server::Weir;
use weir_proto::v1::{
    AclFilter, CreateAclsRequest, CreateAclsResponse, CreateUserRequest, CreateUserResponse,
    DeleteUserRequest, DeleteUserResponse, DescribeAclsResponse, ListUsersRequest,
    ListUsersResponse,
};
use weir_proto::v1::{
    AlterPartitionReassignmentsRequest, CommitOffsetsRequest, CommitOffsetsResponse,
    CreateTopicRequest, DeleteTopicRequest, DeleteTopicResponse, DescribeGroupRequest,
    DescribeTopicRequest, FetchOffsetsRequest, FetchOffsetsResponse, FetchRequest, FetchResponse,
    GroupAssignment, GroupDescription, GroupHeartbeatRequest, InitProducerRequest,
    InitProducerResponse, JoinGroupRequest, LeaveGroupRequest, LeaveGroupResponse,
    ListGroupsRequest, ListGroupsResponse, ListOffsetsRequest, ListOffsetsResponse,
    ListTopicsRequest, ListTopicsResponse, MetadataRequest, MetadataResponse, OffsetSpec,
    PartitionOffset, ProduceRequest, ProduceResponse, ResetOffsetsRequest, TopicDescription,
};

use super::BrokerState;
use super::listener::Listener;
use super::{fetch, produce};
use crate::security::PeerIdentity;
use crate::security::acl::{Operation, Resource};
use crate::security::guard::{Credentials, Door, Guard, Policy};
use crate::security::principal::Principal;
use crate::wire::errors::{internal, invalid_request, shutting_down, storage_status, to_status};

/// Responses a stream can have queued before the handler waits for the client to read.
const STREAM_QUEUE: usize = 4;

/// A controller answer as a gRPC response.
fn reply<T>(answer: Result<T, weir_proto::v1::Error>) -> Result<Response<T>, Status> {
    answer.map(Response::new).map_err(to_status)
}

/// The service handle tonic clones per connection.
#[derive(Clone)]
pub struct WeirService {
    pub(super) state: Arc<BrokerState>,
    /// Which addresses this listener's clients are told (see [`super::listener`]).
    pub(super) listener: Listener,
}

fn peer<T>(request: &Request<T>) -> Option<std::net::SocketAddr> {
    request
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|info| info.remote_addr)
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Weir for WeirService {
    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        // The token, and write on the topic: checked by `produce::admit`.
        let credentials = self.credentials(&request)?;
        let peer = peer(&request);
        produce::produce(&self.state, &credentials, peer, request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn init_producer(
        &self,
        request: Request<InitProducerRequest>,
    ) -> Result<Response<InitProducerResponse>, Status> {
        let (policy, principal) = self.caller(&request)?;
        Guard::may_init_producer(&policy, &principal).map_err(to_status)?;
        let state = Arc::clone(&self.state);
        let producer_id = tokio::task::spawn_blocking(move || state.producer_ids.allocate())
            .await
            .map_err(|e| to_status(internal(format!("producer id task failed: {e}"))))?
            .map_err(storage_status)?;
        Ok(Response::new(InitProducerResponse {
            producer_id,
            producer_epoch: 0,
        }))
    }

    type ProduceStreamStream = BoxStream<ProduceResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        // The token again and write on each request's topic: checked per request by
        // `produce::admit`. A stream without valid credentials is refused at once.
        self.caller(&request)?;
        let credentials = self.credentials(&request)?;
        let peer = peer(&request);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let state = Arc::clone(&self.state);
        tokio::spawn(produce::produce_stream(
            state,
            credentials,
            peer,
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type FetchStream = BoxStream<FetchResponse>;

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        self.authorize(
            &request,
            Operation::Read,
            Resource::Topic(&request.get_ref().topic),
        )?;
        let req = request.into_inner();
        if self.state.is_shutting_down() {
            return Err(to_status(shutting_down()));
        }
        let partition = self
            .state
            .readable_partition(&req.topic, req.partition, req.current_leader_epoch)
            .map_err(to_status)?;
        fetch::check_start(&partition.log, req.offset).map_err(storage_status)?;
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(fetch::grpc_fetch(
            Arc::clone(&self.state),
            partition,
            req,
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        self.authorize(
            &request,
            Operation::Describe,
            Resource::Topic(&request.get_ref().topic),
        )?;
        let req = request.into_inner();
        let spec = OffsetSpec::try_from(req.spec)
            .map_err(|_| to_status(invalid_request(format!("unknown offset spec {}", req.spec))))?;
        let mut logs = Vec::new();
        if req.partitions.is_empty() {
            // All of the topic's partitions this broker serves reads of: those it leads (or
            // holds the only copy of) when the topic is placed on several brokers, never a
            // follower's copy (ask each leader for its own).
            match self.state.topics.get(&req.topic) {
                Ok(topic) => {
                    for (p, _) in topic.local_partitions() {
                        if let Ok(partition) =
                            self.state
                                .readable_partition(&req.topic, p, req.current_leader_epoch)
                        {
                            logs.push((p, partition));
                        }
                    }
                }
                Err(_) if self.state.cluster.topic(&req.topic).is_some() => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            for &p in &req.partitions {
                let partition = self
                    .state
                    .readable_partition(&req.topic, p, req.current_leader_epoch)
                    .map_err(to_status)?;
                logs.push((p, partition));
            }
        }
        // Off the runtime threads: a time lookup takes partition locks and may open segments.
        let offsets = tokio::task::spawn_blocking(move || {
            logs.into_iter()
                .map(|(partition, held)| {
                    let log = &held.log;
                    // Consumers' offsets: never past the high watermark.
                    let offset = match spec {
                        OffsetSpec::Earliest => log.log_start_offset(),
                        OffsetSpec::Latest => held.high_watermark(),
                        OffsetSpec::Timestamp => log
                            .offset_for_time(req.timestamp_ms)?
                            .filter(|&o| o < held.high_watermark())
                            .unwrap_or_else(|| held.high_watermark()),
                    };
                    Ok(PartitionOffset { partition, offset })
                })
                .collect::<Result<Vec<_>, weir_storage::StorageError>>()
        })
        .await
        .map_err(|e| to_status(internal(format!("offset lookup failed: {e}"))))?
        .map_err(storage_status)?;
        Ok(Response::new(ListOffsetsResponse { offsets }))
    }

    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<TopicDescription>, Status> {
        self.authorize(
            &request,
            Operation::Create,
            Resource::Topic(&request.get_ref().name),
        )?;
        let req = request.into_inner();
        let created = self
            .state
            .controller
            .create_topic(req)
            .await
            .map_err(to_status)?;
        Ok(Response::new(self.describe(created)))
    }

    async fn alter_partition_reassignments(
        &self,
        request: Request<AlterPartitionReassignmentsRequest>,
    ) -> Result<Response<TopicDescription>, Status> {
        self.authorize(&request, Operation::Alter, Resource::Cluster)?;
        let changed = self
            .state
            .controller
            .alter_partition_reassignments(request.into_inner())
            .await
            .map_err(to_status)?;
        Ok(Response::new(self.describe(changed)))
    }

    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        self.authorize(
            &request,
            Operation::Delete,
            Resource::Topic(&request.get_ref().name),
        )?;
        reply(
            self.state
                .controller
                .delete_topic(request.into_inner())
                .await,
        )
    }

    async fn list_topics(
        &self,
        request: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        // Only the topics the caller may describe (Kafka's rule for listings).
        let (policy, principal) = self.caller(&request)?;
        let topics = self
            .state
            .cluster
            .current()
            .topics
            .iter()
            .filter_map(|t| t.description.clone())
            .filter(|d| may_describe(&policy, &principal, Resource::Topic(&d.name)))
            .map(|mut d| {
                d.partitions.clear();
                d
            })
            .collect();
        Ok(Response::new(ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<DescribeTopicRequest>,
    ) -> Result<Response<TopicDescription>, Status> {
        self.authorize(
            &request,
            Operation::Describe,
            Resource::Topic(&request.get_ref().name),
        )?;
        let name = request.into_inner().name;
        let placed =
            self.state.cluster.topic(&name).ok_or_else(|| {
                Status::from(crate::topics::TopicError::UnknownTopic(name.clone()))
            })?;
        let description = placed.description.unwrap_or_default();
        Ok(Response::new(self.describe(description)))
    }

    async fn metadata(
        &self,
        request: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        // Brokers for everyone authenticated; only the topics the caller may describe.
        let (policy, principal) = self.caller(&request)?;
        let wanted = request.into_inner().topics;
        let view = &self.state.cluster;
        // One snapshot: brokers and topics of the same metadata version.
        let current = view.current();
        let topics = current
            .topics
            .iter()
            .filter_map(|t| t.description.clone())
            .filter(|d| wanted.is_empty() || wanted.contains(&d.name))
            .filter(|d| may_describe(&policy, &principal, Resource::Topic(&d.name)))
            .map(|d| self.listener.present_topic(d, &current.brokers))
            .collect();
        Ok(Response::new(MetadataResponse {
            brokers: current
                .brokers
                .iter()
                .map(|b| self.listener.present_broker(b.clone()))
                .collect(),
            topics,
            version: current.version,
            node_id: view.node_id,
            controller_reachable: view.controller_reachable(),
        }))
    }

    async fn join_group(
        &self,
        request: Request<JoinGroupRequest>,
    ) -> Result<Response<GroupAssignment>, Status> {
        self.authorize(
            &request,
            Operation::Read,
            Resource::Group(&request.get_ref().group),
        )?;
        reply(self.state.controller.join_group(request.into_inner()).await)
    }

    async fn group_heartbeat(
        &self,
        request: Request<GroupHeartbeatRequest>,
    ) -> Result<Response<GroupAssignment>, Status> {
        self.authorize(
            &request,
            Operation::Read,
            Resource::Group(&request.get_ref().group),
        )?;
        reply(
            self.state
                .controller
                .group_heartbeat(request.into_inner())
                .await,
        )
    }

    async fn leave_group(
        &self,
        request: Request<LeaveGroupRequest>,
    ) -> Result<Response<LeaveGroupResponse>, Status> {
        self.authorize(
            &request,
            Operation::Read,
            Resource::Group(&request.get_ref().group),
        )?;
        reply(
            self.state
                .controller
                .leave_group(request.into_inner())
                .await,
        )
    }

    async fn commit_offsets(
        &self,
        request: Request<CommitOffsetsRequest>,
    ) -> Result<Response<CommitOffsetsResponse>, Status> {
        // Read on the group and on every topic it commits for.
        let (policy, principal) = self.authorize(
            &request,
            Operation::Read,
            Resource::Group(&request.get_ref().group),
        )?;
        for topic in request.get_ref().offsets.iter().map(|o| &o.topic) {
            Guard::authorize(&policy, &principal, Operation::Read, Resource::Topic(topic))
                .map_err(to_status)?;
        }
        reply(
            self.state
                .controller
                .commit_offsets(request.into_inner())
                .await,
        )
    }

    async fn fetch_offsets(
        &self,
        request: Request<FetchOffsetsRequest>,
    ) -> Result<Response<FetchOffsetsResponse>, Status> {
        self.authorize(
            &request,
            Operation::Describe,
            Resource::Group(&request.get_ref().group),
        )?;
        reply(
            self.state
                .controller
                .fetch_offsets(request.into_inner())
                .await,
        )
    }

    async fn list_groups(
        &self,
        request: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        // Only the groups the caller may describe.
        let (policy, principal) = self.caller(&request)?;
        let mut answer = self
            .state
            .controller
            .list_groups(request.into_inner())
            .await
            .map_err(to_status)?;
        answer
            .groups
            .retain(|g| may_describe(&policy, &principal, Resource::Group(&g.group)));
        Ok(Response::new(answer))
    }

    async fn describe_group(
        &self,
        request: Request<DescribeGroupRequest>,
    ) -> Result<Response<GroupDescription>, Status> {
        self.authorize(
            &request,
            Operation::Describe,
            Resource::Group(&request.get_ref().group),
        )?;
        reply(
            self.state
                .controller
                .describe_group(request.into_inner())
                .await,
        )
    }

    async fn reset_offsets(
        &self,
        request: Request<ResetOffsetsRequest>,
    ) -> Result<Response<CommitOffsetsResponse>, Status> {
        // Read on the group and on every topic it commits for.
        let (policy, principal) = self.authorize(
            &request,
            Operation::Read,
            Resource::Group(&request.get_ref().group),
        )?;
        for topic in request.get_ref().offsets.iter().map(|o| &o.topic) {
            Guard::authorize(&policy, &principal, Operation::Read, Resource::Topic(topic))
                .map_err(to_status)?;
        }
        reply(
            self.state
                .controller
                .reset_offsets(request.into_inner())
                .await,
        )
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        self.authorize(&request, Operation::Alter, Resource::Cluster)?;
        reply(
            self.state
                .controller
                .create_user(request.into_inner())
                .await,
        )
    }

    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        self.authorize(&request, Operation::Alter, Resource::Cluster)?;
        reply(
            self.state
                .controller
                .delete_user(request.into_inner())
                .await,
        )
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        self.authorize(&request, Operation::Describe, Resource::Cluster)?;
        reply(self.state.controller.list_users(request.into_inner()).await)
    }

    async fn create_acls(
        &self,
        request: Request<CreateAclsRequest>,
    ) -> Result<Response<CreateAclsResponse>, Status> {
        self.authorize(&request, Operation::Alter, Resource::Cluster)?;
        reply(
            self.state
                .controller
                .create_acls(request.into_inner())
                .await,
        )
    }

    async fn describe_acls(
        &self,
        request: Request<AclFilter>,
    ) -> Result<Response<DescribeAclsResponse>, Status> {
        self.authorize(&request, Operation::Describe, Resource::Cluster)?;
        reply(
            self.state
                .controller
                .describe_acls(request.into_inner())
                .await,
        )
    }

    async fn delete_acls(
        &self,
        request: Request<AclFilter>,
    ) -> Result<Response<DescribeAclsResponse>, Status> {
        self.authorize(&request, Operation::Alter, Resource::Cluster)?;
        reply(
            self.state
                .controller
                .delete_acls(request.into_inner())
                .await,
        )
    }
}

impl WeirService {
    /// Who made `request`: its bearer token or client certificate, under this listener's
    /// authentication mode, against this node's copy of the users (UNAUTHENTICATED
    /// otherwise). With the policy it was decided under.
    fn caller<T>(&self, request: &Request<T>) -> Result<(Arc<Policy>, Principal), Status> {
        let guard = &self.state.security;
        let policy = guard.policy(&self.state.cluster.current());
        let credentials = self.credentials(request)?;
        let principal = guard
            .authenticate(
                &policy,
                credentials.door,
                &credentials.peer,
                credentials.token.as_deref(),
            )
            .map_err(to_status)?;
        Ok((policy, principal))
    }

    /// What `request` presented (its bearer token, its connection), to check again for each
    /// request of a stream.
    fn credentials<T>(&self, request: &Request<T>) -> Result<Credentials, Status> {
        let door = match self.listener {
            Listener::Internal => Door::Internal,
            Listener::External => Door::External,
        };
        Credentials::of_request(request, door).map_err(to_status)
    }

    /// The one check every handler makes first: `request`'s principal ([`Self::caller`]) may
    /// do `operation` on `resource` (PERMISSION_DENIED otherwise, before anything is done).
    fn authorize<T>(
        &self,
        request: &Request<T>,
        operation: Operation,
        resource: Resource<'_>,
    ) -> Result<(Arc<Policy>, Principal), Status> {
        let (policy, principal) = self.caller(request)?;
        Guard::authorize(&policy, &principal, operation, resource).map_err(to_status)?;
        Ok((policy, principal))
    }
    /// `description` (the controller's: leaders, no offsets) with its leaders' addresses as
    /// this listener's clients dial them, and this node's own partitions' offsets and sizes.
    fn describe(&self, description: TopicDescription) -> TopicDescription {
        // Leaders and liveness are the controller's, already in `description`.
        let mut description = self
            .listener
            .present_topic(description, &self.state.cluster.current().brokers);
        let Ok(local) = self.state.topics.get(&description.name) else {
            return description;
        };
        for p in &mut description.partitions {
            // Only the leader's offsets are the partition's: a follower's copy may lag.
            if p.leader_id != self.state.cluster.node_id {
                continue;
            }
            if let Ok(held) = local.partition(p.partition) {
                p.log_start_offset = held.log.log_start_offset();
                p.high_watermark = held.high_watermark();
                p.size_bytes = held.log.size_bytes();
                p.offsets_known = true;
            }
        }
        description
    }
}

/// Whether a listing shows `resource` to `principal`.
fn may_describe(policy: &Policy, principal: &Principal, resource: Resource<'_>) -> bool {
    Guard::authorize(policy, principal, Operation::Describe, resource).is_ok()
}
