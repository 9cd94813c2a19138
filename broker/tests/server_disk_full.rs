//! Disk full through the broker: on a small tmpfs, produce until the disk is full. The broker
//! answers DISK_FULL (retriable), keeps serving reads of everything it acknowledged, and accepts
//! appends again once space is freed. Needs permission to mount a tmpfs (root in CI); skipped
//! with a message otherwise.

use bytes::Bytes;
use futures::StreamExt;
use weir_proto::batch::{BatchBuilder, RecordInput, split_batches};
use weir_proto::status::from_status;
use weir_proto::v1::{Acks, CreateTopicRequest, ErrorCode, FetchRequest, ProduceRequest};
use weir_testkit::{BrokerProcess, Tmpfs};

const BROKER: &str = env!("CARGO_BIN_EXE_weir-broker");

fn batch(n: u64) -> Bytes {
    let value = vec![(n % 251) as u8; 8 << 10];
    let mut b = BatchBuilder::new();
    b.push(RecordInput {
        key: Some(&n.to_be_bytes()),
        value: Some(&value),
        ..Default::default()
    })
    .unwrap();
    b.build().unwrap()
}

fn produce(n: u64) -> ProduceRequest {
    ProduceRequest {
        correlation_id: n,
        topic: "t".into(),
        partition: 0,
        batch: batch(n),
        acks: Acks::Durable as i32,
        expected_offset: None,
        expected_keys: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_retriable_refusal_and_nothing_acknowledged_is_lost() {
    let Some(fs) = Tmpfs::mount("4m", "server_disk_full") else {
        return;
    };
    let ballast = fs.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 1 << 20]).unwrap();
    let data = fs.path().join("data");
    let broker = BrokerProcess::start(
        BROKER.as_ref(),
        &data,
        &["--segment-bytes", "262144", "--max-batch-bytes", "65536"],
    );
    let mut client = broker.grpc().await;
    client
        .create_topic(CreateTopicRequest {
            name: "t".into(),
            partitions: 1,
            ..Default::default()
        })
        .await
        .unwrap();

    let mut acknowledged = 0u64;
    let refusal = loop {
        assert!(acknowledged < 1000, "a 4 MiB disk never filled");
        match client.produce(produce(acknowledged)).await {
            Ok(ack) => {
                assert_eq!(ack.into_inner().base_offset, acknowledged);
                acknowledged += 1;
            }
            Err(status) => break status,
        }
    };
    let error = from_status(&refusal).expect("a weir reason");
    assert_eq!(error.code, ErrorCode::DiskFull as i32, "{refusal:?}");
    assert!(error.retriable, "DISK_FULL is retriable");
    assert!(acknowledged > 10, "only {acknowledged} batches fit");

    // Reads keep working and hold exactly what was acknowledged.
    let mut stream = client
        .fetch(FetchRequest {
            topic: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut read = 0u64;
    while let Some(response) = stream.next().await {
        for b in split_batches(response.unwrap().batches) {
            let b = b.expect("no torn batch");
            assert_eq!(b.base_offset(), read);
            read += 1;
        }
    }
    assert_eq!(read, acknowledged);

    // Space comes back: appends succeed again, where the log left off.
    std::fs::remove_file(&ballast).unwrap();
    let ack = client
        .produce(produce(acknowledged))
        .await
        .expect("appends resume once space is freed")
        .into_inner();
    assert_eq!(ack.base_offset, acknowledged);
    drop(broker);
}
