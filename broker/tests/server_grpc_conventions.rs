//! The gRPC conventions a client in another language relies on, checked against the real
//! `weir-broker` with standard parsers rather than weir's own decoder:
//!
//! - every error a request can provoke has `google.rpc.Status` details (tonic-types' prost
//!   types and `StatusExt`) whose code is the status code and whose one packed `Any` is a
//!   `weir.v1.Error` with the right reason under `type.googleapis.com/weir.v1.Error`;
//! - a request over `max_request_bytes` is BATCH_TOO_LARGE with the limit, unary and streamed;
//! - the `grpc.health.v1.Health` service (tonic-health's client) through start and shutdown;
//! - server reflection (v1 and v1alpha) lists and describes the services each listener serves;
//! - Python's grpcio-status reads the details too (`grpc_conventions.py`; skipped with a message
//!   where grpcio is not installed, unless `WEIR_REQUIRE_PYTHON_GRPC` is set, as CI does).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;
use weir_proto::batch::{BatchBuilder, RecordInput};
use weir_proto::status::{ERROR_TYPE_URL, REASON_METADATA_KEY, grpc_code};
use weir_proto::v1::weir_client::WeirClient;
use weir_proto::v1::{
    Acks, CommitOffsetsRequest, CreateTopicRequest, DescribeGroupRequest, DescribeTopicRequest,
    Error, ErrorCode, FetchRequest, GroupHeartbeatRequest, InitProducerRequest, JoinGroupRequest,
    Placement, ProduceRequest, ResetOffsetsRequest,
};
use weir_testkit::{BrokerProcess, temp_data_dir, wait_until};

const BROKER: &str = env!("CARGO_BIN_EXE_weir-broker");

/// A watchdog for conditions that take a lease or two (not a timing assertion).
const WAIT: Duration = Duration::from_secs(30);

/// Checks `status` the way a client in another language reads it, and returns the weir error.
fn standard_error(status: &tonic::Status, expected: ErrorCode, what: &str) -> Error {
    // tonic-types' parser: the details are a well-formed google.rpc.Status (it skips the Any
    // types it does not know, such as weir.v1.Error).
    status
        .check_error_details()
        .unwrap_or_else(|e| panic!("{what}: details are not a google.rpc.Status: {e}"));
    let rpc = tonic_types::Status::decode(status.details())
        .unwrap_or_else(|e| panic!("{what}: details are not a google.rpc.Status: {e}"));
    // grpc-go takes the code from here, Java's StatusProto checks it matches the status.
    assert_eq!(rpc.code, status.code() as i32, "{what}: {status:?}");
    assert_eq!(rpc.code, grpc_code(expected) as i32, "{what}: {status:?}");
    // Python's rpc_status.from_call checks the message matches too.
    assert_eq!(rpc.message, status.message(), "{what}");
    let [any] = rpc.details.as_slice() else {
        panic!("{what}: expected one detail, got {:?}", rpc.details);
    };
    assert_eq!(any.type_url, ERROR_TYPE_URL, "{what}");
    assert_eq!(any.type_url, "type.googleapis.com/weir.v1.Error", "{what}");
    let error = Error::decode(any.value.as_slice())
        .unwrap_or_else(|e| panic!("{what}: the Any is not a weir.v1.Error: {e}"));
    assert_eq!(
        ErrorCode::try_from(error.code),
        Ok(expected),
        "{what}: {error:?}"
    );
    assert_eq!(error.message, status.message(), "{what}");
    assert_eq!(
        status
            .metadata()
            .get(REASON_METADATA_KEY)
            .map(|v| v.to_str().unwrap()),
        Some(expected.as_str_name()),
        "{what}: the weir-reason entry stays"
    );
    error
}

/// A channel to `url` (tonic-health's and tonic-reflection's clients take one).
async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

fn batch(values: &[&str]) -> Bytes {
    let mut b = BatchBuilder::new();
    for v in values {
        b.push(RecordInput {
            value: Some(v.as_bytes()),
            ..Default::default()
        })
        .unwrap();
    }
    b.build().unwrap()
}

