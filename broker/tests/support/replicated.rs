//! What the replication tests over real processes share: a controller and three brokers on
//! loopback, started as a user would; an acks=all producer of numbered records running until
//! told to stop, and one that sends a range of numbers; the whole valid batches of a partition
//! read off a broker's disk (what every replica must agree on) and its segments' base offsets;
//! a topic read back as numbers.
//!
//! Each test file includes it with `#[path = "support/replicated.rs"] mod replicated;` and
//! uses what it needs.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use weir_client::{Acks, Client, ConsumerConfig, ProducerConfig, ProducerRecord};
use weir_proto::batch::{RecordBatch, split_batches};
use weir_testkit::{BrokerProcess, temp_data_dir, wait_until};

pub const BROKER: &str = env!("CARGO_BIN_EXE_weir-broker");

/// A controller (node 100) and brokers 1..=N (3 unless started with
/// [`Cluster::start_with`]). Fields drop in order: brokers before the controller, so none logs
/// a lost controller.
pub struct Cluster {
    pub brokers: Vec<BrokerProcess>,
    pub controller: BrokerProcess,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// Starts the controller with `--broker-lease-ms lease_ms` and three brokers with
    /// `broker_args` added.
    pub fn start(lease_ms: &str, broker_args: &[&str]) -> Cluster {
        Cluster::start_with(3, &["--broker-lease-ms", lease_ms], broker_args)
    }

    /// Starts the controller with `controller_args` added and `brokers` brokers with
    /// `broker_args` added.
    pub fn start_with(brokers: u32, controller_args: &[&str], broker_args: &[&str]) -> Cluster {
        let mut dirs = vec![temp_data_dir()];
        let mut args = vec!["--role", "controller", "--node-id", "100"];
        args.extend_from_slice(controller_args);
        let controller = BrokerProcess::start(Path::new(BROKER), dirs[0].path(), &args);
        let controller_addr = controller.host_port();
        let brokers = (1..=brokers as usize)
            .map(|id| {
                dirs.push(temp_data_dir());
                let node = id.to_string();
                let mut args = vec![
                    "--role",
                    "broker",
                    "--node-id",
                    &node,
                    "--controller",
                    &controller_addr,
                ];
                args.extend_from_slice(broker_args);
                BrokerProcess::start(Path::new(BROKER), dirs[id].path(), &args)
            })
            .collect();
        Cluster {
            brokers,
            controller,
            _dirs: dirs,
        }
    }

    /// Broker `id` (1-based, as its node id).
    pub fn broker(&mut self, id: u32) -> &mut BrokerProcess {
        &mut self.brokers[id as usize - 1]
    }

    /// A client bootstrapped from the controller, once every broker is alive.
    pub async fn client(&self, wait: Duration) -> Client {
        let client = Client::connect(&self.controller.host_port()).await.unwrap();
        let n = self.brokers.len();
        wait_until("every broker is alive", wait, || async {
            client
                .admin()
                .describe_cluster()
                .await
                .is_ok_and(|c| c.brokers.iter().filter(|b| b.alive).count() == n)
        })
        .await;
        client
    }
}

/// An acks=all producer of the numbers 0, 1, 2, ... to `topic` (number n to partition
/// n mod `partitions`) until `stop`; answers how many it sent and the deliveries that failed
/// ("n: error"). Its delivery timeout (90 s) outlasts any failover a test provokes.
pub fn produce_until(
    client: &Client,
    topic: &'static str,
    partitions: u32,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u32, Vec<String>)> {
    let client = client.clone();
    tokio::spawn(async move {
        let producer = client
            .producer(ProducerConfig {
                acks: Acks::All,
                linger: Duration::from_millis(2),
                delivery_timeout: Duration::from_secs(90),
                ..ProducerConfig::default()
            })
            .unwrap();
        let mut deliveries = Vec::new();
        let mut next = 0u32;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..20 {
                let record = ProducerRecord::new(topic)
                    .partition(next % partitions)
                    .value(next.to_string());
                deliveries.push((next, producer.send(record).await.expect("send")));
                next += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        producer.flush().await.expect("flush");
        let mut failed = Vec::new();
        for (value, delivery) in deliveries {
            if let Err(e) = delivery.await {
                failed.push(format!("{value}: {e}"));
            }
        }
        (next, failed)
    })
}

/// Sends the numbers `values` to partition 0 of `topic` with `acks`; every one must be
/// acknowledged.
pub async fn produce_numbers(
    client: &Client,
    topic: &str,
    values: std::ops::Range<u32>,
    acks: Acks,
) {
    let producer = client
        .producer(ProducerConfig {
            acks,
            linger: Duration::from_millis(1),
            batch_bytes: 16 << 10,
            delivery_timeout: Duration::from_secs(60),
            ..ProducerConfig::default()
        })
        .unwrap();
    let mut deliveries = Vec::new();
    for v in values {
        let record = ProducerRecord::new(topic).partition(0).value(v.to_string());
        deliveries.push(producer.send(record).await.unwrap());
    }
    producer.flush().await.unwrap();
    for d in deliveries {
        d.await.expect("every record acknowledged");
    }
}

/// The base offsets of the `.log` files of `topic`-`partition` on a broker's disk, oldest
/// first (none if the partition is not there).
pub fn segment_bases(data_dir: &Path, topic: &str, partition: u32) -> Vec<u64> {
    let dir = data_dir.join("logs").join(format!("{topic}-{partition}"));
    let mut bases: Vec<u64> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    name.strip_suffix(".log")?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    bases.sort_unstable();
    bases
}

/// The whole valid batches of `topic`-`partition` on a broker's disk, in offset order (the
/// active segment's preallocated tail is zeros: the batches end where they fail to parse).
pub fn disk_batches(data_dir: &Path, topic: &str, partition: u32) -> Vec<RecordBatch> {
    let dir = data_dir.join("logs").join(format!("{topic}-{partition}"));
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let mut out = Vec::new();
    for segment in segments {
        // A segment the broker removed meanwhile (a truncation, retention): the caller reads
        // again (these reads sit in `wait_until`s) or the batches stop short and do not match.
        let Ok(bytes) = std::fs::read(&segment) else {
            break;
        };
        out.extend(split_batches(bytes::Bytes::from(bytes)).map_while(Result::ok));
    }
    out
}

/// [`disk_batches`] of partition 0 as one byte string: what the replicas' copies must equal.
pub fn log_bytes(data_dir: &Path, topic: &str) -> Vec<u8> {
    disk_batches(data_dir, topic, 0)
        .iter()
        .flat_map(|b| b.as_bytes().to_vec())
        .collect()
}

/// Every record of `topic`, read from the leaders to their high watermarks, as numbers.
pub async fn consume_numbers(client: &Client, topic: &str) -> Vec<u32> {
    let mut consumer = client.consumer(ConsumerConfig {
        follow: false,
        ..Default::default()
    });
    consumer.assign_topic(topic).await.expect("assign");
    let mut stream = consumer.stream();
    let mut out = Vec::new();
    while let Some(record) = stream.next().await {
        let record = record.expect("a valid record");
        let value =
            String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned();
        out.push(value.parse().expect("a number"));
    }
    out
}
