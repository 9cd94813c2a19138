//! The sendfile data port over the network, against the real `weir-broker` binary: byte
//! identity with gRPC `Fetch` (across segment boundaries and after retention), following, and
//! bad or vanishing clients.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tonic::transport::Channel;
use weir_proto::batch::{BatchBuilder, RecordInput, split_batches};
use weir_proto::data_port::{FetchFrame, FrameKind, RESPONSE_HEADER_LEN, ResponseHeader};
use weir_proto::v1::weir_client::WeirClient;
use weir_proto::v1::{
    Acks, CreateTopicRequest, DescribeTopicRequest, ErrorCode, FetchRequest, ProduceRequest,
    TopicConfig,
};
use weir_testkit::{BrokerProcess, temp_data_dir};

const BROKER: &str = env!("CARGO_BIN_EXE_weir-broker");

fn batch(id: u64, records: usize, value_len: usize) -> Bytes {
    let mut b = BatchBuilder::new();
    let value: Vec<u8> = (0..value_len).map(|i| (i as u64 * 7 + id) as u8).collect();
    for r in 0..records {
        let key = format!("{id}-{r}");
        b.push(RecordInput {
            key: Some(key.as_bytes()),
            value: Some(&value),
            timestamp: 1_700_000_000_000 + id as i64,
            headers: &[],
        })
        .unwrap();
    }
    b.build().unwrap()
}

/// A topic of small segments (so fetches cross segment boundaries), filled with `batches`.
async fn filled_topic(
    client: &mut WeirClient<Channel>,
    name: &str,
    batches: u64,
    config: TopicConfig,
) {
    client
        .create_topic(CreateTopicRequest {
            name: name.into(),
            partitions: 1,
            config: Some(config),
            ..Default::default()
        })
        .await
        .expect("create");
    for id in 0..batches {
        client
            .produce(ProduceRequest {
                correlation_id: id,
                topic: name.into(),
                partition: 0,
                batch: batch(id, 1 + (id % 5) as usize, 700),
                acks: Acks::Leader as i32,
                expected_offset: None,
                expected_keys: Vec::new(),
            })
            .await
            .expect("produce");
    }
}

/// Everything gRPC Fetch returns from `offset` to the end, concatenated.
async fn grpc_bytes(
    client: &mut WeirClient<Channel>,
    topic: &str,
    offset: u64,
    max_bytes: u32,
) -> Vec<u8> {
    let mut stream = client
        .fetch(FetchRequest {
            topic: topic.into(),
            partition: 0,
            offset,
            max_bytes,
            ..Default::default()
        })
        .await
        .expect("grpc fetch")
        .into_inner();
    let mut out = Vec::new();
    while let Some(response) = stream.next().await {
        out.extend_from_slice(&response.expect("response").batches);
    }
    out
}

fn send_fetch(stream: &mut TcpStream, topic: &str, offset: u64, max_bytes: u32, follow: bool) {
    let frame = FetchFrame {
        current_leader_epoch: None,
        topic: topic.into(),
        partition: 0,
        offset,
        max_bytes,
        max_wait_ms: 0,
        follow,
        replica: None,
    };
    stream.write_all(&frame.encode()).expect("send request");
}

fn read_frame(stream: &mut TcpStream) -> (ResponseHeader, Vec<u8>) {
    let mut header = [0u8; RESPONSE_HEADER_LEN];
    stream.read_exact(&mut header).expect("frame header");
    let header = ResponseHeader::decode(&header).expect("valid header");
    let mut payload = vec![0u8; header.length as usize];
    stream.read_exact(&mut payload).expect("frame payload");
    (header, payload)
}

/// Everything the data port returns for one non-follow fetch on `stream`, concatenated.
fn data_port_bytes(stream: &mut TcpStream, topic: &str, offset: u64, max_bytes: u32) -> Vec<u8> {
    send_fetch(stream, topic, offset, max_bytes, false);
    let mut out = Vec::new();
    loop {
        let (header, payload) = read_frame(stream);
        match header.kind {
            FrameKind::Data => out.extend_from_slice(&payload),
            FrameKind::End => return out,
            FrameKind::Error => panic!("error frame: {}", String::from_utf8_lossy(&payload)),
            kind => panic!("a consumer's fetch got a {kind:?} frame"),
        }
    }
}

fn error_of(stream: &mut TcpStream) -> ErrorCode {
    let (header, payload) = read_frame(stream);
    assert_eq!(
        header.kind,
        FrameKind::Error,
        "{}",
        String::from_utf8_lossy(&payload)
    );
    assert!(!payload.is_empty(), "an error frame says why");
    ErrorCode::try_from(i32::from(header.error_code)).expect("a known code")
}

