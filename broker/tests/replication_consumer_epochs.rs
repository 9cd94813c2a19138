//! Consumers' leader epochs (KIP-320, the client half of rule 2) over real processes: a
//! controller and three brokers on loopback, one partition with replication factor 3.
//!
//! What it proves: a leader refuses a consumer's Fetch and ListOffsets that quote a newer leader
//! epoch than its own (UNKNOWN_LEADER_EPOCH, retriable) or an older one (FENCED_LEADER_EPOCH),
//! on gRPC and on the data port, with nothing served; an unquoted or current epoch is served;
//! and the client's consumer, which quotes the epoch it reads in, reads every record once
//! across a leadership move (the preferred replica's return after a reassignment reorders the
//! replicas), with no manual step. The model (`weir-replication`'s `tests/model.rs`) shows why:
//! without the check, a deposed leader that has not learned of its successor serves a consumer
//! an older high watermark than the one it read from the successor.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weir_client::NewTopic;
use weir_proto::data_port::{FetchFrame, FrameKind, RESPONSE_HEADER_LEN, ResponseHeader};
use weir_proto::status::from_status;
use weir_proto::v1::{ErrorCode, FetchRequest, ListOffsetsRequest, OffsetSpec};
use weir_testkit::wait_until;

#[path = "support/replicated.rs"]
mod replicated;
use replicated::{Cluster, consume_numbers, produce_until};

/// A watchdog for conditions, not a timing assertion.
const WAIT: Duration = Duration::from_secs(60);
const TOPIC: &str = "epochs";

fn reason(status: &tonic::Status) -> ErrorCode {
    let e = from_status(status).unwrap_or_else(|| panic!("no weir reason in {status:?}"));
    ErrorCode::try_from(e.code).unwrap()
}

fn fetch(offset: u64, current_leader_epoch: Option<u32>) -> FetchRequest {
    FetchRequest {
        topic: TOPIC.into(),
        partition: 0,
        offset,
        max_bytes: 0,
        max_wait_ms: 0,
        follow: false,
        current_leader_epoch,
    }
}

/// The first frame a data-port fetch quoting `epoch` gets.
fn data_port_answer(addr: std::net::SocketAddr, epoch: Option<u32>) -> ResponseHeader {
    let mut stream = TcpStream::connect(addr).expect("data port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let frame = FetchFrame {
        topic: TOPIC.into(),
        partition: 0,
        offset: 0,
        max_bytes: 0,
        max_wait_ms: 0,
        follow: false,
        replica: None,
        current_leader_epoch: epoch,
    };
    stream.write_all(&frame.encode()).expect("send");
    let mut header = [0u8; RESPONSE_HEADER_LEN];
    stream.read_exact(&mut header).expect("frame header");
    ResponseHeader::decode(&header).expect("valid header")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_refuses_consumers_quoting_another_epoch_and_the_consumer_follows_moves() {
    let mut cluster = Cluster::start_with(3, &["--leader-rebalance-interval-ms", "300"], &[]);
    let client = cluster.client(WAIT).await;
    let admin = client.admin();
    admin
        .create_topic(
            NewTopic::new(TOPIC)
                .partitions(1)
                .replication_factor(3)
                .min_insync_replicas(2),
        )
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce_until(&client, TOPIC, 1, Arc::clone(&stop));
    wait_until("the partition holds records, all in sync", WAIT, || async {
        admin.describe_topic(TOPIC).await.is_ok_and(|t| {
            let p = &t.partitions[0];
            p.high_watermark >= 50 && p.isr.len() == 3
        })
    })
    .await;

    let before = admin.describe_topic(TOPIC).await.unwrap().partitions[0].clone();
    let (old_leader, old_epoch) = (before.leader_id, before.leader_epoch);
    let mut grpc = cluster.broker(old_leader).grpc().await;
    // Unquoted and current: served.
    for epoch in [None, Some(old_epoch)] {
        let mut stream = grpc.fetch(fetch(0, epoch)).await.unwrap().into_inner();
        let first = stream.message().await.unwrap().expect("a response");
        assert!(!first.batches.is_empty(), "epoch {epoch:?} is served");
    }
    // Newer than the leader's: it may be deposed without knowing; refused, retriable.
    let newer = grpc.fetch(fetch(0, Some(old_epoch + 1))).await.unwrap_err();
    assert_eq!(reason(&newer), ErrorCode::UnknownLeaderEpoch, "{newer:?}");
    assert!(from_status(&newer).unwrap().retriable);
    let listed = grpc
        .list_offsets(ListOffsetsRequest {
            topic: TOPIC.into(),
            partitions: vec![0],
            spec: OffsetSpec::Latest as i32,
            timestamp_ms: 0,
            current_leader_epoch: Some(old_epoch + 1),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&listed), ErrorCode::UnknownLeaderEpoch);
    let data_addr = cluster.broker(old_leader).data_addr;
    let answer = data_port_answer(data_addr, Some(old_epoch + 1));
    assert_eq!(answer.kind, FrameKind::Error);
    assert_eq!(answer.error_code, ErrorCode::UnknownLeaderEpoch as u16);
    assert_eq!(
        data_port_answer(data_addr, Some(old_epoch)).kind,
        FrameKind::Data
    );

    // Move the leadership: the same replicas, another one preferred; the controller completes
    // the reordering and elects the preferred replica (new epoch) while the producer runs.
    let mut order = before.replicas.clone();
    order.retain(|&b| b != old_leader);
    order.push(old_leader);
    let new_leader = order[0];
    admin
        .reassign_partitions(TOPIC, [(0, order)])
        .await
        .unwrap();
    wait_until("the preferred replica leads a new epoch", WAIT, || async {
        admin.describe_topic(TOPIC).await.is_ok_and(|t| {
            let p = &t.partitions[0];
            p.leader_id == new_leader && p.leader_epoch > old_epoch && p.isr.len() == 3
        })
    })
    .await;
    let new_epoch = admin.describe_topic(TOPIC).await.unwrap().partitions[0].leader_epoch;
    let mut grpc = cluster.broker(new_leader).grpc().await;
    // The new leader: the old epoch is stale metadata (refresh), the new one is served (once
    // its high watermark is final, which a retry waits out).
    let older = grpc.fetch(fetch(0, Some(old_epoch))).await.unwrap_err();
    assert_eq!(reason(&older), ErrorCode::FencedLeaderEpoch, "{older:?}");
    assert!(!from_status(&older).unwrap().retriable);
    let data_addr = cluster.broker(new_leader).data_addr;
    let answer = data_port_answer(data_addr, Some(old_epoch));
    assert_eq!(answer.kind, FrameKind::Error);
    assert_eq!(answer.error_code, ErrorCode::FencedLeaderEpoch as u16);
    wait_until("the new leader serves its epoch", WAIT, || async {
        match grpc.clone().fetch(fetch(0, Some(new_epoch))).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                matches!(stream.message().await, Ok(Some(r)) if !r.batches.is_empty())
            }
            Err(_) => false,
        }
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = producer.await.unwrap();
    assert!(failed.is_empty(), "acks=all deliveries failed: {failed:?}");
    // The client's consumer quotes epochs throughout; it reads every record once, in order.
    let read = consume_numbers(&client, TOPIC).await;
    assert_eq!(read, (0..sent).collect::<Vec<_>>());
}
