//! Reassignment and the preferred leader over real processes: a controller and four brokers on
//! loopback, a topic with replication factor 3 and `min_insync_replicas` 2, an `acks=all`
//! producer running throughout.
//!
//! What it proves (rule 10): replacing a broker moves every replica it held onto the new one,
//! which catches up by fetching and joins the in-sync set before the old replica is removed;
//! the in-sync set never drops below the minimum while the move runs (sampled all along); the
//! leadership the old broker held moves to the new preferred replica; the old broker deletes
//! its copies; the new copies are byte-identical to the others; and every acknowledged record
//! is readable. Then a broker killed and restarted takes its preferred leaderships back once
//! it is in sync again (automatic preferred leader election).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weir_client::NewTopic;
use weir_testkit::wait_until;

#[path = "support/replicated.rs"]
mod replicated;
use replicated::{Cluster, consume_numbers, disk_batches, produce_until};

const PARTITIONS: u32 = 4;
/// A watchdog for conditions, not a timing assertion.
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_broker_moves_its_replicas_without_dropping_below_min_isr() {
    let mut cluster = Cluster::start_with(
        4,
        &[
            "--broker-lease-ms",
            "3000",
            "--leader-rebalance-interval-ms",
            "1000",
        ],
        &["--replica-lag-time-max-ms", "2000"],
    );
    let client = cluster.client(WAIT).await;
    let admin = client.admin();
    admin
        .create_topic(
            NewTopic::new("moving")
                .partitions(PARTITIONS)
                .replication_factor(3)
                .min_insync_replicas(2),
        )
        .await
        .unwrap();
    let before = admin.describe_topic("moving").await.unwrap();
    // The broker that leads partition 0 leaves; the one without a replica of it takes over.
    let old = before.partitions[0].leader_id;
    let new = (1..=4u32)
        .find(|b| !before.partitions[0].replicas.contains(b))
        .unwrap();
    // Every partition on the old broker that the new one does not hold yet.
    let movable = |p: &&weir_client::PartitionDescription| {
        p.replicas.contains(&old) && !p.replicas.contains(&new)
    };
    let moved: Vec<u32> = before
        .partitions
        .iter()
        .filter(movable)
        .map(|p| p.partition)
        .collect();
    let moves: Vec<(u32, Vec<u32>)> = before
        .partitions
        .iter()
        .filter(movable)
        .map(|p| {
            let target: Vec<u32> = p
                .replicas
                .iter()
                .map(|&b| if b == old { new } else { b })
                .collect();
            (p.partition, target)
        })
        .collect();
    assert!(moves.iter().all(|(_, t)| !t.contains(&old)), "{moves:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let producing = produce_until(&client, "moving", PARTITIONS, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Bad targets are refused and change nothing.
    let below_min = admin
        .reassign_partitions("moving", [(0, vec![new])])
        .await
        .unwrap_err();
    assert_eq!(
        below_min.code(),
        Some(weir_proto::v1::ErrorCode::InvalidReplicationFactor),
        "{below_min}"
    );
    let unknown = admin
        .reassign_partitions("moving", [(0, vec![new, 77, old])])
        .await
        .unwrap_err();
    assert_eq!(
        unknown.code(),
        Some(weir_proto::v1::ErrorCode::InvalidRequest),
        "{unknown}"
    );

    let accepted = admin
        .reassign_partitions("moving", moves.clone())
        .await
        .unwrap();
    for &p in &moved {
        let d = &accepted.partitions[p as usize];
        assert_eq!(d.removing_replicas, vec![old], "{d:?}");
    }

    // Sample the in-sync sets while the move runs: never below the minimum.
    let smallest_isr = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    wait_until("the move is done", WAIT, || {
        let admin = admin.clone();
        let moved = moved.clone();
        let smallest = Arc::clone(&smallest_isr);
        async move {
            let Ok(t) = admin.describe_topic("moving").await else {
                return false;
            };
            for p in &t.partitions {
                smallest.fetch_min(p.isr.len(), Ordering::Relaxed);
            }
            moved
                .iter()
                .all(|&p| t.partitions[p as usize].fully_in_sync())
        }
    })
    .await;
    let smallest_isr = smallest_isr.load(Ordering::Relaxed);
    assert!(smallest_isr >= 2, "an ISR dropped to {smallest_isr}");

    let after = admin.describe_topic("moving").await.unwrap();
    for (p, target) in &moves {
        let d = &after.partitions[*p as usize];
        assert_eq!(&d.replicas, target, "moving-{p}: {d:?}");
        assert!(d.removing_replicas.is_empty(), "{d:?}");
        assert!(!d.isr.contains(&old), "{d:?}");
    }
    // Partition 0's leadership was on the old broker: now on its new preferred replica.
    assert_eq!(after.partitions[0].leader_id, moves[0].1[0], "{after:?}");
    assert!(after.partitions[0].leader_epoch > before.partitions[0].leader_epoch);
    // The old broker deletes its copies of the moved partitions (once it learns the move
    // completed), and keeps the others.
    let old_dir = cluster.broker(old).data_dir().to_path_buf();
    wait_until("the old broker deleted its copies", WAIT, || {
        let old_dir = old_dir.clone();
        let moved = moved.clone();
        async move {
            moved
                .iter()
                .all(|p| !old_dir.join("logs").join(format!("moving-{p}")).exists())
        }
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = producing.await.unwrap();
    assert!(failed.is_empty(), "acks=all deliveries failed: {failed:?}");
    let got = consume_numbers(&client, "moving").await;
    let got: BTreeSet<u32> = got.into_iter().collect();
    let missing: Vec<u32> = (0..sent).filter(|n| !got.contains(n)).collect();
    assert!(missing.is_empty(), "acknowledged records lost: {missing:?}");

    // Every replica of every moved partition holds the same batches, the new one included.
    for (p, target) in &moves {
        wait_until("the replicas agree byte for byte", WAIT, || {
            let dirs: Vec<_> = target
                .iter()
                .map(|&b| cluster.brokers[b as usize - 1].data_dir().to_path_buf())
                .collect();
            let p = *p;
            async move {
                let copies: Vec<Vec<Vec<u8>>> = dirs
                    .iter()
                    .map(|d| {
                        disk_batches(d, "moving", p)
                            .iter()
                            .map(|b| b.as_bytes().to_vec())
                            .collect()
                    })
                    .collect();
                copies.windows(2).all(|w| w[0] == w[1]) && !copies[0].is_empty()
            }
        })
        .await;
    }

    // The preferred leader returns: kill the new leader of partition 0, let another take
    // over, restart it, and it leads again once back in sync.
    let preferred = moves[0].1[0];
    tokio::task::block_in_place(|| cluster.broker(preferred).kill());
    wait_until("another broker leads moving-0", WAIT, || async {
        admin.describe_topic("moving").await.is_ok_and(|t| {
            let p = &t.partitions[0];
            p.leader_id != preferred && p.leader_alive
        })
    })
    .await;
    tokio::task::block_in_place(|| cluster.broker(preferred).restart());
    wait_until(
        "the preferred replica leads moving-0 again",
        WAIT,
        || async {
            admin.describe_topic("moving").await.is_ok_and(|t| {
                let p = &t.partitions[0];
                p.leader_id == preferred && p.leader_alive && p.isr.contains(&preferred)
            })
        },
    )
    .await;
}