fn dial(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("dial data port");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_port_returns_the_same_bytes_as_grpc_fetch() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(
        BROKER.as_ref(),
        dir.path(),
        &["--retention-check-interval-ms", "100"],
    );
    let mut client = broker.grpc().await;
    let segment = TopicConfig {
        segment_bytes: Some(64 << 10),
        max_batch_bytes: Some(64 << 10),
        ..Default::default()
    };
    filled_topic(&mut client, "same", 300, segment).await;
    let described = client
        .describe_topic(DescribeTopicRequest {
            name: "same".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        described.partitions[0].data_address,
        broker.data_addr.to_string(),
        "the data port is advertised"
    );
    let mut port = dial(broker.data_addr);
    for (offset, max_bytes) in [(0, 0), (0, 10_000), (57, 1), (400, 100_000), (899, 0)] {
        let via_grpc = grpc_bytes(&mut client, "same", offset, max_bytes).await;
        // Several fetches on one connection, one after another.
        let via_port = data_port_bytes(&mut port, "same", offset, max_bytes);
        assert!(!via_grpc.is_empty());
        assert_eq!(
            via_port, via_grpc,
            "from offset {offset}, max_bytes {max_bytes}"
        );
        assert!(split_batches(Bytes::from(via_port)).all(|b| b.is_ok()));
    }
    assert!(
        dir.path().join("logs/same-0").read_dir().unwrap().count() > 6,
        "several segments"
    );

    // Retention: a second topic capped at ~4 segments loses its oldest ones.
    filled_topic(
        &mut client,
        "shrinking",
        300,
        TopicConfig {
            retention_bytes: Some(256 << 10),
            ..segment
        },
    )
    .await;
    // Retention may take several checks (100 ms apart) to get under its limit: wait until the
    // log start has moved and then stayed put for a few checks.
    let mut previous = 0;
    let start = loop {
        let d = client
            .describe_topic(DescribeTopicRequest {
                name: "shrinking".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let log_start = d.partitions[0].log_start_offset;
        if log_start > 0 && log_start == previous {
            break log_start;
        }
        previous = log_start;
        tokio::time::sleep(Duration::from_millis(350)).await;
    };
    let via_grpc = grpc_bytes(&mut client, "shrinking", start, 0).await;
    let via_port = data_port_bytes(&mut port, "shrinking", start, 0);
    assert_eq!(
        via_port, via_grpc,
        "after retention, from the new log start {start}"
    );
    send_fetch(&mut port, "shrinking", 0, 0, false);
    assert_eq!(error_of(&mut port), ErrorCode::OffsetOutOfRange);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_vanishing_clients_get_errors_and_others_are_served() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let mut client = broker.grpc().await;
    filled_topic(&mut client, "t", 200, TopicConfig::default()).await;
    let reference = grpc_bytes(&mut client, "t", 0, 0).await;

    // Unknown topic, offsets out of range: an error frame, then the connection closes.
    let mut s = dial(broker.data_addr);
    send_fetch(&mut s, "no-such-topic", 0, 0, false);
    assert_eq!(error_of(&mut s), ErrorCode::UnknownTopic);
    assert_eq!(
        s.read(&mut [0u8; 1]).unwrap_or(0),
        0,
        "closed after the error"
    );
    // An offset out of range is answered with the log's bounds in the header.
    let mut s = dial(broker.data_addr);
    send_fetch(&mut s, "t", 10_000, 0, false);
    let (header, _) = read_frame(&mut s);
    assert_eq!(
        (header.kind, header.error_code),
        (FrameKind::Error, ErrorCode::OffsetOutOfRange as u16)
    );
    let log_end: u64 = (0..200u64).map(|id| 1 + id % 5).sum();
    assert_eq!(
        (header.log_start_offset, header.high_watermark),
        (0, log_end)
    );

    // Garbage instead of a request, and a lying length.
    let mut s = dial(broker.data_addr);
    s.write_all(b"\x00\x00\x00\x20GET / HTTP/1.1\r\nHost: x\r\n\r\n!!!!!")
        .unwrap();
    assert_eq!(error_of(&mut s), ErrorCode::InvalidRequest);
    let mut s = dial(broker.data_addr);
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert_eq!(error_of(&mut s), ErrorCode::InvalidRequest);

    // Read one header of a big answer and hang up; connect and stall mid-request.
    let mut s = dial(broker.data_addr);
    send_fetch(&mut s, "t", 0, 1, true);
    let mut header = [0u8; RESPONSE_HEADER_LEN];
    s.read_exact(&mut header).unwrap();
    drop(s);
    let mut stalled = dial(broker.data_addr);
    stalled.write_all(&30u32.to_be_bytes()).unwrap();

    // Others are still served, byte for byte.
    let mut s = dial(broker.data_addr);
    assert_eq!(data_port_bytes(&mut s, "t", 0, 0), reference);
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_fetch_on_the_data_port_streams_appends_as_they_land() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let mut client = broker.grpc().await;
    filled_topic(&mut client, "live", 0, TopicConfig::default()).await;
    let mut s = dial(broker.data_addr);
    send_fetch(&mut s, "live", 0, 0, true);
    for id in 0..5u64 {
        let sent = batch(id, 2, 100);
        client
            .produce(ProduceRequest {
                correlation_id: id,
                topic: "live".into(),
                partition: 0,
                batch: sent.clone(),
                acks: Acks::Leader as i32,
                expected_offset: None,
                expected_keys: Vec::new(),
            })
            .await
            .unwrap();
        let s2 = &mut s;
        let (header, payload) = tokio::task::block_in_place(|| read_frame(s2));
        assert_eq!(header.kind, FrameKind::Data);
        assert_eq!(header.next_offset, (id + 1) * 2);
        assert_eq!(
            &payload[8..],
            &sent[8..],
            "the stored batch, base offset stamped"
        );
    }
}
