//! A topic's metadata as persisted in the data dir: `topics/{name}.json`, one file per topic.
//!
//! The file is written atomically (tmp, fsync, rename, fsync dir) before any partition of the
//! topic is created, and renamed to `{name}.deleting` before any partition is deleted, so a
//! crash in either leaves a state [`super::Topics::open`] can finish: missing partitions of a
//! described topic are created, a `.deleting` topic's partitions are deleted.
//!
//! It also holds the named kinds that describe a topic ([`PartitionerKind`], [`PlacementKind`],
//! [`FlushKind`]). Their serde names are a stored format (topic files, the controller's
//! journal): renaming a variant breaks existing data dirs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use weir_storage::{FlushPolicy, LogConfig};

/// How producers map a record to a partition (see the .proto's `Partitioner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionerKind {
    Hash,
    Range,
    RoundRobin,
}

/// How a topic's partitions are spread over the brokers (see the .proto's `Placement`; the
/// controller's `placement` module computes it). Kept here, beside [`PartitionerKind`], because
/// it is part of what a topic *is*: the controller journals it by these names (`hash`,
/// `range`, `round-robin`) and the wire translation maps it, neither owning the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementKind {
    Hash,
    Range,
    RoundRobin,
}

/// The flush policy as stored and configured: `interval` (with `flush_interval_ms`), `never`,
/// `always`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlushKind {
    Interval,
    Never,
    Always,
}

/// A topic's storage settings, with every default filled in at creation (so a later change of
/// the broker's defaults does not silently change existing topics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
    pub segment_bytes: u64,
    pub flush: FlushKind,
    pub flush_interval_ms: u64,
    pub max_batch_bytes: u32,
    /// Index each key's last offset (for `expected_keys` conditions). Absent in files written
    /// before it existed: off.
    #[serde(default)]
    pub key_index: bool,
    /// Copies of each partition, on distinct brokers: chosen at creation; at the controller,
    /// a reassignment that leaves every partition with another count changes it (see
    /// `controller::reassignment`). A broker's own file keeps the count of the topic's
    /// creation here, and reads it only at open: a copy of a topic created with several
    /// replicas waits for the controller's metadata before it is served (`Topics::open`).
    /// Absent in files and journals written before replication: 1.
    #[serde(default = "one")]
    pub replication_factor: u32,
    /// The in-sync replicas a partition needs to advance its high watermark and accept
    /// `acks=all`/`durable` (rule 5). Absent before replication: 1.
    #[serde(default = "one")]
    pub min_insync_replicas: u32,
    /// Whether a replica outside the ISR may be elected when none in it is alive (rule 3:
    /// loses acknowledged records). Absent before replication: off.
    #[serde(default)]
    pub unclean_leader_election: bool,
}

/// The serde default of the replication counts (an unreplicated topic).
fn one() -> u32 {
    1
}

impl TopicSettings {
    /// The settings a [`LogConfig`] stands for.
    pub fn from_log_config(config: &LogConfig) -> Self {
        let (flush, flush_interval_ms) = match config.flush {
            FlushPolicy::Never => (FlushKind::Never, 0),
            FlushPolicy::Always => (FlushKind::Always, 0),
            FlushPolicy::Interval(d) => (FlushKind::Interval, d.as_millis() as u64),
        };
        TopicSettings {
            retention_bytes: config.retention_bytes,
            retention_ms: config.retention_age.map(|d| d.as_millis() as u64),
            segment_bytes: config.segment_bytes,
            flush,
            flush_interval_ms,
            max_batch_bytes: config.max_batch_bytes,
            key_index: config.key_index,
            // The storage config knows nothing of replication; the controller fills these in
            // at creation from the cluster's size (see `controller::topics`).
            replication_factor: 1,
            min_insync_replicas: 1,
            unclean_leader_election: false,
        }
    }

