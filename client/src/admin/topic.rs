//! What the broker says about a topic: [`TopicDescription`] and its settings, converted from
//! the proto messages once, so callers see Rust enums and `Option`s.

use std::time::Duration;

use bytes::Bytes;
use weir_proto::v1::{self, flush_policy::Kind as FlushKind};

use crate::{ClientError, PartitionerKind};

/// When the broker syncs a topic's partitions to disk without being asked by `acks=durable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Every interval.
    Interval(Duration),
    /// Never: the OS page cache decides; only `acks=durable` syncs.
    Never,
    /// Every append is synced before it is acknowledged, whatever its acks.
    Always,
}

impl FlushPolicy {
    fn to_proto(self) -> v1::FlushPolicy {
        let (kind, interval) = match self {
            FlushPolicy::Interval(every) => (FlushKind::FlushInterval, every),
            FlushPolicy::Never => (FlushKind::FlushNever, Duration::ZERO),
            FlushPolicy::Always => (FlushKind::FlushAlways, Duration::ZERO),
        };
        v1::FlushPolicy {
            kind: kind as i32,
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn from_proto(policy: v1::FlushPolicy) -> Option<Self> {
        match FlushKind::try_from(policy.kind).ok()? {
            FlushKind::FlushInterval => Some(FlushPolicy::Interval(Duration::from_millis(
                policy.interval_ms,
            ))),
            FlushKind::FlushNever => Some(FlushPolicy::Never),
            FlushKind::FlushAlways => Some(FlushPolicy::Always),
        }
    }
}

/// Per-topic storage settings. `None` means the broker's default (a description from the broker
/// has its defaults filled in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicConfig {
    /// Delete whole old segments once a partition is larger than this.
    pub retention_bytes: Option<u64>,
    /// Delete whole segments whose newest record is older than this many milliseconds.
    pub retention_ms: Option<u64>,
    /// Roll to a new segment at this size.
    pub segment_bytes: Option<u64>,
    /// When the broker syncs without being asked.
    pub flush: Option<FlushPolicy>,
    /// The largest batch the topic accepts.
    pub max_batch_bytes: Option<u32>,
    /// Whether the broker indexes each key's last offset (for appends conditional on it).
    pub key_index: Option<bool>,
    /// Copies of each partition, on distinct brokers (at creation only).
    pub replication_factor: Option<u32>,
    /// In-sync replicas needed for `acks=all`/`durable` produce and for the high watermark to move.
    pub min_insync_replicas: Option<u32>,
    /// Elect a replica outside the in-sync set when none in it is alive (loses data).
    pub unclean_leader_election: Option<bool>,
}

impl TopicConfig {
    pub(crate) fn to_proto(&self) -> v1::TopicConfig {
        v1::TopicConfig {
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
            segment_bytes: self.segment_bytes,
            flush: self.flush.map(FlushPolicy::to_proto),
            max_batch_bytes: self.max_batch_bytes,
            key_index: self.key_index,
            replication_factor: self.replication_factor,
            min_insync_replicas: self.min_insync_replicas,
            unclean_leader_election: self.unclean_leader_election,
        }
    }

    fn from_proto(config: v1::TopicConfig) -> Self {
        TopicConfig {
            retention_bytes: config.retention_bytes,
            retention_ms: config.retention_ms,
            segment_bytes: config.segment_bytes,
            flush: config.flush.and_then(FlushPolicy::from_proto),
            max_batch_bytes: config.max_batch_bytes,
            key_index: config.key_index,
            replication_factor: config.replication_factor,
            min_insync_replicas: config.min_insync_replicas,
            unclean_leader_election: config.unclean_leader_election,
        }
    }
}

/// How a topic's partitions are spread over the brokers (chosen at creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Rendezvous hashing: adding a broker moves only the partitions it wins.
    Hash,
    /// Contiguous blocks of partitions per broker.
    Range,
    /// Partition i on the (i mod N)-th broker.
    RoundRobin,
}

impl Placement {
    pub(crate) fn to_proto(self) -> v1::Placement {
        match self {
            Placement::Hash => v1::Placement::Hash,
            Placement::Range => v1::Placement::Range,
            Placement::RoundRobin => v1::Placement::RoundRobin,
        }
    }

    pub(crate) fn from_proto(value: i32) -> Placement {
        match v1::Placement::try_from(value) {
            Ok(v1::Placement::Range) => Placement::Range,
            Ok(v1::Placement::RoundRobin) => Placement::RoundRobin,
            _ => Placement::Hash,
        }
    }

    /// The name the CLI uses: `hash`, `range`, `round-robin`.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Hash => "hash",
            Placement::Range => "range",
            Placement::RoundRobin => "round-robin",
        }
    }
}

