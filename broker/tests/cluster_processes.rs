//! A real cluster on loopback: one controller and three brokers as separate `weir-broker`
//! processes. Placement lands where each strategy says; 100,000 keyed records produced through
//! one broker come back whole and in order per partition through another; with the
//! controller killed, produce and fetch go on while metadata changes fail with
//! CONTROLLER_UNAVAILABLE, and a restarted controller has everything; a killed broker's
//! partitions report unavailable with the owner named, the rest keep working, and its data is
//! there when it returns.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use weir_client::{
    Client, ClientError, ConsumerConfig, ErrorCode, NewTopic, Placement, ProducerConfig,
    ProducerRecord, TopicDescription,
};
use weir_testkit::{BrokerProcess, temp_data_dir, wait_until};

const BROKER: &str = env!("CARGO_BIN_EXE_weir-broker");
const LEASE_MS: &str = "2000";

/// Fields drop in order: brokers before the controller, so none logs a lost controller.
struct Cluster {
    brokers: Vec<BrokerProcess>,
    controller: BrokerProcess,
    dirs: Vec<tempfile::TempDir>,
    /// A client bootstrapped from the controller.
    via_controller: Client,
}

impl Cluster {
    /// A client bootstrapped from broker `i` (0-based).
    async fn client_of(&self, i: usize) -> Client {
        Client::connect(&self.brokers[i].host_port()).await.unwrap()
    }
}

/// Starts the controller and three brokers, and waits until the controller has all three.
async fn start_cluster() -> Cluster {
    let mut dirs = vec![temp_data_dir()];
    let controller = BrokerProcess::start(
        std::path::Path::new(BROKER),
        dirs[0].path(),
        &[
            "--role",
            "controller",
            "--node-id",
            "100",
            "--broker-lease-ms",
            LEASE_MS,
        ],
    );
    let controller_addr = controller.host_port();
    let mut brokers = Vec::new();
    for id in 1..=3 {
        dirs.push(temp_data_dir());
        let node = id.to_string();
        brokers.push(BrokerProcess::start(
            std::path::Path::new(BROKER),
            dirs[id].path(),
            &[
                "--role",
                "broker",
                "--node-id",
                &node,
                "--controller",
                &controller_addr,
            ],
        ));
    }
    let via_controller = Client::connect(&controller.host_port()).await.unwrap();
    wait_until("three brokers are alive", WAIT, || async {
        live_brokers(&via_controller).await == 3
    })
    .await;
    Cluster {
        controller,
        brokers,
        dirs,
        via_controller,
    }
}

/// How long any condition of these tests may take (a watchdog, not a timing assertion).
const WAIT: Duration = Duration::from_secs(20);

async fn live_brokers(client: &Client) -> usize {
    match client.admin().describe_cluster().await {
        Ok(cluster) => cluster.brokers.iter().filter(|b| b.alive).count(),
        Err(_) => 0,
    }
}

