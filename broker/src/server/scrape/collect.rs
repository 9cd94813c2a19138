//! What a scrape reads from the broker's state instead of counting: each partition's traffic
//! atomics summed per topic, the offsets and sizes of the partitions this broker leads, their
//! replication state, the in-flight produce bytes, what the last start recovered, and, on a
//! node that runs the controller, the controller's view of the cluster.
//!
//! Invariants: a scrape takes the locks a `DescribeTopic` takes (each partition's, briefly,
//! for its size), never a lock the data path holds across an append; partition gauges come
//! only from the partition's leader (or its only copy), so summing a metric over a cluster's
//! brokers counts each partition once; counters are per broker process (they start at 0 on
//! every start, which Prometheus' `rate()` handles).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use weir_storage::stats::HistogramSnapshot;

use super::lag::CommittedOffsets;
use crate::server::BrokerState;

/// The scrape-time part of the registry.
pub struct StateCollector {
    state: Arc<BrokerState>,
    commits: CommittedOffsets,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

impl StateCollector {
    pub fn new(state: Arc<BrokerState>, commits: CommittedOffsets) -> Self {
        StateCollector { state, commits }
    }
}

type Labels = Vec<(&'static str, String)>;

/// Writes one metric family of `kind` with `samples`.
fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let sample = metric.encode_family(labels)?;
        // Whole numbers (offsets, bytes, counts) print as integers.
        let whole = value.fract() == 0.0 && value.abs() < 9.0e15;
        match kind {
            MetricType::Counter if whole => ConstCounter::new(*value as u64).encode(sample)?,
            MetricType::Counter => ConstCounter::new(*value).encode(sample)?,
            _ if whole => ConstGauge::new(*value as i64).encode(sample)?,
            _ => ConstGauge::new(*value).encode(sample)?,
        }
    }
    Ok(())
}

/// Writes an engine histogram, its values and bounds scaled by `scale` (nanoseconds to seconds).
fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    snapshot: &HistogramSnapshot,
    scale: f64,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    let buckets: Vec<(f64, u64)> = snapshot
        .buckets
        .iter()
        .map(|&(bound, n)| (bound as f64 * scale, n))
        .collect();
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        snapshot.sum as f64 * scale,
        snapshot.count,
        &buckets,
        None,
    )
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    family(
        encoder,
        name,
        help,
        MetricType::Gauge,
        &[(Vec::new(), value)],
    )
}