fn produce_req(topic: &str, partition: u32, batch: Bytes) -> ProduceRequest {
    ProduceRequest {
        correlation_id: 0,
        topic: topic.into(),
        partition,
        batch,
        acks: Acks::Leader as i32,
        expected_offset: None,
        expected_keys: Vec::new(),
    }
}

async fn create(client: &mut WeirClient<Channel>, name: &str, partitions: u32) {
    client
        .create_topic(CreateTopicRequest {
            name: name.into(),
            partitions,
            ..Default::default()
        })
        .await
        .expect("create topic");
}

/// Every error code a request to a single node can provoke, each read with the standard parsers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reachable_error_has_standard_details() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(
        BROKER.as_ref(),
        dir.path(),
        &[
            "--max-batch-bytes",
            "1048576",
            "--max-request-bytes",
            "2097152",
        ],
    );
    let mut client = broker.grpc().await;
    create(&mut client, "t", 1).await;
    client
        .produce(produce_req("t", 0, batch(&["first"])))
        .await
        .unwrap();

    let mut cases: Vec<(&str, ErrorCode, tonic::Status)> = Vec::new();
    let mut refused = |what, code, call: Result<(), tonic::Status>| {
        cases.push((what, code, call.expect_err(what)));
    };

    refused(
        "describe an unknown topic",
        ErrorCode::UnknownTopic,
        client
            .describe_topic(DescribeTopicRequest {
                name: "nope".into(),
            })
            .await
            .map(drop),
    );
    refused(
        "produce to an unknown partition",
        ErrorCode::UnknownPartition,
        client
            .produce(produce_req("t", 7, batch(&["x"])))
            .await
            .map(drop),
    );
    refused(
        "fetch past the end",
        ErrorCode::OffsetOutOfRange,
        client
            .fetch(FetchRequest {
                topic: "t".into(),
                offset: 99,
                ..Default::default()
            })
            .await
            .map(drop),
    );
    let mut bad_crc = batch(&["x"]).to_vec();
    *bad_crc.last_mut().unwrap() ^= 1;
    refused(
        "a batch with a wrong CRC",
        ErrorCode::CorruptBatch,
        client
            .produce(produce_req("t", 0, Bytes::from(bad_crc)))
            .await
            .map(drop),
    );
    let big = {
        let value = vec![7u8; 1100 << 10];
        let mut b = BatchBuilder::new();
        b.push(RecordInput {
            value: Some(&value),
            ..Default::default()
        })
        .unwrap();
        b.build().unwrap()
    };
    refused(
        "a batch over max_batch_bytes",
        ErrorCode::BatchTooLarge,
        client.produce(produce_req("t", 0, big)).await.map(drop),
    );
    refused(
        "a produce request over max_request_bytes",
        ErrorCode::BatchTooLarge,
        client
            .produce(produce_req("t", 0, Bytes::from(vec![0u8; 3 << 20])))
            .await
            .map(drop),
    );
    refused(
        "another request over max_request_bytes",
        ErrorCode::InvalidRequest,
        client
            .create_topic(CreateTopicRequest {
                name: "x".repeat(3 << 20),
                partitions: 1,
                ..Default::default()
            })
            .await
            .map(drop),
    );
    refused(
        "a bad topic name",
        ErrorCode::InvalidName,
        client
            .create_topic(CreateTopicRequest {
                name: "bad/name".into(),
                partitions: 1,
                ..Default::default()
            })
            .await
            .map(drop),
    );
    refused(
        "a topic that exists",
        ErrorCode::TopicExists,
        client
            .create_topic(CreateTopicRequest {
                name: "t".into(),
                partitions: 1,
                ..Default::default()
            })
            .await
            .map(drop),
    );
    refused(
        "an unknown acks value",
        ErrorCode::InvalidRequest,
        client
            .produce(ProduceRequest {
                acks: 9,
                ..produce_req("t", 0, batch(&["x"]))
            })
            .await
            .map(drop),
    );
    refused(
        "a conditional append that does not hold",
        ErrorCode::Conflict,
        client
            .produce(ProduceRequest {
                expected_offset: Some(5),
                ..produce_req("t", 0, batch(&["x"]))
            })
            .await
            .map(drop),
    );

    // Idempotent produce: a gap in the sequence, then an older epoch after a newer one.
    let producer = client
        .init_producer(InitProducerRequest {})
        .await
        .unwrap()
        .into_inner();
    let stamped = |epoch: i16, seq: i32| {
        let mut b = BatchBuilder::new().producer(producer.producer_id, epoch, seq);
        b.push(RecordInput {
            value: Some(b"v"),
            ..Default::default()
        })
        .unwrap();
        b.build().unwrap()
    };
    client
        .produce(produce_req("t", 0, stamped(1, 0)))
        .await
        .unwrap();
    refused(
        "a sequence gap",
        ErrorCode::OutOfOrderSequence,
        client
            .produce(produce_req("t", 0, stamped(1, 5)))
            .await
            .map(drop),
    );
    refused(
        "an older producer epoch",
        ErrorCode::ProducerFenced,
        client
            .produce(produce_req("t", 0, stamped(0, 1)))
            .await
            .map(drop),
    );

    // Groups.
    refused(
        "describe an unknown group",
        ErrorCode::UnknownGroup,
        client
            .describe_group(DescribeGroupRequest {
                group: "nope".into(),
            })
            .await
            .map(drop),
    );
    let member = client
        .join_group(JoinGroupRequest {
            group: "g".into(),
            topics: vec!["t".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    refused(
        "a heartbeat from no member",
        ErrorCode::UnknownMember,
        client
            .group_heartbeat(GroupHeartbeatRequest {
                group: "g".into(),
                member_id: "stranger".into(),
                ..Default::default()
            })
            .await
            .map(drop),
    );
    refused(
        "a commit in an old generation",
        ErrorCode::StaleGeneration,
        client
            .commit_offsets(CommitOffsetsRequest {
                group: "g".into(),
                member_id: member.member_id.clone(),
                generation: member.generation + 5,
                offsets: Vec::new(),
            })
            .await
            .map(drop),
    );
    refused(
        "a reset while the group has members",
        ErrorCode::GroupNotEmpty,
        client
            .reset_offsets(ResetOffsetsRequest {
                group: "g".into(),
                offsets: Vec::new(),
                force: false,
            })
            .await
            .map(drop),
    );

    for (what, code, status) in &cases {
        let error = standard_error(status, *code, what);
        if *code == ErrorCode::Conflict {
            assert_eq!(error.actual_offset, Some(1), "what the log is at");
        }
        if what.contains("max_request_bytes") {
            assert!(status.message().contains("2097152"), "{status:?}");
        }
    }
}

/// A ProduceStream message over max_request_bytes: the requests before it are answered, then
/// the stream ends with BATCH_TOO_LARGE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_stream_message_ends_the_stream_with_batch_too_large() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(
        BROKER.as_ref(),
        dir.path(),
        &[
            "--max-batch-bytes",
            "1048576",
            "--max-request-bytes",
            "2097152",
        ],
    );
    let mut client = broker.grpc().await;
    create(&mut client, "t", 1).await;
    let requests = futures::stream::iter([
        ProduceRequest {
            correlation_id: 1,
            acks: Acks::Durable as i32,
            ..produce_req("t", 0, batch(&["ok"]))
        },
        ProduceRequest {
            correlation_id: 2,
            ..produce_req("t", 0, Bytes::from(vec![0u8; 3 << 20]))
        },
    ]);
    let mut responses = client.produce_stream(requests).await.unwrap().into_inner();
    let first = responses
        .next()
        .await
        .unwrap()
        .expect("the first is answered");
    assert_eq!((first.correlation_id, first.base_offset), (1, 0));
    assert_eq!(first.error, None);
    let status = responses
        .next()
        .await
        .unwrap()
        .expect_err("the stream ends");
    standard_error(&status, ErrorCode::BatchTooLarge, "a stream message");
    assert!(status.message().contains("2097152"), "{status:?}");
    assert!(responses.next().await.is_none());
}

