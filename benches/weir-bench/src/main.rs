//! `weir-bench`: the end-to-end load generator. Runs a workload through a real broker (one it
//! starts itself, or `--broker`), measures throughput, latency and the broker's CPU seconds per
//! GiB moved, and beside it the same workload's baselines in the same run: `raw-tcp` (the bytes
//! over a plain loopback socket) and `nats` (NATS JetStream, file-backed, started on loopback if
//! `nats-server` is installed). Prints one JSON line on stdout; a progress bar on a terminal.
//!
//! ```text
//! cargo build --release -p weir-broker -p weir-bench
//! target/release/weir-bench produce --records 1000000 --compare
//! target/release/weir-bench produce --records 1000000 --max-in-flight 1 --baselines raw-tcp
//! target/release/weir-bench consume --records 1000000 --transport grpc --compare
//! target/release/weir-bench e2e --rate 10000 --duration-secs 10
//! target/release/weir-bench produce --cluster 3 --replication-factor 3 --acks all
//! target/release/weir-bench failover --kills 20
//! ```
//!
//! `--cluster N` starts a controller and N brokers (processes on loopback, a temp data dir
//! each) instead of one broker; a produce run there is measured beside the same workload on a
//! replication-factor-1 topic of the same cluster, and the CPU is reported per broker (leader,
//! followers, controller). `failover` SIGKILLs the partition leader repeatedly under an
//! `acks=all` producer and reports the time to the next acknowledgment (see `failover.rs`).
//!
//! Throughput counts record payload bytes (MB = 10^6 bytes); the broker's CPU is read from
//! /proc before and after the timed part. See `benches/compare.sh` for the standard set.

mod broker;
mod cluster;
mod failover;
mod nats;
mod raw_tcp;
mod raw_write;
mod weir_run;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use weir_client::{Acks, Transport};

