//! A real Prometheus scraping a real broker: the Debian `prometheus` binary, configured with the
//! broker's metrics listener as its only target (scrape interval 1 s), storing into a temp dir,
//! and asked through its HTTP API, as a user's monitoring would be.
//!
//! What it proves:
//! - what Prometheus stored equals what the test did: the records produced
//!   (`weir_topic_records_in_total`) and consumed (`weir_topic_records_out_total`) per topic,
//!   each partition's high watermark as the producer's acknowledgements put it, bytes in equal to
//!   the bytes on disk and to the bytes consumed, one produce-latency observation per appended
//!   batch, the partitions led; and, once the broker exports it, each partition's
//!   consumer-group lag and committed offset after a commit the test chose (skipped with a
//!   message while `weir_consumer_group_lag` is absent);
//! - every query of the Grafana dashboard (`docker/grafana/weir-dashboard.json`) is valid
//!   PromQL that this Prometheus evaluates, with an answer whenever the metrics it reads have
//!   samples, and every metric it names is one the broker declares in its scrape;
//! - `promtool check metrics` accepts a scrape of `/metrics` (format and naming lints).
//!
//! Without `prometheus` (or `promtool`) on `PATH` the tests print a SKIPPED line and pass,
//! unless `WEIR_REQUIRE_PROMETHEUS=1` (CI sets it once the package is installed): then they fail.

#[path = "support/http.rs"]
mod http;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use weir_client::{
    Client, ConsumerConfig, NewTopic, ProducerConfig, ProducerRecord, TopicPartition,
};
use weir_testkit::{BrokerProcess, free_loopback_addr, temp_data_dir, wait_until};

const BROKER: &str = env!("CARGO_BIN_EXE_weir-broker");
/// A watchdog for conditions (a debug broker and Prometheus on a busy 2-core machine), not a
/// timing assertion.
const WAIT: Duration = Duration::from_secs(60);

/// `name` on `PATH`; `None`, with a SKIPPED line naming `test`, where it is absent, unless
/// `WEIR_REQUIRE_PROMETHEUS=1`, which turns its absence into a failure.
fn tool(name: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let why = format!("no `{name}` on PATH (Debian: apt-get install prometheus)");
        if std::env::var("WEIR_REQUIRE_PROMETHEUS").as_deref() == Ok("1") {
            panic!("{why}, and WEIR_REQUIRE_PROMETHEUS=1 is set");
        }
        eprintln!("SKIPPED {test}: {why}");
    }
    found
}

