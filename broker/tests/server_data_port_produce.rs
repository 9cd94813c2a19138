//! Produce on the data port over the network, against the real `weir-broker` binary: the same
//! request stores the same bytes and gets the same answer as gRPC `Produce`; bad frames,
//! oversized and vanishing requests are refused or dropped with nothing appended, and other
//! requests are still served; the client's producer sends over it end to end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tonic::transport::Channel;
use weir_client::{
    Client, ConsumerConfig, ProducerConfig, ProducerRecord, Transport as ClientTransport,
};
use weir_proto::batch::{BatchBuilder, RecordInput};
use weir_proto::data_port::produce::{Answer, FLAG_PRODUCE, decode_answer, encode_request_head};
use weir_proto::v1::weir_client::WeirClient;
use weir_proto::v1::{
    Acks, CreateTopicRequest, ErrorCode, FetchRequest, ListOffsetsRequest, OffsetSpec,
    ProduceRequest, ProduceResponse,
};
use weir_testkit::{BrokerProcess, temp_data_dir};

const BROKER: &str = env!("CARGO_BIN_EXE_weir-broker");

fn batch(id: u64, records: usize) -> Bytes {
    let mut b = BatchBuilder::new();
    let value: Vec<u8> = (0..300).map(|i| (i as u64 * 7 + id) as u8).collect();
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

fn request(id: u64, topic: &str, batch: Bytes) -> ProduceRequest {
    ProduceRequest {
        correlation_id: id,
        topic: topic.into(),
        partition: 0,
        batch,
        acks: Acks::Leader as i32,
        expected_offset: None,
        expected_keys: Vec::new(),
    }
}

async fn create(grpc: &mut WeirClient<Channel>, name: &str) {
    grpc.create_topic(CreateTopicRequest {
        name: name.into(),
        partitions: 1,
        ..Default::default()
    })
    .await
    .expect("create");
}

/// A raw produce connection.
struct Conn(TcpStream);

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("data port");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Conn(stream)
    }

    fn send(&mut self, req: &ProduceRequest) {
        let mut bytes = encode_request_head(req);
        bytes.extend_from_slice(&req.batch);
        self.0.write_all(&bytes).expect("send");
    }

    /// The next answer, or `None` at the end of the connection.
    fn answer(&mut self) -> Option<Answer> {
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut body).expect("answer body");
        Some(decode_answer(&body).expect("a valid answer"))
    }

    fn produced(&mut self) -> ProduceResponse {
        match self.answer() {
            Some(Answer::Produced(r)) => r,
            other => panic!("expected a produce answer, got {other:?}"),
        }
    }

    fn closing(&mut self) -> ErrorCode {
        match self.answer() {
            Some(Answer::Closing(e)) => {
                assert!(self.answer().is_none(), "the connection ends after Closing");
                ErrorCode::try_from(e.code).unwrap()
            }
            other => panic!("expected the connection's last answer, got {other:?}"),
        }
    }
}

fn code(response: &ProduceResponse) -> Option<ErrorCode> {
    response
        .error
        .as_ref()
        .map(|e| ErrorCode::try_from(e.code).unwrap())
}

async fn stored(grpc: &mut WeirClient<Channel>, topic: &str) -> Vec<u8> {
    let mut stream = grpc
        .fetch(FetchRequest {
            topic: topic.into(),
            partition: 0,
            offset: 0,
            ..Default::default()
        })
        .await
        .expect("fetch")
        .into_inner();
    let mut out = Vec::new();
    while let Some(response) = stream.next().await {
        out.extend_from_slice(&response.expect("response").batches);
    }
    out
}

