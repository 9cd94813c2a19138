//! The controller's replication decisions end to end, in process: topic replication settings,
//! broker epochs, AlterPartition's compare-and-set and each refusal, fencing on lease expiry
//! and election when a broker comes back, unclean restarts, controlled shutdown, a damaged
//! leader's resignation, rule 12b's lease grants, and reassignments (a single copy moved, replica
//! counts raised and lowered, the topic's replication factor following them).
//! Brokers are played by calls (register, heartbeat) with short leases.

use std::sync::Arc;
use std::time::Duration;

use weir_proto::v1::{
    AlterPartitionRequest, BrokerHeartbeatRequest, BrokerHeartbeatResponse,
    ControlledShutdownRequest, CreateTopicRequest, ErrorCode, IsrMember, RegisterBrokerRequest,
    TopicConfig, TopicPartitions,
};
use weir_storage::LogConfig;

use super::{Controller, ControllerConfig};

const LEASE: Duration = Duration::from_millis(300);

fn open(dir: &std::path::Path) -> Arc<Controller> {
    Controller::open(
        dir,
        ControllerConfig {
            broker_lease: LEASE,
            topic_defaults: LogConfig::default(),
            max_request_bytes: 64 << 20,
            leader_rebalance_interval: None,
        },
    )
    .unwrap()
}