/// One partition: where it lives, and (when known) its offsets and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    /// The partition number.
    pub partition: u32,
    /// The oldest offset still kept.
    pub log_start_offset: u64,
    /// The offset the next appended record will get.
    pub high_watermark: u64,
    /// Bytes of log on disk.
    pub size_bytes: u64,
    /// The data port (sendfile fetches) serving it, as advertised by the broker, if any.
    pub data_address: Option<String>,
    /// The id and gRPC address of the broker that owns it.
    pub leader_id: u32,
    /// The owner's gRPC address.
    pub leader_address: String,
    /// False once the owner's lease has lapsed (the partition is unavailable until it returns).
    pub leader_alive: bool,
    /// Whether the offsets and size above were read from the owner (false: unknown, e.g. the
    /// owner is down).
    pub offsets_known: bool,
    /// The brokers holding a copy, preferred leader first (one without replication).
    pub replicas: Vec<u32>,
    /// The in-sync replicas, sorted.
    pub isr: Vec<u32>,
    /// Bumped by every leadership change.
    pub leader_epoch: u32,
    /// Bumped by every change of the partition's leader or in-sync set.
    pub partition_epoch: u32,
    /// While a reassignment runs: the replicas it removes once the others are in sync, sorted
    /// (empty otherwise). Replicas neither in `isr` nor here are being added.
    pub removing_replicas: Vec<u32>,
}

impl PartitionDescription {
    /// The replicas the partition keeps once a reassignment in progress is done (all of them
    /// when none runs), preferred leader first.
    pub fn target_replicas(&self) -> Vec<u32> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.removing_replicas.contains(b))
            .collect()
    }

    /// Whether the partition has its target replicas, all of them in sync, and nothing left
    /// to remove: a reassignment of it is done (and an under-replicated partition is not).
    pub fn fully_in_sync(&self) -> bool {
        self.removing_replicas.is_empty() && self.replicas.iter().all(|b| self.isr.contains(b))
    }
}

/// A topic as the broker describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// The topic's name.
    pub name: String,
    /// How many partitions it has.
    pub partition_count: u32,
    /// How producers map records to partitions.
    pub partitioner: PartitionerKind,
    /// The split keys of a `range` topic (empty otherwise).
    pub split_keys: Vec<Bytes>,
    /// The effective settings.
    pub config: TopicConfig,
    /// Per partition, in partition order; empty in [`Admin::list_topics`](super::Admin::list_topics).
    pub partitions: Vec<PartitionDescription>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// How the partitions are spread over the brokers.
    pub placement: Placement,
}

impl TopicDescription {
    pub(crate) fn from_proto(topic: v1::TopicDescription) -> Result<Self, ClientError> {
        Ok(TopicDescription {
            partitioner: PartitionerKind::from_proto(topic.partitioner)?,
            name: topic.name,
            partition_count: topic.partition_count,
            split_keys: topic.split_keys,
            config: topic
                .config
                .map(TopicConfig::from_proto)
                .unwrap_or_default(),
            partitions: topic
                .partitions
                .into_iter()
                .map(|p| PartitionDescription {
                    partition: p.partition,
                    log_start_offset: p.log_start_offset,
                    high_watermark: p.high_watermark,
                    size_bytes: p.size_bytes,
                    data_address: (!p.data_address.is_empty()).then_some(p.data_address),
                    leader_id: p.leader_id,
                    leader_address: p.leader_address,
                    leader_alive: p.leader_alive,
                    offsets_known: p.offsets_known,
                    replicas: p.replicas,
                    isr: p.isr,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    removing_replicas: p.removing_replicas,
                })
                .collect(),
            created_ms: topic.created_ms,
            placement: Placement::from_proto(topic.placement),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_policies_round_trip() {
        for policy in [
            FlushPolicy::Interval(Duration::from_millis(250)),
            FlushPolicy::Never,
            FlushPolicy::Always,
        ] {
            assert_eq!(FlushPolicy::from_proto(policy.to_proto()), Some(policy));
        }
    }

    #[test]
    fn a_description_converts() {
        let described = TopicDescription::from_proto(v1::TopicDescription {
            name: "users".into(),
            partition_count: 2,
            partitioner: v1::Partitioner::Range as i32,
            split_keys: vec![Bytes::from_static(b"m")],
            config: Some(v1::TopicConfig {
                max_batch_bytes: Some(8 << 20),
                ..Default::default()
            }),
            partitions: vec![v1::PartitionDescription {
                partition: 1,
                log_start_offset: 5,
                high_watermark: 9,
                size_bytes: 400,
                data_address: "127.0.0.1:7071".into(),
                ..Default::default()
            }],
            created_ms: 1_700_000_000_000,
            placement: v1::Placement::Range as i32,
        })
        .unwrap();
        assert_eq!(described.partitioner, PartitionerKind::Range);
        assert_eq!(described.config.max_batch_bytes, Some(8 << 20));
        assert_eq!(described.partitions[0].high_watermark, 9);
        assert_eq!(
            described.partitions[0].data_address.as_deref(),
            Some("127.0.0.1:7071")
        );
    }
}