fn leaders(topic: &TopicDescription) -> Vec<u32> {
    topic.partitions.iter().map(|p| p.leader_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_and_three_brokers() {
    let mut cluster = start_cluster().await;
    let via_controller = cluster.via_controller.clone();
    let b1 = cluster.client_of(0).await;
    let b3 = cluster.client_of(2).await;

    // Placement, created through a broker (forwarded to the controller).
    let admin = b1.admin();
    let range = admin
        .create_topic(
            NewTopic::new("by-range")
                .partitions(12)
                .placement(Placement::Range)
                // Unreplicated: this test shows a dead owner's partitions unavailable.
                .replication_factor(1),
        )
        .await
        .unwrap();
    assert_eq!(leaders(&range), [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);
    let rr = admin
        .create_topic(
            NewTopic::new("by-rr")
                .partitions(12)
                .placement(Placement::RoundRobin),
        )
        .await
        .unwrap();
    assert_eq!(leaders(&rr), [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3]);
    let hash = admin
        .create_topic(NewTopic::new("orders").partitions(12))
        .await
        .unwrap();
    let mut per_broker = BTreeMap::new();
    for leader in leaders(&hash) {
        *per_broker.entry(leader).or_insert(0) += 1;
    }
    assert_eq!(
        per_broker.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3],
        "{per_broker:?}"
    );
    // Every node describes the same layout.
    let described = b3.admin().describe_topic("orders").await.unwrap();
    assert_eq!(leaders(&described), leaders(&hash));

    // 100,000 keyed records in through broker 1, out through broker 3.
    const RECORDS: usize = 100_000;
    let producer = b1.producer(ProducerConfig::default()).unwrap();
    let mut deliveries = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let record = ProducerRecord::new("orders")
            .key(format!("key-{}", i % 1000))
            .value(i.to_string());
        deliveries.push(producer.send(record).await.unwrap());
    }
    producer.flush().await.unwrap();
    for d in deliveries {
        d.await.expect("every record acknowledged");
    }
    let consumed = consume_all(&b3, "orders").await;
    assert_eq!(consumed.values().map(Vec::len).sum::<usize>(), RECORDS);
    let mut last_per_key: BTreeMap<String, usize> = BTreeMap::new();
    for records in consumed.values() {
        assert!(
            records.windows(2).all(|w| w[0].0 < w[1].0),
            "offsets in order"
        );
        for (_, key, value) in records {
            let value: usize = value.parse().unwrap();
            if let Some(&before) = last_per_key.get(key) {
                assert!(before < value, "records of {key} in order");
            }
            last_per_key.insert(key.clone(), value);
        }
    }
    let described = b1.admin().describe_topic("orders").await.unwrap();
    let total: u64 = described.partitions.iter().map(|p| p.high_watermark).sum();
    assert_eq!(
        total, RECORDS as u64,
        "describe reads every owner's offsets"
    );

    // The controller dies: data keeps flowing, metadata changes fail clearly.
    cluster.controller.kill();
    let producer = b3.producer(ProducerConfig::default()).unwrap();
    let d = producer
        .send(
            ProducerRecord::new("orders")
                .key("key-1")
                .value("during outage"),
        )
        .await
        .unwrap();
    d.await.expect("produce works without the controller");
    assert_eq!(
        consume_all(&b1, "orders")
            .await
            .values()
            .map(Vec::len)
            .sum::<usize>(),
        RECORDS + 1
    );
    let err = admin
        .create_topic(NewTopic::new("later").partitions(3))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ControllerUnavailable), "{err}");
    assert!(err.to_string().contains("controller"), "{err}");
    cluster.controller.restart();
    wait_until("the brokers are back with the controller", WAIT, || async {
        live_brokers(&via_controller).await == 3
    })
    .await;
    let listed = admin.list_topics().await.unwrap();
    assert_eq!(listed.len(), 3, "topics survive a controller restart");
    admin
        .create_topic(NewTopic::new("later").partitions(3))
        .await
        .expect("create works again");

    // A broker dies: its partitions are unavailable with the owner named; others work.
    let before = admin.describe_topic("by-range").await.unwrap();
    let producer = b1.producer(ProducerConfig::default()).unwrap();
    for p in 0..12 {
        send_to(&producer, "by-range", p, "before").await;
    }
    cluster.brokers[1].kill();
    wait_until("broker 2 is marked down", WAIT, || async {
        live_brokers(&via_controller).await == 2
    })
    .await;
    let described = admin.describe_topic("by-range").await.unwrap();
    for p in &described.partitions {
        assert_eq!(p.leader_alive, p.leader_id != 2, "{p:?}");
    }
    let producer = b1
        .producer(ProducerConfig {
            delivery_timeout: Duration::from_secs(2),
            ..ProducerConfig::default()
        })
        .unwrap();
    let on_dead = producer
        .send(ProducerRecord::new("by-range").partition(5).value("x"))
        .await
        .unwrap();
    let on_live = producer
        .send(ProducerRecord::new("by-range").partition(0).value("x"))
        .await
        .unwrap();
    on_live
        .await
        .expect("partitions on live brokers keep working");
    let err: ClientError = on_dead.await.unwrap_err();
    assert!(err.is_retriable(), "{err}");

    // Reading the topic now: the live brokers' partitions to their end, and one error naming
    // the owner for each of broker 2's.
    let mut consumer = b1.consumer(ConsumerConfig {
        follow: false,
        ..Default::default()
    });
    consumer
        .assign_topic("by-range")
        .await
        .expect("assigning works with an owner down");
    let (mut records, mut errors) = (0, Vec::new());
    let mut stream = consumer.stream();
    while let Some(item) = stream.next().await {
        match item {
            Ok(record) => {
                assert!(!(4..8).contains(&record.partition), "{record:?}");
                records += 1;
            }
            Err(error) => errors.push(error),
        }
    }
    assert_eq!(
        records, 9,
        "8 live partitions: one record each, and the one produced since"
    );
    assert_eq!(errors.len(), 4, "{errors:?}");
    for error in &errors {
        assert_eq!(
            error.code(),
            Some(ErrorCode::PartitionUnavailable),
            "{error}"
        );
        assert!(error.to_string().contains("broker 2"), "{error}");
    }
    // A tail (follow, from the end) started now sees new records of the live partitions now,
    // and of broker 2's once it is back.
    let mut tail = b1.consumer(ConsumerConfig {
        follow: true,
        ..Default::default()
    });
    tail.assign_topic("by-range").await.unwrap();
    tail.seek_topic("by-range", weir_client::Seek::End)
        .await
        .expect("seeking to the end works with an owner down");
    assert_eq!(
        tail.position("by-range", 5),
        None,
        "not known until broker 2 is back"
    );
    let mut tail_stream = tail.stream();
    send_to(&producer, "by-range", 0, "tail-live").await;
    let record = next_record(
        "the tail sees a live partition's new record",
        tail_stream.next(),
    )
    .await;
    assert_eq!(
        (record.partition, record.value.as_deref()),
        (0, Some(&b"tail-live"[..]))
    );

    // A group member that joins now reads the live partitions, and broker 2's once it is back.
    let mut member = weir_client::GroupConsumer::join(
        &b1,
        weir_client::GroupConfig::new("during-outage", ["by-range"]),
    )
    .await
    .expect("joining works with an owner down");
    assert_eq!(member.assignment().len(), 12);
    // The live partitions hold 10 records now (the tail's record came since).
    let mut read = std::collections::BTreeSet::new();
    while read.len() < 10 {
        // No error: broker 2's partitions wait for it.
        let record = next_record("the live partitions' records", member.next()).await;
        read.insert((record.partition, record.offset));
    }

    cluster.brokers[1].restart();
    wait_until("broker 2 is back", WAIT, || async {
        live_brokers(&via_controller).await == 3
    })
    .await;
    while read.len() < 14 {
        let record = next_record("broker 2's partitions, now it is back", member.next()).await;
        read.insert((record.partition, record.offset));
    }
    assert_eq!(read.iter().filter(|(p, _)| (4..8).contains(p)).count(), 4);
    member.close().await.expect("close");
    let after = admin.describe_topic("by-range").await.unwrap();
    for p in 4..8 {
        assert_eq!(
            after.partitions[p].high_watermark,
            before.partitions[p].high_watermark + 1,
            "broker 2's partitions come back with their data"
        );
    }
    wait_until("the tail has found broker 2's end", WAIT, || async {
        tail.position("by-range", 5).is_some()
    })
    .await;
    send_to(&producer, "by-range", 5, "tail-back").await;
    let record = next_record("the tail sees broker 2's new record", tail_stream.next()).await;
    assert_eq!(
        (record.partition, record.value.as_deref()),
        (5, Some(&b"tail-back"[..]))
    );
}