async fn register(c: &Arc<Controller>, id: u32, clean_start: bool) -> BrokerHeartbeatResponse {
    c.register_broker(RegisterBrokerRequest {
        broker_id: id,
        address: format!("127.0.0.1:{}", 9000 + id),
        data_address: format!("127.0.0.1:{}", 9100 + id),
        clean_start,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A heartbeat that has applied the current metadata, without waiting.
async fn heartbeat(c: &Arc<Controller>, id: u32, epoch: u64) -> BrokerHeartbeatResponse {
    c.broker_heartbeat(BrokerHeartbeatRequest {
        broker_id: id,
        known_version: c.metadata().version,
        wait_ms: 0,
        broker_epoch: epoch,
    })
    .await
    .unwrap()
}

/// Registers broker `id` and heartbeats until it holds a lease; its broker epoch.
async fn join(c: &Arc<Controller>, id: u32, clean_start: bool) -> u64 {
    let epoch = register(c, id, clean_start).await.broker_epoch;
    for _ in 0..10 {
        if heartbeat(c, id, epoch).await.lease_ms > 0 {
            return epoch;
        }
    }
    panic!("broker {id} got no lease");
}

/// Creates a topic while `brokers` keep acknowledging (so the create does not wait out
/// ACK_WAIT).
async fn create(
    c: &Arc<Controller>,
    brokers: &[(u32, u64)],
    name: &str,
    partitions: u32,
    config: TopicConfig,
) -> Result<weir_proto::v1::TopicDescription, weir_proto::v1::Error> {
    let task = {
        let c = Arc::clone(c);
        let name = name.to_owned();
        tokio::spawn(async move {
            c.create_topic(CreateTopicRequest {
                name,
                partitions,
                config: Some(config),
                ..Default::default()
            })
            .await
        })
    };
    while !task.is_finished() {
        for &(id, epoch) in brokers {
            heartbeat(c, id, epoch).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.await.unwrap()
}

fn rf(replication_factor: u32, min_insync_replicas: u32) -> TopicConfig {
    TopicConfig {
        replication_factor: Some(replication_factor),
        min_insync_replicas: Some(min_insync_replicas),
        ..Default::default()
    }
}

fn state(c: &Controller, topic: &str, p: u32) -> weir_replication::PartitionState {
    let inner = c.inner.lock().unwrap();
    inner.state.topics[topic].partition_state(p).unwrap()
}

fn ids(brokers: &[weir_replication::BrokerId]) -> Vec<u32> {
    brokers.iter().map(|b| b.0).collect()
}

async fn three(c: &Arc<Controller>) -> Vec<(u32, u64)> {
    let mut brokers = Vec::new();
    for id in 1..=3 {
        brokers.push((id, join(c, id, true).await));
    }
    brokers
}

#[tokio::test]
async fn replication_settings_default_from_the_live_brokers_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let one = vec![(1, join(&c, 1, true).await)];
    let t = create(&c, &one, "single", 2, TopicConfig::default())
        .await
        .unwrap();
    let config = t.config.unwrap();
    assert_eq!(
        (config.replication_factor, config.min_insync_replicas),
        (Some(1), Some(1))
    );
    assert_eq!(t.partitions[0].replicas, [1]);

    let brokers = three(&c).await;
    let t = create(&c, &brokers, "triple", 4, TopicConfig::default())
        .await
        .unwrap();
    let config = t.config.unwrap();
    assert_eq!(
        (config.replication_factor, config.min_insync_replicas),
        (Some(3), Some(2))
    );
    for p in &t.partitions {
        let mut r = p.replicas.clone();
        r.sort();
        assert_eq!(r, [1, 2, 3]);
        assert_eq!(
            (p.isr.clone(), p.leader_epoch, p.partition_epoch),
            (vec![1, 2, 3], 1, 1)
        );
        assert_eq!(p.leader_id, p.replicas[0]);
    }
    let t = create(&c, &brokers, "double", 1, rf(2, 1)).await.unwrap();
    assert_eq!(t.partitions[0].replicas.len(), 2);

    for (config, why) in [
        (rf(4, 1), "needs 4 live brokers"),
        (rf(0, 1), "at least 1"),
        (rf(3, 0), "at least 1"),
        (rf(2, 3), "exceeds replication_factor"),
    ] {
        let e = create(&c, &brokers, "bad", 1, config).await.unwrap_err();
        assert_eq!(
            e.code,
            ErrorCode::InvalidReplicationFactor as i32,
            "{}",
            e.message
        );
        assert!(e.message.contains(why), "{}", e.message);
    }
    assert!(!c.inner.lock().unwrap().state.topics.contains_key("bad"));
}

#[tokio::test]
async fn broker_epochs_grow_with_every_start_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let first = join(&c, 1, true).await;
    let second = join(&c, 1, true).await;
    assert!(second > first);
    // The older start is told to register again.
    assert!(heartbeat(&c, 1, first).await.reregister);
    assert!(!heartbeat(&c, 1, second).await.reregister);
    c.close().unwrap();
    drop(c);
    let c = open(dir.path());
    assert!(
        !heartbeat(&c, 1, second).await.reregister,
        "the epoch is journaled"
    );
    assert!(join(&c, 1, true).await > second);
}

#[tokio::test]
async fn a_lease_is_granted_only_with_the_current_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let registered = register(&c, 1, true).await;
    assert_eq!(registered.lease_ms, 0, "a registration grants no lease");
    let epoch = registered.broker_epoch;
    let stale = c
        .broker_heartbeat(BrokerHeartbeatRequest {
            broker_id: 1,
            known_version: 0,
            wait_ms: 0,
            broker_epoch: epoch,
        })
        .await
        .unwrap();
    assert_eq!(stale.lease_ms, 0);
    assert!(stale.metadata.is_some());
    assert!(
        !c.metadata().brokers[0].alive,
        "not unfenced before it applied the metadata"
    );
    join(&c, 1, true).await;
    assert!(c.metadata().brokers[0].alive);
}

#[tokio::test]
async fn alter_partition_is_a_compare_and_set_with_typed_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let brokers = three(&c).await;
    let epoch_of = |id: u32| brokers.iter().find(|b| b.0 == id).map_or(1, |b| b.1);
    create(&c, &brokers, "t", 1, rf(3, 2)).await.unwrap();
    let s = state(&c, "t", 0);
    let leader = s.leader.unwrap().0;
    let others: Vec<u32> = ids(&s.isr).into_iter().filter(|&b| b != leader).collect();
    let member = |b: u32| IsrMember {
        broker: b,
        broker_epoch: epoch_of(b),
    };
    let request = |isr: &[u32]| AlterPartitionRequest {
        topic: "t".into(),
        topic_id: String::new(),
        partition: 0,
        leader,
        leader_epoch: 1,
        partition_epoch: 1,
        new_isr: isr.iter().map(|&b| member(b)).collect(),
    };
    let mut shrunk: Vec<u32> = vec![leader, others[0]];
    shrunk.sort();
    let answer = c.alter_partition(request(&shrunk)).await.unwrap();
    let new = answer.state.unwrap();
    assert_eq!(
        (new.isr.clone(), new.partition_epoch, new.leader_epoch),
        (shrunk.clone(), 2, 1)
    );
    assert_eq!(new.min_insync_replicas, 2);
    assert_eq!(ids(&state(&c, "t", 0).isr), shrunk, "journaled and applied");

    let refused = |code: ErrorCode, r: AlterPartitionRequest| {
        let c = Arc::clone(&c);
        async move {
            let e = c.alter_partition(r).await.unwrap_err();
            assert_eq!(e.code, code as i32, "{}", e.message);
            e.message
        }
    };
    // The retry of an applied request is stale.
    refused(ErrorCode::StalePartitionEpoch, request(&shrunk)).await;
    let current = |isr: &[u32]| AlterPartitionRequest {
        partition_epoch: 2,
        ..request(isr)
    };
    refused(
        ErrorCode::FencedLeaderEpoch,
        AlterPartitionRequest {
            leader_epoch: 0,
            ..current(&shrunk)
        },
    )
    .await;
    refused(
        ErrorCode::NotLeader,
        AlterPartitionRequest {
            leader: others[0],
            ..current(&shrunk)
        },
    )
    .await;
    let msg = refused(ErrorCode::IneligibleReplica, current(&[leader])).await;
    assert!(msg.contains("min_insync_replicas 2"), "{msg}");
    let mut with_stranger = vec![leader, 9];
    with_stranger.sort();
    refused(ErrorCode::IneligibleReplica, current(&with_stranger)).await;
    let mut stale_epoch = current(&[1, 2, 3]);
    for m in &mut stale_epoch.new_isr {
        if m.broker == others[1] {
            m.broker_epoch -= 1;
        }
    }
    refused(ErrorCode::IneligibleReplica, stale_epoch).await;
    refused(ErrorCode::InvalidRequest, current(&[3, 2, 1])).await;
    refused(ErrorCode::InvalidRequest, current(&shrunk)).await;
    refused(
        ErrorCode::UnknownPartition,
        AlterPartitionRequest {
            partition: 1,
            ..current(&shrunk)
        },
    )
    .await;
    refused(
        ErrorCode::UnknownTopic,
        AlterPartitionRequest {
            topic_id: "another".into(),
            ..current(&shrunk)
        },
    )
    .await;
    refused(
        ErrorCode::UnknownTopic,
        AlterPartitionRequest {
            topic: "nope".into(),
            ..current(&shrunk)
        },
    )
    .await;
    // Growing back with every member at its current epoch.
    let grown = c.alter_partition(current(&[1, 2, 3])).await.unwrap();
    assert_eq!(grown.state.unwrap().isr, [1, 2, 3]);
}

#[tokio::test]
async fn a_lapsed_lease_fences_and_a_returning_broker_is_elected() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let brokers = three(&c).await;
    create(&c, &brokers, "t", 1, rf(3, 2)).await.unwrap();
    create(&c, &brokers, "solo", 1, rf(1, 1)).await.unwrap();
    let before = state(&c, "t", 0);
    let dead = before.leader.unwrap().0;
    let solo_owner = state(&c, "solo", 0).leader.unwrap().0;
    let survivors: Vec<(u32, u64)> = brokers.iter().copied().filter(|b| b.0 != dead).collect();

    // The others keep heartbeating; the leader falls silent past the grace.
    let deadline = tokio::time::Instant::now() + LEASE + Duration::from_millis(100);
    while tokio::time::Instant::now() < deadline {
        for &(id, epoch) in &survivors {
            heartbeat(&c, id, epoch).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.tick().await;
    let after = state(&c, "t", 0);
    assert_ne!(after.leader.map(|b| b.0), Some(dead));
    assert!(after.leader.is_some());
    assert_eq!(after.leader_epoch.0, 2);
    assert_eq!(after.isr.len(), 2);
    assert!(!ids(&after.isr).contains(&dead));
    assert!(!c.metadata().brokers.iter().any(|b| b.id == dead && b.alive));
    let described = c.metadata();
    let t = described
        .topics
        .iter()
        .find(|t| t.description.as_ref().unwrap().name == "t")
        .unwrap();
    assert_eq!(t.leaders[0], after.leader.unwrap().0);

    // A partition whose only replica was fenced keeps it in its ISR, without a leader.
    if solo_owner == dead {
        let solo = state(&c, "solo", 0);
        assert_eq!((solo.leader, ids(&solo.isr)), (None, vec![dead]));
    }
    // The broker returns (same start): unfenced once it holds the current metadata, and
    // elected where it is the only candidate.
    let dead_epoch = brokers.iter().find(|b| b.0 == dead).unwrap().1;
    for _ in 0..3 {
        heartbeat(&c, dead, dead_epoch).await;
    }
    assert!(c.metadata().brokers.iter().any(|b| b.id == dead && b.alive));
    let solo = state(&c, "solo", 0);
    assert_eq!(solo.leader.map(|b| b.0), Some(solo_owner));
    if solo_owner == dead {
        assert_eq!(solo.leader_epoch.0, 3, "fenced (2), elected (3)");
    }
    // It does not take leadership back, nor the ISR: that is the leader's expansion.
    assert_eq!(state(&c, "t", 0), after);
}

#[tokio::test]
async fn an_unclean_restart_leaves_the_isr() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let brokers = three(&c).await;
    create(&c, &brokers, "t", 1, rf(3, 2)).await.unwrap();
    create(&c, &brokers, "solo", 3, rf(1, 1)).await.unwrap();
    let leader = state(&c, "t", 0).leader.unwrap().0;
    let epoch = join(&c, leader, false).await;
    assert!(epoch > brokers.iter().map(|b| b.1).max().unwrap());
    let after = state(&c, "t", 0);
    assert!(!ids(&after.isr).contains(&leader), "{after:?}");
    assert!(after.leader.is_some_and(|l| l.0 != leader));
    assert_eq!(after.leader_epoch.0, 2);
    // Partitions it is the only replica of keep it: there is no other copy.
    for p in 0..3 {
        let solo = state(&c, "solo", p);
        assert!(solo.leader.is_some() && solo.isr.len() == 1, "{solo:?}");
    }
}

#[tokio::test]
async fn a_damaged_leader_resigns_one_partition_and_may_rejoin() {
    use weir_proto::v1::ResignLeadershipRequest;

    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let brokers = three(&c).await;
    let epoch_of = |id: u32| brokers.iter().find(|b| b.0 == id).unwrap().1;
    create(&c, &brokers, "t", 2, rf(3, 2)).await.unwrap();
    let before = state(&c, "t", 0);
    let x = before.leader.unwrap().0;
    let ask = |broker: u32, broker_epoch: u64, leader_epoch: u32| ResignLeadershipRequest {
        broker_id: broker,
        broker_epoch,
        topic: "t".into(),
        topic_id: String::new(),
        partition: 0,
        leader_epoch,
    };
    let version = c.metadata().version;
    let refusals = [
        (ask(x, epoch_of(x) - 1, 1), ErrorCode::StaleBrokerEpoch),
        (ask(x, epoch_of(x), 2), ErrorCode::NotLeader),
        (ask(x % 3 + 1, epoch_of(x % 3 + 1), 1), ErrorCode::NotLeader),
        (
            ResignLeadershipRequest {
                partition: 9,
                ..ask(x, epoch_of(x), 1)
            },
            ErrorCode::UnknownPartition,
        ),
        (
            ResignLeadershipRequest {
                topic_id: "another".into(),
                ..ask(x, epoch_of(x), 1)
            },
            ErrorCode::UnknownTopic,
        ),
    ];
    for (request, code) in refusals {
        let e = c.resign_leadership(request).await.unwrap_err();
        assert_eq!(e.code, code as i32, "{}", e.message);
    }
    assert_eq!(c.metadata().version, version, "refused: nothing changed");

    let answer = c.resign_leadership(ask(x, epoch_of(x), 1)).await.unwrap();
    let after = state(&c, "t", 0);
    let wire = answer.state.unwrap();
    assert_eq!(wire.leader, after.leader.map(|b| b.0));
    assert!(after.leader.is_some_and(|l| l.0 != x), "{after:?}");
    assert_eq!(after.leader_epoch, before.leader_epoch.next());
    assert!(!ids(&after.isr).contains(&x), "{after:?}");
    assert_ne!(c.metadata().version, version, "brokers learn it");
    // Only that partition: the other one x leads (or follows) is untouched.
    assert_eq!(state(&c, "t", 1).partition_epoch.0, 1);
    // A late retry of the same request moves nothing more.
    let late = c
        .resign_leadership(ask(x, epoch_of(x), 1))
        .await
        .unwrap_err();
    assert_eq!(late.code, ErrorCode::NotLeader as i32, "{}", late.message);

    // Not shutting down: once healed, the new leader adds it back.
    let mut back = ids(&after.isr);
    back.push(x);
    back.sort();
    c.alter_partition(AlterPartitionRequest {
        topic: "t".into(),
        topic_id: String::new(),
        partition: 0,
        leader: after.leader.unwrap().0,
        leader_epoch: after.leader_epoch.0,
        partition_epoch: after.partition_epoch.0,
        new_isr: back
            .iter()
            .map(|&b| IsrMember {
                broker: b,
                broker_epoch: epoch_of(b),
            })
            .collect(),
    })
    .await
    .unwrap();
    assert!(ids(&state(&c, "t", 0).isr).contains(&x));

    // The only in-sync replica keeps leading: the answer says so and nothing changes (a topic
    // with min_insync 1, so its leader can shrink the ISR to itself).
    create(&c, &brokers, "u", 1, rf(3, 1)).await.unwrap();
    let u = state(&c, "u", 0);
    let z = u.leader.unwrap().0;
    c.alter_partition(AlterPartitionRequest {
        topic: "u".into(),
        topic_id: String::new(),
        partition: 0,
        leader: z,
        leader_epoch: u.leader_epoch.0,
        partition_epoch: u.partition_epoch.0,
        new_isr: vec![IsrMember {
            broker: z,
            broker_epoch: epoch_of(z),
        }],
    })
    .await
    .unwrap();
    let alone = state(&c, "u", 0);
    let version = c.metadata().version;
    let kept = c
        .resign_leadership(ResignLeadershipRequest {
            topic: "u".into(),
            leader_epoch: alone.leader_epoch.0,
            ..ask(z, epoch_of(z), 0)
        })
        .await
        .unwrap();
    assert_eq!(kept.state.unwrap().leader, Some(z), "it keeps leading");
    assert_eq!(state(&c, "u", 0), alone);
    assert_eq!(c.metadata().version, version);
}

#[tokio::test]
async fn a_controlled_shutdown_hands_leaderships_over_and_keeps_the_broker_out() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let brokers = three(&c).await;
    let epoch_of = |id: u32| brokers.iter().find(|b| b.0 == id).unwrap().1;
    create(&c, &brokers, "t", 6, rf(3, 2)).await.unwrap();
    create(&c, &brokers, "u", 1, rf(3, 1)).await.unwrap();
    create(&c, &brokers, "solo", 3, rf(1, 1)).await.unwrap();
    let x = state(&c, "u", 0).leader.unwrap().0;
    // u-0 is down to its leader alone: no one to hand it to.
    let alone = AlterPartitionRequest {
        topic: "u".into(),
        topic_id: String::new(),
        partition: 0,
        leader: x,
        leader_epoch: 1,
        partition_epoch: 1,
        new_isr: vec![IsrMember {
            broker: x,
            broker_epoch: epoch_of(x),
        }],
    };
    c.alter_partition(alone).await.unwrap();
    let before: Vec<_> = (0..6).map(|p| state(&c, "t", p)).collect();
    let version = c.metadata().version;

    let stale = c
        .controlled_shutdown(ControlledShutdownRequest {
            broker_id: x,
            broker_epoch: epoch_of(x) - 1,
        })
        .await
        .unwrap_err();
    assert_eq!(
        stale.code,
        ErrorCode::StaleBrokerEpoch as i32,
        "{}",
        stale.message
    );
    assert_eq!(c.metadata().version, version, "refused: nothing changed");

    let ask = ControlledShutdownRequest {
        broker_id: x,
        broker_epoch: epoch_of(x),
    };
    let answer = c.controlled_shutdown(ask).await.unwrap();
    assert_eq!(
        answer.remaining,
        [TopicPartitions {
            topic: "u".into(),
            partitions: vec![0],
        }],
        "only the partition with no other ISR member stays led (unreplicated ones are not counted)"
    );
    assert!(
        c.metadata().version != version,
        "brokers learn the handover"
    );
    for (p, old) in before.iter().enumerate() {
        let new = state(&c, "t", p as u32);
        assert!(!ids(&new.isr).contains(&x), "t-{p}: {new:?}");
        assert_eq!(new.partition_epoch, old.partition_epoch.next(), "t-{p}");
        if old.leader.map(|b| b.0) == Some(x) {
            assert!(new.leader.is_some_and(|l| l.0 != x), "t-{p}: {new:?}");
            assert_eq!(new.leader_epoch, old.leader_epoch.next(), "t-{p}");
        } else {
            assert_eq!(
                (new.leader, new.leader_epoch),
                (old.leader, old.leader_epoch)
            );
        }
    }
    let u = state(&c, "u", 0);
    assert_eq!((u.leader.map(|b| b.0), ids(&u.isr)), (Some(x), vec![x]));
    // Asking again changes nothing more.
    let version = c.metadata().version;
    let again = c.controlled_shutdown(ask).await.unwrap();
    assert_eq!(again.remaining, answer.remaining);
    assert_eq!(c.metadata().version, version);

    // While it shuts down, no leader may add it back to an ISR.
    let t0 = state(&c, "t", 0);
    let mut back: Vec<u32> = ids(&t0.isr);
    back.push(x);
    back.sort();
    let add = |t0: &weir_replication::PartitionState, epoch: u64| AlterPartitionRequest {
        topic: "t".into(),
        topic_id: String::new(),
        partition: 0,
        leader: t0.leader.unwrap().0,
        leader_epoch: t0.leader_epoch.0,
        partition_epoch: t0.partition_epoch.0,
        new_isr: back
            .iter()
            .map(|&b| IsrMember {
                broker: b,
                broker_epoch: if b == x { epoch } else { epoch_of(b) },
            })
            .collect(),
    };
    let refused = c.alter_partition(add(&t0, epoch_of(x))).await.unwrap_err();
    assert_eq!(
        refused.code,
        ErrorCode::IneligibleReplica as i32,
        "{}",
        refused.message
    );
    // A new start may rejoin.
    let restarted = join(&c, x, true).await;
    c.alter_partition(add(&t0, restarted)).await.unwrap();
    assert!(ids(&state(&c, "t", 0).isr).contains(&x));
}

