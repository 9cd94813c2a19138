//! Translation between the broker's own types (topic metadata, placement, assignors) and the
//! wire's (`weir.v1`), in one place for the gRPC service and the controller.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use weir_proto::v1::{
    self, BrokerInfo, PartitionDescription, TopicConfig, TopicDescription, flush_policy,
};

use crate::controller::assignor::AssignorKind;
use crate::controller::placement::PlacementKind;
use crate::topics::{FlushKind, PartitionerKind, TopicMeta, TopicSettings};

pub fn partitioner_from_wire(value: i32) -> Result<PartitionerKind, String> {
    match v1::Partitioner::try_from(value) {
        Ok(v1::Partitioner::Hash) => Ok(PartitionerKind::Hash),
        Ok(v1::Partitioner::Range) => Ok(PartitionerKind::Range),
        Ok(v1::Partitioner::RoundRobin) => Ok(PartitionerKind::RoundRobin),
        Err(_) => Err(format!("unknown partitioner {value}")),
    }
}

pub fn partitioner_to_wire(kind: PartitionerKind) -> v1::Partitioner {
    match kind {
        PartitionerKind::Hash => v1::Partitioner::Hash,
        PartitionerKind::Range => v1::Partitioner::Range,
        PartitionerKind::RoundRobin => v1::Partitioner::RoundRobin,
    }
}

pub fn placement_from_wire(value: i32) -> Result<PlacementKind, String> {
    match v1::Placement::try_from(value) {
        Ok(v1::Placement::Hash) => Ok(PlacementKind::Hash),
        Ok(v1::Placement::Range) => Ok(PlacementKind::Range),
        Ok(v1::Placement::RoundRobin) => Ok(PlacementKind::RoundRobin),
        Err(_) => Err(format!("unknown placement {value}")),
    }
}

pub fn placement_to_wire(kind: PlacementKind) -> v1::Placement {
    match kind {
        PlacementKind::Hash => v1::Placement::Hash,
        PlacementKind::Range => v1::Placement::Range,
        PlacementKind::RoundRobin => v1::Placement::RoundRobin,
    }
}

pub fn assignor_from_wire(value: i32) -> Result<AssignorKind, String> {
    match v1::Assignor::try_from(value) {
        Ok(v1::Assignor::Range) => Ok(AssignorKind::Range),
        Ok(v1::Assignor::RoundRobin) => Ok(AssignorKind::RoundRobin),
        Ok(v1::Assignor::Sticky) => Ok(AssignorKind::Sticky),
        Err(_) => Err(format!("unknown assignor {value}")),
    }
}

pub fn assignor_to_wire(kind: AssignorKind) -> v1::Assignor {
    match kind {
        AssignorKind::Range => v1::Assignor::Range,
        AssignorKind::RoundRobin => v1::Assignor::RoundRobin,
        AssignorKind::Sticky => v1::Assignor::Sticky,
    }
}

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

/// A topic as the wire describes it, with each partition's leader (offsets left for the
/// caller that holds the partition to fill in).
pub fn describe_topic(
    meta: &TopicMeta,
    placement: PlacementKind,
    leaders: &[u32],
    brokers: &BTreeMap<u32, BrokerInfo>,
) -> TopicDescription {
    let partitions = leaders
        .iter()
        .enumerate()
        .map(|(p, &leader)| {
            let broker = brokers.get(&leader);
            PartitionDescription {
                partition: p as u32,
                leader_id: leader,
                leader_address: broker.map(|b| b.address.clone()).unwrap_or_default(),
                data_address: broker.map(|b| b.data_address.clone()).unwrap_or_default(),
                leader_alive: broker.is_some_and(|b| b.alive),
                ..PartitionDescription::default()
            }
        })
        .collect();
    TopicDescription {
        name: meta.name.clone(),
        partition_count: meta.partitions,
        partitioner: partitioner_to_wire(meta.partitioner) as i32,
        split_keys: meta.split_keys.iter().cloned().map(Bytes::from).collect(),
        config: Some(settings_to_wire(&meta.settings)),
        partitions,
        created_ms: meta.created_ms,
        placement: placement_to_wire(placement) as i32,
    }
}

/// The metadata a described topic stands for (a broker's report of a topic it holds).
pub fn meta_from_description(
    d: &TopicDescription,
    topic_id: &str,
    defaults: TopicSettings,
) -> Result<TopicMeta, String> {
    Ok(TopicMeta {
        version: crate::topics::meta::META_VERSION,
        name: d.name.clone(),
        partitions: d.partition_count,
        partitioner: partitioner_from_wire(d.partitioner)?,
        split_keys: d.split_keys.iter().map(|k| k.to_vec()).collect(),
        settings: settings_from_wire(defaults, d.config.unwrap_or_default())?,
        created_ms: d.created_ms,
        topic_id: topic_id.to_owned(),
        local_partitions: None,
    })
}
