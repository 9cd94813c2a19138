//! Several batches of one partition in flight (`max_in_flight_per_partition`), through the real
//! `weir-broker` binary over loopback: one producer sends numbered records to one partition in
//! small batches with no linger, so its lane is kept full (5 batches on the link at once),
//! over the data port and over gRPC, through a graceful restart of the broker mid-stream
//! (every in-flight batch comes back and is re-sent in order with its original stamp), and
//! with its connections cut under it while the broker runs on.
//!
//! What it proves: every record is acknowledged, at the offset equal to its send index (one
//! partition, one producer: the log must be exactly the records in send order, each once), and
//! reading the partition back gives exactly those records in that order.

use std::time::Duration;

use futures::StreamExt;
use weir_client::{
    Client, ConsumerConfig, MAX_IN_FLIGHT_PER_PARTITION, NewTopic, ProducerConfig, ProducerRecord,
    Transport,
};
use weir_testkit::{BrokerProcess, LinkProxy, free_loopback_addr, temp_data_dir};

const BROKER: &str = env!("CARGO_BIN_EXE_weir-broker");
const RECORDS: usize = 30_000;

fn value(i: usize) -> String {
    // ~64 bytes: a 4 KiB batch holds about 50, so the run is some 600 batches.
    format!("v{i:08}-{}", "x".repeat(54))
}

fn config(transport: Transport) -> ProducerConfig {
    ProducerConfig {
        linger: Duration::ZERO,
        batch_bytes: 4 << 10,
        // A small buffer: sends wait for acknowledgments, so the restart lands mid-stream
        // (sending cannot finish before it) with the lane full.
        buffer_bytes: 64 << 10,
        max_in_flight_per_partition: MAX_IN_FLIGHT_PER_PARTITION,
        transport,
        ..ProducerConfig::default()
    }
}

/// Sends `RECORDS` numbered records to `topic`-0 and checks each was acknowledged at its send
/// index. With `disturb`, a thread runs it once a third of them were sent, while sending goes
/// on (a restart of the broker, cut connections).
async fn produce_in_order<'a>(
    client: &Client,
    topic: &str,
    config: ProducerConfig,
    mut disturb: Option<Box<dyn FnOnce() + Send + 'a>>,
) {
    let producer = client.producer(config).expect("producer");
    let mut deliveries = Vec::with_capacity(RECORDS);
    std::thread::scope(|scope| {
        let mut disturber = None;
        let handle = tokio::runtime::Handle::current();
        for i in 0..RECORDS {
            if i == RECORDS / 3
                && let Some(disturb) = disturb.take()
            {
                disturber = Some(scope.spawn(disturb));
            }
            let record = ProducerRecord::new(topic).partition(0).value(value(i));
            let sent = tokio::task::block_in_place(|| handle.block_on(producer.send(record)));
            deliveries.push(sent.expect("buffered"));
        }
        if let Some(disturber) = disturber {
            disturber.join().expect("disturbing thread");
        }
    });
    producer.close().await.expect("close");
    for (i, delivery) in deliveries.into_iter().enumerate() {
        let metadata = delivery
            .await
            .unwrap_or_else(|e| panic!("record {i} not acknowledged: {e}"));
        assert_eq!(
            (metadata.partition, metadata.offset),
            (0, i as u64),
            "record {i}: one producer, one partition: offsets follow send order, each once"
        );
    }
}

/// Every record of `topic`-0, in offset order, as values.
async fn consume_values(client: &Client, topic: &str) -> Vec<String> {
    let mut consumer = client.consumer(ConsumerConfig {
        follow: false,
        ..ConsumerConfig::default()
    });
    consumer.assign_topic(topic).await.expect("assign");
    let mut stream = consumer.stream();
    let mut out = Vec::new();
    while let Some(record) = stream.next().await {
        let record = record.expect("a valid record");
        assert_eq!(record.offset, out.len() as u64, "dense offsets");
        let bytes = record.value.expect("a value");
        out.push(String::from_utf8(bytes.to_vec()).expect("utf-8"));
    }
    out
}

fn check_log(values: &[String]) {
    assert_eq!(values.len(), RECORDS, "every record, nothing else");
    if let Some(i) = (0..RECORDS).find(|&i| values[i] != value(i)) {
        panic!("offset {i} holds {:?}, not record {i}", values[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_in_flight_deliver_one_partition_once_and_in_order_over_both_wires() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let client = Client::connect(&broker.host_port()).await.expect("connect");
    let runs = [
        ("over-data-port", config(Transport::DataPort)),
        ("over-grpc", config(Transport::Grpc)),
        // Without idempotence the producer keeps one in flight whatever the setting says.
        (
            "not-idempotent",
            ProducerConfig {
                idempotent: false,
                ..config(Transport::Auto)
            },
        ),
    ];
    for (topic, config) in runs {
        client
            .admin()
            .create_topic(NewTopic::new(topic).partitions(1))
            .await
            .expect("create topic");
        produce_in_order(&client, topic, config, None).await;
        check_log(&consume_values(&client, topic).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_in_flight_ride_out_a_graceful_restart_in_order() {
    let dir = temp_data_dir();
    let mut broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let client = Client::connect(&broker.host_port()).await.expect("connect");
    client
        .admin()
        .create_topic(NewTopic::new("restarted").partitions(1))
        .await
        .expect("create topic");
    let restart = Box::new(|| {
        assert!(
            broker.terminate_within(Duration::from_secs(60)).success(),
            "graceful exit with batches in flight"
        );
        broker.restart();
    });
    produce_in_order(&client, "restarted", config(Transport::Auto), Some(restart)).await;
    check_log(&consume_values(&client, "restarted").await);
}

/// The producer's data-port connections are cut under it, again and again, while the broker
/// runs on: the broker may have read and appended some of a cut connection's batches, which
/// come back to the producer unanswered and are re-sent, in order, byte-identical, on the next
/// connection (answered as duplicates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_in_flight_ride_out_cut_connections_in_order() {
    const CUTS: usize = 5;
    let dir = temp_data_dir();
    // The data port is advertised behind a proxy that can cut every connection through it.
    let data_listen = free_loopback_addr();
    let proxy = LinkProxy::start(data_listen).expect("proxy");
    let advertised = proxy.addr.to_string();
    let broker = BrokerProcess::start_on(
        BROKER.as_ref(),
        dir.path(),
        ("127.0.0.1:0", &data_listen.to_string()),
        &["--data-advertised", &advertised],
    );
    let client = Client::connect(&broker.host_port()).await.expect("connect");
    client
        .admin()
        .create_topic(NewTopic::new("cut").partitions(1))
        .await
        .expect("create topic");
    let cut = Box::new(|| {
        for _ in 0..CUTS {
            proxy.reset_connections();
            // Past the reconnect backoff: each cut finds a connection with batches on it.
            std::thread::sleep(Duration::from_millis(150));
        }
    });
    produce_in_order(&client, "cut", config(Transport::DataPort), Some(cut)).await;
    check_log(&consume_values(&client, "cut").await);
}