use broker::{Broker, CpuClock};
use cluster::Cluster;
use weir_run::{Measured, Workload};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Producers send records as fast as acknowledgments allow.
    Produce,
    /// The topic is filled first (untimed), then consumers read it all.
    Consume,
    /// Records at a fixed rate; latency from send to receipt by a following consumer.
    E2e,
    /// A local cluster (RF 3, min ISR 2), an acks=all producer at `--rate`; the leader's broker
    /// is SIGKILLed `--kills` times: time from each kill to the next acknowledgment.
    Failover,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AcksArg {
    Leader,
    Durable,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    DataPort,
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Baseline {
    RawTcp,
    /// The same bytes written to a file in batch-size writes, each followed by fdatasync
    /// (produce only): the floor of acks=durable.
    RawWrite,
    /// The same bytes written to a file in batch-size writes, not synced (produce only): the
    /// copy into the page cache a broker makes of every byte, the ceiling of acks=leader.
    RawCachedWrite,
    Nats,
    /// The same workload on a second broker started here with `--metrics-listen off`: what
    /// the metrics cost the data paths.
    MetricsOff,
    /// The same workload from one producer (produce with --producers above 1), on its own
    /// topic of the same broker, for a share of the records: what concurrency adds.
    SingleProducer,
    /// The same workload on a one-partition topic of the same broker (produce with
    /// --partitions above 1): what spreading over partitions costs.
    OnePartition,
}

/// weir's end-to-end load generator.
#[derive(Debug, Parser)]
#[command(name = "weir-bench", version)]
struct Args {
    mode: Mode,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Records to produce / consume (produce and consume modes).
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// e2e: records per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// e2e: seconds to send for.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    #[arg(long, default_value_t = 1)]
    producers: usize,
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// Producer linger in ms [default: 5; 0 in e2e mode].
    #[arg(long)]
    linger_ms: Option<u64>,
    #[arg(long, value_enum, default_value_t = AcksArg::Leader)]
    acks: AcksArg,
    /// Turn the producer's idempotence off (it is on by default, as in the client).
    #[arg(long)]
    no_idempotence: bool,
    /// Each producer waits for every record's acknowledgment before sending the next (produce).
    #[arg(long)]
    sync_sends: bool,
    /// Consume record by record (a `ConsumerRecord` each) instead of in whole batches of
    /// borrowed records (`RecordStream::next_batch`, the default).
    #[arg(long)]
    per_record: bool,
    /// Producer batches of one partition in flight at once (1 to 5; the client's
    /// `max_in_flight_per_partition`; without idempotence the producer keeps 1).
    #[arg(long, default_value_t = weir_client::MAX_IN_FLIGHT_PER_PARTITION)]
    max_in_flight: usize,
    /// How producers send and consumers fetch.
    #[arg(long, value_enum, default_value_t = TransportArg::DataPort)]
    transport: TransportArg,
    /// Use this running broker (HOST:PORT) instead of starting one.
    #[arg(long)]
    broker: Option<String>,
    /// The running broker's pid, for CPU accounting with --broker.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// The weir-broker binary to start [default: next to this one].
    #[arg(long)]
    broker_bin: Option<PathBuf>,
    /// Extra arguments for the broker this bench starts (repeatable), e.g. --broker-arg=--flush=never.
    #[arg(long = "broker-arg", allow_hyphen_values = true)]
    broker_args: Vec<String>,
    /// Topic to use (created with --partitions if missing).
    #[arg(long, default_value = "weir-bench")]
    topic: String,
    /// Run the baselines too (raw-tcp and nats).
    #[arg(long)]
    compare: bool,
    /// Start a local cluster of this many brokers and a controller (each a process on
    /// loopback over its own temp data dir) instead of one broker [failover: 3].
    #[arg(long)]
    cluster: Option<u32>,
    /// Replication factor of the bench topic (with --cluster) [failover: 3].
    #[arg(long)]
    replication_factor: Option<u32>,
    /// min_insync_replicas of the bench topic [default: the broker's; failover: 2].
    #[arg(long)]
    min_insync_replicas: Option<u32>,
    /// The cluster's broker lease (--broker-lease-ms of its controller) [default: 2000 in
    /// failover mode, else the broker's default, 6000].
    #[arg(long)]
    broker_lease_ms: Option<u64>,
    /// The cluster brokers' --replica-lag-time-max-ms.
    #[arg(long, default_value_t = 2000)]
    replica_lag_ms: u64,
    /// With --cluster and a replicated produce: run the replication-factor-1 baseline before
    /// the replicated run instead of after it (to see the order's effect).
    #[arg(long)]
    rf1_first: bool,
    /// failover: how many times to kill the leader.
    #[arg(long, default_value_t = 20)]
    kills: u32,
    /// failover: milliseconds of steady acks=all traffic between a broker's return to the ISR
    /// and the next kill.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// Baselines to run, comma-separated (implies --compare for those).
    #[arg(long, value_enum, value_delimiter = ',')]
    baselines: Vec<Baseline>,
    /// Connect with TLS, trusting this CA (PEM): for a broker serving TLS (`--broker` or
    /// `--broker-arg=--tls-cert-file=...`).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Mutual TLS: the client certificate (PEM), with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Mutual TLS: the client key (PEM), with --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// How every weir client of the bench connects (set once from the flags).
pub static CONNECT_OPTIONS: std::sync::OnceLock<weir_client::ConnectOptions> =
    std::sync::OnceLock::new();

/// A client connected with the bench's [`CONNECT_OPTIONS`].
pub async fn connect(addr: &str) -> Result<weir_client::Client, weir_client::ClientError> {
    let options = CONNECT_OPTIONS.get().cloned().unwrap_or_default();
    weir_client::Client::connect_with(addr, options).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    if let Some(ca) = &args.tls_ca {
        let identity = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
        let tls = weir_client::ClientTls::from_files(ca, identity)?;
        let _ = CONNECT_OPTIONS.set(weir_client::ConnectOptions {
            tls: Some(tls),
            ..weir_client::ConnectOptions::default()
        });
    }
    let mut baselines = args.baselines.clone();
    if args.compare && baselines.is_empty() {
        baselines = vec![Baseline::RawTcp, Baseline::Nats];
    }
    let workload = Workload {
        topic: args.topic.clone(),
        record_bytes: args.record_bytes,
        records: args.records,
        producers: args.producers.max(1),
        consumers: args.consumers.max(1),
        partitions: args.partitions.max(1),
        batch_bytes: args.batch_bytes,
        linger: Duration::from_millis(args.linger_ms.unwrap_or(match args.mode {
            Mode::E2e | Mode::Failover => 0,
            _ => 5,
        })),
        acks: match args.acks {
            AcksArg::Leader => Acks::Leader,
            AcksArg::Durable => Acks::Durable,
            AcksArg::All => Acks::All,
        },
        transport: match args.transport {
            TransportArg::DataPort => Transport::DataPort,
            TransportArg::Grpc => Transport::Grpc,
        },
        rate: args.rate,
        duration: Duration::from_secs(args.duration_secs),
        idempotent: !args.no_idempotence,
        sync_sends: args.sync_sends,
        per_record: args.per_record,
        max_in_flight: args.max_in_flight,
        replication_factor: args.replication_factor,
        min_insync_replicas: args.min_insync_replicas,
    };

    if args.mode == Mode::Failover {
        return failover::run(failover::Settings {
            bin: cluster::broker_bin(args.broker_bin.clone())?,
            brokers: args.cluster.unwrap_or(3),
            replication_factor: args.replication_factor.unwrap_or(3),
            min_insync_replicas: args.min_insync_replicas.unwrap_or(2),
            lease: Duration::from_millis(args.broker_lease_ms.unwrap_or(2000)),
            replica_lag: Duration::from_millis(args.replica_lag_ms),
            broker_args: args.broker_args.clone(),
            kills: args.kills,
            settle: Duration::from_millis(args.settle_ms),
            workload,
        })
        .await;
    }

    let target = match (&args.broker, args.cluster) {
        (Some(_), Some(_)) => anyhow::bail!("--broker and --cluster exclude each other"),
        (Some(addr), None) => Target::Single(Broker::external(addr.clone(), args.broker_pid)),
        (None, Some(n)) => {
            let bin = cluster::broker_bin(args.broker_bin.clone())?;
            let lease = Duration::from_millis(args.broker_lease_ms.unwrap_or(6000));
            let lag = Duration::from_millis(args.replica_lag_ms);
            Target::Cluster(Box::new(
                Cluster::start(&bin, n, lease, lag, &args.broker_args).await?,
            ))
        }
        (None, None) => {
            anyhow::ensure!(
                args.replication_factor.unwrap_or(1) == 1,
                "--replication-factor above 1 needs --cluster"
            );
            Target::Single(Broker::start(args.broker_bin.clone(), &args.broker_args)?)
        }
    };
    let grpc = target.grpc();
    weir_run::create_topic(&grpc, &workload).await?;
    let roles = target.roles(&workload.topic).await?;
    let expected = match args.mode {
        Mode::E2e => workload.rate * workload.duration.as_secs().max(1),
        _ => workload.records,
    };
    if args.mode == Mode::Consume {
        let fill = progress(expected, "filling");
        weir_run::produce(&grpc, &workload, &fill).await?;
        fill.finish_and_clear();
    }
    // On a cluster, a produce run's own baseline: the same workload on a topic of replication
    // factor 1 on the same brokers (led by the same broker where the placement allows), after
    // the replicated run or (--rf1-first) before it.
    let rf1 = match &target {
        Target::Cluster(cluster)
            if args.mode == Mode::Produce && workload.replication_factor.unwrap_or(1) > 1 =>
        {
            Some(cluster)
        }
        _ => None,
    };
    let mut rf1_result = match rf1 {
        Some(cluster) if args.rf1_first => Some(rf1_baseline(cluster, &workload, &roles).await),
        _ => None,
    };
    let bar = progress(expected, &format!("{:?}", args.mode).to_lowercase());
    let cpu_before = target.sample();
    let measured = match args.mode {
        Mode::Produce => weir_run::produce(&grpc, &workload, &bar).await?,
        Mode::Consume => weir_run::consume(&grpc, &workload, &bar).await?,
        Mode::E2e => weir_run::e2e(&grpc, &workload, &bar).await?,
        Mode::Failover => unreachable!("run above"),
    };
    let cpu_after = target.sample();
    bar.finish_and_clear();
    anyhow::ensure!(
        measured.records >= expected,
        "only {} of {expected} records were moved",
        measured.records
    );
    let mut weir = target.figures(&measured, &roles, &cpu_before, &cpu_after);
    if let Target::Single(Broker {
        cpu: Some(clock), ..
    }) = &target
        && let Ok(rss) = clock.peak_rss_mb()
    {
        weir["broker_peak_rss_mb"] = json!(round(rss));
    }

    let mut baseline_figures = serde_json::Map::new();
    let mut ratios = serde_json::Map::new();
    if let Some(cluster) = rf1 {
        let result = match rf1_result.take() {
            Some(result) => result,
            None => rf1_baseline(cluster, &workload, &roles).await,
        };
        let value = match result {
            Ok(value) => {
                for (name, field) in [
                    ("weir/rf1", "mb_per_s"),
                    ("leader_cpu/rf1", "cpu_s_per_gib"),
                ] {
                    if let (Some(ours), Some(theirs)) =
                        (weir[field].as_f64(), value[field].as_f64())
                        && theirs > 0.0
                    {
                        ratios.insert(name.into(), json!(round(ours / theirs)));
                    }
                }
                value
            }
            Err(e) => json!({ "failed": format!("{e:#}") }),
        };
        baseline_figures.insert("rf1".into(), value);
    }
    for baseline in baselines {
        let (name, result) = match baseline {
            Baseline::RawTcp => ("raw-tcp", raw_tcp_baseline(&workload)),
            Baseline::RawWrite => ("raw-write", raw_write_baseline(args.mode, &workload)),
            Baseline::RawCachedWrite => (
                "raw-cached-write",
                raw_cached_write_baseline(args.mode, &workload),
            ),
            Baseline::Nats => ("nats", nats_baseline(args.mode, &workload).await),
            Baseline::MetricsOff => (
                "metrics-off",
                metrics_off_baseline(&args, args.mode, &workload).await,
            ),
            Baseline::SingleProducer => (
                "single-producer",
                peer_baseline(&grpc, args.mode, &workload, PeerBaseline::SingleProducer).await,
            ),
            Baseline::OnePartition => (
                "one-partition",
                peer_baseline(&grpc, args.mode, &workload, PeerBaseline::OnePartition).await,
            ),
        };
        let value = match result {
            Ok(Some(value)) => {
                if let (Some(ours), Some(theirs)) =
                    (weir["mb_per_s"].as_f64(), value["mb_per_s"].as_f64())
                    && theirs > 0.0
                {
                    ratios.insert(format!("weir/{name}"), json!(round(ours / theirs)));
                }
                value
            }
            Ok(None) => json!({ "skipped": skip_reason(baseline, args.mode) }),
            Err(e) => json!({ "failed": format!("{e:#}") }),
        };
        if let Some(reason) = value.get("skipped").and_then(Value::as_str) {
            eprintln!("weir-bench: baseline {name} skipped: {reason}");
        }
        baseline_figures.insert(name.into(), value);
    }

    let line = json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "workload": {
            "record_bytes": workload.record_bytes,
            "records": measured.records,
            "producers": workload.producers,
            "consumers": workload.consumers,
            "partitions": workload.partitions,
            "batch_bytes": workload.batch_bytes,
            "linger_ms": workload.linger.as_millis() as u64,
            "acks": format!("{:?}", args.acks).to_lowercase(),
            "idempotent": !args.no_idempotence,
            "sync_sends": args.sync_sends.then_some(true),
            "per_record": (args.mode == Mode::Consume).then_some(args.per_record),
            "max_in_flight": workload.max_in_flight,
            "transport": match args.transport { TransportArg::DataPort => "data-port", TransportArg::Grpc => "grpc" },
            "rate": (args.mode == Mode::E2e).then_some(workload.rate),
            "cluster": args.cluster,
            "replication_factor": args.replication_factor,
            "min_insync_replicas": args.min_insync_replicas,
            "rf1_first": args.rf1_first.then_some(true),
            "broker_lease_ms": match &target { Target::Cluster(c) => Some(c.lease.as_millis() as u64), Target::Single(_) => None },
        },
        "weir": weir,
        "baselines": baseline_figures,
        "ratios": ratios,
    });
    println!("{line}");
    Ok(())
}

