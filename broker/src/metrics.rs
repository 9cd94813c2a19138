//! The metric handles the data paths update: latency histograms and gauges that exist from
//! the start of the process. What a scrape answers is assembled above, in
//! `crate::server::scrape` (the registry, the values read from the broker's state at scrape
//! time, and the HTTP listener with `/metrics`, `/healthz` and `/readyz`); this module is below
//! the server so that the data paths can hold the handles without importing upwards.
//!
//! Crate: `prometheus-client`, the Prometheus project's own Rust client. It has no global
//! registry (each broker, and each test, owns one), writes the Prometheus text format 0.0.4
//! that `promtool check metrics` and every scraper read, has real histograms with explicit
//! buckets, and lets scrape-time values be written straight from the broker's state (a
//! `Collector`) instead of being mirrored into gauges on every change.
//!
//! Names follow the Kafka exporters' and Redpanda's (`*_bytes_in_total`, `*_high_watermark`,
//! `*_consumer_group_lag`, `*_under_replicated_partitions`), with the `weir_` prefix and the
//! labels `topic`, `partition`, `group`, so existing dashboards translate by renaming.
//!
//! Invariants (what the hot paths pay): no lock and no allocation per record. Per record there
//! is nothing; per batch, relaxed atomic adds on the partition's [`crate::topics::Traffic`];
//! per request, one observation of a histogram handle resolved at start (prometheus-client's
//! histogram takes an uncontended mutex per observation: per request, never per record). Label
//! sets are never built on the data path.

use std::time::Instant;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets, seconds: 50 us to 10 s, about three per decade.
const LATENCY_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A latency histogram handle; with metrics off, one that observes nothing.
#[derive(Clone, Debug)]
pub struct Timer(Histogram, bool);

impl Timer {
    fn new(enabled: bool) -> Self {
        Timer(latency_histogram(), enabled)
    }

    /// Observes the time since `started`.
    pub fn observe_since(&self, started: Instant) {
        if self.1 {
            self.0.observe(started.elapsed().as_secs_f64());
        }
    }
}

/// Counts one open thing (a connection, a stream) on a gauge while it lives.
#[derive(Debug)]
pub struct Open(Gauge);

impl Open {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Open(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The produce path's latencies.
#[derive(Clone, Debug)]
pub struct ProduceMetrics {
    /// From admission to the answer (`weir_request_duration_seconds{rpc="produce"}`).
    pub request: Timer,
    /// The append alone (validation, write to the page cache).
    pub append: Timer,
    /// The wait for the local sync (acks=durable, flush=always).
    pub sync: Timer,
    /// The wait for the in-sync replicas (acks=all, acks=durable on replicated partitions).
    pub replication: Timer,
}

/// What replication counts on this broker (its leaders' in-sync set changes).
#[derive(Clone, Debug, Default)]
pub struct ReplicationMetrics {
    /// In-sync set changes the controller accepted from leaders here that removed members.
    pub isr_shrinks: prometheus_client::metrics::counter::Counter,
    /// ... that added members.
    pub isr_expands: prometheus_client::metrics::counter::Counter,
}

/// Labels known when the process starts.
type StaticLabels = Vec<(&'static str, &'static str)>;

/// Every metric handle the data paths update. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub produce: ProduceMetrics,
    /// Time to answer one fetch request, to its first response (`rpc="fetch"`), per transport.
    pub fetch_grpc: Timer,
    pub fetch_data_port: Timer,
    /// Open connections on the data port.
    pub data_port_connections: Gauge,
    /// Open gRPC connections, every listener.
    pub grpc_connections: Gauge,
    /// Open fetch streams, per transport.
    pub fetch_streams_grpc: Gauge,
    pub fetch_streams_data_port: Gauge,
    /// Open produce streams (gRPC ProduceStream).
    pub produce_streams: Gauge,
    pub replication: ReplicationMetrics,
    request_durations: Family<StaticLabels, Histogram, fn() -> Histogram>,
    streams: Family<StaticLabels, Gauge>,
    enabled: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(true)
    }
}

