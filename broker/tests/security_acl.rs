//! Users, tokens and ACLs against the real `weir-broker` binary: bad and revoked tokens are
//! UNAUTHENTICATED on gRPC and the data port; every RPC (both services) refuses a principal
//! without ACLs with PERMISSION_DENIED and changes nothing; literal and prefix ACLs, deny over
//! allow, super users; the data port's Authenticate frame (a 1 MiB token refused without
//! harm), fetches without read get no data, produces without write append nothing; and a
//! cluster requiring authentication: a broker without the broker token cannot register, a
//! replica fetch needs the cluster's rights.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tonic::transport::Channel;
use tonic::{Code, Request};
use weir_client::admin::{Acl, AclFilter, AclOperation, AclResource};
use weir_client::{
    Client, ConnectOptions, ConsumerConfig, ErrorCode, NewTopic, ProducerConfig, ProducerRecord,
    Transport,
};
use weir_proto::batch::{BatchBuilder, RecordInput};
use weir_proto::data_port::authenticate::{Authenticate, FLAG_AUTHENTICATE};
use weir_proto::data_port::{
    FetchFrame, FrameKind, RESPONSE_HEADER_LEN, ReplicaFetch, ResponseHeader,
};
use weir_proto::v1::controller_client::ControllerClient;
use weir_proto::v1::weir_client::WeirClient;
use weir_proto::v1::{self as v1, ListOffsetsRequest, OffsetSpec, ProduceRequest};
use weir_testkit::{BrokerProcess, temp_data_dir, wait_until};

const BROKER: &str = env!("CARGO_BIN_EXE_weir-broker");
/// The bootstrap super user's token, chosen by the "automation" (WEIR_BOOTSTRAP_TOKEN).
const ADMIN: &str = "weir_admin_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn secure_args() -> Vec<&'static str> {
    vec![
        "--authentication",
        "token",
        "--authorization",
        "true",
        "--super-users",
        "admin",
        "--bootstrap-token",
        ADMIN,
    ]
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

async fn client(broker: &BrokerProcess, token: &str) -> Client {
    Client::connect_with(
        &broker.host_port(),
        ConnectOptions::default().with_token(token),
    )
    .await
    .expect("connect")
}

fn batch(value: &str) -> Bytes {
    let mut b = BatchBuilder::new();
    b.push(RecordInput {
        key: None,
        value: Some(value.as_bytes()),
        timestamp: 1_700_000_000_000,
        headers: &[],
    })
    .unwrap();
    b.build().unwrap()
}

fn reason(status: &tonic::Status) -> Option<ErrorCode> {
    weir_proto::status::from_status(status).and_then(|e| ErrorCode::try_from(e.code).ok())
}

/// The log end of `topic`-0 as the admin sees it.
async fn log_end(grpc: &mut WeirClient<Channel>, topic: &str) -> u64 {
    grpc.list_offsets(with_token(
        ListOffsetsRequest {
            topic: topic.into(),
            partitions: vec![0],
            spec: OffsetSpec::Latest as i32,
            ..Default::default()
        },
        Some(ADMIN),
    ))
    .await
    .expect("list offsets")
    .into_inner()
    .offsets[0]
        .offset
}

async fn produce(
    grpc: &mut WeirClient<Channel>,
    topic: &str,
    token: Option<&str>,
) -> Result<(), tonic::Status> {
    grpc.produce(with_token(
        ProduceRequest {
            topic: topic.into(),
            partition: 0,
            batch: batch("x"),
            ..Default::default()
        },
        token,
    ))
    .await
    .map(|_| ())
}

