//! Consumer groups end to end against the real `weir-broker`: the `weir consume --group` /
//! `weir group` CLI continuing where a previous run stopped, and two library
//! [`GroupConsumer`]s sharing a topic with generation-fenced commits.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use weir_client::{
    Client, ConsumerConfig, ErrorCode, GroupConfig, GroupConsumer, NewTopic, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use weir_testkit::{BrokerProcess, broker_bin, temp_data_dir};

mod common;
use common::{WEIR, ok, run};

/// `partition/offset` lines as a set, checking none repeats.
fn offsets(out: &str) -> BTreeSet<(u32, u64)> {
    let mut seen = BTreeSet::new();
    for line in out.lines() {
        let (p, o) = line.split_once('/').expect("p/o line");
        let key = (p.parse().expect("partition"), o.parse().expect("offset"));
        assert!(seen.insert(key), "record {line} printed twice");
    }
    seen
}

#[test]
fn a_second_group_consume_continues_where_the_first_stopped() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(&broker_bin(), dir.path(), &[]);
    ok(run(
        &broker,
        &["topic", "create", "t", "--partitions", "4"],
        "",
    ));
    let input: String = (0..1000).map(|i| format!("k{}:v{i}\n", i % 101)).collect();
    ok(run(
        &broker,
        &["produce", "t", "--key-separator", ":"],
        &input,
    ));

    let template = "%p/%o\\n";
    let first = ok(run(
        &broker,
        &[
            "consume", "t", "--group", "g", "--count", "300", "--format", template,
        ],
        "",
    ));
    let first = offsets(&first);
    assert_eq!(first.len(), 300);

    let second = ok(run(
        &broker,
        &["consume", "t", "--group", "g", "--format", template],
        "",
    ));
    let second = offsets(&second);
    assert_eq!(second.len(), 700, "the rest, exactly");
    assert!(first.is_disjoint(&second), "nothing printed twice");

    let described = ok(run(&broker, &["group", "describe", "g"], ""));
    let rows: Vec<&str> = described
        .lines()
        .skip_while(|l| !l.starts_with("TOPIC"))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 4, "{described}");
    for row in rows {
        let cells: Vec<&str> = row.split_whitespace().collect();
        // TOPIC PARTITION COMMITTED HIGH-WATERMARK LAG MEMBER
        assert_eq!(cells[2], cells[3], "committed at the end: {described}");
        assert_eq!(cells[4], "0", "no lag: {described}");
    }
    let listed = ok(run(&broker, &["group", "list"], ""));
    assert!(listed.lines().any(|l| l.starts_with("g ")), "{listed}");

    let reset = ok(run(
        &broker,
        &["group", "reset", "g", "--to", "earliest"],
        "",
    ));
    assert_eq!(
        reset.lines().count(),
        5,
        "a header and 4 partitions: {reset}"
    );
    let third = ok(run(
        &broker,
        &["consume", "t", "--group", "g", "--format", template],
        "",
    ));
    assert_eq!(
        offsets(&third).len(),
        1000,
        "everything again after the reset"
    );

    let bad = run(&broker, &["group", "reset", "g", "--to", "start"], "");
    assert_eq!(bad.status.code(), Some(2), "bad usage");
    let unknown = run(&broker, &["group", "describe", "nope"], "");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("\"nope\" does not exist"));
}

#[test]
fn group_conflicts_with_explicit_positions() {
    let out = Command::new(WEIR)
        .args(["consume", "t", "--group", "g", "--partition", "1"])
        .output()
        .expect("run weir");
    assert_eq!(out.status.code(), Some(2));
}