#[tokio::test]
async fn a_reassignment_is_journaled_and_completes_once_the_target_is_in_sync() {
    use weir_proto::v1::{AlterPartitionReassignmentsRequest, PartitionReassignment};
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let mut brokers = three(&c).await;
    brokers.push((4, join(&c, 4, true).await));
    let epoch_of = |id: u32| brokers.iter().find(|b| b.0 == id).map_or(1, |b| b.1);
    create(&c, &brokers, "t", 1, rf(3, 2)).await.unwrap();
    let s = state(&c, "t", 0);
    let leader = s.leader.unwrap().0;
    let new = (1..=4).find(|b| !ids(&s.replicas).contains(b)).unwrap();
    // The leader's replica goes to the broker without one.
    let target: Vec<u32> = ids(&s.replicas)
        .into_iter()
        .map(|b| if b == leader { new } else { b })
        .collect();
    let reassign = |replicas: Vec<u32>| AlterPartitionReassignmentsRequest {
        topic: "t".into(),
        reassignments: vec![PartitionReassignment {
            partition: 0,
            replicas,
        }],
    };
    let too_small = c.alter_partition_reassignments(reassign(vec![new])).await;
    assert_eq!(
        too_small.unwrap_err().code,
        ErrorCode::InvalidReplicationFactor as i32
    );
    assert_eq!(state(&c, "t", 0), s, "a refusal changes nothing");
    c.alter_partition_reassignments(reassign(target.clone()))
        .await
        .unwrap();
    let moving = state(&c, "t", 0);
    assert_eq!(ids(&moving.removing), vec![leader]);
    assert_eq!(moving.leader, s.leader, "the leader stays until the end");
    // Journaled: a restarted controller still has the reassignment.
    c.close().unwrap();
    drop(c);
    let c = open(dir.path());
    assert_eq!(state(&c, "t", 0), moving);
    // The target is not in sync: the tick leaves it.
    c.tick().await;
    assert_eq!(state(&c, "t", 0), moving);
    // The leader adds the new replica (it caught up); the next tick completes the move.
    let mut isr: Vec<u32> = ids(&moving.isr);
    isr.push(new);
    isr.sort();
    c.alter_partition(AlterPartitionRequest {
        topic: "t".into(),
        topic_id: String::new(),
        partition: 0,
        leader,
        leader_epoch: moving.leader_epoch.0,
        partition_epoch: moving.partition_epoch.0,
        new_isr: isr
            .iter()
            .map(|&b| IsrMember {
                broker: b,
                broker_epoch: epoch_of(b),
            })
            .collect(),
    })
    .await
    .unwrap();
    c.tick().await;
    let done = state(&c, "t", 0);
    assert_eq!(ids(&done.replicas), target);
    assert!(done.removing.is_empty());
    assert!(!ids(&done.isr).contains(&leader));
    assert_eq!(done.leader.map(|b| b.0), Some(target[0]));
    assert_eq!(done.leader_epoch, moving.leader_epoch.next());
}

