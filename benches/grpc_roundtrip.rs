//! gRPC round trips of 1 KiB records through a real broker, beside a raw loopback TCP copy of
//! the same bytes in the same run.
//!
//! - `grpc/produce`: 64 batches of 1 MiB (1 KiB records) pipelined on one `ProduceStream`,
//!   acks=leader, until every ack is back.
//! - `grpc/consume`: a `Fetch` of 64 MiB from offset 0 (1 MiB responses), every batch split and
//!   CRC-checked on arrival, as the client does.
//! - `raw-tcp/copy`: the same 64 MiB written over a plain loopback socket and read by a thread:
//!   the ceiling any networked broker works under.
//!
//! The broker runs in this process on its own runtime (two worker threads), listening on an
//! ephemeral loopback port; clients use a separate runtime. `cargo bench --bench grpc_roundtrip`
//! prints MiB/s; records/s is that divided by the record size (about 1 KiB + 11 bytes of
//! framing, printed at start).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use support::batch_of;
use tonic::transport::Channel;
use weir::batch::split_batches;
use weir_broker::config::BrokerConfig;
use weir_broker::server::Broker;
use weir_proto::v1::weir_client::WeirClient;
use weir_proto::v1::{Acks, CreateTopicRequest, FetchRequest, ProduceRequest};

const BATCHES: usize = 64;
const BATCH_BYTES: usize = 1 << 20;
const RECORD_BYTES: usize = 1 << 10;

struct Harness {
    _dir: tempfile::TempDir,
    _broker_runtime: tokio::runtime::Runtime,
    client_runtime: tokio::runtime::Runtime,
    client: WeirClient<Channel>,
    batch: Bytes,
}

fn start() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("broker runtime");
    let config = BrokerConfig {
        data_dir: dir.path().to_owned(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..BrokerConfig::default()
    };
    let broker = broker_runtime
        .block_on(Broker::start(config))
        .expect("broker");
    let addr = broker.local_addr();
    broker_runtime.spawn(broker.run(std::future::pending()));
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("client runtime");
    let client = client_runtime.block_on(async {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .initial_stream_window_size(16 << 20)
            .initial_connection_window_size(32 << 20)
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect");
        let mut client = WeirClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        client
            .create_topic(CreateTopicRequest {
                name: "bench".into(),
                partitions: 1,
                ..Default::default()
            })
            .await
            .expect("create topic");
        client
    });
    let batch = batch_of(RECORD_BYTES, BATCH_BYTES);
    let records = weir::batch::RecordBatch::parse(batch.clone())
        .expect("batch")
        .record_count();
    eprintln!(
        "grpc_roundtrip: batches of {} bytes holding {records} records of {RECORD_BYTES} B values ({:.0} B per record on the wire)",
        batch.len(),
        batch.len() as f64 / records as f64
    );
    Harness {
        _dir: dir,
        _broker_runtime: broker_runtime,
        client_runtime,
        client,
        batch,
    }
}

async fn produce_all(client: &mut WeirClient<Channel>, batch: &Bytes) {
    let batch = batch.clone();
    let requests = (0..BATCHES as u64).map(move |i| ProduceRequest {
        correlation_id: i,
        topic: "bench".into(),
        partition: 0,
        batch: batch.clone(),
        acks: Acks::Leader as i32,
        expected_offset: None,
        expected_keys: Vec::new(),
    });
    let mut responses = client
        .produce_stream(futures::stream::iter(requests))
        .await
        .expect("produce stream")
        .into_inner();
    let mut acked = 0;
    while let Some(response) = responses.next().await {
        let response = response.expect("response");
        assert!(response.error.is_none(), "{:?}", response.error);
        acked += 1;
    }
    assert_eq!(acked, BATCHES);
}

async fn consume_from(client: &mut WeirClient<Channel>, offset: u64) -> usize {
    let mut stream = client
        .fetch(FetchRequest {
            topic: "bench".into(),
            partition: 0,
            offset,
            max_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .expect("fetch")
        .into_inner();
    let mut bytes = 0;
    while let Some(response) = stream.next().await {
        let response = response.expect("fetch response");
        for batch in split_batches(response.batches) {
            bytes += batch.expect("valid batch").as_bytes().len();
            if bytes >= BATCHES * BATCH_BYTES {
                return bytes;
            }
        }
    }
    bytes
}

fn grpc(c: &mut Criterion) {
    let mut h = start();
    let mut group = c.benchmark_group("roundtrip-1KiB-records");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes((BATCHES * h.batch.len()) as u64));

    let batch = h.batch.clone();
    group.bench_function("grpc/produce", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                h.client_runtime
                    .block_on(produce_all(&mut h.client, &batch));
            }
            start.elapsed()
        })
    });

    // Enough data for the consume bench exists now (at least one produce round).
    group.bench_function("grpc/consume", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let got = h.client_runtime.block_on(consume_from(&mut h.client, 0));
                assert!(got >= BATCHES * batch.len() - batch.len());
            }
            start.elapsed()
        })
    });

    group.bench_function("raw-tcp/copy", |b| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let total = BATCHES * batch.len();
        let reader = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().expect("accept");
            let mut buf = vec![0u8; 1 << 20];
            let mut received = 0usize;
            loop {
                match socket.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        received += n;
                        if received.is_multiple_of(total) {
                            // Acknowledge each full round so the writer times a whole copy.
                            let _ = socket.write_all(&[1]);
                        }
                    }
                }
            }
        });
        let mut socket = TcpStream::connect(addr).expect("connect");
        socket.set_nodelay(true).expect("nodelay");
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for _ in 0..BATCHES {
                    socket.write_all(&batch).expect("write");
                }
                let mut ack = [0u8; 1];
                socket.read_exact(&mut ack).expect("ack");
            }
            start.elapsed()
        });
        drop(socket);
        let _ = reader.join();
    });
    group.finish();
}

criterion_group!(benches, grpc);
criterion_main!(benches);