/// Produces `value` to `partition` of `topic` and waits for its acknowledgement.
async fn send_to(producer: &weir_client::Producer, topic: &str, partition: u32, value: &str) {
    producer
        .send(
            ProducerRecord::new(topic)
                .partition(partition)
                .value(value.to_owned()),
        )
        .await
        .unwrap()
        .await
        .expect("acknowledged");
}

/// The next record a following consumer yields (`next`), within [`WAIT`]; no end, no error.
async fn next_record(
    what: &str,
    next: impl std::future::Future<Output = Option<Result<weir_client::ConsumerRecord, ClientError>>>,
) -> weir_client::ConsumerRecord {
    tokio::time::timeout(WAIT, next)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("follow: no end")
        .expect("no error")
}

/// (offset, key, value) per partition, reading every partition from its owner.
async fn consume_all(client: &Client, topic: &str) -> BTreeMap<u32, Vec<(u64, String, String)>> {
    let mut consumer = client.consumer(ConsumerConfig {
        follow: false,
        ..Default::default()
    });
    consumer.assign_topic(topic).await.expect("assign");
    let mut stream = consumer.stream();
    let mut out: BTreeMap<u32, Vec<(u64, String, String)>> = BTreeMap::new();
    while let Some(record) = stream.next().await {
        let record = record.expect("a valid record");
        let text = |b: &Option<bytes::Bytes>| {
            String::from_utf8_lossy(b.as_deref().unwrap_or_default()).into_owned()
        };
        out.entry(record.partition).or_default().push((
            record.offset,
            text(&record.key),
            text(&record.value),
        ));
    }
    out
}