async fn high_watermark(grpc: &mut WeirClient<Channel>, topic: &str) -> u64 {
    grpc.list_offsets(ListOffsetsRequest {
        topic: topic.into(),
        partitions: vec![0],
        spec: OffsetSpec::Latest as i32,
        ..Default::default()
    })
    .await
    .expect("list offsets")
    .into_inner()
    .offsets[0]
        .offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_port_stores_what_grpc_stores_and_answers_alike() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(Path::new(BROKER), dir.path(), &[]);
    let mut grpc = broker.grpc().await;
    create(&mut grpc, "via-grpc").await;
    create(&mut grpc, "via-port").await;
    let mut conn = Conn::open(broker.data_addr);
    for id in 0..20u64 {
        let b = batch(id, 1 + (id % 4) as usize);
        let mut expected = grpc
            .produce(request(id, "via-grpc", b.clone()))
            .await
            .expect("grpc produce")
            .into_inner();
        conn.send(&request(id, "via-port", b));
        let answered = conn.produced();
        expected.correlation_id = id;
        assert_eq!(answered, expected, "batch {id}");
    }
    // A conditional append: the same conflict, with the same actual offset, on both.
    let conditional = |topic: &str| ProduceRequest {
        expected_offset: Some(3),
        ..request(99, topic, batch(99, 1))
    };
    let over_grpc = grpc.produce(conditional("via-grpc")).await.unwrap_err();
    conn.send(&conditional("via-port"));
    let over_port = conn.produced();
    assert_eq!(code(&over_port), Some(ErrorCode::Conflict));
    let grpc_error = weir_proto::status::from_status(&over_grpc).expect("a weir reason");
    assert_eq!(
        over_port.error.as_ref().unwrap().actual_offset,
        grpc_error.actual_offset
    );
    assert_eq!(
        stored(&mut grpc, "via-grpc").await,
        stored(&mut grpc, "via-port").await,
        "the same requests store the same bytes"
    );

    // The client's producer over the data port, end to end: every record once, in order,
    // while its connection shows on the data port.
    let client = Client::connect(&broker.host_port()).await.unwrap();
    create(&mut grpc, "client").await;
    let producer = client
        .producer(ProducerConfig {
            transport: ClientTransport::DataPort,
            ..ProducerConfig::default()
        })
        .unwrap();
    let mut deliveries = Vec::new();
    for n in 0..2000u32 {
        let record = ProducerRecord::new("client").value(n.to_string());
        deliveries.push(producer.send(record).await.unwrap());
    }
    producer.flush().await.unwrap();
    for (n, delivery) in deliveries.into_iter().enumerate() {
        assert_eq!(delivery.await.unwrap().offset, n as u64);
    }
    let mut consumer = client.consumer(ConsumerConfig {
        follow: false,
        ..Default::default()
    });
    consumer.assign_topic("client").await.unwrap();
    let mut stream = consumer.stream();
    let mut read = Vec::new();
    while let Some(record) = stream.next().await {
        let record = record.unwrap();
        read.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
    }
    let sent: Vec<String> = (0..2000u32).map(|n| n.to_string()).collect();
    assert_eq!(read, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_produce_frames_change_nothing_and_others_are_served() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(
        Path::new(BROKER),
        dir.path(),
        &[
            "--max-request-bytes",
            "1048576",
            "--max-batch-bytes",
            "65536",
        ],
    );
    let mut grpc = broker.grpc().await;
    create(&mut grpc, "t").await;
    let addr = broker.data_addr;

    // Per-request refusals are answers; the connection goes on.
    let mut conn = Conn::open(addr);
    let mut corrupt = batch(1, 3).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    conn.send(&request(1, "t", corrupt.into()));
    assert_eq!(code(&conn.produced()), Some(ErrorCode::CorruptBatch));
    conn.send(&request(2, "nope", batch(2, 1)));
    assert_eq!(code(&conn.produced()), Some(ErrorCode::UnknownTopic));
    conn.send(&request(3, "t", batch(3, 2)));
    let ok = conn.produced();
    assert_eq!((ok.error, ok.base_offset, ok.last_offset), (None, 0, 1));

    // A request over max_request_bytes: refused from its length, the connection's last answer.
    let mut conn = Conn::open(addr);
    let mut head = 2_000_000u32.to_be_bytes().to_vec();
    head.extend_from_slice(&[1, FLAG_PRODUCE]);
    conn.0.write_all(&head).unwrap();
    assert_eq!(conn.closing(), ErrorCode::BatchTooLarge);

    // A header longer than its body.
    let mut conn = Conn::open(addr);
    let mut lying = 100u32.to_be_bytes().to_vec();
    lying.extend_from_slice(&[1, FLAG_PRODUCE, 0, 0, 1, 0]);
    conn.0.write_all(&lying).unwrap();
    assert_eq!(conn.closing(), ErrorCode::InvalidRequest);

    // A client that vanishes halfway through its batch.
    let req = request(4, "t", batch(4, 50));
    let mut bytes = encode_request_head(&req);
    bytes.extend_from_slice(&req.batch[..req.batch.len() / 2]);
    let mut conn = Conn::open(addr);
    conn.0.write_all(&bytes).unwrap();
    drop(conn);

    // Nothing of the refused requests was appended, and the broker still serves.
    let mut conn = Conn::open(addr);
    conn.send(&request(5, "t", batch(5, 1)));
    assert_eq!(conn.produced().base_offset, 2);
    assert_eq!(high_watermark(&mut grpc, "t").await, 3);
}
