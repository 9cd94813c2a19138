//! Replicas repairing themselves, over real processes (a controller and three brokers on
//! loopback, a topic with replication factor 3 and `min_insync_replicas` 2, `acks=all`):
//!
//! - a bit rotted in a sealed segment of the LEADER's copy, found by its scrub while it leads:
//!   the leader hands the partition to another in-sync replica (ResignLeadership), heals as a
//!   follower (cuts its log at the damage, fetches the range again), ends up byte-identical to
//!   the new leader and back in the in-sync set, with every acknowledged record readable;
//! - the same rot found without a scrub: a follower catching up refuses the leader's batch (it
//!   CRC-checks every batch it appends), fetches from there again, and the leader, checking
//!   that batch itself, finds the damage and steps down the same way;
//! - a damaged leader with no other in-sync replica alive keeps leading, serving everything
//!   before the damage and nothing from it on;
//! - a follower that was stopped while the leader's retention deleted what it needs next: its
//!   fetch is below the leader's log start, so it starts over, empty, at that log start
//!   (`OutOfRange`, `PartitionLog::reset_to`), catches up and rejoins the in-sync set.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use weir_client::{Acks, Client, ConsumerConfig, ErrorCode, NewTopic, TopicDescription};

#[path = "support/replicated.rs"]
mod replicated;
use replicated::{
    Cluster, consume_numbers as consume, disk_batches, log_bytes, produce_numbers, segment_bases,
};
use weir_testkit::wait_until;

const LEASE_MS: &str = "2000";
const LAG_MS: &str = "2000";
/// A watchdog for conditions, not a timing assertion.
const WAIT: Duration = Duration::from_secs(40);

async fn describe(client: &Client, topic: &str) -> Option<TopicDescription> {
    client.admin().describe_topic(topic).await.ok()
}

fn data_dirs(cluster: &Cluster) -> Vec<PathBuf> {
    cluster
        .brokers
        .iter()
        .map(|b| b.data_dir().to_path_buf())
        .collect()
}

fn dir_of(dirs: &[PathBuf], broker: u32) -> &Path {
    &dirs[broker as usize - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_hands_over_and_heals_a_damaged_segment_found_by_its_scrub() {
    // A scrub pass every second at full speed, so damage made while the leader runs is found
    // within a second or two.
    let cluster = Cluster::start(
        LEASE_MS,
        &[
            "--replica-lag-time-max-ms",
            LAG_MS,
            "--scrub-bytes-per-sec",
            "1000000000",
            "--scrub-pass-interval-ms",
            "1000",
        ],
    );
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
    let epoch = created.partitions[0].leader_epoch;
    produce_numbers(&client, "rot", 0..5000, Acks::All).await;
    let dirs = data_dirs(&cluster);
    wait_until("the three logs hold the same bytes", WAIT, || async {
        let theirs = log_bytes(dir_of(&dirs, leader), "rot");
        dirs.iter().all(|d| log_bytes(d, "rot") == theirs)
    })
    .await;

    rot_first_segment(dir_of(&dirs, leader), "rot");
    let healthy = log_bytes(
        dir_of(&dirs, (1..=3).find(|&b| b != leader).unwrap()),
        "rot",
    );
    assert_ne!(
        log_bytes(dir_of(&dirs, leader), "rot"),
        healthy,
        "the damage is on disk"
    );

    // The scrub finds it; the leader steps down in favour of an in-sync replica.
    wait_until(
        "the leadership moved off the damaged copy",
        WAIT,
        || async {
            describe(&client, "rot").await.is_some_and(|t| {
                let p = &t.partitions[0];
                p.leader_id != leader && p.leader_epoch > epoch && p.leader_alive
            })
        },
    )
    .await;
    let new_leader = describe(&client, "rot").await.unwrap().partitions[0].leader_id;
    // As a follower it cuts its log at the damage and fetches the range again.
    wait_until(
        "the old leader repaired its copy from the new one",
        WAIT,
        || async {
            log_bytes(dir_of(&dirs, leader), "rot") == log_bytes(dir_of(&dirs, new_leader), "rot")
        },
    )
    .await;
    assert_eq!(log_bytes(dir_of(&dirs, leader), "rot"), healthy);
    wait_until("and is back in the ISR", WAIT, || async {
        describe(&client, "rot").await.is_some_and(|t| {
            t.partitions[0].isr.contains(&leader) && t.partitions[0].isr.len() == 3
        })
    })
    .await;
    assert_eq!(consume(&client, "rot").await, (0..5000).collect::<Vec<_>>());
    // And the partition goes on: more acks=all records, in every copy.
    produce_numbers(&client, "rot", 5000..6000, Acks::All).await;
    assert_eq!(consume(&client, "rot").await, (0..6000).collect::<Vec<_>>());
    wait_until("the three logs agree again", WAIT, || async {
        let theirs = log_bytes(dir_of(&dirs, new_leader), "rot");
        dirs.iter().all(|d| log_bytes(d, "rot") == theirs)
    })
    .await;
}

/// Rots one byte of the first (sealed) segment of `topic`-0 on a broker's disk, inside its first
/// batch's records, in place: a running broker has the file mapped, so it keeps its length.
fn rot_first_segment(data_dir: &Path, topic: &str) {
    let segment = data_dir
        .join("logs")
        .join(format!("{topic}-0"))
        .join(format!("{:020}.log", 0));
    assert!(
        segment_bases(data_dir, topic, 0).len() > 2,
        "several segments, so the first is sealed"
    );
    rot_first_batch(&segment);
}

/// Flips a bit in the last byte of a segment's first batch (inside its records, covered by its
/// CRC), whatever the batch's size: batches are as large as the producer made them.
fn rot_first_batch(segment: &Path) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment)
        .unwrap();
    let mut head = [0u8; 12];
    file.read_exact_at(&mut head, 0).unwrap();
    let batch_length = i32::from_be_bytes(head[8..12].try_into().unwrap());
    let last = 12 + u64::try_from(batch_length).expect("a stored batch") - 1;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, last).unwrap();
    byte[0] ^= 0x10;
    file.write_all_at(&byte, last).unwrap();
}

