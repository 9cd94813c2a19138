//! The metrics listener's values over real processes, scraped as Prometheus would (HTTP GET
//! of `/metrics`, the text format parsed here): a single node's traffic, offsets, sync
//! histograms and consumer-group lag match what the test produced, consumed and committed;
//! on a replicated cluster, the leader reports a follower that stopped as under-replicated and
//! counts the in-sync set shrink.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use weir_client::{
    Acks, Client, ConsumerConfig, NewTopic, ProducerConfig, ProducerRecord, TopicPartition,
};
use weir_testkit::{BrokerProcess, temp_data_dir, wait_until};

#[path = "support/http.rs"]
mod http;
#[path = "support/replicated.rs"]
mod replicated;

/// `GET path` of the metrics listener; the test fails if it does not answer.
fn get(addr: SocketAddr, path: &str) -> http::Response {
    http::get(addr, path).expect("the metrics listener answers")
}
use replicated::{BROKER, Cluster};

/// A watchdog for conditions, not a timing assertion.
const WAIT: Duration = Duration::from_secs(30);

/// Every sample of a scrape: `name{labels}` -> value.
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let http::Response { status, body } = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> Option<f64> {
    samples.get(series).copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_reports_what_was_produced_consumed_and_committed() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let metrics = broker
        .metrics_addr
        .expect("the metrics listener is on by default");
    assert_eq!(get(metrics, "/healthz").status, 200);
    // Ready once it serves (the ready line comes just before the servers start).
    wait_until("the broker is ready", WAIT, || async {
        let ready = get(metrics, "/readyz");
        ready.status == 200 && ready.body == "ready\n"
    })
    .await;

    let client = Client::connect(&broker.host_port()).await.unwrap();
    client
        .admin()
        .create_topic(NewTopic::new("scraped").partitions(1))
        .await
        .unwrap();
    let producer = client
        .producer(ProducerConfig {
            acks: Acks::Durable,
            ..ProducerConfig::default()
        })
        .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..1000u32 {
        let record = ProducerRecord::new("scraped").value(format!("record-{i:04}"));
        deliveries.push(producer.send(record).await.unwrap());
    }
    producer.flush().await.unwrap();
    for d in deliveries {
        d.await.unwrap();
    }
    let mut consumer = client.consumer(ConsumerConfig {
        follow: false,
        ..Default::default()
    });
    consumer.assign_topic("scraped").await.unwrap();
    let consumed = consumer.stream().count().await;
    assert_eq!(consumed, 1000);
    let mut offsets = BTreeMap::new();
    offsets.insert(TopicPartition::new("scraped", 0), 400);
    client
        .admin()
        .commit_offsets("auditors", None, &offsets)
        .await
        .unwrap();

    let t = r#"{topic="scraped"}"#;
    let p = r#"{topic="scraped",partition="0"}"#;
    let lag = r#"weir_consumer_group_lag{group="auditors",topic="scraped",partition="0"}"#;
    // The lag needs the 5 s copy of the controller's commits.
    wait_until("the scrape shows the group's lag", WAIT, || async {
        value(&scrape(metrics), lag) == Some(600.0)
    })
    .await;
    let s = scrape(metrics);
    assert_eq!(
        value(&s, &format!("weir_topic_records_in_total{t}")),
        Some(1000.0)
    );
    assert_eq!(
        value(&s, &format!("weir_topic_records_out_total{t}")),
        Some(1000.0)
    );
    let bytes_in = value(&s, &format!("weir_topic_bytes_in_total{t}")).unwrap();
    assert_eq!(
        value(&s, &format!("weir_topic_bytes_out_total{t}")),
        Some(bytes_in)
    );
    assert_eq!(
        value(&s, &format!("weir_partition_high_watermark{p}")),
        Some(1000.0)
    );
    assert_eq!(
        value(&s, &format!("weir_partition_log_end_offset{p}")),
        Some(1000.0)
    );
    assert_eq!(
        value(&s, &format!("weir_partition_log_start_offset{p}")),
        Some(0.0)
    );
    assert_eq!(
        value(&s, &format!("weir_partition_size_bytes{p}")),
        Some(bytes_in),
        "the log holds exactly the batches produced"
    );
    assert_eq!(
        value(
            &s,
            r#"weir_consumer_group_committed_offset{group="auditors",topic="scraped",partition="0"}"#
        ),
        Some(400.0)
    );
    let produces = value(
        &s,
        r#"weir_request_duration_seconds_count{rpc="produce",transport="grpc"}"#,
    )
    .unwrap();
    assert!(produces >= 1.0, "{produces}");
    // acks=durable: every produce waited for a sync, and syncs ran.
    assert_eq!(
        value(&s, "weir_produce_sync_duration_seconds_count"),
        Some(produces)
    );
    assert!(value(&s, "weir_storage_fsync_duration_seconds_count").unwrap() >= 1.0);
    assert_eq!(
        value(
            &s,
            r#"weir_request_duration_seconds_count{rpc="create_topic",transport="grpc"}"#
        ),
        Some(1.0),
        "every unary RPC is timed"
    );
    assert!(
        value(&s, "weir_grpc_connections_active").is_some_and(|n| n >= 1.0),
        "this test's client holds a gRPC connection"
    );
    assert_eq!(value(&s, "weir_leader_partitions"), Some(1.0));
    assert_eq!(value(&s, "weir_under_replicated_partitions"), Some(0.0));
    assert_eq!(value(&s, "weir_cluster_brokers_alive"), Some(1.0));
    assert_eq!(value(&s, "weir_controller_reachable"), Some(1.0));
    assert_eq!(value(&s, "weir_produce_in_flight_bytes"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_reports_a_stopped_follower_as_under_replicated() {
    let mut cluster = Cluster::start("3000", &["--replica-lag-time-max-ms", "1500"]);
    let client = cluster.client(WAIT).await;
    client
        .admin()
        .create_topic(
            NewTopic::new("watched")
                .partitions(1)
                .replication_factor(3)
                .min_insync_replicas(2),
        )
        .await
        .unwrap();
    let described = client.admin().describe_topic("watched").await.unwrap();
    let leader = described.partitions[0].leader_id;
    let follower = described.partitions[0]
        .replicas
        .iter()
        .copied()
        .find(|&b| b != leader)
        .unwrap();
    let metrics = cluster.broker(leader).metrics_addr.unwrap();
    let producer = client
        .producer(ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        })
        .unwrap();
    for i in 0..100u32 {
        producer
            .send(ProducerRecord::new("watched").value(i.to_string()))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let p = r#"{topic="watched",partition="0"}"#;
    let lag_of = |b: u32| {
        format!(r#"weir_replica_lag_records{{topic="watched",partition="0",replica="{b}"}}"#)
    };
    wait_until("the followers caught up", WAIT, || async {
        let s = scrape(metrics);
        value(&s, &format!("weir_partition_in_sync_replicas{p}")) == Some(3.0)
            && value(&s, &lag_of(follower)) == Some(0.0)
    })
    .await;
    let s = scrape(metrics);
    assert_eq!(value(&s, "weir_under_replicated_partitions"), Some(0.0));
    assert_eq!(value(&s, &format!("weir_partition_replicas{p}")), Some(3.0));

    // The follower stops; the leader keeps taking acks=all records (the other follower is
    // in sync) and shrinks the in-sync set.
    tokio::task::block_in_place(|| cluster.broker(follower).pause());
    for i in 100..200u32 {
        producer
            .send(ProducerRecord::new("watched").value(i.to_string()))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    wait_until(
        "the leader reports the partition under-replicated",
        WAIT,
        || async {
            let s = scrape(metrics);
            value(&s, "weir_under_replicated_partitions") == Some(1.0)
                && value(&s, &format!("weir_partition_in_sync_replicas{p}")) == Some(2.0)
                // Counted when the controller's answer reaches the leader, which may come
                // after the new metadata.
                && value(&s, "weir_isr_shrinks_total").is_some_and(|n| n >= 1.0)
        },
    )
    .await;
    let s = scrape(metrics);
    assert!(
        value(&s, &lag_of(follower)).unwrap() >= 100.0,
        "the stopped follower is at least the 100 records behind that it missed"
    );
    tokio::task::block_in_place(|| cluster.broker(follower).resume());
}
