//! Reassigning partitions with one replica, and changing replica counts, over real processes:
//! a controller and three brokers on loopback, an `acks=all` producer running throughout.
//!
//! What it proves: a single copy moves to another broker (`[old] -> [new]`): the new broker
//! fetches it over the data port, joins the in-sync set through the leader's own expansion,
//! takes the leadership when the move completes, and the old broker deletes its copy; every
//! acknowledged record is then on the new broker once and in order, and the topic still has
//! replication factor 1. A single copy raised to three (`[a] -> [a,b,c]`) gets two followers
//! that catch up to byte-identical copies, and the topic's replication factor becomes 3; lowered
//! to two without its leader (`[b,c]`), the leadership moves, the dropped copy is deleted and
//! the factor becomes 2; lowered to one (`[b]`), its leader serves it alone and the factor is 1
//! again. Refused targets (empty, or below `min_insync_replicas`) change nothing.
//! An idle single copy (nothing produced while it moves) moves with everything it holds: the
//! records it took as a single copy, before it had followers, carry its leader epoch too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weir_client::{Acks, Admin, ErrorCode, NewTopic, TopicDescription};
use weir_testkit::wait_until;

#[path = "support/replicated.rs"]
mod replicated;
use replicated::{Cluster, consume_numbers, disk_batches, produce_numbers, produce_until};

/// A watchdog for conditions, not a timing assertion.
const WAIT: Duration = Duration::from_secs(60);

fn start() -> Cluster {
    Cluster::start_with(
        3,
        &["--broker-lease-ms", "3000"],
        &["--replica-lag-time-max-ms", "2000"],
    )
}

async fn describe(admin: &Admin, topic: &str) -> TopicDescription {
    admin.describe_topic(topic).await.unwrap()
}

/// Waits until partition 0 of `topic` has exactly `replicas`, all in sync, nothing being
/// removed, led by the first of them.
async fn wait_for_replicas(admin: &Admin, topic: &str, replicas: &[u32]) -> TopicDescription {
    wait_until("the reassignment is done", WAIT, || async {
        admin.describe_topic(topic).await.is_ok_and(|t| {
            let p = &t.partitions[0];
            p.replicas == replicas
                && p.fully_in_sync()
                && p.leader_id == replicas[0]
                && p.leader_alive
        })
    })
    .await;
    describe(admin, topic).await
}