/// Without a scrub: a follower catching up refuses the leader's rotted batch (it CRC-checks
/// every batch it appends) and fetches from there again; the leader checks that batch itself,
/// finds the damage, and hands over and heals as above. Nothing damaged reaches any copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refusing_a_rotted_batch_makes_the_leader_find_it_and_step_down() {
    let mut cluster = Cluster::start(
        LEASE_MS,
        &[
            "--replica-lag-time-max-ms",
            LAG_MS,
            "--scrub-bytes-per-sec",
            "0",
        ],
    );
    let client = cluster.client(WAIT).await;
    let created = client
        .admin()
        .create_topic(
            NewTopic::new("refused")
                .partitions(1)
                .replication_factor(3)
                .min_insync_replicas(2)
                .segment_bytes(16 << 10)
                .max_batch_bytes(8 << 10),
        )
        .await
        .unwrap();
    let leader = created.partitions[0].leader_id;
    let epoch = created.partitions[0].leader_epoch;
    let mut followers = (1..=3).filter(|&b| b != leader);
    let (behind, in_sync) = (followers.next().unwrap(), followers.next().unwrap());
    let dirs = data_dirs(&cluster);
    // One follower is away while everything is produced; the other has it all.
    cluster.broker(behind).terminate();
    produce_numbers(&client, "refused", 0..5000, Acks::All).await;
    wait_until(
        "the in-sync follower holds the leader's bytes",
        WAIT,
        || async {
            log_bytes(dir_of(&dirs, in_sync), "refused")
                == log_bytes(dir_of(&dirs, leader), "refused")
        },
    )
    .await;
    let healthy = log_bytes(dir_of(&dirs, in_sync), "refused");
    rot_first_segment(dir_of(&dirs, leader), "refused");

    cluster.broker(behind).restart();
    wait_until(
        "the leadership moved off the damaged copy",
        WAIT,
        || async {
            describe(&client, "refused").await.is_some_and(|t| {
                let p = &t.partitions[0];
                p.leader_id == in_sync && p.leader_epoch > epoch && p.leader_alive
            })
        },
    )
    .await;
    wait_until("every copy is the healthy one", WAIT, || async {
        dirs.iter().all(|d| log_bytes(d, "refused") == healthy)
    })
    .await;
    wait_until("all three are in the ISR", WAIT, || async {
        describe(&client, "refused")
            .await
            .is_some_and(|t| t.partitions[0].isr.len() == 3)
    })
    .await;
    assert_eq!(
        consume(&client, "refused").await,
        (0..5000).collect::<Vec<_>>()
    );
}

/// The numbers a consumer reads from `topic` before the first error, and that error's code.
async fn consume_until_error(client: &Client, topic: &str) -> (Vec<u32>, Option<ErrorCode>) {
    let mut consumer = client.consumer(ConsumerConfig {
        follow: false,
        ..Default::default()
    });
    consumer.assign_topic(topic).await.expect("assign");
    let mut stream = consumer.stream();
    let mut out = Vec::new();
    while let Some(record) = stream.next().await {
        match record {
            Ok(record) => {
                let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default())
                    .into_owned();
                out.push(value.parse().expect("a number"));
            }
            Err(e) => return (out, e.code()),
        }
    }
    (out, None)
}