/// A free loopback port (bound, read, released): for a listener whose address a node must
/// advertise before it starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Kafka-style listeners: a client that came in through a node's external listener is told
/// every broker's external addresses, one on the internal listener the internal ones. The
/// internal addresses here do not resolve, so producing and consuming through the external
/// listener works only if every address that client was given is an external one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_listeners_hand_out_external_addresses() {
    const UNREACHABLE: &str = "no-such-host.invalid:9";
    let dirs = [temp_data_dir(), temp_data_dir()];
    let controller = BrokerProcess::start(
        std::path::Path::new(BROKER),
        dirs[0].path(),
        &[
            "--role",
            "controller",
            "--node-id",
            "100",
            "--external-listen",
            "127.0.0.1:0",
        ],
    );
    let data_port = format!("127.0.0.1:{}", free_port());
    let broker = BrokerProcess::start_on(
        std::path::Path::new(BROKER),
        dirs[1].path(),
        ("127.0.0.1:0", &data_port),
        &[
            "--role",
            "broker",
            "--node-id",
            "1",
            "--controller",
            &controller.host_port(),
            "--advertised",
            UNREACHABLE,
            "--data-advertised",
            UNREACHABLE,
            "--external-listen",
            "127.0.0.1:0",
            "--external-data-advertised",
            &data_port,
        ],
    );
    let external = broker
        .external_addr
        .expect("the ready line names the external listener");

    // Inside: the internal pair; outside (through either node): the external pair.
    let metadata = |addr: String| async move {
        let mut grpc =
            weir_client::proto::weir_client::WeirClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
        grpc.metadata(weir_client::proto::MetadataRequest::default())
            .await
            .unwrap()
            .into_inner()
    };
    let inside = metadata(broker.host_port()).await;
    assert_eq!(inside.brokers.len(), 1, "{inside:?}");
    assert_eq!(inside.brokers[0].address, UNREACHABLE);
    assert_eq!(inside.brokers[0].data_address, UNREACHABLE);
    for outside_addr in [
        external.to_string(),
        controller.external_addr.unwrap().to_string(),
    ] {
        let outside = metadata(outside_addr).await;
        assert_eq!(outside.brokers[0].address, external.to_string());
        assert_eq!(outside.brokers[0].data_address, data_port);
    }

    // A client bootstrapped from outside does everything through external addresses.
    let client = Client::connect(&controller.external_addr.unwrap().to_string())
        .await
        .unwrap();
    let created = client
        .admin()
        .create_topic(NewTopic::new("outside").partitions(3))
        .await
        .unwrap();
    assert!(
        created
            .partitions
            .iter()
            .all(|p| p.leader_address == external.to_string()),
        "{created:?}"
    );
    produce_numbered(&client, "outside", 0..300).await;
    let consumed = consume_all(&client, "outside").await;
    assert_eq!(consumed.values().map(Vec::len).sum::<usize>(), 300);
}

