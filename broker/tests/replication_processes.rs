//! Replication over real processes: a controller and three brokers on loopback, a topic with
//! replication factor 3 and `min_insync_replicas` 2, produced to with `acks=all`.
//!
//! What it proves: every acknowledged record is in all three logs, byte for byte; killing the
//! leader moves the leadership (new leader epoch) with no manual step, and producing goes on
//! through the new leader with nothing acknowledged lost or stored twice; the killed broker
//! comes back, truncates what it must, catches up and rejoins the in-sync set, and the three
//! logs are identical again; with two brokers down the partition refuses `acks=all`
//! (NOT_ENOUGH_REPLICAS) instead of acknowledging what one copy holds.

use std::time::Duration;

use weir_client::{
    Acks, Client, ErrorCode, NewTopic, ProducerConfig, ProducerRecord, TopicDescription,
};

#[path = "support/replicated.rs"]
mod replicated;
use replicated::{Cluster, consume_numbers as consume, log_bytes, produce_numbers};
use weir_testkit::wait_until;

const LEASE_MS: &str = "2000";
const LAG_MS: &str = "2000";
/// A watchdog for conditions, not a timing assertion.
const WAIT: Duration = Duration::from_secs(30);

fn start_cluster() -> Cluster {
    Cluster::start(LEASE_MS, &["--replica-lag-time-max-ms", LAG_MS])
}

async fn describe(client: &Client, topic: &str) -> Option<TopicDescription> {
    client.admin().describe_topic(topic).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_survives_losing_the_leader_and_the_logs_agree() {
    let mut cluster = start_cluster();
    let client = cluster.client(WAIT).await;
    let created = client
        .admin()
        .create_topic(
            NewTopic::new("ledger")
                .partitions(1)
                .replication_factor(3)
                .min_insync_replicas(2),
        )
        .await
        .unwrap();
    let p = &created.partitions[0];
    assert_eq!(p.replicas.len(), 3, "{p:?}");
    assert_eq!(p.isr.len(), 3, "{p:?}");
    assert_eq!(p.leader_epoch, 1, "{p:?}");
    let first_leader = p.leader_id;

    produce_numbers(&client, "ledger", 0..1900, Acks::All).await;
    // acks=durable on a replicated topic: every in-sync replica synced it (the followers are
    // asked to sync by the leader's answer; their next fetch reports it).
    let started = std::time::Instant::now();
    produce_numbers(&client, "ledger", 1900..2000, Acks::Durable).await;
    println!(
        "100 acks=durable records on RF=3 in {:?}",
        started.elapsed()
    );
    // Acknowledged with acks=all: in every in-sync replica's log. The followers' copies are the
    // leader's bytes (compared once the last fetch round landed).
    let dirs: Vec<_> = cluster
        .brokers
        .iter()
        .map(|b| b.data_dir().to_path_buf())
        .collect();
    wait_until("the three logs hold the same bytes", WAIT, || async {
        let leader = log_bytes(&dirs[first_leader as usize - 1], "ledger");
        dirs.iter().all(|d| log_bytes(d, "ledger") == leader)
    })
    .await;

    // The leader dies; the controller moves the leadership once its lease lapses.
    cluster.broker(first_leader).kill();
    wait_until("a new leader in a new epoch", WAIT, || async {
        describe(&client, "ledger").await.is_some_and(|t| {
            let p = &t.partitions[0];
            p.leader_id != first_leader && p.leader_epoch >= 2 && p.leader_alive
        })
    })
    .await;
    let after = describe(&client, "ledger").await.unwrap();
    let p = &after.partitions[0];
    assert!(
        !p.isr.contains(&first_leader),
        "the dead leader left the ISR: {p:?}"
    );
    let second_leader = p.leader_id;
    produce_numbers(&client, "ledger", 2000..3000, Acks::All).await;
    let values = consume(&client, "ledger").await;
    assert_eq!(
        values,
        (0..3000).collect::<Vec<_>>(),
        "every record once, in order"
    );

    // The old leader returns: it catches up and rejoins the ISR; the logs agree again.
    cluster.broker(first_leader).restart();
    wait_until("the old leader is back in sync", WAIT, || async {
        describe(&client, "ledger")
            .await
            .is_some_and(|t| t.partitions[0].isr.len() == 3)
    })
    .await;
    wait_until("the three logs hold the same bytes again", WAIT, || async {
        let leader = log_bytes(&dirs[second_leader as usize - 1], "ledger");
        dirs.iter().all(|d| log_bytes(d, "ledger") == leader)
    })
    .await;

    // Two of three down: the ISR falls below min_insync_replicas and acks=all is refused.
    let survivors: Vec<u32> = (1..=3).filter(|&b| b != second_leader).collect();
    cluster.broker(survivors[0]).kill();
    cluster.broker(survivors[1]).kill();
    wait_until("the ISR shrinks to the leader", WAIT, || async {
        describe(&client, "ledger")
            .await
            .is_some_and(|t| t.partitions[0].isr == [second_leader])
    })
    .await;
    let producer = client
        .producer(ProducerConfig {
            acks: Acks::All,
            retries: 0,
            delivery_timeout: Duration::from_secs(5),
            ..ProducerConfig::default()
        })
        .unwrap();
    let delivery = producer
        .send(ProducerRecord::new("ledger").partition(0).value("lonely"))
        .await
        .unwrap();
    let err = delivery.await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotEnoughReplicas), "{err}");
    assert_eq!(
        consume(&client, "ledger").await.len(),
        3000,
        "nothing was appended for the refused batch"
    );
}