/// With no other in-sync replica alive, a damaged leader keeps leading: it serves every record
/// before the damage (never the damaged bytes), and the leadership does not move although it
/// asks again and again (the controller has no one to hand it to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_leader_alone_in_the_isr_keeps_leading() {
    let mut cluster = Cluster::start(
        LEASE_MS,
        &[
            "--replica-lag-time-max-ms",
            LAG_MS,
            "--scrub-bytes-per-sec",
            "1000000000",
            "--scrub-pass-interval-ms",
            "1000",
        ],
    );
    let client = cluster.client(WAIT).await;
    let created = client
        .admin()
        .create_topic(
            NewTopic::new("alone")
                .partitions(1)
                .replication_factor(3)
                .min_insync_replicas(2)
                .segment_bytes(16 << 10)
                .max_batch_bytes(8 << 10),
        )
        .await
        .unwrap();
    let leader = created.partitions[0].leader_id;
    produce_numbers(&client, "alone", 0..5000, Acks::All).await;
    let dirs = data_dirs(&cluster);
    for follower in (1..=3).filter(|&b| b != leader) {
        cluster.broker(follower).kill();
    }
    wait_until("the ISR is the leader alone", WAIT, || async {
        describe(&client, "alone")
            .await
            .is_some_and(|t| t.partitions[0].isr == [leader])
    })
    .await;
    let before = describe(&client, "alone").await.unwrap().partitions[0].clone();

    // Rot the first batch of the second segment: the first segment stays readable.
    let bases = segment_bases(dir_of(&dirs, leader), "alone", 0);
    assert!(bases.len() > 2, "{bases:?}");
    let damaged_at = bases[1];
    let segment = dir_of(&dirs, leader)
        .join("logs")
        .join("alone-0")
        .join(format!("{damaged_at:020}.log"));
    rot_first_batch(&segment);

    wait_until("the scrub found it: reads stop before it", WAIT, || async {
        consume_until_error(&client, "alone").await.1 == Some(ErrorCode::CorruptLog)
    })
    .await;
    let (values, _) = consume_until_error(&client, "alone").await;
    assert_eq!(
        values,
        (0..damaged_at as u32).collect::<Vec<_>>(),
        "every record before the damage, nothing from it on"
    );
    // Longer than the leader's retry interval (5 s): it asked at least twice.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = describe(&client, "alone").await.unwrap().partitions[0].clone();
    assert_eq!(
        (after.leader_id, after.leader_epoch, after.isr.clone()),
        (leader, before.leader_epoch, vec![leader]),
        "it keeps leading: {after:?}"
    );
    assert!(after.leader_alive);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_leaders_log_start_starts_over_there_and_rejoins() {
    let mut cluster = Cluster::start(
        LEASE_MS,
        &[
            "--replica-lag-time-max-ms",
            LAG_MS,
            "--retention-check-interval-ms",
            "200",
        ],
    );
    let client = cluster.client(WAIT).await;
    let created = client
        .admin()
        .create_topic(
            NewTopic::new("trim")
                .partitions(1)
                .replication_factor(3)
                .min_insync_replicas(2)
                .segment_bytes(16 << 10)
                .max_batch_bytes(8 << 10)
                .retention_bytes(64 << 10),
        )
        .await
        .unwrap();
    let leader = created.partitions[0].leader_id;
    let follower = (1..=3).find(|&b| b != leader).unwrap();
    produce_numbers(&client, "trim", 0..1000, Acks::All).await;
    let dirs = data_dirs(&cluster);
    wait_until("the follower holds the leader's bytes", WAIT, || async {
        log_bytes(dir_of(&dirs, follower), "trim") == log_bytes(dir_of(&dirs, leader), "trim")
    })
    .await;

    // The follower stops; the leader goes on, and its retention deletes far past where the
    // follower's log ends.
    cluster.broker(follower).terminate();
    let follower_end = disk_batches(dir_of(&dirs, follower), "trim", 0)
        .last()
        .map_or(0, |b| b.header().next_offset());
    assert_eq!(follower_end, 1000);
    produce_numbers(&client, "trim", 1000..30000, Acks::All).await;
    wait_until(
        "the leader's log starts past the follower's end",
        WAIT,
        || async {
            segment_bases(dir_of(&dirs, leader), "trim", 0)
                .first()
                .is_some_and(|&start| start > follower_end)
        },
    )
    .await;

    cluster.broker(follower).restart();
    wait_until("the follower is back in the ISR", WAIT, || async {
        describe(&client, "trim")
            .await
            .is_some_and(|t| t.partitions[0].isr.len() == 3)
    })
    .await;
    // It holds nothing from before: its log starts at (or, after its own retention, past)
    // the leader's log start, and from there it is the leader's, byte for byte.
    wait_until(
        "the follower's copy is the leader's from where it starts",
        WAIT,
        || async {
            let mine = disk_batches(dir_of(&dirs, follower), "trim", 0);
            let theirs = disk_batches(dir_of(&dirs, leader), "trim", 0);
            let (Some(first), Some(last)) = (mine.first(), theirs.last()) else {
                return false;
            };
            let from = first.header().base_offset;
            let tail: Vec<_> = theirs
                .iter()
                .filter(|b| b.header().base_offset >= from)
                .map(|b| b.as_bytes())
                .collect();
            from > follower_end
                && mine.last().map(|b| b.header().next_offset())
                    == Some(last.header().next_offset())
                && mine.iter().map(|b| b.as_bytes()).collect::<Vec<_>>() == tail
        },
    )
    .await;
    // What the leader keeps is readable, every acknowledged record in order up to the last.
    let values = consume(&client, "trim").await;
    let first = *values.first().expect("records remain");
    assert!(first > 1000, "retention deleted the start: {first}");
    assert_eq!(values, (first..30000).collect::<Vec<_>>());
    // The follower counts for acks=all again: with the leader gone, it or the third replica
    // takes over holding everything acknowledged.
    produce_numbers(&client, "trim", 30000..30100, Acks::All).await;
}
