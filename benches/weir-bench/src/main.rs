//! `weir-bench`: the end-to-end load generator. Runs a workload through a real broker (one it
//! starts itself, or `--broker`), measures throughput, latency and the broker's CPU seconds per
//! GiB moved, and beside it the same workload's baselines in the same run: `raw-tcp` (the bytes
//! over a plain loopback socket) and `nats` (NATS JetStream, file-backed, started on loopback if
//! `nats-server` is installed). Prints one JSON line on stdout; a progress bar on a terminal.
//!
//! ```text
//! cargo build --release -p weir-broker -p weir-bench
//! target/release/weir-bench produce --records 1000000 --compare
//! target/release/weir-bench consume --records 1000000 --transport grpc --compare
//! target/release/weir-bench e2e --rate 10000 --duration-secs 10
//! ```
//!
//! Throughput counts record payload bytes (MB = 10^6 bytes); the broker's CPU is read from
//! /proc before and after the timed part. See `benches/compare.sh` for the standard set.

mod broker;
mod nats;
mod raw_tcp;
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
use weir_run::{Measured, Workload};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Producers send records as fast as acknowledgments allow.
    Produce,
    /// The topic is filled first (untimed), then consumers read it all.
    Consume,
    /// Records at a fixed rate; latency from send to receipt by a following consumer.
    E2e,
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
    Nats,
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
    /// How consumers fetch.
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
    /// Baselines to run, comma-separated (implies --compare for those).
    #[arg(long, value_enum, value_delimiter = ',')]
    baselines: Vec<Baseline>,
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
            Mode::E2e => 0,
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
    };

    let broker = match &args.broker {
        Some(addr) => Broker::external(addr.clone(), args.broker_pid),
        None => Broker::start(args.broker_bin.clone(), &args.broker_args)?,
    };
    weir_run::create_topic(&broker.grpc, &workload).await?;
    let expected = match args.mode {
        Mode::E2e => workload.rate * workload.duration.as_secs().max(1),
        _ => workload.records,
    };
    if args.mode == Mode::Consume {
        let fill = progress(expected, "filling");
        weir_run::produce(&broker.grpc, &workload, &fill).await?;
        fill.finish_and_clear();
    }
    let bar = progress(expected, &format!("{:?}", args.mode).to_lowercase());
    let cpu_before = sample(broker.cpu);
    let measured = match args.mode {
        Mode::Produce => weir_run::produce(&broker.grpc, &workload, &bar).await?,
        Mode::Consume => weir_run::consume(&broker.grpc, &workload, &bar).await?,
        Mode::E2e => weir_run::e2e(&broker.grpc, &workload, &bar).await?,
    };
    let cpu_after = sample(broker.cpu);
    bar.finish_and_clear();
    anyhow::ensure!(
        measured.records >= expected,
        "only {} of {expected} records were moved",
        measured.records
    );
    let weir = figures(&measured, cpu_delta(cpu_before, cpu_after));

    let mut baseline_figures = serde_json::Map::new();
    let mut ratios = serde_json::Map::new();
    for baseline in baselines {
        let (name, result) = match baseline {
            Baseline::RawTcp => ("raw-tcp", raw_tcp_baseline(&workload)),
            Baseline::Nats => ("nats", nats_baseline(args.mode, &workload).await),
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
            "transport": match args.transport { TransportArg::DataPort => "data-port", TransportArg::Grpc => "grpc" },
            "rate": (args.mode == Mode::E2e).then_some(workload.rate),
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

fn sample(cpu: Option<CpuClock>) -> Option<f64> {
    cpu.and_then(|c| c.seconds().ok())
}

fn cpu_delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Throughput, CPU per GiB and latency percentiles of one measured run.
fn figures(m: &Measured, cpu_seconds: Option<f64>) -> Value {
    let secs = m.elapsed.as_secs_f64().max(1e-9);
    let gib = m.payload_bytes as f64 / (1u64 << 30) as f64;
    json!({
        "seconds": round(secs),
        "mb_per_s": round(m.payload_bytes as f64 / secs / 1e6),
        "records_per_s": round(m.records as f64 / secs),
        "cpu_s_per_gib": cpu_seconds.map(|c| round(c / gib.max(1e-12))),
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

fn raw_tcp_baseline(w: &Workload) -> anyhow::Result<Option<Value>> {
    let total = w.records * w.record_bytes as u64;
    let elapsed = raw_tcp::copy(total, w.batch_bytes.max(1))?;
    let measured = Measured {
        elapsed,
        records: w.records,
        payload_bytes: total,
        latency_us: None,
    };
    Ok(Some(figures(&measured, None)))
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

fn skip_reason(baseline: Baseline, mode: Mode) -> &'static str {
    match (baseline, mode) {
        (Baseline::Nats, Mode::E2e) => "no NATS e2e latency run (produce and consume only)",
        (Baseline::Nats, _) => "nats-server is not installed (apt-get install nats-server)",
        (Baseline::RawTcp, _) => "not run",
    }
}