fn progress(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            ProgressStyle::with_template("{msg:>9} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(label.to_owned());
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// The brokers under test: one (started here or external) or a local cluster.
enum Target {
    Single(Broker),
    Cluster(Box<Cluster>),
}

/// CPU seconds so far: per broker (by node id; 0 for a single broker), and the controller's.
struct CpuSample {
    brokers: Vec<(u32, Option<f64>)>,
    controller: Option<f64>,
}

/// What each broker does for the bench topic, by node id.
type Roles = Vec<(u32, &'static str)>;

impl Target {
    fn grpc(&self) -> String {
        match self {
            Target::Single(b) => b.grpc.clone(),
            Target::Cluster(c) => c.bootstrap(),
        }
    }

    fn sample(&self) -> CpuSample {
        match self {
            Target::Single(b) => CpuSample {
                brokers: vec![(0, sample(b.cpu))],
                controller: None,
            },
            Target::Cluster(c) => sample_cluster(c),
        }
    }

    async fn roles(&self, topic: &str) -> anyhow::Result<Roles> {
        match self {
            Target::Single(_) => Ok(vec![(0, "leader")]),
            Target::Cluster(c) => cluster_roles(c, topic).await,
        }
    }

    fn figures(&self, m: &Measured, roles: &Roles, before: &CpuSample, after: &CpuSample) -> Value {
        let cluster = matches!(self, Target::Cluster(_));
        run_figures(cluster, m, roles, before, after)
    }
}

fn sample_cluster(c: &Cluster) -> CpuSample {
    CpuSample {
        brokers: c.ids().map(|id| (id, sample(Some(c.cpu(id))))).collect(),
        controller: sample(Some(c.controller_cpu())),
    }
}

async fn cluster_roles(c: &Cluster, topic: &str) -> anyhow::Result<Roles> {
    let client = c.client().await?;
    let described = cluster::describe(&client, topic)
        .await
        .context("describing the bench topic")?;
    Ok(roles(c, &described))
}

/// `m`'s figures; on a cluster `cpu_s_per_gib` is the leader's (the leaders' together), and
/// `broker_cpu_s_per_gib` has the followers', the controller's and each broker's.
fn run_figures(
    cluster: bool,
    m: &Measured,
    roles: &Roles,
    before: &CpuSample,
    after: &CpuSample,
) -> Value {
    let deltas: Vec<(u32, Option<f64>)> = before
        .brokers
        .iter()
        .zip(&after.brokers)
        .map(|((id, b), (_, a))| (*id, cpu_delta(*b, *a)))
        .collect();
    let role_of = |id: u32| {
        roles
            .iter()
            .find(|(r, _)| *r == id)
            .map_or("none", |(_, role)| *role)
    };
    let total = |wanted: &[&str]| -> Option<f64> {
        let mut sum = 0.0;
        for (id, delta) in &deltas {
            if wanted.contains(&role_of(*id)) {
                sum += (*delta)?;
            }
        }
        Some(sum)
    };
    let mut value = figures(m, total(&["leader", "leader+follower"]));
    if cluster {
        let per_gib = |cpu: Option<f64>| cpu.map(|c| round(c / gib(m.payload_bytes)));
        value["broker_cpu_s_per_gib"] = json!({
            "leader": per_gib(total(&["leader", "leader+follower"])),
            "followers": per_gib(total(&["follower"])),
            "controller": per_gib(cpu_delta(before.controller, after.controller)),
            "by_broker": deltas.iter().map(|(id, delta)| json!({
                "id": id,
                "role": role_of(*id),
                "cpu_s_per_gib": per_gib(*delta),
            })).collect::<Vec<_>>(),
        });
    }
    value
}

/// Each broker's part in `topic`: `leader` of some partition, `follower` (a replica of some,
/// leader of none), both, or `none`.
fn roles(c: &Cluster, topic: &weir_client::TopicDescription) -> Roles {
    c.ids()
        .map(|id| {
            let leads = topic.partitions.iter().any(|p| p.leader_id == id);
            let follows = topic
                .partitions
                .iter()
                .any(|p| p.leader_id != id && p.replicas.contains(&id));
            let role = match (leads, follows) {
                (true, false) => "leader",
                (false, true) => "follower",
                (true, true) => "leader+follower",
                (false, false) => "none",
            };
            (id, role)
        })
        .collect()
}

/// The produce workload again on a replication-factor-1 topic of the same cluster. With one
/// partition, topic names are tried until the placement puts it on the replicated topic's
/// leader, so the leader CPU figures are the same broker's.
async fn rf1_baseline(c: &Cluster, w: &Workload, roles: &Roles) -> anyhow::Result<Value> {
    let leader = roles
        .iter()
        .find(|(_, role)| *role == "leader")
        .map(|(id, _)| *id);
    let client = c.client().await?;
    let mut rf1 = w.clone();
    rf1.replication_factor = Some(1);
    rf1.min_insync_replicas = Some(1);
    for attempt in 0..32 {
        rf1.topic = match attempt {
            0 => format!("{}-rf1", w.topic),
            n => format!("{}-rf1-{n}", w.topic),
        };
        weir_run::create_topic(&c.bootstrap(), &rf1).await?;
        let described = cluster::describe(&client, &rf1.topic)
            .await
            .context("describing the rf1 topic")?;
        if w.partitions > 1
            || leader.is_none()
            || described.partitions[0].leader_id == leader.unwrap_or(0)
        {
            break;
        }
    }
    let rf1_roles = cluster_roles(c, &rf1.topic).await?;
    let bar = progress(rf1.records, "rf1");
    let before = sample_cluster(c);
    let measured = weir_run::produce(&c.bootstrap(), &rf1, &bar).await?;
    let after = sample_cluster(c);
    bar.finish_and_clear();
    let mut value = run_figures(true, &measured, &rf1_roles, &before, &after);
    value["topic"] = json!(rf1.topic);
    Ok(value)
}

fn sample(cpu: Option<CpuClock>) -> Option<f64> {
    cpu.and_then(|c| c.seconds().ok())
}

fn cpu_delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn gib(bytes: u64) -> f64 {
    (bytes as f64 / (1u64 << 30) as f64).max(1e-12)
}

/// Throughput, CPU per GiB and latency percentiles of one measured run.
fn figures(m: &Measured, cpu_seconds: Option<f64>) -> Value {
    let secs = m.elapsed.as_secs_f64().max(1e-9);
    let gib = gib(m.payload_bytes);
    json!({
        "seconds": round(secs),
        "mb_per_s": round(m.payload_bytes as f64 / secs / 1e6),
        "records_per_s": round(m.records as f64 / secs),
        "cpu_s_per_gib": cpu_seconds.map(|c| round(c / gib)),
        "latency_us": m.latency_us.as_ref().map(latency),
    })
}

fn latency(h: &Histogram<u64>) -> Value {
    json!({
        "p50": h.value_at_quantile(0.5),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

/// A baseline that moves the workload's payload bytes in batch-size pieces (`copy`: total,
/// chunk -> elapsed), without a broker.
fn raw_baseline(
    w: &Workload,
    copy: impl FnOnce(u64, usize) -> anyhow::Result<std::time::Duration>,
) -> anyhow::Result<Option<Value>> {
    let total = w.records * w.record_bytes as u64;
    let elapsed = copy(total, w.batch_bytes.max(1))?;
    let measured = Measured {
        elapsed,
        records: w.records,
        payload_bytes: total,
        latency_us: None,
    };
    Ok(Some(figures(&measured, None)))
}

fn raw_tcp_baseline(w: &Workload) -> anyhow::Result<Option<Value>> {
    raw_baseline(w, raw_tcp::copy)
}

/// Which of the workload's dimensions a peer baseline brings down to one.
#[derive(Clone, Copy)]
enum PeerBaseline {
    SingleProducer,
    OnePartition,
}

/// The workload with one producer (or one partition) on its own topic of the same broker, run
/// right after the measured one.
async fn peer_baseline(
    grpc: &str,
    mode: Mode,
    w: &Workload,
    peer: PeerBaseline,
) -> anyhow::Result<Option<Value>> {
    let mut peer_workload = w.clone();
    match peer {
        PeerBaseline::SingleProducer if mode == Mode::Produce && w.producers > 1 => {
            peer_workload.producers = 1;
            peer_workload.records = (w.records / w.producers as u64).max(1000);
            peer_workload.topic = format!("{}-single-producer", w.topic);
        }
        PeerBaseline::OnePartition if mode == Mode::Produce && w.partitions > 1 => {
            peer_workload.partitions = 1;
            peer_workload.topic = format!("{}-one-partition", w.topic);
        }
        _ => return Ok(None),
    }
    weir_run::create_topic(grpc, &peer_workload).await?;
    let bar = progress(peer_workload.records, "peer");
    let measured = weir_run::produce(grpc, &peer_workload, &bar).await?;
    bar.finish_and_clear();
    Ok(Some(figures(&measured, None)))
}

fn raw_write_baseline(mode: Mode, w: &Workload) -> anyhow::Result<Option<Value>> {
    if mode != Mode::Produce {
        return Ok(None);
    }
    raw_baseline(w, raw_write::write_and_sync)
}

fn raw_cached_write_baseline(mode: Mode, w: &Workload) -> anyhow::Result<Option<Value>> {
    if mode != Mode::Produce {
        return Ok(None);
    }
    raw_baseline(w, raw_write::write_cached)
}

async fn nats_baseline(mode: Mode, w: &Workload) -> anyhow::Result<Option<Value>> {
    if mode == Mode::E2e {
        return Ok(None);
    }
    let Some(server) = nats::NatsServer::start().context("starting nats-server")? else {
        return Ok(None);
    };
    let cpu = CpuClock::of(server.pid());
    const MAX_PENDING: usize = 4096;
    let published = {
        let before = cpu.seconds().ok();
        let run = nats::publish(
            server.addr(),
            "bench",
            w.record_bytes,
            w.records,
            MAX_PENDING,
        )
        .await?;
        (run, cpu_delta(before, cpu.seconds().ok()))
    };
    let (run, cpu_seconds) = match mode {
        Mode::Produce => published,
        _ => {
            let before = cpu.seconds().ok();
            let run = nats::replay(server.addr(), "bench", w.records).await?;
            (run, cpu_delta(before, cpu.seconds().ok()))
        }
    };
    let measured = Measured {
        elapsed: run.elapsed,
        records: run.messages,
        payload_bytes: run.bytes,
        latency_us: None,
    };
    Ok(Some(figures(&measured, cpu_seconds)))
}

/// The workload again on a broker started here with its metrics off (see
/// [`Baseline::MetricsOff`]); `None` when the measured broker was not started here as one.
async fn metrics_off_baseline(
    args: &Args,
    mode: Mode,
    w: &Workload,
) -> anyhow::Result<Option<Value>> {
    if args.broker.is_some() || args.cluster.is_some() {
        return Ok(None);
    }
    let mut extra = args.broker_args.clone();
    extra.extend(["--metrics-listen".to_owned(), "off".to_owned()]);
    let broker = Broker::start(args.broker_bin.clone(), &extra)?;
    weir_run::create_topic(&broker.grpc, w).await?;
    let expected = match mode {
        Mode::E2e => w.rate * w.duration.as_secs().max(1),
        _ => w.records,
    };
    if mode == Mode::Consume {
        let fill = progress(expected, "filling (metrics off)");
        weir_run::produce(&broker.grpc, w, &fill).await?;
        fill.finish_and_clear();
    }
    let bar = progress(expected, "metrics off");
    let before = broker.cpu.as_ref().and_then(|c| c.seconds().ok());
    let measured = match mode {
        Mode::Produce => weir_run::produce(&broker.grpc, w, &bar).await?,
        Mode::Consume => weir_run::consume(&broker.grpc, w, &bar).await?,
        Mode::E2e => weir_run::e2e(&broker.grpc, w, &bar).await?,
        Mode::Failover => return Ok(None),
    };
    let after = broker.cpu.as_ref().and_then(|c| c.seconds().ok());
    bar.finish_and_clear();
    Ok(Some(figures(&measured, cpu_delta(before, after))))
}

fn skip_reason(baseline: Baseline, mode: Mode) -> &'static str {
    match (baseline, mode) {
        (Baseline::Nats, Mode::E2e) => "no NATS e2e latency run (produce and consume only)",
        (Baseline::Nats, _) => "nats-server is not installed (apt-get install nats-server)",
        (Baseline::RawTcp, _) => "not run",
        (Baseline::RawWrite, _) => "produce only (the floor of acks=durable)",
        (Baseline::RawCachedWrite, _) => "produce only (the page-cache ceiling of acks=leader)",
        (Baseline::SingleProducer, _) => "produce with --producers above 1 only",
        (Baseline::OnePartition, _) => "produce with --partitions above 1 only",
        (Baseline::MetricsOff, _) => {
            "only beside a single broker started here (not --broker or --cluster)"
        }
    }
}