/// One sample of a query's answer.
#[derive(Debug, Clone)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A `prometheus` server scraping one target; killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts `bin` on a free loopback port with its config and its TSDB in `dir`, scraping
    /// `target` every second as job `weir`, and waits until it is ready.
    async fn start(bin: &Path, dir: &Path, target: SocketAddr) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: weir\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("writing prometheus.yml");
        let addr = free_loopback_addr();
        let log = dir.join("prometheus.log");
        let log_file = std::fs::File::create(&log).expect("creating prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut prometheus = Prometheus { child, addr, log };
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = prometheus.child.try_wait().unwrap() {
                panic!(
                    "prometheus exited ({status}) before it was ready:\n{}",
                    prometheus.log_text()
                );
            }
            if let Ok(r) = http::get_async(addr, "/-/ready").await
                && r.status == 200
            {
                break;
            }
            assert!(
                started.elapsed() < WAIT,
                "prometheus not ready after {WAIT:?}:\n{}",
                prometheus.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        prometheus
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Evaluates `promql` now: its samples, or Prometheus' error (a bad query).
    async fn try_query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let path = format!("/api/v1/query?query={}", http::encode(promql));
        let r = http::get_async(self.addr, &path)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let answer: serde_json::Value = serde_json::from_str(&r.body)
            .map_err(|e| format!("HTTP {}: not JSON ({e}): {}", r.status, r.body))?;
        if answer["status"] != "success" {
            return Err(format!(
                "HTTP {}: {} {}",
                r.status, answer["errorType"], answer["error"]
            ));
        }
        let data = &answer["data"];
        let value = |pair: &serde_json::Value| -> f64 {
            let text = pair[1].as_str().expect("a sample value is a string");
            match text {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                t => t.parse().expect("a number"),
            }
        };
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .expect("a vector")
                .iter()
                .map(|s| Sample {
                    labels: s["metric"]
                        .as_object()
                        .expect("labels")
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect(),
                    value: value(&s["value"]),
                })
                .collect()),
            Some("scalar") => Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: value(&data["result"]),
            }]),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }

    async fn query(&self, promql: &str) -> Vec<Sample> {
        self.try_query(promql)
            .await
            .unwrap_or_else(|e| panic!("query {promql}: {e}\n{}", self.log_text()))
    }

    /// The value of a query that answers one sample.
    async fn value(&self, promql: &str) -> f64 {
        let samples = self.query(promql).await;
        assert_eq!(samples.len(), 1, "{promql} answered {samples:?}");
        samples[0].value
    }

    /// Waits until Prometheus holds a sample of `series` scraped after `after`.
    async fn wait_scraped_after(&self, series: &str, after: SystemTime) {
        let after = after.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        let promql = format!("timestamp({series})");
        wait_until(
            &format!("prometheus scraped {series} after the test's traffic"),
            WAIT,
            || async {
                let samples = self.query(&promql).await;
                !samples.is_empty() && samples.iter().all(|s| s.value > after)
            },
        )
        .await;
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /metrics` from the broker.
async fn scrape(metrics: SocketAddr) -> String {
    let r = http::get_async(metrics, "/metrics")
        .await
        .unwrap_or_else(|e| panic!("GET http://{metrics}/metrics: {e}"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// The metric names with at least one sample in a scrape (`name_bucket` for a histogram's
/// buckets, `name_total` for a counter).
fn sampled_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The metric names a scrape declares (`# TYPE`), with or without samples (a family of
/// per-follower gauges on a broker without followers): the names a query may read, a
/// histogram's as `_bucket`, `_sum` and `_count`.
fn declared_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            if kind == "histogram" {
                names.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
            } else {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// Produces `count` records of `value_len` bytes to `topic`, keyed; returns each partition's
/// record count, checked against the acknowledged offsets (dense from 0).
async fn produce(
    client: &Client,
    topic: &str,
    count: usize,
    value_len: usize,
) -> BTreeMap<u32, u64> {
    let producer = client
        .producer(ProducerConfig {
            linger: Duration::from_millis(2),
            batch_bytes: 16 << 10,
            ..Default::default()
        })
        .unwrap();
    let mut deliveries = Vec::with_capacity(count);
    for i in 0..count {
        let record = ProducerRecord::new(topic)
            .key(format!("key-{i}"))
            .value(vec![b'v'; value_len]);
        deliveries.push(producer.send(record).await.expect("buffered"));
    }
    producer.flush().await.unwrap();
    let mut ends: BTreeMap<u32, u64> = BTreeMap::new();
    let mut per_partition: BTreeMap<u32, u64> = BTreeMap::new();
    for d in deliveries {
        let m = d.await.expect("acknowledged");
        let end = ends.entry(m.partition).or_default();
        *end = (*end).max(m.offset + 1);
        *per_partition.entry(m.partition).or_default() += 1;
    }
    assert_eq!(
        ends, per_partition,
        "offsets dense from 0 in every partition"
    );
    per_partition
}

/// Reads all of `topic` once (a non-following consumer); returns the records read.
async fn consume_all(client: &Client, topic: &str) -> u64 {
    let mut consumer = client.consumer(ConsumerConfig {
        follow: false,
        ..Default::default()
    });
    consumer.assign_topic(topic).await.unwrap();
    let mut stream = consumer.stream();
    let mut n = 0;
    while let Some(record) = stream.next().await {
        record.expect("a valid record");
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stores_what_the_test_produced_and_consumed() {
    const TEST: &str = "prometheus_stores_what_the_test_produced_and_consumed";
    let Some(prometheus_bin) = tool("prometheus", TEST) else {
        return;
    };
    const TOPIC: &str = "scraped";
    const GROUP: &str = "scraped-readers";
    const RECORDS: usize = 3000;
    const VALUE_LEN: usize = 100;

    let dir = temp_data_dir();
    let broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let metrics = broker.metrics_addr.expect("a metrics listener");
    let work = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(&prometheus_bin, work.path(), metrics).await;
    wait_until("prometheus scraped the broker once", WAIT, || async {
        prometheus.query(r#"up{job="weir"} == 1"#).await.len() == 1
    })
    .await;

    let client = Client::connect(&broker.host_port()).await.unwrap();
    client
        .admin()
        .create_topic(NewTopic::new(TOPIC).partitions(3))
        .await
        .unwrap();
    let counts = produce(&client, TOPIC, RECORDS, VALUE_LEN).await;
    assert_eq!(
        counts.len(),
        3,
        "keys spread over every partition: {counts:?}"
    );
    assert_eq!(consume_all(&client, TOPIC).await, RECORDS as u64);
    // A commit from outside the group: half of each partition read.
    let committed: BTreeMap<u32, u64> = counts.iter().map(|(&p, &n)| (p, n / 2)).collect();
    let offsets = committed
        .iter()
        .map(|(&p, &o)| (TopicPartition::new(TOPIC, p), o))
        .collect();
    client
        .admin()
        .commit_offsets(GROUP, None, &offsets)
        .await
        .unwrap();
    let done = SystemTime::now();

    let topic = format!(r#"topic="{TOPIC}""#);
    prometheus
        .wait_scraped_after(&format!("weir_topic_records_out_total{{{topic}}}"), done)
        .await;
    assert_eq!(
        prometheus
            .value(&format!("weir_topic_records_in_total{{{topic}}}"))
            .await,
        RECORDS as f64,
        "records produced"
    );
    assert_eq!(
        prometheus
            .value(&format!("weir_topic_records_out_total{{{topic}}}"))
            .await,
        RECORDS as f64,
        "records consumed"
    );
    let high_watermarks: BTreeMap<u32, u64> = prometheus
        .query(&format!("weir_partition_high_watermark{{{topic}}}"))
        .await
        .iter()
        .map(|s| (s.labels["partition"].parse().unwrap(), s.value as u64))
        .collect();
    assert_eq!(high_watermarks, counts, "each partition's high watermark");

    let bytes_in = prometheus
        .value(&format!("weir_topic_bytes_in_total{{{topic}}}"))
        .await;
    let on_disk = prometheus
        .value(&format!("sum(weir_partition_size_bytes{{{topic}}})"))
        .await;
    let bytes_out = prometheus
        .value(&format!("weir_topic_bytes_out_total{{{topic}}}"))
        .await;
    assert!(
        bytes_in >= (RECORDS * VALUE_LEN) as f64,
        "{bytes_in} bytes in for {RECORDS} values of {VALUE_LEN} bytes"
    );
    assert_eq!(bytes_in, on_disk, "bytes appended are the bytes on disk");
    assert_eq!(bytes_out, bytes_in, "everything was read back once");

    let batches = prometheus
        .value("weir_produce_append_duration_seconds_count")
        .await;
    let produce_requests = prometheus
        .value(r#"sum(weir_request_duration_seconds_count{rpc="produce"})"#)
        .await;
    assert!(
        (1.0..=RECORDS as f64).contains(&batches),
        "{batches} batches appended"
    );
    assert_eq!(produce_requests, batches, "one produce latency per batch");
    assert!(
        prometheus
            .value(r#"sum(weir_request_duration_seconds_count{rpc="fetch"})"#)
            .await
            >= 1.0,
        "the consume is timed"
    );
    assert_eq!(prometheus.value("weir_leader_partitions").await, 3.0);
    assert_eq!(
        prometheus.value("weir_under_replicated_partitions").await,
        0.0
    );

    // Consumer-group lag, once the broker exports it.
    if !scrape(metrics).await.contains("weir_consumer_group_lag") {
        eprintln!(
            "SKIPPED the consumer-group lag check of {TEST}: this broker's /metrics has no \
             weir_consumer_group_lag yet"
        );
        return;
    }
    let group = format!(r#"group="{GROUP}",{topic}"#);
    let lag_query = format!("weir_consumer_group_lag{{{group}}}");
    // Committed offsets reach the leader on a refresh (every few seconds), then a scrape.
    wait_until(
        "prometheus has the group's lag for every partition",
        WAIT,
        || async { prometheus.query(&lag_query).await.len() == counts.len() },
    )
    .await;
    let per_partition = |samples: Vec<Sample>| -> BTreeMap<u32, u64> {
        samples
            .iter()
            .map(|s| (s.labels["partition"].parse().unwrap(), s.value as u64))
            .collect()
    };
    let expected_lag: BTreeMap<u32, u64> = counts
        .iter()
        .map(|(&p, &n)| (p, n - committed[&p]))
        .collect();
    assert_eq!(
        per_partition(prometheus.query(&lag_query).await),
        expected_lag,
        "lag: high watermark minus the committed offset"
    );
    assert_eq!(
        per_partition(
            prometheus
                .query(&format!("weir_consumer_group_committed_offset{{{group}}}"))
                .await
        ),
        committed,
        "the committed offsets"
    );
}

/// Every `expr` of the dashboard's panels, with its panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/grafana/weir-dashboard.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    fn walk(panel: &serde_json::Value, out: &mut Vec<(String, String)>) {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((title.to_owned(), expr.to_owned()));
            }
        }
        for inner in panel["panels"].as_array().into_iter().flatten() {
            walk(inner, out);
        }
    }
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        walk(panel, &mut out);
    }
    out
}

/// `expr` as Grafana sends it with every template variable on "All" (`.*`).
fn with_all_selected(expr: &str) -> String {
    let mut out = expr.to_owned();
    for var in ["job", "instance", "topic", "group"] {
        out = out
            .replace(&format!("${{{var}}}"), ".*")
            .replace(&format!("${var}"), ".*");
    }
    assert!(!out.contains('$'), "an unknown variable in {expr}");
    out
}

/// The `weir_*` metric names a query reads.
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("weir_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        // Not the tail of a longer identifier.
        if start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            names.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_runs_on_prometheus() {
    const TEST: &str = "every_dashboard_query_runs_on_prometheus";
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let Some(prometheus_bin) = tool("prometheus", TEST) else {
        return;
    };
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    let metrics = broker.metrics_addr.expect("a metrics listener");
    let work = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(&prometheus_bin, work.path(), metrics).await;

    // Some of everything the panels chart: a topic, traffic both ways, a group's commit.
    let client = Client::connect(&broker.host_port()).await.unwrap();
    client
        .admin()
        .create_topic(NewTopic::new("charted").partitions(2))
        .await
        .unwrap();
    let counts = produce(&client, "charted", 200, 50).await;
    assert_eq!(consume_all(&client, "charted").await, 200);
    let offsets = counts
        .keys()
        .map(|&p| (TopicPartition::new("charted", p), 1))
        .collect();
    client
        .admin()
        .commit_offsets("charted-readers", None, &offsets)
        .await
        .unwrap();
    let done = SystemTime::now();
    let charted = r#"weir_topic_records_out_total{topic="charted"}"#;
    prometheus.wait_scraped_after(charted, done).await;
    // rate() needs two samples in its window (Prometheus' first scrape may come seconds
    // after its start, after the traffic): three of the newest series.
    let samples = format!("count_over_time({charted}[1m])");
    wait_until(
        "prometheus holds three scrapes of the traffic",
        WAIT,
        || async {
            prometheus
                .query(&samples)
                .await
                .first()
                .is_some_and(|s| s.value >= 3.0)
        },
    )
    .await;

    let text = scrape(metrics).await;
    let (declared, sampled) = (declared_names(&text), sampled_names(&text));
    let mut failures = Vec::new();
    let mut unsampled = BTreeSet::new();
    for (title, expr) in &queries {
        let promql = with_all_selected(expr);
        let names = names_in(&promql);
        for name in &names {
            if !declared.contains(name) {
                failures.push(format!(
                    "{title:?}: {name} is not a metric the broker exports ({expr})"
                ));
            } else if !sampled.contains(name) {
                unsampled.insert(name.clone());
            }
        }
        match prometheus.try_query(&promql).await {
            Err(e) => failures.push(format!("{title:?}: {promql}: {e}")),
            Ok(samples) if samples.is_empty() && names.iter().all(|n| sampled.contains(n)) => {
                failures.push(format!("{title:?}: {promql} answered nothing"))
            }
            Ok(_) => {}
        }
    }
    // Per-follower series, say, on a broker without followers.
    eprintln!("{TEST}: declared without samples here (their panels stay empty): {unsampled:?}");
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries failed:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_scrape() {
    const TEST: &str = "promtool_accepts_the_scrape";
    let Some(promtool) = tool("promtool", TEST) else {
        return;
    };
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(BROKER.as_ref(), dir.path(), &[]);
    // Labelled families have samples once there is a topic with traffic.
    let client = Client::connect(&broker.host_port()).await.unwrap();
    client
        .admin()
        .create_topic(NewTopic::new("linted").partitions(2))
        .await
        .unwrap();
    produce(&client, "linted", 100, 20).await;
    assert_eq!(consume_all(&client, "linted").await, 100);
    let text = scrape(broker.metrics_addr.expect("a metrics listener")).await;
    assert!(
        text.contains("weir_topic_records_in_total{topic=\"linted\"} 100"),
        "{text}"
    );

    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", promtool.display()));
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
