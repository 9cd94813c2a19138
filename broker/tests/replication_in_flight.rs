//! Several batches in flight through a leader change, over real processes: a controller and
//! three brokers on loopback, a topic with replication factor 3 and `min_insync_replicas` 2,
//! one `acks=all` producer sending numbered records to its one partition as fast as it can in
//! small batches, 5 in flight (`max_in_flight_per_partition`), while the leader goes away and
//! later comes back: SIGKILLed (its link breaks with batches on it, which are re-sent to the
//! new leader in order with their original stamps; the ones the old leader had replicated are
//! answered as duplicates), or SIGTERMed (controlled shutdown hands the leadership over, and
//! the batches on its link are refused NOT_LEADER, the ones behind a refused one
//! OUT_OF_ORDER_SEQUENCE: retried after it).
//!
//! What it proves: every record is acknowledged, at the offset equal to its send index (one
//! producer, one partition: the log is exactly the records in send order, each once, although
//! some retried batches had reached the old leader, and maybe its followers, before the kill),
//! and the partition read back is 0, 1, 2, ... with nothing missing or twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weir_client::{
    Acks, Client, MAX_IN_FLIGHT_PER_PARTITION, NewTopic, ProducerConfig, ProducerRecord,
};
use weir_testkit::wait_until;

#[path = "support/replicated.rs"]
mod replicated;
use replicated::{Cluster, consume_numbers};

const LEASE_MS: &str = "2000";
/// A watchdog for conditions, not a timing assertion.
const WAIT: Duration = Duration::from_secs(30);

/// (leader, leader epoch, leader alive, ISR) of `topic`-0.
async fn partition(client: &Client, topic: &str) -> Option<(u32, u32, bool, Vec<u32>)> {
    let t = client.admin().describe_topic(topic).await.ok()?;
    let p = t.partitions.first()?;
    Some((p.leader_id, p.leader_epoch, p.leader_alive, p.isr.clone()))
}

/// Sends 0, 1, 2, ... to `topic`-0 until `stop`, keeping the partition's lane full; answers
/// how many it sent and where each was acknowledged (or why not).
fn produce_flat_out(
    client: &Client,
    topic: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u32, Vec<Result<u64, String>>)> {
    let client = client.clone();
    tokio::spawn(async move {
        let producer = client
            .producer(ProducerConfig {
                acks: Acks::All,
                linger: Duration::ZERO,
                batch_bytes: 4 << 10,
                max_in_flight_per_partition: MAX_IN_FLIGHT_PER_PARTITION,
                retries: u32::MAX,
                retry_backoff_max: Duration::from_millis(200),
                delivery_timeout: Duration::from_secs(90),
                ..ProducerConfig::default()
            })
            .expect("producer");
        let mut deliveries = Vec::new();
        let mut next = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let record = ProducerRecord::new(topic)
                .partition(0)
                .value(next.to_string());
            deliveries.push(producer.send(record).await.expect("buffered"));
            next += 1;
            if next.is_multiple_of(64) {
                tokio::task::yield_now().await;
            }
        }
        producer.close().await.expect("close");
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            outcomes.push(delivery.await.map(|m| m.offset).map_err(|e| e.to_string()));
        }
        (next, outcomes)
    })
}

/// How the leader goes away mid-stream.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGKILL: its links break with batches on them; the controller moves the leadership once
    /// the lease lapses.
    Kill,
    /// SIGTERM: controlled shutdown hands the leadership over first, so batches on its link
    /// are refused NOT_LEADER (and the ones behind them OUT_OF_ORDER_SEQUENCE or NOT_LEADER)
    /// while the producer's picture still names it.
    Terminate,
}

async fn leader_goes_away_mid_stream(how: Stop) {
    let mut cluster = Cluster::start(LEASE_MS, &["--replica-lag-time-max-ms", "2000"]);
    let client = cluster.client(WAIT).await;
    client
        .admin()
        .create_topic(
            NewTopic::new("pipelined")
                .partitions(1)
                .replication_factor(3)
                .min_insync_replicas(2),
        )
        .await
        .expect("create topic");
    let (first_leader, first_epoch, _, _) =
        partition(&client, "pipelined").await.expect("described");

    let stop = Arc::new(AtomicBool::new(false));
    let producing = produce_flat_out(&client, "pipelined", Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(800)).await;

    tokio::task::block_in_place(|| match how {
        Stop::Kill => {
            cluster.broker(first_leader).kill();
        }
        Stop::Terminate => {
            let status = cluster
                .broker(first_leader)
                .terminate_within(Duration::from_secs(60));
            assert!(status.success(), "{status:?}");
        }
    });
    wait_until("a new leader in a new epoch", WAIT, || async {
        partition(&client, "pipelined")
            .await
            .is_some_and(|(leader, epoch, alive, _)| {
                leader != first_leader && epoch > first_epoch && alive
            })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    // The old leader comes back, truncates what it must and rejoins; producing goes on.
    tokio::task::block_in_place(|| cluster.broker(first_leader).restart());
    wait_until("the old leader is back in sync", WAIT, || async {
        partition(&client, "pipelined")
            .await
            .is_some_and(|(_, _, _, isr)| isr.len() == 3)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (sent, outcomes) = producing.await.expect("producer task");

    let mut failed = Vec::new();
    for (n, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Ok(offset) => assert_eq!(
                *offset, n as u64,
                "record {n}: one producer, one partition: offsets follow send order, each once"
            ),
            Err(e) => failed.push(format!("{n}: {e}")),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {failed:?}",
        failed.len()
    );
    let values = consume_numbers(&client, "pipelined").await;
    assert_eq!(values.len(), sent as usize, "every record, nothing else");
    if let Some(n) = (0..sent as usize).find(|&n| values[n] != n as u32) {
        panic!("offset {n} holds record {}, not {n}", values[n]);
    }
    println!(
        "{sent} records through a leader {how:?} with {MAX_IN_FLIGHT_PER_PARTITION} batches in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_in_flight_through_a_leader_kill_keep_every_record_once_in_order() {
    leader_goes_away_mid_stream(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_in_flight_through_a_controlled_shutdown_keep_every_record_once_in_order() {
    leader_goes_away_mid_stream(Stop::Terminate).await;
}
