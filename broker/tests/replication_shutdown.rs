//! Controlled shutdown over real processes: a controller and three brokers on loopback, a topic
//! with replication factor 3 and `min_insync_replicas` 2 over several partitions, an `acks=all`
//! producer running through a rolling restart of one broker.
//!
//! What it proves: SIGTERM on a broker moves every leadership it held to an in-sync follower
//! (new leader epochs) before the process exits, so the handover is visible the moment it has
//! exited although the controller would take 30 s (the broker lease) to notice a dead broker;
//! the producer sees every record acknowledged, with no NOT_LEADER (or any other failure)
//! surfacing; the restarted broker rejoins every in-sync set; and every acknowledged record is
//! readable afterwards.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weir_client::{Client, NewTopic};
use weir_testkit::wait_until;

#[path = "support/replicated.rs"]
mod replicated;
use replicated::{Cluster, consume_numbers as consume, produce_until};

/// Long enough that only controlled shutdown can explain a quick handover.
const LEASE_MS: &str = "30000";
const PARTITIONS: u32 = 6;
/// A watchdog for conditions, not a timing assertion.
const WAIT: Duration = Duration::from_secs(30);

/// (leader, leader epoch, ISR) of every partition of `topic`.
async fn partitions(client: &Client, topic: &str) -> Vec<(u32, u32, Vec<u32>)> {
    let t = client
        .admin()
        .describe_topic(topic)
        .await
        .expect("describe");
    t.partitions
        .iter()
        .map(|p| (p.leader_id, p.leader_epoch, p.isr.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_hands_leaderships_over_and_loses_no_acks_all_record() {
    let mut cluster = Cluster::start(LEASE_MS, &["--replica-lag-time-max-ms", "2000"]);
    let client = cluster.client(WAIT).await;
    client
        .admin()
        .create_topic(
            NewTopic::new("rolling")
                .partitions(PARTITIONS)
                .replication_factor(3)
                .min_insync_replicas(2),
        )
        .await
        .unwrap();
    let before = partitions(&client, "rolling").await;
    // The broker leading the most partitions restarts.
    let x = (1..=3u32)
        .max_by_key(|&b| before.iter().filter(|p| p.0 == b).count())
        .unwrap();
    let led: Vec<usize> = (0..before.len()).filter(|&p| before[p].0 == x).collect();
    assert!(!led.is_empty(), "{before:?}");

    // An acks=all producer runs through the whole restart.
    let stop = Arc::new(AtomicBool::new(false));
    let producing = produce_until(&client, "rolling", PARTITIONS, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // SIGTERM: the broker hands its leaderships over, then exits.
    let status = tokio::task::block_in_place(|| {
        cluster.brokers[x as usize - 1].terminate_within(Duration::from_secs(60))
    });
    assert!(status.success(), "{status:?}");
    // Right after the exit, far inside the 30 s lease: only controlled shutdown moved them.
    let after = partitions(&client, "rolling").await;
    for &p in &led {
        let (leader, epoch, isr) = &after[p];
        assert_ne!(
            *leader, x,
            "rolling-{p} is still led by the stopped broker: {after:?}"
        );
        assert!(
            *epoch > before[p].1,
            "rolling-{p}: no new leader epoch: {after:?}"
        );
        assert!(!isr.contains(&x), "rolling-{p}: {after:?}");
    }
    for (p, (_, _, isr)) in after.iter().enumerate() {
        assert!(
            !isr.contains(&x),
            "rolling-{p} kept the stopped broker in its ISR: {after:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The broker comes back and rejoins every in-sync set.
    tokio::task::block_in_place(|| cluster.brokers[x as usize - 1].restart());
    wait_until(
        "the restarted broker is back in every ISR",
        WAIT,
        || async {
            partitions(&client, "rolling")
                .await
                .iter()
                .all(|p| p.2.contains(&x))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = producing.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {failed:?}",
        failed.len()
    );

    let values: BTreeSet<u32> = consume(&client, "rolling").await.into_iter().collect();
    let missing: Vec<u32> = (0..sent).filter(|v| !values.contains(v)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not readable: {missing:?}"
    );
}
