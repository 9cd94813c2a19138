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
    Client, ClientError, ConsumerConfig, ErrorCode, MAX_IN_FLIGHT_PER_PARTITION, NewTopic,
    ProducerConfig, ProducerRecord, RecordMetadata, Transport,
};
use weir_testkit::{BrokerProcess, LinkProxy, Tmpfs, free_loopback_addr, temp_data_dir};

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

/// Sends `RECORDS` numbered records to `topic`-0 and answers each one's outcome. With
/// `disturb`, a thread runs it once a third of them were sent, while sending goes on (a restart
/// of the broker, cut connections, a full disk).
async fn produce_numbered<'a>(
    client: &Client,
    topic: &str,
    config: ProducerConfig,
    mut disturb: Option<Box<dyn FnOnce() + Send + 'a>>,
) -> Vec<Result<RecordMetadata, ClientError>> {
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
    let mut outcomes = Vec::with_capacity(RECORDS);
    for delivery in deliveries {
        outcomes.push(delivery.await);
    }
    outcomes
}

/// [`produce_numbered`], checking that each record was acknowledged at its send index.
async fn produce_in_order<'a>(
    client: &Client,
    topic: &str,
    config: ProducerConfig,
    disturb: Option<Box<dyn FnOnce() + Send + 'a>>,
) {
    let outcomes = produce_numbered(client, topic, config, disturb).await;
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let metadata = outcome.unwrap_or_else(|e| panic!("record {i} not acknowledged: {e}"));
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

/// Bytes free on the file system holding `path` (`df`: the tests need no statvfs binding).
fn free_bytes(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .next()
        .expect("df prints the free bytes")
}

/// A broker on a small tmpfs whose free space is cut to about 1.5 MiB once its topic `full`
/// exists, and a watcher that, once the disk is full (no room for the next segment, so the
/// batch that rolls the log is refused DISK_FULL), lets the producer run into it for a while,
/// then frees the space. `None` where mounting a tmpfs is not permitted.
struct FullDisk {
    broker: BrokerProcess,
    ballast: std::path::PathBuf,
    fs: Tmpfs,
}

const SEGMENT_BYTES: u64 = 256 << 10;

impl FullDisk {
    async fn start(test: &str) -> Option<(FullDisk, Client)> {
        let fs = Tmpfs::mount("8m", test)?;
        let data = fs.path().join("data");
        let broker = BrokerProcess::start(
            BROKER.as_ref(),
            &data,
            &[
                "--segment-bytes",
                &SEGMENT_BYTES.to_string(),
                "--max-batch-bytes",
                "65536",
            ],
        );
        let client = Client::connect(&broker.host_port()).await.expect("connect");
        client
            .admin()
            .create_topic(NewTopic::new("full").partitions(1))
            .await
            .expect("create topic");
        // Room for about 1.5 MiB of the ~2.2 MB the records take: the disk fills after a
        // third of them were sent (when the watcher starts) and before the last.
        let ballast = fs.path().join("ballast");
        let room = 6 * SEGMENT_BYTES;
        let ballast_bytes = free_bytes(fs.path()).saturating_sub(room);
        std::fs::write(&ballast, vec![1u8; ballast_bytes as usize]).expect("ballast");
        Some((
            FullDisk {
                broker,
                ballast,
                fs,
            },
            client,
        ))
    }

    /// Waits until the disk is full, lets the producer run into it (its retries' backoff)
    /// for `for_ms`, then frees the space.
    fn free_space_once_full(&self, for_ms: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while free_bytes(self.fs.path()) >= SEGMENT_BYTES {
            assert!(
                std::time::Instant::now() < deadline,
                "the disk never filled (watchdog)"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(for_ms));
        std::fs::remove_file(&self.ballast).expect("remove the ballast");
    }
}

/// The disk fills with batches in flight: the batch that needs a new segment is refused
/// DISK_FULL (retriable, nothing written) and the ones behind it OUT_OF_ORDER_SEQUENCE (the
/// gap it left): they wait and go again after it, in order, with their stamps, until space
/// comes back; the log is still exactly the records in send order. Needs permission to mount a
/// tmpfs (root in CI); skipped with a message otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_in_flight_wait_out_a_full_disk_in_order() {
    let Some((disk, client)) =
        FullDisk::start("five_in_flight_wait_out_a_full_disk_in_order").await
    else {
        return;
    };
    let config = ProducerConfig {
        retries: u32::MAX,
        retry_backoff_max: Duration::from_millis(100),
        ..config(Transport::Auto)
    };
    let watcher = Box::new(|| disk.free_space_once_full(500));
    produce_in_order(&client, "full", config, Some(watcher)).await;
    check_log(&consume_values(&client, "full").await);
    drop(disk.broker);
}

/// The same full disk with no retries: the batch refused DISK_FULL fails for good while the
/// ones behind it are in flight. They must not be left behind a gap (refused forever): the
/// producer takes a new producer id, and they, refused OUT_OF_ORDER_SEQUENCE (so surely not
/// stored), are stamped again under it and sent after it, in order. While the disk stays full
/// each batch in turn fails DISK_FULL; once space is back the rest are acknowledged. The log
/// is exactly the acknowledged records, in send order, each at the offset its delivery said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_failing_for_good_leaves_no_gap_behind_it() {
    let Some((disk, client)) =
        FullDisk::start("a_batch_failing_for_good_leaves_no_gap_behind_it").await
    else {
        return;
    };
    let config = ProducerConfig {
        retries: 0,
        ..config(Transport::Auto)
    };
    let watcher = Box::new(|| disk.free_space_once_full(200));
    let outcomes = produce_numbered(&client, "full", config, Some(watcher)).await;
    let mut acknowledged = Vec::new();
    let mut failed = 0;
    for (i, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Ok(metadata) => acknowledged.push((i, metadata.offset)),
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::DiskFull), "record {i}: {e}");
                failed += 1;
            }
        }
    }
    assert!(failed > 0, "no batch failed: the test proved nothing");
    assert!(
        outcomes.last().is_some_and(Result::is_ok),
        "the records after the failed ones are stored again"
    );
    let values = consume_values(&client, "full").await;
    assert_eq!(
        values.len(),
        acknowledged.len(),
        "the acknowledged records, nothing else"
    );
    for (&(i, offset), (at, stored)) in acknowledged.iter().zip(values.iter().enumerate()) {
        assert_eq!(offset, at as u64, "record {i} is where its delivery said");
        assert_eq!(*stored, value(i), "offset {at}: in send order, each once");
    }
    drop(disk.broker);
}