/// NOT_LEADER, PARTITION_UNAVAILABLE and CONTROLLER_UNAVAILABLE need a cluster: a controller
/// and two brokers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_errors_have_standard_details() {
    let dirs = [temp_data_dir(), temp_data_dir(), temp_data_dir()];
    let mut controller = BrokerProcess::start(
        BROKER.as_ref(),
        dirs[0].path(),
        &["--role", "controller", "--node-id", "100"],
    );
    let mut via_controller = controller.grpc().await;
    let status = via_controller
        .create_topic(CreateTopicRequest {
            name: "early".into(),
            partitions: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    standard_error(
        &status,
        ErrorCode::PartitionUnavailable,
        "create before any broker is up",
    );

    let controller_addr = controller.host_port();
    let start_broker = |id: &str, dir: &Path| {
        BrokerProcess::start(
            BROKER.as_ref(),
            dir,
            &[
                "--role",
                "broker",
                "--node-id",
                id,
                "--controller",
                &controller_addr,
            ],
        )
    };
    let one = start_broker("1", dirs[1].path());
    let _two = start_broker("2", dirs[2].path());
    let mut via_one = one.grpc().await;
    wait_until("both brokers are registered", WAIT, || {
        let mut client = via_one.clone();
        async move {
            client
                .metadata(weir_proto::v1::MetadataRequest::default())
                .await
                .is_ok_and(|m| m.into_inner().brokers.iter().filter(|b| b.alive).count() == 2)
        }
    })
    .await;
    let topic = via_one
        .create_topic(CreateTopicRequest {
            name: "spread".into(),
            partitions: 2,
            placement: Placement::Range as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let on_two = topic
        .partitions
        .iter()
        .find(|p| p.leader_id == 2)
        .expect("range placement puts a partition on broker 2")
        .partition;
    wait_until("broker 1 knows the topic", WAIT, || {
        let mut client = via_one.clone();
        async move {
            client
                .metadata(weir_proto::v1::MetadataRequest {
                    topics: vec!["spread".into()],
                })
                .await
                .is_ok_and(|m| !m.into_inner().topics.is_empty())
        }
    })
    .await;
    let status = via_one
        .produce(produce_req("spread", on_two, batch(&["x"])))
        .await
        .unwrap_err();
    let error = standard_error(
        &status,
        ErrorCode::NotLeader,
        "produce to another's partition",
    );
    assert_eq!(error.leader.map(|b| b.id), Some(2));

    controller.kill();
    let status = via_one
        .create_topic(CreateTopicRequest {
            name: "later".into(),
            partitions: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    standard_error(
        &status,
        ErrorCode::ControllerUnavailable,
        "create without a controller",
    );
}

async fn health_of(client: &mut HealthClient<Channel>, service: &str) -> Result<i32, tonic::Code> {
    client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.code())
}

/// grpc.health.v1 on both listeners; a Watch sees NOT_SERVING when shutdown begins and ends, and
/// a follow fetch ends with SHUTTING_DOWN in the standard layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_until_shutdown() {
    let dir = temp_data_dir();
    let mut broker = BrokerProcess::start(
        BROKER.as_ref(),
        dir.path(),
        &["--external-listen", "127.0.0.1:0"],
    );
    let external = format!("http://{}", broker.external_addr.unwrap());
    for url in [broker.url(), external] {
        let mut health = HealthClient::new(channel(&url).await);
        for service in ["", "weir.v1.Weir"] {
            assert_eq!(
                health_of(&mut health, service).await,
                Ok(ServingStatus::Serving as i32),
                "{url} {service:?}"
            );
        }
        assert_eq!(
            health_of(&mut health, "weir.v1.Nope").await,
            Err(tonic::Code::NotFound)
        );
    }

    let mut health = HealthClient::new(channel(&broker.url()).await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "weir.v1.Weir".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    let mut client = broker.grpc().await;
    create(&mut client, "t", 1).await;
    let mut follow = client
        .fetch(FetchRequest {
            topic: "t".into(),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let stopping = tokio::task::spawn_blocking(move || {
        let status = broker.terminate_within(WAIT);
        (status, broker)
    });
    assert_eq!(
        watch.next().await.unwrap().unwrap().status,
        ServingStatus::NotServing as i32,
        "a watcher is told before the broker goes"
    );
    assert!(watch.next().await.is_none(), "and its watch ends");
    let status = loop {
        match follow.next().await {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => panic!("the follow fetch ended without a status"),
        }
    };
    standard_error(
        &status,
        ErrorCode::ShuttingDown,
        "a follow fetch at shutdown",
    );
    let (exit, _broker) = stopping.await.unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// What `grpcurl list` and `grpcurl describe` ask, in both reflection versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_and_describes_the_served_services() {
    use tonic_reflection::pb::{v1, v1alpha};

    let dir = temp_data_dir();
    let broker = BrokerProcess::start(
        BROKER.as_ref(),
        dir.path(),
        &["--external-listen", "127.0.0.1:0"],
    );
    let external = format!("http://{}", broker.external_addr.unwrap());

    async fn ask_v1(
        url: &str,
        request: v1::server_reflection_request::MessageRequest,
    ) -> v1::server_reflection_response::MessageResponse {
        let mut client =
            v1::server_reflection_client::ServerReflectionClient::new(channel(url).await);
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let mut responses = client
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        responses
            .next()
            .await
            .unwrap()
            .unwrap()
            .message_response
            .unwrap()
    }
    let services = |response| match response {
        v1::server_reflection_response::MessageResponse::ListServicesResponse(list) => {
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }
        other => panic!("not a service list: {other:?}"),
    };
    let list = v1::server_reflection_request::MessageRequest::ListServices(String::new());

    let internal = services(ask_v1(&broker.url(), list.clone()).await);
    assert_eq!(
        internal,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "weir.v1.Controller",
            "weir.v1.Weir",
        ]
    );
    let outside = services(ask_v1(&external, list).await);
    assert!(
        !outside.iter().any(|s| s == "weir.v1.Controller"),
        "the external listener does not serve the controller: {outside:?}"
    );
    assert!(outside.iter().any(|s| s == "weir.v1.Weir"));

    // `grpcurl describe weir.v1.Weir`: the file, with the contract's comments.
    let file = match ask_v1(
        &broker.url(),
        v1::server_reflection_request::MessageRequest::FileContainingSymbol("weir.v1.Weir".into()),
    )
    .await
    {
        v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files) => {
            prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice())
                .unwrap()
        }
        other => panic!("not a file: {other:?}"),
    };
    assert_eq!(file.name(), "weir/v1/weir.proto");
    let weir = file.service.iter().find(|s| s.name() == "Weir").unwrap();
    assert!(weir.method.iter().any(|m| m.name() == "Produce"));
    let comments = file.source_code_info.expect("comments are kept");
    assert!(
        comments
            .location
            .iter()
            .any(|l| l.leading_comments().contains("Appends one record batch")),
        "grpcurl describe shows the documentation"
    );

    // v1alpha, for older tools.
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(
        channel(&broker.url()).await,
    );
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let response = alpha
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    match response.message_response.unwrap() {
        v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list) => {
            assert!(list.service.iter().any(|s| s.name == "weir.v1.Weir"));
        }
        other => panic!("not a service list: {other:?}"),
    }
}

/// Python's grpcio-status on weir's errors: `rpc_status.from_call` returns a Status whose
/// details unpack to weir.v1.Error (stubs generated from weir.proto by grpcio-tools' protoc).
#[test]
fn python_grpcio_status_reads_weir_errors() {
    let python = std::env::var("WEIR_PYTHON").unwrap_or_else(|_| "python3".into());
    let available = std::process::Command::new(&python)
        .args(["-c", "import grpc, grpc_status, grpc_tools"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !available {
        let why = format!(
            "{python} with grpcio, grpcio-status and grpcio-tools is not available \
             (pip install grpcio grpcio-status grpcio-tools)"
        );
        if std::env::var_os("WEIR_REQUIRE_PYTHON_GRPC").is_some() {
            panic!("{why}, and WEIR_REQUIRE_PYTHON_GRPC is set");
        }
        eprintln!("SKIPPED python_grpcio_status_reads_weir_errors: {why}");
        return;
    }
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(
        BROKER.as_ref(),
        dir.path(),
        &[
            "--max-request-bytes",
            "2097152",
            "--max-batch-bytes",
            "1048576",
        ],
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = std::process::Command::new(&python)
        .arg(root.join("broker/tests/grpc_conventions.py"))
        .arg(broker.host_port())
        .arg(root)
        .output()
        .expect("running python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "grpc_conventions.py failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
}
