//! A damaged batch below the recovery point (a bad sector in a sealed segment, made here by
//! zeroing a batch header while the broker is stopped), seen through the real broker as a user
//! sees it: a consumer from the beginning gets every record before the damage, over gRPC and
//! over the data port alike, then a `CORRUPT_LOG` error naming the partition and the first
//! unreadable offset; `weir-broker --verify` lists the same place and exits 1.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use futures::StreamExt;
use weir_client::{Client, ConsumerConfig, ErrorCode, Transport};
use weir_proto::batch::{BatchBuilder, BatchHeader, HEADER_LEN, RecordInput};
use weir_proto::v1::{Acks, CreateTopicRequest, ProduceRequest, TopicConfig};
use weir_testkit::{BrokerProcess, temp_data_dir};

const BROKER: &str = env!("CARGO_BIN_EXE_weir-broker");
const BATCHES: u64 = 400;

fn batch(id: u64) -> Bytes {
    let mut b = BatchBuilder::new();
    let value = format!("{id}:{}", "x".repeat(200));
    b.push(RecordInput {
        key: None,
        value: Some(value.as_bytes()),
        timestamp: 1_700_000_000_000 + id as i64,
        headers: &[],
    })
    .unwrap();
    b.build().unwrap()
}

fn sealed_segments(partition_dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<_> = fs::read_dir(partition_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop(); // the active one
    logs
}

/// Zeroes the header of a batch in the middle of `segment`; returns its base offset.
fn zero_a_batch(segment: &Path) -> u64 {
    let bytes = fs::read(segment).unwrap();
    let mut starts = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let h = BatchHeader::parse(&bytes[pos..]).unwrap();
        starts.push((pos, h.base_offset));
        pos += h.total_len().unwrap();
    }
    let (pos, offset) = starts[starts.len() / 2];
    let f = fs::OpenOptions::new().write(true).open(segment).unwrap();
    f.write_all_at(&[0u8; HEADER_LEN], pos as u64).unwrap();
    offset
}

/// The offsets a non-following consumer yields, and the error that ended it.
async fn consume(
    client: &Client,
    transport: Transport,
) -> (Vec<u64>, Option<weir_client::ClientError>) {
    let mut consumer = client.consumer(ConsumerConfig {
        follow: false,
        transport,
        ..Default::default()
    });
    consumer.assign_topic("damaged").await.expect("assign");
    let mut stream = consumer.stream();
    let mut offsets = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(record) => offsets.push(record.offset),
            Err(e) => return (offsets, Some(e)),
        }
    }
    (offsets, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_sealed_batch_ends_reads_at_it_with_corrupt_log() {
    let dir = temp_data_dir();
    let mut broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let mut grpc = broker.grpc().await;
    grpc.create_topic(CreateTopicRequest {
        name: "damaged".into(),
        partitions: 1,
        config: Some(TopicConfig {
            segment_bytes: Some(16 << 10),
            max_batch_bytes: Some(16 << 10),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("create");
    for id in 0..BATCHES {
        grpc.produce(ProduceRequest {
            correlation_id: id,
            topic: "damaged".into(),
            partition: 0,
            batch: batch(id),
            acks: Acks::Durable as i32,
            ..Default::default()
        })
        .await
        .expect("produce");
    }
    drop(grpc);
    assert!(broker.terminate().success());

    let sealed = sealed_segments(&dir.path().join("logs/damaged-0"));
    assert!(sealed.len() >= 3, "the test needs several sealed segments");
    let bad = zero_a_batch(&sealed[1]);

    let verify = Command::new(BROKER)
        .args(["--verify", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{listed}");
    assert!(
        listed.contains(&format!("DAMAGED damaged-0 offset {bad} ")),
        "--verify names the place: {listed}"
    );

    broker.restart();
    let client = Client::connect(&broker.host_port()).await.unwrap();
    for transport in [Transport::Grpc, Transport::DataPort] {
        let (offsets, error) = consume(&client, transport).await;
        assert_eq!(
            offsets,
            (0..bad).collect::<Vec<_>>(),
            "{transport:?}: every record before the damage, nothing after"
        );
        let error = error.unwrap_or_else(|| panic!("{transport:?}: the damage must be an error"));
        assert_eq!(
            error.code(),
            Some(ErrorCode::CorruptLog),
            "{transport:?}: {error}"
        );
        let message = error.to_string();
        assert!(
            message.contains("damaged-0") && message.contains(&format!("offset {bad}")),
            "{transport:?}: the error names partition and offset: {message}"
        );
    }
}