#[tokio::test]
async fn a_restarted_controller_elects_leaderless_partitions_whose_replica_is_alive() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let one = vec![(1, join(&c, 1, true).await)];
    create(&c, &one, "solo", 1, rf(1, 1)).await.unwrap();
    // Broker 1 falls silent past the grace: fenced, the partition loses its leader.
    tokio::time::sleep(LEASE + Duration::from_millis(100)).await;
    c.tick().await;
    assert_eq!(state(&c, "solo", 0).leader, None);
    // The controller restarts; every registered broker starts alive, with no registration or
    // unfencing to trigger an election: the tick elects.
    c.close().unwrap();
    drop(c);
    let c = open(dir.path());
    c.tick().await;
    let s = state(&c, "solo", 0);
    assert_eq!(s.leader.map(|b| b.0), Some(1));
    assert_eq!(s.leader_epoch.0, 3, "fenced (2), elected (3)");
}

/// Asks to move each (partition, replicas) of `moves` of `topic`.
async fn reassign(
    c: &Arc<Controller>,
    topic: &str,
    moves: &[(u32, Vec<u32>)],
) -> Result<weir_proto::v1::TopicDescription, weir_proto::v1::Error> {
    use weir_proto::v1::{AlterPartitionReassignmentsRequest, PartitionReassignment};
    c.alter_partition_reassignments(AlterPartitionReassignmentsRequest {
        topic: topic.into(),
        reassignments: moves
            .iter()
            .map(|(partition, replicas)| PartitionReassignment {
                partition: *partition,
                replicas: replicas.clone(),
            })
            .collect(),
    })
    .await
}

