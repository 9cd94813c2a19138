//! Retention bounded by the high watermark, over real processes: a controller and two brokers
//! on loopback, a topic with replication factor 2 and `min_insync_replicas` 2 whose size
//! retention keeps far less than what the test writes.
//!
//! What it proves (Kafka's `deletableSegments` bound): while the follower is frozen (SIGSTOP)
//! the high watermark stands still (the in-sync set cannot reach the minimum without it), and
//! the leader's retention, running all along, deletes only the segments wholly below it: every
//! record above it, appended meanwhile (`acks=leader`), stays on the leader's disk, so the
//! follower, thawed, fetches on from where it stopped, catches up and rejoins the in-sync set;
//! the copies then agree, and every acknowledged record retention keeps is readable, in order,
//! through the last one.
//!
//! That retention ran at all while the follower was frozen is shown by a canary: a topic with
//! one replica on the same broker, whose retention must delete what the test writes to it.

use std::path::Path;
use std::time::Duration;

use weir_client::{Acks, Client, NewTopic, Placement};
use weir_testkit::wait_until;

#[path = "support/replicated.rs"]
mod replicated;
use replicated::{Cluster, consume_numbers, disk_batches, produce_numbers, segment_bases};

/// A watchdog for conditions, not a timing assertion.
const WAIT: Duration = Duration::from_secs(60);
/// What the follower holds when it is frozen (acknowledged with `acks=all`).
const COMMITTED: u32 = 2000;
/// What the leader appends on its own meanwhile (`acks=leader`), far more than retention keeps.
const END: u32 = 20_000;

/// Sends `count` more records to `canary`-`partition` and waits until retention deleted the
/// segment holding the first of them: a retention pass ran after they were written.
async fn retention_pass(client: &Client, dir: &Path, partition: u32, first: u32, count: u32) {
    let producer = client
        .producer(weir_client::ProducerConfig {
            acks: Acks::Leader,
            linger: Duration::from_millis(1),
            ..Default::default()
        })
        .unwrap();
    let mut deliveries = Vec::new();
    for v in first..first + count {
        let record = weir_client::ProducerRecord::new("canary")
            .partition(partition)
            .value(v.to_string());
        deliveries.push(producer.send(record).await.unwrap());
    }
    producer.flush().await.unwrap();
    let mut written_from = None;
    for d in deliveries {
        let offset = d.await.expect("acknowledged").offset;
        written_from = Some(written_from.map_or(offset, |o: u64| o.min(offset)));
    }
    let written_from = written_from.expect("records were sent");
    wait_until("the canary's retention ran", WAIT, || async {
        segment_bases(dir, "canary", partition)
            .first()
            .is_some_and(|&start| start > written_from)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_what_is_above_the_high_watermark_while_a_follower_is_frozen() {
    let mut cluster = Cluster::start_with(
        2,
        &["--broker-lease-ms", "2000"],
        &[
            "--replica-lag-time-max-ms",
            "2000",
            "--retention-check-interval-ms",
            "100",
        ],
    );
    let client = cluster.client(WAIT).await;
    let admin = client.admin();
    let created = admin
        .create_topic(
            NewTopic::new("bounded")
                .partitions(1)
                .replication_factor(2)
                .min_insync_replicas(2)
                .segment_bytes(16 << 10)
                .max_batch_bytes(8 << 10)
                .retention_bytes(64 << 10),
        )
        .await
        .unwrap();
    let leader = created.partitions[0].leader_id;
    let follower = created.partitions[0]
        .replicas
        .iter()
        .copied()
        .find(|&b| b != leader)
        .unwrap();
    // One replica per partition, one partition on each broker.
    let canary = admin
        .create_topic(
            NewTopic::new("canary")
                .partitions(2)
                .placement(Placement::RoundRobin)
                .replication_factor(1)
                .segment_bytes(16 << 10)
                .max_batch_bytes(8 << 10)
                .retention_bytes(16 << 10),
        )
        .await
        .unwrap();
    let canary_partition = canary
        .partitions
        .iter()
        .find(|p| p.leader_id == leader)
        .expect("a canary partition on the leader")
        .partition;
    let leader_dir = cluster.broker(leader).data_dir().to_path_buf();
    let follower_dir = cluster.broker(follower).data_dir().to_path_buf();

    produce_numbers(&client, "bounded", 0..COMMITTED, Acks::All).await;
    cluster.broker(follower).pause();
    produce_numbers(&client, "bounded", COMMITTED..END, Acks::Leader).await;
    // Two passes, each seen to run after the writes before it: the second started after the
    // first ended, so it saw all of "bounded".
    retention_pass(&client, &leader_dir, canary_partition, 0, 6000).await;
    retention_pass(&client, &leader_dir, canary_partition, 6000, 6000).await;

    let hw = admin.describe_topic("bounded").await.unwrap().partitions[0].high_watermark;
    assert_eq!(
        hw,
        u64::from(COMMITTED),
        "the frozen follower holds it back"
    );
    let bases = segment_bases(&leader_dir, "bounded", 0);
    let holding_hw = bases.iter().copied().filter(|&b| b <= hw).max();
    assert_eq!(
        bases.first().copied(),
        holding_hw,
        "retention deleted what is wholly below the high watermark {hw} and nothing else: {bases:?}"
    );
    let kept = disk_batches(&leader_dir, "bounded", 0);
    let (first, last) = (
        kept.first().unwrap().header(),
        kept.last().unwrap().header(),
    );
    assert!(first.base_offset <= hw, "{}", first.base_offset);
    assert_eq!(last.next_offset(), u64::from(END));
    assert!(
        kept.windows(2)
            .all(|w| w[0].header().next_offset() == w[1].header().base_offset),
        "the leader's log is whole from its start"
    );

    // Thawed, the follower fetches on from where it stopped and rejoins.
    cluster.broker(follower).resume();
    wait_until(
        "the follower is back in the ISR, caught up",
        WAIT,
        || async {
            admin.describe_topic("bounded").await.is_ok_and(|t| {
                let p = &t.partitions[0];
                p.isr.len() == 2 && p.high_watermark == u64::from(END)
            })
        },
    )
    .await;
    // Committed now, the old records are retention's again: it trims the leader to its size.
    wait_until(
        "retention trims past the old high watermark",
        WAIT,
        || async {
            segment_bases(&leader_dir, "bounded", 0)
                .first()
                .is_some_and(|&start| start > hw)
        },
    )
    .await;
    wait_until(
        "the follower's copy is the leader's from where it starts",
        WAIT,
        || async {
            let mine = disk_batches(&follower_dir, "bounded", 0);
            let theirs = disk_batches(&leader_dir, "bounded", 0);
            let (Some(start), Some(end)) = (mine.first(), theirs.last()) else {
                return false;
            };
            let from = start.header().base_offset;
            let tail: Vec<_> = theirs
                .iter()
                .filter(|b| b.header().base_offset >= from)
                .map(|b| b.as_bytes())
                .collect();
            mine.last().map(|b| b.header().next_offset()) == Some(end.header().next_offset())
                && mine.iter().map(|b| b.as_bytes()).collect::<Vec<_>>() == tail
        },
    )
    .await;
    let values = consume_numbers(&client, "bounded").await;
    let first = *values.first().expect("records remain");
    assert_eq!(values, (first..END).collect::<Vec<_>>());
}