/// Self-healing: a bit flipped on a follower's disk, in a sealed segment, is found by the
/// scrub when the follower restarts; the follower cuts its log there, fetches the rest again
/// from the leader and ends up byte-identical to it, back in the ISR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_heals_a_damaged_segment_from_the_leader() {
    let mut cluster = start_cluster();
    let client = cluster.client(WAIT).await;
    let created = client
        .admin()
        .create_topic(
            NewTopic::new("rot")
                .partitions(1)
                .replication_factor(3)
                .min_insync_replicas(2)
                .segment_bytes(16 << 10)
                .max_batch_bytes(8 << 10),
        )
        .await
        .unwrap();
    let leader = created.partitions[0].leader_id;
    let follower = (1..=3).find(|&b| b != leader).unwrap();
    produce_numbers(&client, "rot", 0..5000, Acks::All).await;
    let dirs: Vec<_> = cluster
        .brokers
        .iter()
        .map(|b| b.data_dir().to_path_buf())
        .collect();
    let same_as_leader = |dirs: &[std::path::PathBuf]| {
        let theirs = log_bytes(&dirs[leader as usize - 1], "rot");
        log_bytes(&dirs[follower as usize - 1], "rot") == theirs
    };
    wait_until("the follower holds the leader's bytes", WAIT, || async {
        same_as_leader(&dirs)
    })
    .await;

    // Rot one byte in the follower's first (sealed) segment, inside its first batch's records.
    cluster.broker(follower).terminate();
    let dir = dirs[follower as usize - 1].join("logs").join("rot-0");
    let first = dir.join(format!("{:020}.log", 0));
    assert!(
        std::fs::read_dir(&dir).unwrap().count() > 8,
        "several segments, so the first is sealed"
    );
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[200] ^= 0x10;
    std::fs::write(&first, &bytes).unwrap();
    assert!(!same_as_leader(&dirs), "the damage is on disk");

    cluster.broker(follower).restart();
    wait_until(
        "the follower repaired its copy from the leader",
        WAIT,
        || async { same_as_leader(&dirs) },
    )
    .await;
    wait_until("and is back in the ISR", WAIT, || async {
        describe(&client, "rot")
            .await
            .is_some_and(|t| t.partitions[0].isr.len() == 3)
    })
    .await;
    assert_eq!(consume(&client, "rot").await, (0..5000).collect::<Vec<_>>());
}