/// The leader of `topic`-`p` adds every replica to the ISR (they caught up), as `brokers`.
async fn all_caught_up(c: &Arc<Controller>, brokers: &[(u32, u64)], topic: &str, p: u32) {
    let s = state(c, topic, p);
    let mut isr = ids(&s.replicas);
    isr.sort();
    c.alter_partition(AlterPartitionRequest {
        topic: topic.into(),
        topic_id: String::new(),
        partition: p,
        leader: s.leader.unwrap().0,
        leader_epoch: s.leader_epoch.0,
        partition_epoch: s.partition_epoch.0,
        new_isr: isr
            .iter()
            .map(|&b| IsrMember {
                broker: b,
                broker_epoch: brokers.iter().find(|x| x.0 == b).unwrap().1,
            })
            .collect(),
    })
    .await
    .unwrap();
}

fn replication_factor(c: &Controller, topic: &str) -> u32 {
    c.inner.lock().unwrap().state.topics[topic]
        .meta
        .settings
        .replication_factor
}

#[tokio::test]
async fn a_single_copy_moves_to_another_broker_and_takes_the_leadership_there() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let brokers = three(&c).await;
    create(&c, &brokers, "solo", 2, rf(1, 1)).await.unwrap();
    let s = state(&c, "solo", 0);
    let old = s.leader.unwrap().0;
    let new = (1..=3).find(|&b| b != old).unwrap();
    let before = state(&c, "solo", 1);

    // Refused, changing nothing: an empty target, and one of an unknown broker.
    for (target, code) in [
        (vec![], ErrorCode::InvalidReplicationFactor),
        (vec![77], ErrorCode::InvalidRequest),
    ] {
        let e = reassign(&c, "solo", &[(0, target)]).await.unwrap_err();
        assert_eq!(e.code, code as i32, "{}", e.message);
    }
    assert_eq!(state(&c, "solo", 0), s, "a refusal changes nothing");

    let answer = reassign(&c, "solo", &[(0, vec![new])]).await.unwrap();
    assert_eq!(answer.partitions[0].removing_replicas, [old]);
    let moving = state(&c, "solo", 0);
    assert_eq!(ids(&moving.replicas), [new, old]);
    assert_eq!(
        (moving.leader, ids(&moving.isr)),
        (s.leader, vec![old]),
        "the old copy leads, alone in the ISR, until the new one caught up"
    );
    for &(id, epoch) in &brokers {
        heartbeat(&c, id, epoch).await;
    }
    c.tick().await;
    assert_eq!(
        state(&c, "solo", 0),
        moving,
        "not in sync yet: nothing removed"
    );

    all_caught_up(&c, &brokers, "solo", 0).await;
    for &(id, epoch) in &brokers {
        heartbeat(&c, id, epoch).await;
    }
    c.tick().await;
    let done = state(&c, "solo", 0);
    assert_eq!(ids(&done.replicas), [new]);
    assert_eq!(ids(&done.isr), [new]);
    assert!(done.removing.is_empty());
    assert_eq!(done.leader.map(|b| b.0), Some(new));
    assert_eq!(done.leader_epoch, s.leader_epoch.next());
    assert_eq!(state(&c, "solo", 1), before, "the other partition stays");
    assert_eq!(
        replication_factor(&c, "solo"),
        1,
        "one copy before and after"
    );
    let leaders = c.inner.lock().unwrap().state.topics["solo"].leaders.clone();
    assert_eq!(leaders[0], new);
}