    /// The partition log configuration: these settings over `base` (the broker's defaults for
    /// everything a topic does not choose, like index interval and preallocation).
    pub fn log_config(&self, base: &LogConfig) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            max_batch_bytes: self.max_batch_bytes,
            flush: match self.flush {
                FlushKind::Never => FlushPolicy::Never,
                FlushKind::Always => FlushPolicy::Always,
                FlushKind::Interval => {
                    FlushPolicy::Interval(Duration::from_millis(self.flush_interval_ms))
                }
            },
            retention_bytes: self.retention_bytes,
            retention_age: self.retention_ms.map(Duration::from_millis),
            key_index: self.key_index,
            ..base.clone()
        }
    }
}

/// Everything the broker knows of a topic besides its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicMeta {
    /// Format version of this file; bumped on an incompatible change.
    pub version: u32,
    pub name: String,
    pub partitions: u32,
    pub partitioner: PartitionerKind,
    /// Strictly increasing; only with [`PartitionerKind::Range`], `partitions - 1` of them.
    pub split_keys: Vec<Vec<u8>>,
    pub settings: TopicSettings,
    pub created_ms: i64,
    /// The topic's identity: tells it from a later topic of the same name (a delete the broker
    /// missed while it was down). Files from before the controller have none:
    /// [`TopicMeta::id`] derives one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topic_id: String,
    /// The partitions this broker holds (the controller's placement); `None`: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_partitions: Option<Vec<u32>>,
}

impl TopicMeta {
    /// The topic's identity (see `topic_id`).
    pub fn id(&self) -> String {
        if self.topic_id.is_empty() {
            format!("{}@{}", self.name, self.created_ms)
        } else {
            self.topic_id.clone()
        }
    }

    /// Whether this broker holds partition `p` (assuming `p < partitions`).
    pub fn is_local(&self, p: u32) -> bool {
        self.local_partitions
            .as_ref()
            .is_none_or(|local| local.contains(&p))
    }
}

/// The version this broker writes and reads.
pub const META_VERSION: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_log_config() {
        let base = LogConfig::default();
        let settings = TopicSettings {
            retention_bytes: Some(1 << 30),
            retention_ms: Some(3_600_000),
            segment_bytes: 64 << 20,
            flush: FlushKind::Interval,
            flush_interval_ms: 250,
            max_batch_bytes: 1 << 20,
            key_index: true,
            replication_factor: 1,
            min_insync_replicas: 1,
            unclean_leader_election: false,
        };
        let config = settings.log_config(&base);
        assert_eq!(config.index_interval_bytes, base.index_interval_bytes);
        assert_eq!(TopicSettings::from_log_config(&config), settings);
    }

    #[test]
    fn stored_kind_names_do_not_change() {
        for (kind, name) in [
            (PlacementKind::Hash, "\"hash\""),
            (PlacementKind::Range, "\"range\""),
            (PlacementKind::RoundRobin, "\"round-robin\""),
        ] {
            assert_eq!(serde_json::to_string(&kind).unwrap(), name);
            assert_eq!(serde_json::from_str::<PlacementKind>(name).unwrap(), kind);
        }
        for (kind, name) in [
            (PartitionerKind::Hash, "\"hash\""),
            (PartitionerKind::Range, "\"range\""),
            (PartitionerKind::RoundRobin, "\"round-robin\""),
        ] {
            assert_eq!(serde_json::to_string(&kind).unwrap(), name);
        }
    }

    #[test]
    fn settings_written_before_replication_load_unreplicated() {
        let json = r#"{"retention_bytes":null,"retention_ms":null,"segment_bytes":1,"flush":"never",
            "flush_interval_ms":0,"max_batch_bytes":1}"#;
        let s: TopicSettings = serde_json::from_str(json).unwrap();
        assert_eq!(
            (
                s.replication_factor,
                s.min_insync_replicas,
                s.unclean_leader_election
            ),
            (1, 1, false)
        );
    }

    #[test]
    fn meta_file_refuses_unknown_fields() {
        let json = r#"{"version":1,"name":"t","partitions":1,"partitioner":"hash","split_keys":[],
            "settings":{"retention_bytes":null,"retention_ms":null,"segment_bytes":1,"flush":"never",
            "flush_interval_ms":0,"max_batch_bytes":1},"created_ms":0,"surprise":1}"#;
        assert!(serde_json::from_str::<TopicMeta>(json).is_err());
    }
}
