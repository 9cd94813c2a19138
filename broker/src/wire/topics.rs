//! Topics on the wire: partitioner and placement names, and a topic's metadata to and from
//! `TopicDescription`.
//!
//! A description carries no offsets: the node that holds a partition fills those in. An
//! unknown enum value from the wire is refused with a message, never mapped to a default.
//!
//! A partition's replication state ([`PartitionState`]) goes to the wire's `PartitionState`
//! (in metadata) and into its `PartitionDescription`; while a partition has no leader its
//! description names the first replica, with `leader_alive` false.

use std::collections::BTreeMap;

use bytes::Bytes;
use weir_proto::v1::{self, BrokerInfo, PartitionDescription, TopicDescription};
use weir_replication::PartitionState;

use super::config::{settings_from_wire, settings_to_wire};
use crate::topics::{PartitionerKind, PlacementKind, TopicMeta, TopicSettings};

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

/// The broker a partition's requests go to: its leader, or its first replica while it has
/// none (the `leaders` of `PlacedTopic`).
pub fn leader_or_first(state: &PartitionState) -> u32 {
    state
        .leader
        .or_else(|| state.replicas.first().copied())
        .map_or(0, |b| b.0)
}

/// A partition's state as the metadata carries it.
pub fn partition_state_to_wire(
    state: &PartitionState,
    min_insync_replicas: u32,
) -> v1::PartitionState {
    v1::PartitionState {
        replicas: state.replicas.iter().map(|b| b.0).collect(),
        leader: state.leader.map(|b| b.0),
        leader_epoch: state.leader_epoch.0,
        isr: state.isr.iter().map(|b| b.0).collect(),
        partition_epoch: state.partition_epoch.0,
        min_insync_replicas,
        removing_replicas: state.removing.iter().map(|b| b.0).collect(),
    }
}

/// A partition's state from the metadata. The wire is the controller's, but a broker checks
/// the invariants it relies on anyway: the ISR sorted and within the replicas, the leader in
/// it.
pub fn partition_state_from_wire(s: &v1::PartitionState) -> Result<PartitionState, String> {
    use weir_replication::{BrokerId, LeaderEpoch, PartitionEpoch};
    let state = PartitionState {
        replicas: s.replicas.iter().copied().map(BrokerId).collect(),
        leader: s.leader.map(BrokerId),
        leader_epoch: LeaderEpoch(s.leader_epoch),
        isr: s.isr.iter().copied().map(BrokerId).collect(),
        partition_epoch: PartitionEpoch(s.partition_epoch),
        removing: s.removing_replicas.iter().copied().map(BrokerId).collect(),
    };
    let sorted = state.isr.windows(2).all(|w| w[0] < w[1]);
    let within = state.isr.iter().all(|b| state.replicas.contains(b));
    let led = state.leader.is_none_or(|l| state.in_isr(l));
    let removing = state.removing.windows(2).all(|w| w[0] < w[1])
        && state.removing.iter().all(|b| state.replicas.contains(b))
        && state.removing.len() < state.replicas.len();
    if state.replicas.is_empty() || !sorted || !within || !led || !removing {
        return Err(format!("inconsistent partition state {s:?}"));
    }
    Ok(state)
}

/// A topic as the wire describes it, with each partition's leader, replicas, ISR and epochs
/// (offsets left for the caller that holds the partition to fill in).
pub fn describe_topic(
    meta: &TopicMeta,
    placement: PlacementKind,
    partitions: &[PartitionState],
    brokers: &BTreeMap<u32, BrokerInfo>,
) -> TopicDescription {
    let partitions = partitions
        .iter()
        .enumerate()
        .map(|(p, state)| {
            let leader = leader_or_first(state);
            let broker = brokers.get(&leader);
            PartitionDescription {
                partition: p as u32,
                leader_id: leader,
                leader_address: broker.map(|b| b.address.clone()).unwrap_or_default(),
                data_address: broker.map(|b| b.data_address.clone()).unwrap_or_default(),
                leader_alive: state.leader.is_some() && broker.is_some_and(|b| b.alive),
                replicas: state.replicas.iter().map(|b| b.0).collect(),
                isr: state.isr.iter().map(|b| b.0).collect(),
                leader_epoch: state.leader_epoch.0,
                partition_epoch: state.partition_epoch.0,
                removing_replicas: state.removing.iter().map(|b| b.0).collect(),
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