impl Metrics {
    /// The handles; with `enabled` false (the metrics listener is off) the latency histograms
    /// observe nothing, so a broker without metrics pays for none of them (the per-batch
    /// traffic atomics and the gauges stay: a relaxed add each).
    pub fn new(enabled: bool) -> Self {
        let request_durations: Family<_, _, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let timer = |rpc: &'static str, transport: &'static str| {
            Timer(
                request_durations
                    .get_or_create(&vec![("rpc", rpc), ("transport", transport)])
                    .clone(),
                enabled,
            )
        };
        let streams: Family<StaticLabels, Gauge> = Family::default();
        let stream = |rpc: &'static str, transport: &'static str| {
            streams
                .get_or_create(&vec![("rpc", rpc), ("transport", transport)])
                .clone()
        };
        Metrics {
            produce: ProduceMetrics {
                request: timer("produce", "grpc"),
                append: Timer::new(enabled),
                sync: Timer::new(enabled),
                replication: Timer::new(enabled),
            },
            fetch_grpc: timer("fetch", "grpc"),
            fetch_data_port: timer("fetch", "data_port"),
            data_port_connections: Gauge::default(),
            grpc_connections: Gauge::default(),
            fetch_streams_grpc: stream("fetch", "grpc"),
            fetch_streams_data_port: stream("fetch", "data_port"),
            produce_streams: stream("produce_stream", "grpc"),
            replication: ReplicationMetrics::default(),
            request_durations,
            streams,
            enabled,
        }
    }

    /// The latency histogram of gRPC calls labelled `rpc`.
    pub fn grpc_timer(&self, rpc: &'static str) -> Timer {
        Timer(
            self.request_durations
                .get_or_create(&vec![("rpc", rpc), ("transport", "grpc")])
                .clone(),
            self.enabled,
        )
    }
}

impl Metrics {
    /// Registers every handle in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "weir_request_duration_seconds",
            "Time from receiving a request to answering it (a fetch: to its first response), by RPC and transport",
            self.request_durations.clone(),
        );
        registry.register(
            "weir_produce_append_duration_seconds",
            "Time to validate and append one produce batch to the log (page cache), before any sync or replication wait",
            self.produce.append.0.clone(),
        );
        registry.register(
            "weir_produce_sync_duration_seconds",
            "Time an acks=durable (or flush=always) produce waited for its local fdatasync",
            self.produce.sync.0.clone(),
        );
        registry.register(
            "weir_produce_replication_duration_seconds",
            "Time an acks=all or acks=durable produce on a replicated partition waited for the in-sync replicas",
            self.produce.replication.0.clone(),
        );
        registry.register(
            "weir_data_port_connections_active",
            "Open connections on the data port",
            self.data_port_connections.clone(),
        );
        registry.register(
            "weir_isr_shrinks",
            "In-sync set changes proposed by leaders on this broker and accepted by the controller that removed replicas (Kafka's IsrShrinksPerSec)",
            self.replication.isr_shrinks.clone(),
        );
        registry.register(
            "weir_isr_expands",
            "In-sync set changes proposed by leaders on this broker and accepted by the controller that added replicas (Kafka's IsrExpandsPerSec)",
            self.replication.isr_expands.clone(),
        );
        registry.register(
            "weir_grpc_connections_active",
            "Open gRPC connections, on every gRPC listener",
            self.grpc_connections.clone(),
        );
        registry.register(
            "weir_streams_active",
            "Open streaming calls, by RPC and transport",
            self.streams.clone(),
        );
    }
}

/// What the last start of the data dir found (from the storage's open report).
#[derive(Debug, Clone, Copy, Default)]
pub struct Recovery {
    /// The previous process closed the logs cleanly.
    pub clean: bool,
    pub seconds: f64,
    /// Torn or unsynced tails cut from logs.
    pub truncated_bytes: u64,
    pub truncated_partitions: u64,
}