/// Connects to a data port and sends `first` (an Authenticate or a fetch); the frames back
/// until the connection closes or an End/Error frame arrives.
fn data_port(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// The next frame (header, payload); `None` if the broker closed the connection.
fn frame(s: &mut TcpStream) -> Option<(ResponseHeader, Vec<u8>)> {
    let mut head = [0u8; RESPONSE_HEADER_LEN];
    s.read_exact(&mut head).ok()?;
    let header = ResponseHeader::decode(&head).unwrap();
    let mut payload = vec![0u8; header.length as usize];
    s.read_exact(&mut payload).ok()?;
    Some((header, payload))
}

fn error_code(header: &ResponseHeader) -> Option<ErrorCode> {
    (header.kind == FrameKind::Error)
        .then(|| ErrorCode::try_from(i32::from(header.error_code)).unwrap())
}

fn fetch_frame(topic: &str, replica: Option<ReplicaFetch>) -> Vec<u8> {
    FetchFrame {
        topic: topic.into(),
        partition: 0,
        offset: 0,
        max_bytes: 0,
        max_wait_ms: 0,
        follow: false,
        replica,
        current_leader_epoch: None,
    }
    .encode()
}

/// Fetches `topic`-0 from 0 on the data port as `token` (none: no Authenticate): the error
/// code, or `None` with the number of data bytes received.
fn data_port_fetch(addr: SocketAddr, token: Option<&str>, topic: &str) -> Result<usize, ErrorCode> {
    let mut s = data_port(addr);
    if let Some(token) = token {
        s.write_all(
            &Authenticate {
                token: token.into(),
            }
            .encode(),
        )
        .unwrap();
        let (header, _) = frame(&mut s).expect("an answer to Authenticate");
        if let Some(code) = error_code(&header) {
            return Err(code);
        }
        assert_eq!(header.kind, FrameKind::End);
    }
    s.write_all(&fetch_frame(topic, None)).unwrap();
    let mut data = 0;
    loop {
        let (header, payload) = frame(&mut s).expect("a frame");
        match header.kind {
            FrameKind::Data => data += payload.len(),
            FrameKind::End => return Ok(data),
            FrameKind::Error => {
                assert_eq!(data, 0, "no data before a refusal");
                return Err(error_code(&header).unwrap());
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_acls_and_every_rpc_on_grpc_and_the_data_port() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &secure_args());
    let mut grpc = broker.grpc().await;

    // No token, a malformed one, a forged one: UNAUTHENTICATED, with what to do.
    for token in [
        None,
        Some("nope"),
        Some(&ADMIN.replace("00112233", "ffffffff")[..]),
    ] {
        let status = grpc
            .list_topics(with_token(v1::ListTopicsRequest {}, token))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{token:?}: {status:?}"
        );
        assert_eq!(reason(&status), Some(ErrorCode::Unauthenticated));
    }
    let status = grpc
        .list_topics(with_token(v1::ListTopicsRequest {}, None))
        .await
        .unwrap_err();
    assert!(status.message().contains("token"), "{}", status.message());

    // The bootstrap super user does everything.
    let admin_client = client(&broker, ADMIN).await;
    let admin = admin_client.admin();
    for topic in ["orders", "orders-eu", "other"] {
        admin
            .create_topic(NewTopic::new(topic).partitions(1))
            .await
            .expect("admin creates");
    }
    let alice = admin.create_user("alice").await.expect("create alice");
    let bob = admin.create_user("bob").await.expect("create bob");
    assert!(alice.token.starts_with("weir_alice_"));
    let users: BTreeSet<String> = admin
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(
        users,
        ["admin", "alice", "bob"].map(String::from).into(),
        "the bootstrap user is a user"
    );
    let exists = admin.create_user("alice").await.unwrap_err();
    assert_eq!(exists.code(), Some(ErrorCode::UserExists));

    every_rpc_is_denied_without_acls(&mut grpc, &bob.token, broker.addr).await;

    // Alice: write on every topic prefixed "orders", read on them too but denied on orders-eu.
    let acl = |operation, resource, deny| Acl {
        principal: "User:alice".into(),
        operation,
        resource,
        deny,
    };
    admin
        .create_acls(&[
            acl(
                AclOperation::Write,
                AclResource::TopicPrefix("orders".into()),
                false,
            ),
            acl(
                AclOperation::Read,
                AclResource::TopicPrefix("orders".into()),
                false,
            ),
            acl(
                AclOperation::Read,
                AclResource::Topic("orders-eu".into()),
                true,
            ),
        ])
        .await
        .expect("create acls");
    let listed = admin
        .describe_acls(&AclFilter {
            principal: Some("alice".into()),
            ..AclFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");

    // gRPC produce: allowed by the prefix; not on "other" (nothing appended there).
    let token = Some(alice.token.as_str());
    produce(&mut grpc, "orders", token)
        .await
        .expect("prefix allows");
    produce(&mut grpc, "orders-eu", token)
        .await
        .expect("prefix allows");
    let before = log_end(&mut grpc, "other").await;
    let denied = produce(&mut grpc, "other", token).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("weir acl add"),
        "{}",
        denied.message()
    );
    assert_eq!(
        log_end(&mut grpc, "other").await,
        before,
        "nothing appended"
    );
    // gRPC fetch: deny beats the prefix allow.
    let fetch = |topic: &str| {
        with_token(
            v1::FetchRequest {
                topic: topic.into(),
                partition: 0,
                ..Default::default()
            },
            token,
        )
    };
    assert!(grpc.fetch(fetch("orders")).await.is_ok());
    let denied = grpc.fetch(fetch("orders-eu")).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Listings show only what alice may describe (implied by read and write).
    let topics: BTreeSet<String> = grpc
        .list_topics(with_token(v1::ListTopicsRequest {}, token))
        .await
        .unwrap()
        .into_inner()
        .topics
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(topics, ["orders", "orders-eu"].map(String::from).into());

    // The data port: no Authenticate, a bad token, a 1 MiB token, then alice.
    let data = broker.data_addr;
    assert_eq!(
        data_port_fetch(data, None, "orders"),
        Err(ErrorCode::Unauthenticated)
    );
    assert_eq!(
        data_port_fetch(data, Some("weir_alice_zz"), "orders"),
        Err(ErrorCode::Unauthenticated)
    );
    {
        let huge = "a".repeat(1 << 20);
        let mut s = data_port(data);
        let mut request = Vec::with_capacity(8);
        request.extend_from_slice(&((4 + huge.len()) as u32).to_be_bytes());
        request.extend_from_slice(&[1, FLAG_AUTHENTICATE, 0xff, 0xff]);
        s.write_all(&request).unwrap();
        // Refused from the length alone, before the rest arrives (or is ever sent).
        let (header, message) = frame(&mut s).expect("an Error frame");
        assert_eq!(error_code(&header), Some(ErrorCode::Unauthenticated));
        assert!(String::from_utf8_lossy(&message).contains("at most"));
        let _ = s.write_all(huge.as_bytes());
    }
    assert!(
        data_port_fetch(data, Some(&alice.token), "orders").unwrap() > 0,
        "read allowed: data"
    );
    assert_eq!(
        data_port_fetch(data, Some(&alice.token), "orders-eu"),
        Err(ErrorCode::PermissionDenied),
        "no data for a denied read"
    );
    assert_eq!(
        data_port_fetch(data, Some(&bob.token), "orders"),
        Err(ErrorCode::PermissionDenied)
    );
    // A replica fetch is the cluster's: alice may not.
    {
        let mut s = data_port(data);
        s.write_all(
            &Authenticate {
                token: alice.token.clone(),
            }
            .encode(),
        )
        .unwrap();
        assert_eq!(frame(&mut s).unwrap().0.kind, FrameKind::End);
        let replica = ReplicaFetch {
            replica_id: 9,
            broker_epoch: 1,
            leader_epoch: 1,
            last_fetched_epoch: 0,
            durable_offset: 0,
        };
        s.write_all(&fetch_frame("orders", Some(replica))).unwrap();
        let (header, _) = frame(&mut s).unwrap();
        assert_eq!(error_code(&header), Some(ErrorCode::PermissionDenied));
    }

    // The client library over the data port, with alice's token: produce and consume where
    // allowed; a produce without write appends nothing.
    let alice_client = client(&broker, &alice.token).await;
    let producer = alice_client
        .producer(ProducerConfig {
            transport: Transport::DataPort,
            linger: Duration::from_millis(1),
            delivery_timeout: Duration::from_secs(5),
            ..Default::default()
        })
        .unwrap();
    producer
        .send(
            ProducerRecord::new("orders")
                .partition(0)
                .value("over the data port"),
        )
        .await
        .unwrap()
        .await
        .expect("allowed produce over the data port");
    let before = log_end(&mut grpc, "other").await;
    let refused = producer
        .send(ProducerRecord::new("other").partition(0).value("no"))
        .await;
    if let Ok(delivery) = refused {
        let error = delivery.await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::PermissionDenied), "{error}");
    }
    assert_eq!(
        log_end(&mut grpc, "other").await,
        before,
        "nothing appended"
    );
    let mut consumer = alice_client.consumer(ConsumerConfig {
        follow: false,
        transport: Transport::DataPort,
        ..Default::default()
    });
    consumer.assign_topic("orders").await.expect("assign");
    let mut stream = consumer.stream();
    let mut seen = 0;
    while let Some(record) = futures::StreamExt::next(&mut stream).await {
        record.expect("a record");
        seen += 1;
    }
    assert_eq!(seen, 2, "both records of orders, over the data port");

    // Removing the prefix write ACL: alice's writes stop. Revoking alice: her token stops.
    let removed = admin
        .delete_acls(&AclFilter {
            principal: Some("User:alice".into()),
            operation: Some(AclOperation::Write),
            ..AclFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(removed.len(), 1);
    let denied = produce(&mut grpc, "orders", token).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // An open data-port connection of alice's: fetches until she is revoked, not after.
    let mut open = data_port(data);
    open.write_all(
        &Authenticate {
            token: alice.token.clone(),
        }
        .encode(),
    )
    .unwrap();
    assert_eq!(frame(&mut open).unwrap().0.kind, FrameKind::End);
    open.write_all(&fetch_frame("orders", None)).unwrap();
    while frame(&mut open).expect("a frame").0.kind != FrameKind::End {}
    admin.delete_user("alice").await.expect("revoke");
    open.write_all(&fetch_frame("orders", None)).unwrap();
    let (header, _) = frame(&mut open).expect("an Error frame");
    assert_eq!(
        error_code(&header),
        Some(ErrorCode::Unauthenticated),
        "revoked on an open connection"
    );
    let revoked = produce(&mut grpc, "orders", token).await.unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated, "{revoked:?}");
    assert_eq!(
        data_port_fetch(data, Some(&alice.token), "orders"),
        Err(ErrorCode::Unauthenticated)
    );
    let unknown = admin.delete_user("alice").await.unwrap_err();
    assert_eq!(unknown.code(), Some(ErrorCode::UnknownUser));
}

/// Every method of both services, called by `token`'s user, who has no ACLs: each is refused
/// with PERMISSION_DENIED (the listings answer, empty), and the table covers every method the
/// descriptors name, so a new RPC without a check fails here.
async fn every_rpc_is_denied_without_acls(
    grpc: &mut WeirClient<Channel>,
    token: &str,
    addr: SocketAddr,
) {
    let t = Some(token);
    let mut called = BTreeSet::new();
    let mut denied = |name: &str, result: Result<(), tonic::Status>| {
        let status = result.expect_err(name);
        assert_eq!(status.code(), Code::PermissionDenied, "{name}: {status:?}");
        assert_eq!(reason(&status), Some(ErrorCode::PermissionDenied), "{name}");
        called.insert(name.to_owned());
    };
    let topic = || "orders".to_owned();
    let group = || "g".to_owned();
    macro_rules! call {
        ($method:ident, $msg:expr) => {
            grpc.clone().$method(with_token($msg, t)).await.map(|_| ())
        };
    }
    denied(
        "Produce",
        call!(
            produce,
            ProduceRequest {
                topic: topic(),
                batch: batch("x"),
                ..Default::default()
            }
        ),
    );
    denied(
        "InitProducer",
        call!(init_producer, v1::InitProducerRequest {}),
    );
    denied(
        "Fetch",
        call!(
            fetch,
            v1::FetchRequest {
                topic: topic(),
                ..Default::default()
            }
        ),
    );
    denied(
        "ListOffsets",
        call!(
            list_offsets,
            ListOffsetsRequest {
                topic: topic(),
                ..Default::default()
            }
        ),
    );
    denied(
        "CreateTopic",
        call!(
            create_topic,
            v1::CreateTopicRequest {
                name: "new".into(),
                partitions: 1,
                ..Default::default()
            }
        ),
    );
    denied(
        "DeleteTopic",
        call!(delete_topic, v1::DeleteTopicRequest { name: topic() }),
    );
    denied(
        "DescribeTopic",
        call!(describe_topic, v1::DescribeTopicRequest { name: topic() }),
    );
    denied(
        "AlterPartitionReassignments",
        call!(
            alter_partition_reassignments,
            v1::AlterPartitionReassignmentsRequest {
                topic: topic(),
                ..Default::default()
            }
        ),
    );
    denied(
        "JoinGroup",
        call!(
            join_group,
            v1::JoinGroupRequest {
                group: group(),
                topics: vec![topic()],
                ..Default::default()
            }
        ),
    );
    denied(
        "GroupHeartbeat",
        call!(
            group_heartbeat,
            v1::GroupHeartbeatRequest {
                group: group(),
                ..Default::default()
            }
        ),
    );
    denied(
        "LeaveGroup",
        call!(
            leave_group,
            v1::LeaveGroupRequest {
                group: group(),
                ..Default::default()
            }
        ),
    );
    denied(
        "CommitOffsets",
        call!(
            commit_offsets,
            v1::CommitOffsetsRequest {
                group: group(),
                ..Default::default()
            }
        ),
    );
    denied(
        "FetchOffsets",
        call!(
            fetch_offsets,
            v1::FetchOffsetsRequest {
                group: group(),
                ..Default::default()
            }
        ),
    );
    denied(
        "DescribeGroup",
        call!(describe_group, v1::DescribeGroupRequest { group: group() }),
    );
    denied(
        "ResetOffsets",
        call!(
            reset_offsets,
            v1::ResetOffsetsRequest {
                group: group(),
                ..Default::default()
            }
        ),
    );
    denied(
        "CreateUser",
        call!(
            create_user,
            v1::CreateUserRequest {
                name: "mallory".into()
            }
        ),
    );
    denied(
        "DeleteUser",
        call!(
            delete_user,
            v1::DeleteUserRequest {
                name: "admin".into()
            }
        ),
    );
    denied("ListUsers", call!(list_users, v1::ListUsersRequest {}));
    denied(
        "CreateAcls",
        call!(create_acls, v1::CreateAclsRequest::default()),
    );
    denied(
        "DescribeAcls",
        call!(describe_acls, v1::AclFilter::default()),
    );
    denied("DeleteAcls", call!(delete_acls, v1::AclFilter::default()));
    // ProduceStream: the stream opens, each request is refused on its own.
    let requests = futures::stream::iter([ProduceRequest {
        correlation_id: 7,
        topic: topic(),
        batch: batch("x"),
        ..Default::default()
    }]);
    let mut answers = grpc
        .clone()
        .produce_stream(with_token(requests, t))
        .await
        .expect("the stream opens")
        .into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    assert_eq!(
        answer.error.map(|e| e.code),
        Some(ErrorCode::PermissionDenied as i32)
    );
    called.insert("ProduceStream".to_owned());
    // Listings: answered, showing nothing the user may not describe.
    let listed = call!(list_topics, v1::ListTopicsRequest {});
    assert!(listed.is_ok());
    let topics = grpc
        .clone()
        .list_topics(with_token(v1::ListTopicsRequest {}, t))
        .await
        .unwrap()
        .into_inner()
        .topics;
    assert!(topics.is_empty(), "{topics:?}");
    let metadata = grpc
        .clone()
        .metadata(with_token(v1::MetadataRequest::default(), t))
        .await
        .unwrap()
        .into_inner();
    assert!(metadata.topics.is_empty() && !metadata.brokers.is_empty());
    let groups = grpc
        .clone()
        .list_groups(with_token(v1::ListGroupsRequest {}, t))
        .await
        .unwrap()
        .into_inner()
        .groups;
    assert!(groups.is_empty());
    called.extend(["ListTopics", "Metadata", "ListGroups"].map(String::from));

    // The controller's service: the cluster's, refused to bob and to the anonymous.
    let mut control = ControllerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    macro_rules! control {
        ($name:literal, $method:ident, $msg:expr) => {
            for token in [None, t] {
                let status = control
                    .$method(with_token($msg, token))
                    .await
                    .expect_err($name);
                let expected = if token.is_none() {
                    Code::Unauthenticated
                } else {
                    Code::PermissionDenied
                };
                assert_eq!(status.code(), expected, "{}: {status:?}", $name);
            }
            called.insert($name.to_owned());
        };
    }
    control!(
        "RegisterBroker",
        register_broker,
        v1::RegisterBrokerRequest {
            broker_id: 5,
            ..Default::default()
        }
    );
    control!(
        "BrokerHeartbeat",
        broker_heartbeat,
        v1::BrokerHeartbeatRequest {
            broker_id: 0,
            ..Default::default()
        }
    );
    control!(
        "AlterPartition",
        alter_partition,
        v1::AlterPartitionRequest::default()
    );
    control!(
        "ControlledShutdown",
        controlled_shutdown,
        v1::ControlledShutdownRequest::default()
    );
    control!(
        "ResignLeadership",
        resign_leadership,
        v1::ResignLeadershipRequest::default()
    );

    // Every method of weir.v1.Weir and weir.v1.Controller was called above.
    let descriptors =
        prost_types::FileDescriptorSet::decode(v1::FILE_DESCRIPTOR_SET).expect("descriptors");
    let methods: BTreeSet<String> = descriptors
        .file
        .iter()
        .flat_map(|f| &f.service)
        .flat_map(|s| &s.method)
        .filter_map(|m| m.name.clone())
        .collect();
    assert_eq!(called, methods, "every RPC is in the table");
    // Nothing changed: no topic "new", no user "mallory", admin still there.
    let admin_topics = grpc
        .clone()
        .list_topics(with_token(v1::ListTopicsRequest {}, Some(ADMIN)))
        .await
        .unwrap()
        .into_inner()
        .topics;
    assert!(admin_topics.iter().all(|t| t.name != "new"));
    let users = grpc
        .clone()
        .list_users(with_token(v1::ListUsersRequest {}, Some(ADMIN)))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert!(users.iter().any(|u| u.name == "admin") && users.iter().all(|u| u.name != "mallory"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_needs_the_broker_token_to_join_a_secured_cluster() {
    let (controller_dir, without_dir, with_dir) =
        (temp_data_dir(), temp_data_dir(), temp_data_dir());
    let mut controller_args = secure_args();
    controller_args.extend(["--role", "controller", "--node-id", "100"]);
    let controller = BrokerProcess::start(BROKER.as_ref(), controller_dir.path(), &controller_args);
    let address = controller.host_port();
    let live = |client: Client| async move {
        client
            .admin()
            .describe_cluster()
            .await
            .map(|c| c.brokers.iter().map(|b| b.id).collect::<BTreeSet<u32>>())
            .unwrap_or_default()
    };
    // A broker with no token: its registration is refused (it keeps retrying, never joins).
    let mut without = vec![
        "--role",
        "broker",
        "--node-id",
        "1",
        "--controller",
        &address,
    ];
    without.extend(["--authentication", "token", "--super-users", "admin"]);
    let _without = BrokerProcess::start(BROKER.as_ref(), without_dir.path(), &without);
    // One with the (super user's) broker token joins.
    let mut with = vec![
        "--role",
        "broker",
        "--node-id",
        "2",
        "--controller",
        &address,
    ];
    with.extend([
        "--authentication",
        "token",
        "--super-users",
        "admin",
        "--broker-token",
        ADMIN,
    ]);
    let _with = BrokerProcess::start(BROKER.as_ref(), with_dir.path(), &with);
    let other_dir = temp_data_dir();
    let other: Vec<&str> = with
        .iter()
        .map(|a| if *a == "2" { "3" } else { a })
        .collect();
    let _other = BrokerProcess::start(BROKER.as_ref(), other_dir.path(), &other);
    wait_until(
        "brokers 2 and 3 registered",
        Duration::from_secs(20),
        || async {
            let brokers = live(client(&controller, ADMIN).await).await;
            brokers.contains(&2) && brokers.contains(&3)
        },
    )
    .await;
    // Broker 1 has been retrying all along; it is still not there.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let brokers = live(client(&controller, ADMIN).await).await;
    assert_eq!(
        brokers,
        [2, 3].into(),
        "the broker without the token never registered"
    );
    // Replication between the two with the token: the follower's data-port fetches present
    // it (Authenticate), so acks=all commits.
    let admin_client = client(&controller, ADMIN).await;
    admin_client
        .admin()
        .create_topic(
            NewTopic::new("replicated")
                .partitions(1)
                .replication_factor(2)
                .min_insync_replicas(2),
        )
        .await
        .expect("create a replicated topic");
    let producer = admin_client
        .producer(ProducerConfig {
            acks: weir_client::Acks::All,
            delivery_timeout: Duration::from_secs(15),
            ..Default::default()
        })
        .unwrap();
    producer
        .send(ProducerRecord::new("replicated").value("committed by both"))
        .await
        .unwrap()
        .await
        .expect("acks=all: the follower replicated with the broker token");
}
