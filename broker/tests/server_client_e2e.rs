//! End to end through the client library: the real `weir-broker` binary, `Producer` and
//! `Consumer` from weir-client, over loopback. The broker is restarted (SIGTERM) in the middle
//! of producing; nothing acknowledged may be missing afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use weir_client::{
    Client, ConsumerConfig, ConsumerRecord, NewTopic, PartitionerKind, ProducerConfig,
    ProducerRecord, RecordMetadata, Transport,
};
use weir_testkit::{BrokerProcess, temp_data_dir};

const BROKER: &str = env!("CARGO_BIN_EXE_weir-broker");

/// Kafka's default partitioner, computed here from the murmur2 crate, not through the client:
/// `toPositive(murmur2(key)) % partitions`.
fn kafka_partition(key: &[u8], partitions: u32) -> u32 {
    let hash = murmur2::murmur2(key, murmur2::KAFKA_SEED) as i32;
    (hash & 0x7fff_ffff) as u32 % partitions
}

/// Everything in the topic, read with a non-following consumer, grouped by partition.
async fn consume_all(client: &Client, topic: &str) -> BTreeMap<u32, Vec<ConsumerRecord>> {
    consume_over(client, topic, Transport::Auto).await
}

async fn consume_over(
    client: &Client,
    topic: &str,
    transport: Transport,
) -> BTreeMap<u32, Vec<ConsumerRecord>> {
    let mut consumer = client.consumer(ConsumerConfig {
        follow: false,
        transport,
        ..Default::default()
    });
    consumer.assign_topic(topic).await.expect("assign");
    let mut stream = consumer.stream();
    let mut by_partition: BTreeMap<u32, Vec<ConsumerRecord>> = BTreeMap::new();
    while let Some(record) = stream.next().await {
        let record = record.expect("a valid record");
        by_partition
            .entry(record.partition)
            .or_default()
            .push(record);
    }
    by_partition
}

fn text(bytes: &Option<bytes::Bytes>) -> &str {
    std::str::from_utf8(bytes.as_deref().expect("present")).expect("utf-8")
}

/// Sends `count` records `(key(i), "v{i}")`; returns each record's delivery. With
/// `restart_after`, a thread restarts the broker gracefully (SIGTERM, then the same address)
/// once that many records were sent, while sending goes on: batches are in flight on the
/// produce stream when the broker stops, and the producer must ride it out.
async fn produce(
    client: &Client,
    broker: &mut BrokerProcess,
    topic: &str,
    count: usize,
    key: impl Fn(usize) -> Option<String>,
    restart_after: Option<usize>,
) -> Vec<RecordMetadata> {
    let producer = client
        .producer(ProducerConfig {
            linger: Duration::from_millis(2),
            // Small batches: many of them, so batching, rotation and retries all get exercised.
            batch_bytes: 16 << 10,
            ..Default::default()
        })
        .expect("producer");
    let mut deliveries = Vec::with_capacity(count);
    let mut broker = Some(broker);
    std::thread::scope(|scope| {
        let mut restarter = None;
        let handle = tokio::runtime::Handle::current();
        for i in 0..count {
            if restart_after == Some(i)
                && let Some(broker) = broker.take()
            {
                restarter = Some(scope.spawn(move || {
                    assert!(
                        broker.terminate_within(Duration::from_secs(60)).success(),
                        "graceful exit with batches in flight"
                    );
                    broker.restart();
                }));
            }
            let mut record = ProducerRecord::new(topic).value(format!("v{i}"));
            if let Some(k) = key(i) {
                record = record.key(k);
            }
            let sent = tokio::task::block_in_place(|| handle.block_on(producer.send(record)));
            deliveries.push(sent.expect("buffered"));
        }
        if let Some(restarter) = restarter {
            restarter.join().expect("restart thread");
        }
    });
    producer.flush().await.expect("flush");
    let mut acked = Vec::with_capacity(count);
    for (i, d) in deliveries.into_iter().enumerate() {
        acked.push(
            d.await
                .unwrap_or_else(|e| panic!("record {i} not acknowledged: {e}")),
        );
    }
    acked
}