/// Reads a group's partitions to the end of the data and closes (committing); (partition,
/// offset, value) of every record.
async fn group_read(
    client: &Client,
    group: &str,
    topic: &str,
    limit: usize,
) -> Vec<(u32, u64, u64)> {
    let config = weir_client::GroupConfig {
        consumer: ConsumerConfig {
            follow: false,
            ..ConsumerConfig::default()
        },
        ..weir_client::GroupConfig::new(group, [topic])
    };
    let mut member = weir_client::GroupConsumer::join(client, config)
        .await
        .expect("join");
    let mut read = Vec::new();
    while read.len() < limit {
        let Some(record) = member.next().await else {
            break;
        };
        let record = record.expect("a record");
        let value = std::str::from_utf8(record.value.as_deref().unwrap_or_default())
            .unwrap()
            .parse()
            .unwrap();
        read.push((record.partition, record.offset, value));
    }
    member.close().await.expect("commit and leave");
    read
}

async fn produce_numbered(client: &Client, topic: &str, numbers: std::ops::Range<u64>) {
    // acks=all: on a replicated topic (the default with three brokers) a record is readable
    // once the in-sync replicas hold it; acknowledged then, it is readable at once.
    let producer = client
        .producer(ProducerConfig {
            acks: weir_client::Acks::All,
            ..ProducerConfig::default()
        })
        .unwrap();
    let mut deliveries = Vec::new();
    for i in numbers {
        let record = ProducerRecord::new(topic)
            .key(format!("key-{}", i % 50))
            .value(i.to_string());
        deliveries.push(producer.send(record).await.unwrap());
    }
    for d in deliveries {
        d.await.expect("acknowledged");
    }
}

/// Across the cluster: a group that committed, stopped and came back after more records were
/// produced continues exactly after its commits; `reset --to time:T` then replays from the
/// first record at or after T in every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commits_resume_and_replay_from_a_time_across_brokers() {
    let cluster = start_cluster().await;
    let b1 = cluster.client_of(0).await;
    let b2 = cluster.client_of(1).await;
    let created = b1
        .admin()
        .create_topic(NewTopic::new("ledger").partitions(6))
        .await
        .unwrap();
    assert!(
        leaders(&created)
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1
    );

    produce_numbered(&b1, "ledger", 0..600).await;
    let first = group_read(&b2, "audit", "ledger", 250).await;
    assert_eq!(first.len(), 250);

    // Everything after T is the second batch.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(50)).await;
    produce_numbered(&b1, "ledger", 600..1000).await;

    // Resume, through another broker: exactly what the first run did not read.
    let second = group_read(&b1, "audit", "ledger", usize::MAX).await;
    let key = |r: &(u32, u64, u64)| (r.0, r.1);
    let first_set: std::collections::BTreeSet<_> = first.iter().map(key).collect();
    let second_set: std::collections::BTreeSet<_> = second.iter().map(key).collect();
    assert_eq!(second_set.len(), second.len(), "nothing read twice");
    assert!(
        first_set.is_disjoint(&second_set),
        "resumed after the commits"
    );
    assert_eq!(first.len() + second.len(), 1000, "and nothing skipped");

    // Replay from T: exactly the second batch, from its first record in each partition.
    let reset = b2
        .admin()
        .reset_offsets(
            "audit",
            Some("ledger"),
            weir_client::ResetTo::Time(t),
            false,
        )
        .await
        .expect("reset a group without members");
    assert_eq!(reset.len(), 6);
    let replay = group_read(&b2, "audit", "ledger", usize::MAX).await;
    let mut values: Vec<u64> = replay.iter().map(|r| r.2).collect();
    values.sort_unstable();
    assert_eq!(values, (600..1000).collect::<Vec<_>>());
}