#[derive(Default)]
struct TopicTraffic {
    bytes_in: u64,
    records_in: u64,
    bytes_out: u64,
    records_out: u64,
    replica_bytes_out: u64,
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = &self.state;
        let metadata = state.cluster.current();
        let placed: BTreeMap<&str, &weir_proto::v1::PlacedTopic> = metadata
            .topics
            .iter()
            .filter_map(|t| t.description.as_ref().map(|d| (d.name.as_str(), t)))
            .collect();
        let mut traffic: BTreeMap<String, TopicTraffic> = BTreeMap::new();
        let (mut size, mut log_start, mut high_watermark, mut log_end) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut replicas, mut in_sync, mut follower_lag) = (Vec::new(), Vec::new(), Vec::new());
        let (mut leading, mut under_replicated, mut under_min_isr) = (0u64, 0u64, 0u64);
        let (mut sync_durations, mut group_sizes) =
            (HistogramSnapshot::default(), HistogramSnapshot::default());
        // (topic, partition) -> high watermark, of the partitions led here.
        let mut led: BTreeMap<(String, u32), u64> = BTreeMap::new();
        for topic in state.topics.list() {
            let name = topic.meta.name.clone();
            let sum = traffic.entry(name.clone()).or_default();
            for (p, partition) in topic.local_partitions() {
                let t = &partition.traffic;
                sum.bytes_in += t.bytes_in.load(Ordering::Relaxed);
                sum.records_in += t.records_in.load(Ordering::Relaxed);
                sum.bytes_out += t.bytes_out.load(Ordering::Relaxed);
                sum.records_out += t.records_out.load(Ordering::Relaxed);
                sum.replica_bytes_out += t.replica_bytes_out.load(Ordering::Relaxed);
                let syncs = partition.log.sync_stats();
                sync_durations.merge(&syncs.duration_ns.snapshot());
                group_sizes.merge(&syncs.group_size.snapshot());
                let replica = state.replicas.get(&name, p);
                // Partition gauges come from the leader, or the only copy.
                if replica.as_ref().is_some_and(|r| r.leading().is_none()) {
                    continue;
                }
                leading += 1;
                let labels: Labels = vec![("topic", name.clone()), ("partition", p.to_string())];
                size.push((labels.clone(), partition.log.size_bytes() as f64));
                log_start.push((labels.clone(), partition.log.log_start_offset() as f64));
                high_watermark.push((labels.clone(), partition.high_watermark() as f64));
                led.insert((name.clone(), p), partition.high_watermark());
                log_end.push((labels.clone(), partition.log.high_watermark() as f64));
                if let Some(replica) = &replica {
                    for (follower, behind) in
                        crate::replica::leader::follower_lags(replica, state.cluster.node_id)
                    {
                        let mut labels = labels.clone();
                        labels.push(("replica", follower.to_string()));
                        follower_lag.push((labels, behind as f64));
                    }
                }
                if let Some(wire) = placed
                    .get(name.as_str())
                    .filter(|t| t.topic_id == topic.meta.id())
                    .and_then(|t| t.partitions.get(p as usize))
                {
                    replicas.push((labels.clone(), wire.replicas.len() as f64));
                    in_sync.push((labels, wire.isr.len() as f64));
                    if wire.isr.len() < wire.replicas.len() {
                        under_replicated += 1;
                    }
                    if (wire.isr.len() as u32) < wire.min_insync_replicas {
                        under_min_isr += 1;
                    }
                }
            }
        }
        let (mut committed, mut lag) = (Vec::new(), Vec::new());
        for ((group, topic, p), &offset) in self.commits.snapshot().iter() {
            let Some(&hw) = led.get(&(topic.clone(), *p)) else {
                continue;
            };
            let labels: Labels = vec![
                ("group", group.clone()),
                ("topic", topic.clone()),
                ("partition", p.to_string()),
            ];
            committed.push((labels.clone(), offset as f64));
            lag.push((labels, hw.saturating_sub(offset) as f64));
        }
        let per_topic = |f: fn(&TopicTraffic) -> u64| -> Vec<(Labels, f64)> {
            traffic
                .iter()
                .map(|(topic, t)| (vec![("topic", topic.clone())], f(t) as f64))
                .collect()
        };
        use MetricType::{Counter, Gauge};
        family(
            &mut encoder,
            "weir_topic_bytes_in",
            "Record batch bytes appended by produce on this broker",
            Counter,
            &per_topic(|t| t.bytes_in),
        )?;
        family(
            &mut encoder,
            "weir_topic_records_in",
            "Records appended by produce on this broker (duplicates of an idempotent retry not counted)",
            Counter,
            &per_topic(|t| t.records_in),
        )?;
        family(
            &mut encoder,
            "weir_topic_bytes_out",
            "Record batch bytes sent to consumers by this broker, both transports",
            Counter,
            &per_topic(|t| t.bytes_out),
        )?;
        family(
            &mut encoder,
            "weir_topic_records_out",
            "Records sent to consumers by this broker (by batch offsets), both transports",
            Counter,
            &per_topic(|t| t.records_out),
        )?;
        family(
            &mut encoder,
            "weir_topic_replication_bytes_out",
            "Record batch bytes sent to followers replicating partitions this broker leads",
            Counter,
            &per_topic(|t| t.replica_bytes_out),
        )?;
        family(
            &mut encoder,
            "weir_partition_size_bytes",
            "Bytes of record batches on disk, for each partition this broker leads",
            Gauge,
            &size,
        )?;
        family(
            &mut encoder,
            "weir_partition_log_start_offset",
            "The oldest offset kept, for each partition this broker leads",
            Gauge,
            &log_start,
        )?;
        family(
            &mut encoder,
            "weir_partition_high_watermark",
            "The offset consumers read below (on a replicated partition: what every in-sync replica holds)",
            Gauge,
            &high_watermark,
        )?;
        family(
            &mut encoder,
            "weir_partition_log_end_offset",
            "The offset the next appended record gets, for each partition this broker leads",
            Gauge,
            &log_end,
        )?;
        family(
            &mut encoder,
            "weir_partition_replicas",
            "Replicas assigned to each partition this broker leads",
            Gauge,
            &replicas,
        )?;
        family(
            &mut encoder,
            "weir_partition_in_sync_replicas",
            "In-sync replicas of each partition this broker leads",
            Gauge,
            &in_sync,
        )?;
        family(
            &mut encoder,
            "weir_replica_lag_records",
            "Records each follower of a partition this broker leads was behind the leader's log end at its last fetch",
            Gauge,
            &follower_lag,
        )?;
        family(
            &mut encoder,
            "weir_consumer_group_committed_offset",
            "A consumer group's committed offset, for each partition this broker leads (copied from the controller every 5 s)",
            Gauge,
            &committed,
        )?;
        family(
            &mut encoder,
            "weir_consumer_group_lag",
            "Records between a consumer group's committed offset and the high watermark, for each partition this broker leads",
            Gauge,
            &lag,
        )?;
        gauge(
            &mut encoder,
            "weir_leader_partitions",
            "Partitions this broker leads (or holds the only copy of)",
            leading as f64,
        )?;
        gauge(
            &mut encoder,
            "weir_under_replicated_partitions",
            "Partitions this broker leads whose in-sync set is smaller than their replica set",
            under_replicated as f64,
        )?;
        gauge(
            &mut encoder,
            "weir_under_min_isr_partitions",
            "Partitions this broker leads whose in-sync set is below min_insync_replicas (acks=all refused, high watermark frozen)",
            under_min_isr as f64,
        )?;
        histogram(
            &mut encoder,
            "weir_storage_fsync_duration_seconds",
            "Time each group-commit sync of a partition log took (its fdatasyncs), all partitions held here",
            &sync_durations,
            1e-9,
        )?;
        histogram(
            &mut encoder,
            "weir_storage_group_commit_size",
            "Callers each group-commit sync made durable (appends waiting for it, and the one that ran it)",
            &group_sizes,
            1.0,
        )?;
        let limits = &state.limits;
        gauge(
            &mut encoder,
            "weir_produce_in_flight_bytes",
            "Produce bytes received and not yet appended (and synced, for acks=durable), broker-wide",
            limits.global_in_use() as f64,
        )?;
        gauge(
            &mut encoder,
            "weir_produce_in_flight_limit_bytes",
            "The broker-wide limit of in-flight produce bytes (--max-in-flight-bytes)",
            limits.global_limit() as f64,
        )?;
        let recovery = state.recovery;
        gauge(
            &mut encoder,
            "weir_recovery_clean",
            "1 if the last start found the logs closed cleanly, 0 if it recovered them",
            if recovery.clean { 1.0 } else { 0.0 },
        )?;
        gauge(
            &mut encoder,
            "weir_recovery_duration_seconds",
            "Time the last start took to open (and recover) the data dir",
            recovery.seconds,
        )?;
        gauge(
            &mut encoder,
            "weir_recovery_truncated_bytes",
            "Bytes of torn or unsynced log tails the last start cut",
            recovery.truncated_bytes as f64,
        )?;
        gauge(
            &mut encoder,
            "weir_recovery_truncated_partitions",
            "Partitions whose log the last start cut",
            recovery.truncated_partitions as f64,
        )?;
        let alive = metadata.brokers.iter().filter(|b| b.alive).count();
        gauge(
            &mut encoder,
            "weir_cluster_brokers",
            "Brokers registered with the controller, as this node's metadata says",
            metadata.brokers.len() as f64,
        )?;
        gauge(
            &mut encoder,
            "weir_cluster_brokers_alive",
            "Registered brokers whose lease holds, as this node's metadata says",
            alive as f64,
        )?;
        gauge(
            &mut encoder,
            "weir_cluster_metadata_version",
            "The low 32 bits of the metadata version this node holds (the high bits identify the controller's start)",
            (metadata.version & 0xffff_ffff) as f64,
        )?;
        gauge(
            &mut encoder,
            "weir_controller_reachable",
            "1 while this node reaches the controller (or runs it)",
            if state.cluster.controller_reachable() {
                1.0
            } else {
                0.0
            },
        )?;
        let offline = metadata
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.leader.is_none())
            .count();
        gauge(
            &mut encoder,
            "weir_cluster_offline_partitions",
            "Partitions without a leader in this node's metadata (no in-sync replica alive)",
            offline as f64,
        )?;
        Ok(())
    }
}