/// Waits until `topic`-0's high watermark passes `offset`: the producer got that far.
async fn wait_for_records(admin: &Admin, topic: &str, offset: u64) {
    wait_until("records were produced", WAIT, || async {
        admin
            .describe_topic(topic)
            .await
            .is_ok_and(|t| t.partitions[0].offsets_known && t.partitions[0].high_watermark > offset)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_copy_moves_to_another_broker_while_acks_all_producing() {
    let mut cluster = start();
    let client = cluster.client(WAIT).await;
    let admin = client.admin();
    let created = admin
        .create_topic(NewTopic::new("solo").partitions(1).replication_factor(1))
        .await
        .unwrap();
    let old = created.partitions[0].leader_id;
    let new = (1..=3u32).find(|&b| b != old).unwrap();
    assert_eq!(created.partitions[0].replicas, [old]);

    let stop = Arc::new(AtomicBool::new(false));
    let producing = produce_until(&client, "solo", 1, Arc::clone(&stop));
    wait_for_records(&admin, "solo", 200).await;

    let empty = admin
        .reassign_partitions("solo", [(0, vec![])])
        .await
        .unwrap_err();
    assert_eq!(
        empty.code(),
        Some(ErrorCode::InvalidReplicationFactor),
        "{empty}"
    );
    assert_eq!(describe(&admin, "solo").await.partitions[0].replicas, [old]);

    let accepted = admin
        .reassign_partitions("solo", [(0, vec![new])])
        .await
        .unwrap();
    let p = &accepted.partitions[0];
    assert_eq!(
        (p.replicas.clone(), p.removing_replicas.clone()),
        (vec![new, old], vec![old])
    );
    let done = wait_for_replicas(&admin, "solo", &[new]).await;
    assert!(done.partitions[0].leader_epoch > created.partitions[0].leader_epoch);
    assert_eq!(
        done.config.replication_factor,
        Some(1),
        "one copy before and after"
    );
    let old_dir = cluster.broker(old).data_dir().to_path_buf();
    wait_until("the old broker deleted its copy", WAIT, || async {
        !old_dir.join("logs").join("solo-0").exists()
    })
    .await;
    // The new copy serves the producer alone from here on.
    wait_for_records(&admin, "solo", done.partitions[0].high_watermark + 200).await;

    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = producing.await.unwrap();
    assert!(failed.is_empty(), "acks=all deliveries failed: {failed:?}");
    // Every acknowledged record once and in order, read from the new broker (the leader) and
    // counted on its disk.
    let got = consume_numbers(&client, "solo").await;
    assert_eq!(got, (0..sent).collect::<Vec<_>>());
    let new_dir = cluster.broker(new).data_dir().to_path_buf();
    let on_disk: u64 = disk_batches(&new_dir, "solo", 0)
        .iter()
        .map(|b| b.record_count() as u64)
        .sum();
    assert_eq!(on_disk, u64::from(sent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_copy_raised_to_three_then_lowered_to_two_and_to_one() {
    let mut cluster = start();
    let client = cluster.client(WAIT).await;
    let admin = client.admin();
    let created = admin
        .create_topic(NewTopic::new("grow").partitions(1).replication_factor(1))
        .await
        .unwrap();
    let first = created.partitions[0].leader_id;
    let mut all: Vec<u32> = vec![first];
    all.extend((1..=3u32).filter(|&b| b != first));

    let stop = Arc::new(AtomicBool::new(false));
    let producing = produce_until(&client, "grow", 1, Arc::clone(&stop));
    wait_for_records(&admin, "grow", 200).await;

    let raised = admin
        .reassign_partitions("grow", [(0, all.clone())])
        .await
        .unwrap();
    assert_eq!(raised.partitions[0].replicas, all);
    assert!(
        raised.partitions[0].removing_replicas.is_empty(),
        "an addition removes nothing"
    );
    assert_eq!(
        raised.config.replication_factor,
        Some(3),
        "every partition has 3"
    );
    wait_for_replicas(&admin, "grow", &all).await;
    let dirs: Vec<_> = all
        .iter()
        .map(|&b| cluster.broker(b).data_dir().to_path_buf())
        .collect();
    wait_until("the three copies agree byte for byte", WAIT, || async {
        let copies: Vec<Vec<Vec<u8>>> = dirs
            .iter()
            .map(|d| {
                disk_batches(d, "grow", 0)
                    .iter()
                    .map(|b| b.as_bytes().to_vec())
                    .collect()
            })
            .collect();
        !copies[0].is_empty() && copies.windows(2).all(|w| w[0] == w[1])
    })
    .await;

    // min_insync_replicas is 1: a target of one would do; an empty one is refused.
    let empty = admin
        .reassign_partitions("grow", [(0, vec![])])
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Some(ErrorCode::InvalidReplicationFactor));
    // Down to two, the leader's copy dropped: the leadership moves to the new first replica.
    let lowered: Vec<u32> = all[1..].to_vec();
    admin
        .reassign_partitions("grow", [(0, lowered.clone())])
        .await
        .unwrap();
    let done = wait_for_replicas(&admin, "grow", &lowered).await;
    assert_eq!(done.config.replication_factor, Some(2));
    let dropped = cluster.broker(first).data_dir().to_path_buf();
    wait_until("the dropped copy is deleted", WAIT, || async {
        !dropped.join("logs").join("grow-0").exists()
    })
    .await;
    wait_for_records(&admin, "grow", done.partitions[0].high_watermark + 200).await;
    // And down to a single copy again, its leader staying: it serves alone from then on.
    let single = vec![lowered[0]];
    admin
        .reassign_partitions("grow", [(0, single.clone())])
        .await
        .unwrap();
    let done = wait_for_replicas(&admin, "grow", &single).await;
    assert_eq!(done.config.replication_factor, Some(1));
    let dropped = cluster.broker(lowered[1]).data_dir().to_path_buf();
    wait_until("the second dropped copy is deleted", WAIT, || async {
        !dropped.join("logs").join("grow-0").exists()
    })
    .await;
    wait_for_records(&admin, "grow", done.partitions[0].high_watermark + 200).await;

    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = producing.await.unwrap();
    assert!(failed.is_empty(), "acks=all deliveries failed: {failed:?}");
    let got = consume_numbers(&client, "grow").await;
    assert_eq!(got, (0..sent).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_single_copy_moves_with_everything_it_holds() {
    let mut cluster = start();
    let client = cluster.client(WAIT).await;
    let admin = client.admin();
    let created = admin
        .create_topic(NewTopic::new("idle").partitions(1).replication_factor(1))
        .await
        .unwrap();
    let old = created.partitions[0].leader_id;
    let new = (1..=3u32).find(|&b| b != old).unwrap();
    produce_numbers(&client, "idle", 0..3000, Acks::All).await;

    admin
        .reassign_partitions("idle", [(0, vec![new])])
        .await
        .unwrap();
    let done = wait_for_replicas(&admin, "idle", &[new]).await;
    assert_eq!(done.partitions[0].high_watermark, 3000);
    let old_dir = cluster.broker(old).data_dir().to_path_buf();
    wait_until("the old broker deleted its copy", WAIT, || async {
        !old_dir.join("logs").join("idle-0").exists()
    })
    .await;
    assert_eq!(
        consume_numbers(&client, "idle").await,
        (0..3000).collect::<Vec<_>>()
    );
}