/// A single-node broker with `topic` of `partitions` partitions holding `records` keyed
/// records (values 0, 1, ...); the data dir lives as long as the broker.
async fn broker_with_topic(
    topic: &str,
    partitions: u32,
    records: u32,
) -> (tempfile::TempDir, BrokerProcess, Client) {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(&broker_bin(), dir.path(), &[]);
    let client = Client::connect(&broker.host_port()).await.expect("connect");
    client
        .admin()
        .create_topic(NewTopic::new(topic).partitions(partitions))
        .await
        .expect("create");
    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..records {
        let record = ProducerRecord::new(topic)
            .key(format!("k{i}"))
            .value(i.to_string());
        deliveries.push(producer.send(record).await.expect("send"));
    }
    for delivery in deliveries {
        delivery.await.expect("delivered");
    }
    producer.close().await.expect("flush");
    (dir, broker, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_the_partitions_and_stale_commits_are_refused() {
    let (_dir, _broker, client) = broker_with_topic("split", 4, 40).await;
    let admin = client.admin();

    let config = || GroupConfig {
        consumer: ConsumerConfig {
            follow: false,
            ..ConsumerConfig::default()
        },
        ..GroupConfig::new("pair", ["split"])
    };
    let mut a = GroupConsumer::join(&client, config())
        .await
        .expect("a joins");
    assert_eq!(a.assignment().len(), 4, "alone, a owns everything");
    for _ in 0..10 {
        a.next().await.expect("a record").expect("no error");
    }
    let (a_id, a_generation) = (a.member_id().to_owned(), a.generation());

    let mut b = GroupConsumer::join(&client, config())
        .await
        .expect("b joins");
    assert!(b.generation() > a_generation);
    assert!(
        b.assignment().is_empty(),
        "b's partitions wait until a lets go of them: {:?}",
        b.assignment()
    );

    // a's generation is gone: a commit from it is fenced.
    let stale = admin
        .commit_offsets(
            "pair",
            Some((&a_id, a_generation)),
            &BTreeMap::from([(TopicPartition::new("split", 0), 1)]),
        )
        .await
        .expect_err("stale commit refused");
    assert_eq!(stale.code(), Some(ErrorCode::StaleGeneration), "{stale}");

    // a's own commit learns of the rebalance and commits what it kept under the new generation.
    a.commit().await.expect("commit after rebalance");
    assert_eq!(a.generation(), b.generation());
    // a's next heartbeat shows it let go; then b gets its half.
    a.heartbeat().await.expect("a heartbeats");
    b.heartbeat().await.expect("b heartbeats");
    assert_eq!(b.assignment().len(), 2);
    let a_parts: BTreeSet<_> = a.assignment().into_iter().collect();
    let b_parts: BTreeSet<_> = b.assignment().into_iter().collect();
    assert_eq!(a_parts.len(), 2);
    assert!(a_parts.is_disjoint(&b_parts));
    assert_eq!(a_parts.union(&b_parts).count(), 4);
    let committed = admin
        .fetch_committed("pair", &["split"])
        .await
        .expect("fetch");
    for tp in &a_parts {
        if let Some(&offset) = committed.get(tp) {
            assert_eq!(Some(offset), a.position(&tp.topic, tp.partition));
        }
    }

    // Outsiders may not reset while members are in.
    let busy = admin
        .reset_offsets("pair", Some("split"), weir_client::ResetTo::Earliest, false)
        .await
        .expect_err("reset refused while members are in");
    assert_eq!(busy.code(), Some(ErrorCode::GroupNotEmpty), "{busy}");

    let described = admin.describe_group("pair").await.expect("describe");
    assert_eq!(described.members.len(), 2);
    a.close().await.expect("a closes");
    b.close().await.expect("b closes");
    let groups = admin.list_groups().await.expect("list");
    // Listed only if something was committed (a group without members or offsets is gone).
    let members = groups
        .iter()
        .find(|g| g.group == "pair")
        .map_or(0, |g| g.members);
    assert_eq!(members, 0, "both left");
}

/// A committed offset the log no longer spans (past its end here, as after a topic was
/// recreated; below its start after retention) is treated as no commit: the member starts by
/// its `auto_offset_reset` instead of failing the partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_offset_outside_the_log_falls_back_to_the_reset_policy() {
    let (_dir, _broker, client) = broker_with_topic("short", 1, 10).await;
    let admin = client.admin();
    admin
        .commit_offsets(
            "stale",
            None,
            &BTreeMap::from([(TopicPartition::new("short", 0), 1000)]),
        )
        .await
        .expect("commit from outside a group without members");

    let config = GroupConfig {
        consumer: ConsumerConfig {
            follow: false,
            ..ConsumerConfig::default()
        },
        ..GroupConfig::new("stale", ["short"])
    };
    let mut member = GroupConsumer::join(&client, config).await.expect("join");
    let mut offsets = Vec::new();
    while let Some(record) = member.next().await {
        offsets.push(record.expect("no OFFSET_OUT_OF_RANGE").offset);
    }
    assert_eq!(
        offsets,
        (0..10).collect::<Vec<u64>>(),
        "earliest, by default"
    );
    member.close().await.expect("close");
    let committed = admin
        .fetch_committed("stale", &["short"])
        .await
        .expect("fetch");
    assert_eq!(committed[&TopicPartition::new("short", 0)], 10);
}
