//! The gRPC service over the network: the real `weir-broker` binary on an ephemeral port,
//! driven with the generated `weir.v1` client (what a client in any language would use).
//!
//! Multi-threaded runtimes: `terminate()` blocks while the broker shuts down gracefully, and
//! the client connection must keep running meanwhile to answer the HTTP/2 GOAWAY handshake.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tonic::transport::Channel;
use weir_proto::batch::{BatchBuilder, RecordBatch, RecordInput, split_batches};
use weir_proto::status::from_status;
use weir_proto::v1::weir_client::WeirClient;
use weir_proto::v1::{
    Acks, CreateTopicRequest, DeleteTopicRequest, DescribeTopicRequest, ErrorCode, FetchRequest,
    ListOffsetsRequest, ListTopicsRequest, OffsetSpec, ProduceRequest, TopicConfig,
};
use weir_testkit::{BrokerProcess, temp_data_dir};

const BROKER: &str = env!("CARGO_BIN_EXE_weir-broker");

fn batch(values: &[&str], timestamp: i64) -> Bytes {
    let mut b = BatchBuilder::new();
    for v in values {
        b.push(RecordInput {
            key: Some(b"k"),
            value: Some(v.as_bytes()),
            timestamp,
            headers: &[],
        })
        .unwrap();
    }
    b.build().unwrap()
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

fn produce_req(topic: &str, partition: u32, batch: Bytes, acks: Acks) -> ProduceRequest {
    ProduceRequest {
        correlation_id: 0,
        topic: topic.into(),
        partition,
        batch,
        acks: acks as i32,
        expected_offset: None,
        expected_keys: Vec::new(),
    }
}

async fn high_watermark(client: &mut WeirClient<Channel>, topic: &str, partition: u32) -> u64 {
    let offsets = client
        .list_offsets(ListOffsetsRequest {
            current_leader_epoch: None,
            topic: topic.into(),
            partitions: vec![partition],
            spec: OffsetSpec::Latest as i32,
            timestamp_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    offsets.offsets[0].offset
}

/// Everything from `offset` to the current end, as records' values.
async fn fetch_values(
    client: &mut WeirClient<Channel>,
    topic: &str,
    partition: u32,
) -> Vec<String> {
    let mut stream = client
        .fetch(FetchRequest {
            topic: topic.into(),
            partition,
            offset: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut values = Vec::new();
    while let Some(response) = stream.next().await {
        for batch in split_batches(response.unwrap().batches) {
            for record in batch.unwrap().records() {
                values.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
            }
        }
    }
    values
}

fn reason(status: &tonic::Status) -> ErrorCode {
    let e = from_status(status).unwrap_or_else(|| panic!("no weir reason in {status:?}"));
    ErrorCode::try_from(e.code).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_fetch_returns_the_batch_as_stored() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let mut client = broker.grpc().await;
    create(&mut client, "orders", 2).await;

    let sent = batch(&["a", "b", "c"], 1_700_000_000_000);
    let ack = client
        .produce(produce_req("orders", 1, sent.clone(), Acks::Durable))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ack.base_offset, ack.last_offset), (0, 2));
    let ack = client
        .produce(produce_req(
            "orders",
            1,
            batch(&["d"], 1_700_000_000_001),
            Acks::Leader,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ack.base_offset, ack.last_offset), (3, 3));

    let mut stream = client
        .fetch(FetchRequest {
            topic: "orders".into(),
            partition: 1,
            offset: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.high_watermark, 4);
    assert_eq!(first.next_offset, 4);
    // Stored byte for byte: only the base offset (bytes 0..8, not CRC-covered) was stamped.
    assert_eq!(&first.batches[8..sent.len()], &sent[8..]);
    assert!(
        stream.next().await.is_none(),
        "without follow the stream ends at the end"
    );
    assert_eq!(
        fetch_values(&mut client, "orders", 1).await,
        ["a", "b", "c", "d"]
    );
    assert_eq!(high_watermark(&mut client, "orders", 0).await, 0);

    let described = client
        .describe_topic(DescribeTopicRequest {
            name: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.partition_count, 2);
    assert_eq!(described.partitions[1].high_watermark, 4);
    let by_time = client
        .list_offsets(ListOffsetsRequest {
            current_leader_epoch: None,
            topic: "orders".into(),
            partitions: vec![1],
            spec: OffsetSpec::Timestamp as i32,
            timestamp_ms: 1_700_000_000_001,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_time.offsets[0].offset, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_with_a_reason_and_change_nothing() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(
        BROKER.as_ref(),
        dir.path(),
        &[
            "--max-batch-bytes",
            "1048576",
            "--max-request-bytes",
            "4194304",
        ],
    );
    let mut client = broker.grpc().await;
    create(&mut client, "t", 1).await;
    client
        .produce(produce_req("t", 0, batch(&["ok"], 1), Acks::Leader))
        .await
        .unwrap();

    let good = batch(&["x", "y"], 1);
    let mut bad_crc = good.to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x01;
    let mut lying_length = good.to_vec();
    lying_length[8..12].copy_from_slice(&(good.len() as u32 + 100).to_be_bytes());
    let truncated = good.slice(..good.len() - 3);
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
    let cases = [
        ("wrong CRC", Bytes::from(bad_crc), ErrorCode::CorruptBatch),
        (
            "lying length",
            Bytes::from(lying_length),
            ErrorCode::CorruptBatch,
        ),
        ("truncated", truncated, ErrorCode::CorruptBatch),
        ("empty", Bytes::new(), ErrorCode::CorruptBatch),
        ("over max_batch_bytes", big, ErrorCode::BatchTooLarge),
    ];
    for (what, bytes, expected) in cases {
        let status = client
            .produce(produce_req("t", 0, bytes, Acks::Durable))
            .await
            .expect_err(what);
        assert_eq!(reason(&status), expected, "{what}: {status:?}");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}");
        assert_eq!(
            high_watermark(&mut client, "t", 0).await,
            1,
            "{what} moved the log"
        );
    }

    // Over the request limit: refused before it is read, with the limit in the message.
    let huge = Bytes::from(vec![0u8; 5 << 20]);
    let status = client
        .produce(produce_req("t", 0, huge, Acks::Leader))
        .await
        .expect_err("over max_request_bytes");
    assert_eq!(reason(&status), ErrorCode::BatchTooLarge, "{status:?}");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("4194304"), "{status:?}");
    assert_eq!(high_watermark(&mut client, "t", 0).await, 1);

    let status = client
        .produce(produce_req("nope", 0, batch(&["x"], 1), Acks::Leader))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), ErrorCode::UnknownTopic);
    assert!(status.message().contains("nope"));
    let status = client
        .produce(produce_req("t", 7, batch(&["x"], 1), Acks::Leader))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), ErrorCode::UnknownPartition);
    let status = client
        .produce(ProduceRequest {
            acks: 9,
            ..produce_req("t", 0, batch(&["x"], 1), Acks::Leader)
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), ErrorCode::InvalidRequest);
    let status = client
        .fetch(FetchRequest {
            topic: "t".into(),
            offset: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), ErrorCode::OffsetOutOfRange);
    assert_eq!(fetch_values(&mut client, "t", 0).await, ["ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_admin_validates_and_survives_restart() {
    let dir = temp_data_dir();
    let mut broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let mut client = broker.grpc().await;
    for (name, partitions, expected) in [
        ("bad/name", 1, ErrorCode::InvalidName),
        ("..", 1, ErrorCode::InvalidName),
        ("ok", 0, ErrorCode::InvalidRequest),
        ("ok", 20_000, ErrorCode::InvalidRequest),
    ] {
        let status = client
            .create_topic(CreateTopicRequest {
                name: name.into(),
                partitions,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&status), expected, "{name} x{partitions}");
    }
    let status = client
        .create_topic(CreateTopicRequest {
            name: "ranged".into(),
            partitions: 0,
            partitioner: weir_proto::v1::Partitioner::Range as i32,
            split_keys: vec![Bytes::from("m"), Bytes::from("a")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        reason(&status),
        ErrorCode::InvalidRequest,
        "unsorted split keys"
    );
    let ranged = client
        .create_topic(CreateTopicRequest {
            name: "ranged".into(),
            partitions: 0,
            partitioner: weir_proto::v1::Partitioner::Range as i32,
            split_keys: vec![Bytes::from("g"), Bytes::from("p")],
            config: Some(TopicConfig {
                retention_ms: Some(86_400_000),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ranged.partition_count, 3);
    create(&mut client, "doomed", 2).await;
    let status = client
        .create_topic(CreateTopicRequest {
            name: "doomed".into(),
            partitions: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), ErrorCode::TopicExists);
    client
        .produce(produce_req("ranged", 2, batch(&["z"], 5), Acks::Leader))
        .await
        .unwrap();
    client
        .delete_topic(DeleteTopicRequest {
            name: "doomed".into(),
        })
        .await
        .unwrap();

    tokio::task::block_in_place(|| {
        assert!(broker.terminate().success());
        broker.restart();
    });
    let mut client = broker.grpc().await;
    let topics = client
        .list_topics(ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner()
        .topics;
    let names: Vec<_> = topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["ranged"]);
    let ranged = &topics[0];
    assert_eq!(ranged.split_keys, [Bytes::from("g"), Bytes::from("p")]);
    assert_eq!(
        ranged.config.as_ref().unwrap().retention_ms,
        Some(86_400_000)
    );
    assert_eq!(fetch_values(&mut client, "ranged", 2).await, ["z"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_stream_answers_every_request_by_correlation_id() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let mut client = broker.grpc().await;
    create(&mut client, "s", 3).await;
    let mut requests = Vec::new();
    for i in 0..300u64 {
        let partition = (i % 3) as u32;
        let body = if i == 150 {
            Bytes::from_static(b"not a batch at all")
        } else {
            batch(&[&format!("{partition}:{i}")], i as i64)
        };
        requests.push(ProduceRequest {
            correlation_id: i,
            acks: if i % 2 == 0 {
                Acks::Durable
            } else {
                Acks::Leader
            } as i32,
            ..produce_req("s", partition, body, Acks::Leader)
        });
    }
    let responses: Vec<_> = client
        .produce_stream(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(responses.len(), 300);
    let mut seen = std::collections::BTreeMap::new();
    for r in responses {
        let r = r.unwrap();
        seen.insert(r.correlation_id, r);
    }
    assert_eq!(seen.len(), 300);
    let bad = &seen[&150];
    assert_eq!(
        bad.error.as_ref().unwrap().code,
        ErrorCode::CorruptBatch as i32
    );
    // Per partition, offsets follow send order.
    for partition in 0..3u64 {
        let offsets: Vec<u64> = (0..300)
            .filter(|i| i % 3 == partition && *i != 150)
            .map(|i| seen[&i].base_offset)
            .collect();
        assert_eq!(offsets, (0..offsets.len() as u64).collect::<Vec<_>>());
        let values = fetch_values(&mut client, "s", partition as u32).await;
        let expected: Vec<String> = (0..300)
            .filter(|i| i % 3 == partition && *i != 150)
            .map(|i| format!("{partition}:{i}"))
            .collect();
        assert_eq!(values, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_fetch_pushes_appends_and_ends_on_shutdown() {
    let dir = temp_data_dir();
    let mut broker = BrokerProcess::start(
        BROKER.as_ref(),
        dir.path(),
        &["--shutdown-timeout-ms", "120000"],
    );
    let mut client = broker.grpc().await;
    create(&mut client, "live", 1).await;
    let mut stream = client
        .fetch(FetchRequest {
            topic: "live".into(),
            partition: 0,
            offset: 0,
            follow: true,
            max_wait_ms: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for i in 0..5 {
        client
            .produce(produce_req(
                "live",
                0,
                batch(&[&format!("v{i}")], i),
                Acks::Leader,
            ))
            .await
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a follower is woken by the append")
            .unwrap()
            .unwrap();
        let batch = RecordBatch::parse(response.batches).unwrap();
        assert_eq!(batch.base_offset(), i as u64);
        assert_eq!(response.high_watermark, i as u64 + 1);
    }
    // A long shutdown timeout: if the follower held shutdown up, the watchdog below would fire
    // long before the broker gave up on it.
    let status = tokio::task::block_in_place(|| broker.terminate_within(Duration::from_secs(40)));
    assert!(
        status.success(),
        "graceful exit with a follower attached: {status:?}"
    );
    // The follower learns why its stream ended.
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream ends");
    match end {
        Some(Err(status)) => assert_eq!(reason(&status), ErrorCode::ShuttingDown, "{status:?}"),
        other => panic!("a follow stream must end with SHUTTING_DOWN, got {other:?}"),
    }
    // Shutdown was clean: the marker is there for the next start.
    assert!(dir.path().join("logs/.clean-shutdown").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topic_ends_its_follow_fetches_and_oversized_topics_are_refused() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let mut client = broker.grpc().await;
    create(&mut client, "brief", 1).await;
    let mut stream = client
        .fetch(FetchRequest {
            topic: "brief".into(),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    client
        .delete_topic(DeleteTopicRequest {
            name: "brief".into(),
        })
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("a deleted topic's follower is told");
    match end {
        Some(Err(status)) => assert_eq!(reason(&status), ErrorCode::UnknownTopic, "{status:?}"),
        other => panic!("expected UNKNOWN_TOPIC, got {other:?}"),
    }

    // A topic whose batches could never fit in one request (16 MiB by default) is refused.
    let status = client
        .create_topic(CreateTopicRequest {
            name: "huge".into(),
            partitions: 1,
            config: Some(TopicConfig {
                max_batch_bytes: Some(32 << 20),
                segment_bytes: Some(64 << 20),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), ErrorCode::InvalidRequest, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_are_stored_once_and_conditional_appends_conflict() {
    use weir_proto::v1::InitProducerRequest;
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let mut client = broker.grpc().await;
    create(&mut client, "acct", 1).await;
    let producer = client
        .init_producer(InitProducerRequest {})
        .await
        .unwrap()
        .into_inner();
    let other = client
        .init_producer(InitProducerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_ne!(producer.producer_id, other.producer_id, "ids are unique");
    let stamped = |seq: i32, values: &[&str]| {
        let mut b = BatchBuilder::new().producer(producer.producer_id, 0, seq);
        for v in values {
            b.push(RecordInput {
                value: Some(v.as_bytes()),
                ..Default::default()
            })
            .unwrap();
        }
        b.build().unwrap()
    };
    let first = stamped(0, &["opened", "deposited"]);
    let ack = client
        .produce(produce_req("acct", 0, first.clone(), Acks::Durable))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (ack.base_offset, ack.last_offset, ack.duplicate),
        (0, 1, false)
    );
    // The client never saw that answer and sends the same batch again.
    let retry = client
        .produce(produce_req("acct", 0, first, Acks::Durable))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((retry.base_offset, retry.duplicate), (0, true));
    assert_eq!(high_watermark(&mut client, "acct", 0).await, 2);
    let status = client
        .produce(produce_req("acct", 0, stamped(5, &["gap"]), Acks::Leader))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), ErrorCode::OutOfOrderSequence);

    // Conditional append: two writers read up to offset 2; one wins, the other is told the truth.
    let conditional = |value: &str| ProduceRequest {
        expected_offset: Some(2),
        ..produce_req("acct", 0, batch(&[value], 9), Acks::Leader)
    };
    client.produce(conditional("withdrew 10")).await.unwrap();
    let status = client
        .produce(conditional("withdrew 99"))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), ErrorCode::Conflict);
    let detail = from_status(&status).unwrap();
    assert_eq!(detail.actual_offset, Some(3));
    assert_eq!(
        fetch_values(&mut client, "acct", 0).await,
        ["opened", "deposited", "withdrew 10"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_counts_and_absurd_sizes_are_refused_and_change_nothing() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let mut client = broker.grpc().await;
    create(&mut client, "t", 1).await;
    client
        .produce(produce_req("t", 0, batch(&["ok"], 1), Acks::Leader))
        .await
        .unwrap();
    let good = batch(&["x", "y"], 1);
    // Patch a header field and fix the CRC, so only the lie itself can be caught.
    let lie = |at: usize, bytes: &[u8]| {
        let mut b = good.to_vec();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        let crc = crc32fast::hash(&b[17..]);
        b[13..17].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    };
    let cases = [
        ("record count of 2^31-1", lie(53, &i32::MAX.to_be_bytes())),
        ("negative record count", lie(53, &(-5i32).to_be_bytes())),
        ("last offset delta that lies", lie(19, &7i32.to_be_bytes())),
        ("negative batch length", {
            let mut b = good.to_vec();
            b[8..12].copy_from_slice(&(-1i32).to_be_bytes());
            Bytes::from(b)
        }),
    ];
    for (what, bytes) in cases {
        let status = client
            .produce(produce_req("t", 0, bytes, Acks::Durable))
            .await
            .expect_err(what);
        assert_eq!(
            reason(&status),
            ErrorCode::CorruptBatch,
            "{what}: {status:?}"
        );
        assert_eq!(
            high_watermark(&mut client, "t", 0).await,
            1,
            "{what} moved the log"
        );
    }
    // Absurd fetch sizes are capped, not honoured or fatal.
    let mut stream = client
        .fetch(FetchRequest {
            topic: "t".into(),
            max_bytes: u32::MAX,
            max_wait_ms: u32::MAX,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.high_watermark, 1);
    assert!(stream.next().await.is_none());
    let status = client
        .list_offsets(ListOffsetsRequest {
            current_leader_epoch: None,
            topic: "t".into(),
            partitions: vec![u32::MAX],
            spec: OffsetSpec::Earliest as i32,
            timestamp_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), ErrorCode::UnknownPartition);
    let status = client
        .list_offsets(ListOffsetsRequest {
            current_leader_epoch: None,
            topic: "t".into(),
            partitions: vec![],
            spec: 99,
            timestamp_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), ErrorCode::InvalidRequest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_garbage_connections_do_not_stop_others_or_shutdown() {
    use std::io::Write;
    let dir = temp_data_dir();
    let mut broker = BrokerProcess::start(
        BROKER.as_ref(),
        dir.path(),
        &["--shutdown-timeout-ms", "3000"],
    );
    // One connection sends the HTTP/2 preface and half a frame header, then stalls; another
    // sends garbage.
    let mut stalled = std::net::TcpStream::connect(broker.addr).unwrap();
    stalled
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00")
        .unwrap();
    let mut garbage = std::net::TcpStream::connect(broker.addr).unwrap();
    garbage.write_all(&[0xff; 4096]).unwrap();
    let mut client = broker.grpc().await;
    create(&mut client, "t", 1).await;
    client
        .produce(produce_req(
            "t",
            0,
            batch(&["still served"], 1),
            Acks::Durable,
        ))
        .await
        .unwrap();
    assert_eq!(fetch_values(&mut client, "t", 0).await, ["still served"]);
    let status = tokio::task::block_in_place(|| broker.terminate_within(Duration::from_secs(40)));
    assert!(status.success(), "{status:?}");
    drop((stalled, garbage));
}