/// Replication's controller side over real processes: an RF 3, min ISR 2 topic is placed on
/// three distinct brokers, all in sync, epoch 1, and every replica holds its partition; the
/// leader's broker is SIGKILLed, and once its lease lapsed a surviving broker describes
/// another leader in epoch 2 with an ISR without the dead broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leader_is_fenced_and_replaced_from_the_isr() {
    let mut cluster = start_cluster().await;
    let b1 = cluster.client_of(0).await;
    let admin = b1.admin();
    let created = admin
        .create_topic(
            NewTopic::new("replicated")
                .partitions(3)
                .replication_factor(3)
                .min_insync_replicas(2),
        )
        .await
        .unwrap();
    assert_eq!(created.config.replication_factor, Some(3));
    assert_eq!(created.config.min_insync_replicas, Some(2));
    let described = admin.describe_topic("replicated").await.unwrap();
    for p in &described.partitions {
        let mut replicas = p.replicas.clone();
        replicas.sort();
        assert_eq!(replicas, [1, 2, 3], "{p:?}");
        assert_eq!(p.isr, [1, 2, 3], "{p:?}");
        assert_eq!((p.leader_epoch, p.leader_id), (1, p.replicas[0]), "{p:?}");
        assert!(p.leader_alive, "{p:?}");
    }
    // Every replica holds a local partition directory, followers too.
    for (i, dir) in cluster.dirs[1..].iter().enumerate() {
        let node = i as u32 + 1;
        for p in &described.partitions {
            let path = dir
                .path()
                .join("logs")
                .join(format!("replicated-{}", p.partition));
            wait_until("the replica's partition exists", WAIT, || {
                let path = path.clone();
                async move { path.is_dir() }
            })
            .await;
            assert!(p.replicas.contains(&node));
        }
    }

    let dead = described.partitions[0].leader_id;
    cluster.brokers[dead as usize - 1].kill();
    let survivor = if dead == 1 { 1 } else { 0 };
    let via_survivor = cluster.client_of(survivor).await;
    wait_until("another replica leads partition 0", WAIT, || async {
        match via_survivor.admin().describe_topic("replicated").await {
            Ok(t) => t.partitions[0].leader_id != dead && t.partitions[0].leader_epoch == 2,
            Err(_) => false,
        }
    })
    .await;
    let after = via_survivor
        .admin()
        .describe_topic("replicated")
        .await
        .unwrap();
    for p in &after.partitions {
        assert!(!p.isr.contains(&dead), "{p:?}");
        assert_eq!(p.isr.len(), 2, "{p:?}");
        assert_ne!(p.leader_id, dead, "{p:?}");
        assert!(p.isr.contains(&p.leader_id), "{p:?}");
        assert!(p.leader_alive, "{p:?}");
        let before = &described.partitions[p.partition as usize];
        let moved = before.leader_id == dead;
        assert_eq!(p.leader_epoch, if moved { 2 } else { 1 }, "{p:?}");
        assert_eq!(p.replicas, before.replicas, "replicas never move");
    }
}

/// Rendezvous placement: with a fourth broker, the same topics' partitions either stay where
/// three brokers put them or move to the new broker, about a quarter of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_broker_takes_about_a_quarter_of_hash_placed_partitions() {
    let mut cluster = start_cluster().await;
    let admin_client = cluster.via_controller.clone();
    let admin = admin_client.admin();
    let names: Vec<String> = (0..10).map(|i| format!("placed-{i}")).collect();
    let mut three = Vec::new();
    for name in &names {
        let topic = admin
            .create_topic(NewTopic::new(name.as_str()).partitions(12))
            .await
            .unwrap();
        three.push(leaders(&topic));
        admin.delete_topic(name).await.unwrap();
    }

    let dir = temp_data_dir();
    cluster.brokers.push(BrokerProcess::start(
        std::path::Path::new(BROKER),
        dir.path(),
        &[
            "--role",
            "broker",
            "--node-id",
            "4",
            "--controller",
            &cluster.controller.host_port(),
        ],
    ));
    cluster.dirs.push(dir);
    wait_until("four brokers are alive", WAIT, || async {
        live_brokers(&admin_client).await == 4
    })
    .await;

    let (mut moved, mut total) = (0, 0);
    for (name, before) in names.iter().zip(&three) {
        let topic = admin
            .create_topic(NewTopic::new(name.as_str()).partitions(12))
            .await
            .unwrap();
        for (was, now) in before.iter().zip(leaders(&topic)) {
            total += 1;
            if *was != now {
                assert_eq!(now, 4, "{name}: a partition moves only to the new broker");
                moved += 1;
            }
        }
    }
    let share = f64::from(moved) / f64::from(total);
    eprintln!("a fourth broker took {moved} of {total} partitions ({share:.2})");
    assert!(
        moved > 0 && share <= 0.35,
        "about a quarter should move, {moved}/{total} did"
    );
}