/// The checks every partitioner shares: each record exactly once, where its delivery said,
/// offsets dense from 0, and per partition in send order.
fn check_round_trip(
    acked: &[RecordMetadata],
    consumed: &BTreeMap<u32, Vec<ConsumerRecord>>,
) -> BTreeMap<usize, u32> {
    let mut partition_of = BTreeMap::new();
    let total: usize = consumed.values().map(Vec::len).sum();
    assert_eq!(
        total,
        acked.len(),
        "every acknowledged record, nothing else"
    );
    for (&partition, records) in consumed {
        let mut last_sent = None;
        for (expected_offset, r) in records.iter().enumerate() {
            assert_eq!(
                r.offset, expected_offset as u64,
                "dense offsets in {partition}"
            );
            let i: usize = text(&r.value)[1..].parse().expect("v{i}");
            assert!(
                last_sent < Some(i),
                "partition {partition} out of send order at {i}"
            );
            last_sent = Some(i);
            assert_eq!(
                (acked[i].partition, acked[i].offset),
                (partition, r.offset),
                "record {i} is where its delivery said"
            );
            assert!(
                partition_of.insert(i, partition).is_none(),
                "record {i} twice"
            );
        }
    }
    partition_of
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_round_trip_through_a_restart_with_kafkas_hash_partitions() {
    const RECORDS: usize = 200_000;
    const PARTITIONS: u32 = 6;
    let dir = temp_data_dir();
    let mut broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let client = Client::connect(&broker.host_port()).await.expect("connect");
    client
        .admin()
        .create_topic(
            NewTopic::new("events")
                .partitions(PARTITIONS)
                .partitioner(PartitionerKind::Hash),
        )
        .await
        .expect("create");
    let key = |i: usize| Some(format!("aggregate-{}", i % 5000));
    let acked = produce(
        &client,
        &mut broker,
        "events",
        RECORDS,
        key,
        Some(RECORDS / 2),
    )
    .await;
    let consumed = consume_all(&client, "events").await;
    let partition_of = check_round_trip(&acked, &consumed);
    for (i, partition) in partition_of {
        let k = key(i).expect("keyed");
        assert_eq!(
            partition,
            kafka_partition(k.as_bytes(), PARTITIONS),
            "key {k} is not where Kafka's partitioner puts it"
        );
    }
    for records in consumed.values() {
        for r in records {
            let i: usize = text(&r.value)[1..].parse().expect("v{i}");
            assert_eq!(text(&r.key), key(i).expect("keyed"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_and_round_robin_topics_place_records_by_their_partitioner() {
    const RECORDS: usize = 20_000;
    let dir = temp_data_dir();
    let mut broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let client = Client::connect(&broker.host_port()).await.expect("connect");
    let admin = client.admin();
    admin
        .create_topic(
            NewTopic::new("ranged")
                .partitioner(PartitionerKind::Range)
                .split_keys(["g", "p"]),
        )
        .await
        .expect("create range topic");
    admin
        .create_topic(
            NewTopic::new("spread")
                .partitions(4)
                .partitioner(PartitionerKind::RoundRobin),
        )
        .await
        .expect("create round-robin topic");

    let letters = b"abcdefghijklmnopqrstuvwxyz";
    let range_key = |i: usize| Some(format!("{}-{i}", letters[i % 26] as char));
    let acked = produce(&client, &mut broker, "ranged", RECORDS, range_key, None).await;
    let consumed = consume_all(&client, "ranged").await;
    for (i, partition) in check_round_trip(&acked, &consumed) {
        let k = range_key(i).expect("keyed");
        // Split keys g and p: [..g) -> 0, [g..p) -> 1, [p..) -> 2.
        let expected = ["g", "p"]
            .iter()
            .filter(|s| s.as_bytes() <= k.as_bytes())
            .count() as u32;
        assert_eq!(partition, expected, "key {k}");
    }

    let acked = produce(&client, &mut broker, "spread", RECORDS, |_| None, None).await;
    let consumed = consume_all(&client, "spread").await;
    check_round_trip(&acked, &consumed);
    assert_eq!(consumed.len(), 4, "keyless records reach every partition");
    for (partition, records) in &consumed {
        assert!(
            records.len() > RECORDS / 16,
            "partition {partition} got only {} of {RECORDS}",
            records.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_reads_the_same_records_over_the_data_port_and_grpc() {
    let dir = temp_data_dir();
    let mut broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let client = Client::connect(&broker.host_port()).await.expect("connect");
    client
        .admin()
        .create_topic(NewTopic::new("both").partitions(3))
        .await
        .expect("create");
    let acked = produce(
        &client,
        &mut broker,
        "both",
        30_000,
        |i| Some(format!("k{}", i % 97)),
        None,
    )
    .await;
    let over_port = consume_over(&client, "both", Transport::DataPort).await;
    let over_grpc = consume_over(&client, "both", Transport::Grpc).await;
    check_round_trip(&acked, &over_port);
    assert_eq!(over_port, over_grpc, "both wires yield identical records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_batch_appends_atomically_only_while_its_conditions_hold() {
    use weir_client::{AppendConditions, ClientError};
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let client = Client::connect(&broker.host_port()).await.expect("connect");
    client
        .admin()
        .create_topic(NewTopic::new("accounts").partitions(2).key_index(true))
        .await
        .expect("create");
    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");
    let events = |names: &[&str]| -> Vec<ProducerRecord> {
        names
            .iter()
            .map(|n| {
                ProducerRecord::new("accounts")
                    .key("acct-42")
                    .value(n.to_string())
            })
            .collect()
    };
    let first = producer
        .send_batch(
            events(&["opened", "deposited 10", "deposited 5"]),
            AppendConditions::new().key_at("acct-42", None),
        )
        .await
        .expect("a new key");
    assert_eq!((first.base_offset, first.last_offset), (0, 2));
    match producer
        .send_batch(
            events(&["opened"]),
            AppendConditions::new().key_at("acct-42", None),
        )
        .await
    {
        Err(ClientError::Conflict { actual_offset, .. }) => assert_eq!(actual_offset, Some(2)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let second = producer
        .send_batch(
            events(&["withdrew 3"]),
            AppendConditions::new().key_at("acct-42", Some(2)),
        )
        .await
        .expect("the condition holds");
    assert_eq!(second.base_offset, 3);
    assert_eq!(second.partition, first.partition, "one key, one partition");
    let consumed = consume_all(&client, "accounts").await;
    let values: Vec<String> = consumed[&first.partition]
        .iter()
        .map(|r| text(&r.value).to_owned())
        .collect();
    assert_eq!(
        values,
        ["opened", "deposited 10", "deposited 5", "withdrew 3"]
    );
    let mixed = vec![
        ProducerRecord::new("accounts").partition(0).key("a"),
        ProducerRecord::new("accounts").partition(1).key("b"),
    ];
    assert!(
        producer
            .send_batch(mixed, AppendConditions::new())
            .await
            .is_err(),
        "one batch goes to one partition"
    );
}