#[tokio::test]
async fn the_topic_replication_factor_follows_its_partitions_once_they_agree() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let brokers = three(&c).await;
    create(&c, &brokers, "grow", 2, rf(1, 1)).await.unwrap();
    let owner = |p: u32| ids(&state(&c, "grow", p).replicas)[0];
    let all_from = |first: u32| {
        let mut r = vec![first];
        r.extend((1..=3).filter(|&b| b != first));
        r
    };
    // Raising one partition to three copies: an addition, nothing to remove. The counts now
    // differ (3 and 1): the topic keeps 1.
    let (first, second) = (owner(0), owner(1));
    reassign(&c, "grow", &[(0, all_from(first))]).await.unwrap();
    let raised = state(&c, "grow", 0);
    assert_eq!(ids(&raised.replicas), all_from(first));
    assert!(!raised.reassigning());
    assert_eq!(
        ids(&raised.isr),
        [first],
        "the new replicas join once caught up"
    );
    assert_eq!(replication_factor(&c, "grow"), 1, "the counts differ");
    // The other one too: every partition has three replicas, and so has the topic, journaled.
    let d = reassign(&c, "grow", &[(1, all_from(second))])
        .await
        .unwrap();
    assert_eq!(d.config.unwrap().replication_factor, Some(3));
    assert_eq!(replication_factor(&c, "grow"), 3);
    c.close().unwrap();
    drop(c);
    let c = open(dir.path());
    assert_eq!(replication_factor(&c, "grow"), 3, "journaled");

    // Lowering both to two: the count changes when the moves complete, not before. (The
    // restarted controller starts every registered broker alive, at its journaled epoch.)
    for p in 0..2 {
        all_caught_up(&c, &brokers, "grow", p).await;
    }
    let targets: Vec<(u32, Vec<u32>)> = (0..2)
        .map(|p| (p, ids(&state(&c, "grow", p).replicas)[..2].to_vec()))
        .collect();
    reassign(&c, "grow", &targets).await.unwrap();
    assert!(state(&c, "grow", 0).reassigning());
    assert_eq!(replication_factor(&c, "grow"), 3, "still moving");
    for &(id, epoch) in &brokers {
        heartbeat(&c, id, epoch).await;
    }
    c.tick().await;
    for (p, target) in &targets {
        assert_eq!(&ids(&state(&c, "grow", *p).replicas), target);
    }
    assert_eq!(replication_factor(&c, "grow"), 2);
}
