//! A topic's settings on the wire: [`TopicSettings`] to and from `TopicConfig`.
//!
//! Invariant: a field the request leaves unset keeps the default it is laid over, and an
//! unknown flush policy is refused rather than guessed.

use std::time::Duration;

use weir_proto::v1::{self, TopicConfig, flush_policy};

use crate::topics::{FlushKind, TopicSettings};

pub fn settings_to_wire(s: &TopicSettings) -> TopicConfig {
    let kind = match s.flush {
        FlushKind::Interval => flush_policy::Kind::FlushInterval,
        FlushKind::Never => flush_policy::Kind::FlushNever,
        FlushKind::Always => flush_policy::Kind::FlushAlways,
    };
    TopicConfig {
        retention_bytes: s.retention_bytes,
        retention_ms: s.retention_ms,
        segment_bytes: Some(s.segment_bytes),
        flush: Some(v1::FlushPolicy {
            kind: kind as i32,
            interval_ms: s.flush_interval_ms,
        }),
        max_batch_bytes: Some(s.max_batch_bytes),
        key_index: Some(s.key_index),
        replication_factor: Some(s.replication_factor),
        min_insync_replicas: Some(s.min_insync_replicas),
        unclean_leader_election: Some(s.unclean_leader_election),
    }
}

/// `defaults` with the request's choices laid over them.
pub fn settings_from_wire(
    defaults: TopicSettings,
    c: TopicConfig,
) -> Result<TopicSettings, String> {
    let mut s = defaults;
    if c.retention_bytes.is_some() {
        s.retention_bytes = c.retention_bytes;
    }
    if c.retention_ms.is_some() {
        s.retention_ms = c.retention_ms;
    }
    if let Some(n) = c.segment_bytes {
        s.segment_bytes = n;
    }
    if let Some(n) = c.max_batch_bytes {
        s.max_batch_bytes = n;
    }
    if let Some(on) = c.key_index {
        s.key_index = on;
    }
    // Checked against the cluster by the controller at creation (it knows the live brokers).
    if let Some(n) = c.replication_factor {
        s.replication_factor = n;
    }
    if let Some(n) = c.min_insync_replicas {
        s.min_insync_replicas = n;
    }
    if let Some(on) = c.unclean_leader_election {
        s.unclean_leader_election = on;
    }
    if let Some(flush) = c.flush {
        s.flush = match flush_policy::Kind::try_from(flush.kind) {
            Ok(flush_policy::Kind::FlushInterval) => FlushKind::Interval,
            Ok(flush_policy::Kind::FlushNever) => FlushKind::Never,
            Ok(flush_policy::Kind::FlushAlways) => FlushKind::Always,
            Err(_) => return Err(format!("unknown flush policy {}", flush.kind)),
        };
        if s.flush == FlushKind::Interval {
            s.flush_interval_ms = match flush.interval_ms {
                0 => Duration::from_secs(1).as_millis() as u64,
                ms => ms,
            };
        }
    }
    Ok(s)
}
