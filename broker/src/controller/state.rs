//! The controller's persisted state and the events that change it.
//!
//! The state is a pure function of the event sequence: [`ControllerState::apply`] is the only
//! place it changes, the journal replays the same events on restart, and a snapshot is this
//! struct serialized. What is *not* here is ephemeral by design and rebuilt after a restart:
//! broker leases and members' last heartbeats (both restart their clocks, so a restarted
//! controller gives everyone one full lease or session before expiring them).
//!
//! Replication adds each partition's [`PartitionRecord`] (a serde mirror of
//! [`weir_replication::PartitionState`]) to its [`TopicRecord`], and each broker start's epoch.
//! Invariants kept by `apply`:
//! - a topic's `partitions` has one record per partition, and `leaders[p]` is always partition
//!   `p`'s leader, or its first replica while it has none (the pre-replication readers of
//!   `leaders` keep working); records journaled before replication are upgraded on load
//!   ([`TopicRecord::upgrade`]) to one replica, the owner, leading in epoch 1;
//! - broker epochs only grow: `last_broker_epoch` is the largest ever assigned, so a restarted
//!   controller hands out larger ones (KIP-380).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use weir_replication::{BrokerId, LeaderEpoch, PartitionEpoch, PartitionState};

use super::assignor::Slot;
use crate::group_strategy::AssignorKind;
use crate::security::acl::AclEntry;
use crate::topics::{PlacementKind, TopicMeta};

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub id: u32,
    pub address: String,
    pub data_address: String,
    /// For clients outside the broker's network; empty without an external listener.
    /// (Defaulted: journals written before external listeners existed lack them.)
    #[serde(default)]
    pub external_address: String,
    #[serde(default)]
    pub external_data_address: String,
}

/// A topic and where its partitions live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// `meta.topic_id` tells this topic from a later one of the same name.
    pub meta: TopicMeta,
    pub placement: PlacementKind,
    /// `leaders[p]` is partition `p`'s leader, or its first replica while it has none.
    pub leaders: Vec<u32>,
    /// `partitions[p]` is partition `p`'s replication state. Absent in records journaled
    /// before replication: [`TopicRecord::upgrade`] derives it from `leaders`.
    #[serde(default)]
    pub partitions: Vec<PartitionRecord>,
}

impl TopicRecord {
    /// Fills `partitions` of a record from before replication: each partition on its owner
    /// alone, leading in epoch 1 (what such a partition has been all along).
    pub fn upgrade(&mut self) {
        if self.partitions.len() != self.leaders.len() {
            self.partitions = self
                .leaders
                .iter()
                .map(|&leader| PartitionRecord::from(&PartitionState::new(vec![BrokerId(leader)])))
                .collect();
        }
    }

    /// Partition `p`'s state, if the topic has it.
    pub fn partition_state(&self, p: u32) -> Option<PartitionState> {
        self.partitions.get(p as usize).map(PartitionState::from)
    }

    /// Replaces partition `p`'s state, keeping `leaders` consistent with it.
    fn set_partition(&mut self, p: u32, state: PartitionRecord) {
        let p = p as usize;
        if p >= self.partitions.len() || p >= self.leaders.len() {
            return;
        }
        if let Some(leader) = state.leader.or_else(|| state.replicas.first().copied()) {
            self.leaders[p] = leader;
        }
        self.partitions[p] = state;
    }
}

/// A partition's replication state as journaled: [`PartitionState`] in serde form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// Preferred leader first.
    pub replicas: Vec<u32>,
    pub leader: Option<u32>,
    pub leader_epoch: u32,
    /// Sorted.
    pub isr: Vec<u32>,
    pub partition_epoch: u32,
    /// A reassignment's replicas to remove, sorted; empty when none runs. (Defaulted: records
    /// journaled before reassignment lack it.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<u32>,
}

impl From<&PartitionState> for PartitionRecord {
    fn from(s: &PartitionState) -> Self {
        PartitionRecord {
            replicas: s.replicas.iter().map(|b| b.0).collect(),
            leader: s.leader.map(|b| b.0),
            leader_epoch: s.leader_epoch.0,
            isr: s.isr.iter().map(|b| b.0).collect(),
            partition_epoch: s.partition_epoch.0,
            removing: s.removing.iter().map(|b| b.0).collect(),
        }
    }
}

impl From<&PartitionRecord> for PartitionState {
    fn from(r: &PartitionRecord) -> Self {
        PartitionState {
            replicas: r.replicas.iter().copied().map(BrokerId).collect(),
            leader: r.leader.map(BrokerId),
            leader_epoch: LeaderEpoch(r.leader_epoch),
            isr: r.isr.iter().copied().map(BrokerId).collect(),
            partition_epoch: PartitionEpoch(r.partition_epoch),
            removing: r.removing.iter().copied().map(BrokerId).collect(),
        }
    }
}

/// A consumer group member as the controller remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub client_id: String,
    pub topics: BTreeSet<String>,
    pub session_timeout_ms: u32,
    pub assignment: Vec<Slot>,
}

/// A consumer group's membership in its current generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub generation: u32,
    pub assignor: AssignorKind,
    pub members: BTreeMap<String, MemberRecord>,
    /// The partition counts the assignment was computed from (a change triggers a rebalance).
    pub partition_counts: BTreeMap<String, u32>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub offset: u64,
    pub metadata: String,
    pub commit_ms: i64,
}

/// A user: its name and the SHA-256 of its token (see [`crate::security::tokens`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub token_hash: String,
    pub created_ms: i64,
}

/// One change, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    BrokerRegistered(BrokerRecord),
    TopicCreated(TopicRecord),
    TopicDeleted {
        name: String,
        topic_id: String,
    },
    /// The group's new membership and assignment; `None` removes the group's membership (it
    /// keeps its committed offsets).
    GroupChanged {
        group: String,
        record: Option<GroupRecord>,
    },
    OffsetsCommitted {
        group: String,
        offsets: Vec<(String, u32, CommitRecord)>,
    },
    /// A broker registered: this start's broker epoch (larger than every earlier one).
    BrokerStarted {
        broker: u32,
        broker_epoch: u64,
    },
    /// A partition's new replication state (an election, a fencing, an ISR change, an unclean
    /// restart), for the topic of that id.
    PartitionChanged {
        topic: String,
        topic_id: String,
        partition: u32,
        state: PartitionRecord,
    },
    /// The topic's `replication_factor` setting follows its partitions' replica count, after
    /// reassignments changed it in every partition (see `controller::reassignment`).
    ReplicationFactorChanged {
        topic: String,
        topic_id: String,
        replication_factor: u32,
    },
    /// A user was created (or its token replaced: the newest record of a name wins).
    UserCreated(UserRecord),
    /// A user was deleted: its token stops working.
    UserDeleted {
        name: String,
    },
    /// ACL entries added (each kept once).
    AclsCreated {
        entries: Vec<AclEntry>,
    },
    /// ACL entries removed.
    AclsDeleted {
        entries: Vec<AclEntry>,
    },
}

/// Deleted topic ids remembered (so a broker that was down during a delete drops the data).
const MAX_TOMBSTONES: usize = 10_000;

/// Everything the controller persists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerState {
    pub brokers: BTreeMap<u32, BrokerRecord>,
    pub topics: BTreeMap<String, TopicRecord>,
    /// Deleted topic ids, oldest first.
    pub deleted_topic_ids: Vec<String>,
    pub groups: BTreeMap<String, GroupRecord>,
    /// group -> topic -> partition -> commit.
    pub offsets: BTreeMap<String, BTreeMap<String, BTreeMap<u32, CommitRecord>>>,
    /// broker -> the epoch of its current start. (Defaulted: journals from before epochs.)
    #[serde(default)]
    pub broker_epochs: BTreeMap<u32, u64>,
    /// The largest broker epoch ever assigned.
    #[serde(default)]
    pub last_broker_epoch: u64,
    /// Users by name. (Defaulted: journals and snapshots from before security.)
    #[serde(default)]
    pub users: BTreeMap<String, UserRecord>,
    /// The ACL entries.
    #[serde(default)]
    pub acls: BTreeSet<AclEntry>,
}

impl ControllerState {
    /// Applies one event. Events are validated before they are journaled, so apply never
    /// refuses one; an event that no longer fits (replayed over a newer snapshot) is a no-op.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::BrokerRegistered(broker) => {
                self.brokers.insert(broker.id, broker);
            }
            Event::TopicCreated(mut topic) => {
                topic.upgrade();
                self.topics.insert(topic.meta.name.clone(), topic);
            }
            Event::BrokerStarted {
                broker,
                broker_epoch,
            } => {
                self.broker_epochs.insert(broker, broker_epoch);
                self.last_broker_epoch = self.last_broker_epoch.max(broker_epoch);
            }
            Event::PartitionChanged {
                topic,
                topic_id,
                partition,
                state,
            } => {
                if let Some(t) = self.topics.get_mut(&topic)
                    && t.meta.id() == topic_id
                {
                    t.set_partition(partition, state);
                }
            }
            Event::ReplicationFactorChanged {
                topic,
                topic_id,
                replication_factor,
            } => {
                if let Some(t) = self.topics.get_mut(&topic)
                    && t.meta.id() == topic_id
                {
                    t.meta.settings.replication_factor = replication_factor;
                }
            }
            Event::TopicDeleted { name, topic_id } => {
                if self
                    .topics
                    .get(&name)
                    .is_some_and(|t| t.meta.topic_id == topic_id)
                {
                    self.topics.remove(&name);
                }
                for offsets in self.offsets.values_mut() {
                    offsets.remove(&name);
                }
                if !self.deleted_topic_ids.contains(&topic_id) {
                    self.deleted_topic_ids.push(topic_id);
                }
                if self.deleted_topic_ids.len() > MAX_TOMBSTONES {
                    let excess = self.deleted_topic_ids.len() - MAX_TOMBSTONES;
                    self.deleted_topic_ids.drain(..excess);
                }
            }
            Event::GroupChanged { group, record } => match record {
                Some(record) => {
                    self.groups.insert(group, record);
                }
                None => {
                    self.groups.remove(&group);
                }
            },
            Event::UserCreated(user) => {
                self.users.insert(user.name.clone(), user);
            }
            Event::UserDeleted { name } => {
                self.users.remove(&name);
            }
            Event::AclsCreated { entries } => self.acls.extend(entries),
            Event::AclsDeleted { entries } => {
                for entry in &entries {
                    self.acls.remove(entry);
                }
            }
            Event::OffsetsCommitted { group, offsets } => {
                let committed = self.offsets.entry(group).or_default();
                for (topic, partition, commit) in offsets {
                    committed
                        .entry(topic)
                        .or_default()
                        .insert(partition, commit);
                }
            }
        }
    }

    /// Upgrades what a snapshot from before replication lacks (see [`TopicRecord::upgrade`]).
    pub fn upgrade(&mut self) {
        for topic in self.topics.values_mut() {
            topic.upgrade();
        }
    }

    /// The epoch the next broker start gets.
    pub fn next_broker_epoch(&self) -> u64 {
        self.last_broker_epoch + 1
    }

    /// The partition count of every existing topic.
    pub fn partition_counts(&self) -> BTreeMap<String, u32> {
        self.topics
            .iter()
            .map(|(name, t)| (name.clone(), t.meta.partitions))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleting_a_topic_drops_its_offsets_and_remembers_its_id() {
        let mut state = ControllerState::default();
        state.apply(Event::OffsetsCommitted {
            group: "g".into(),
            offsets: vec![(
                "t".into(),
                0,
                CommitRecord {
                    offset: 5,
                    metadata: String::new(),
                    commit_ms: 0,
                },
            )],
        });
        state.apply(Event::TopicDeleted {
            name: "t".into(),
            topic_id: "id-1".into(),
        });
        assert!(!state.offsets["g"].contains_key("t"));
        assert_eq!(state.deleted_topic_ids, ["id-1"]);
        // Round-trips through the snapshot encoding.
        let json = serde_json::to_vec(&state).unwrap();
        assert_eq!(
            serde_json::from_slice::<ControllerState>(&json).unwrap(),
            state
        );
    }

    #[test]
    fn records_from_before_replication_replay_as_one_replica_per_partition() {
        // A TopicCreated event as journaled before replication: no `partitions`, and settings
        // without the replication fields.
        let json = r#"{"event":"topic_created","meta":{"version":1,"name":"t","partitions":2,
            "partitioner":"hash","split_keys":[],"settings":{"retention_bytes":null,
            "retention_ms":null,"segment_bytes":1048576,"flush":"never","flush_interval_ms":0,
            "max_batch_bytes":1024},"created_ms":0,"topic_id":"t-1"},"placement":"hash",
            "leaders":[2,3]}"#;
        let event: Event = serde_json::from_str(json).unwrap();
        let mut state = ControllerState::default();
        state.apply(event);
        let t = &state.topics["t"];
        assert_eq!(t.meta.settings.replication_factor, 1);
        for (p, leader) in [(0, 2), (1, 3)] {
            let s = t.partition_state(p).unwrap();
            assert_eq!(s, PartitionState::new(vec![BrokerId(leader)]));
            assert_eq!(s.leader_epoch, LeaderEpoch(1));
        }
        // A snapshot from then: the same upgrade on load.
        let mut old = state.clone();
        old.topics.get_mut("t").unwrap().partitions.clear();
        let mut value = serde_json::to_value(&old).unwrap();
        value["topics"]["t"]
            .as_object_mut()
            .unwrap()
            .remove("partitions");
        value.as_object_mut().unwrap().remove("broker_epochs");
        let mut loaded: ControllerState = serde_json::from_value(value).unwrap();
        loaded.upgrade();
        assert_eq!(loaded, state);

        // A change keeps `leaders` on the leader, or the first replica while there is none.
        let mut leaderless =
            PartitionRecord::from(&PartitionState::new(vec![BrokerId(3), BrokerId(1)]));
        leaderless.leader = None;
        state.apply(Event::PartitionChanged {
            topic: "t".into(),
            topic_id: "t-1".into(),
            partition: 1,
            state: leaderless.clone(),
        });
        assert_eq!(state.topics["t"].leaders, [2, 3]);
        state.apply(Event::PartitionChanged {
            topic: "t".into(),
            topic_id: "another".into(),
            partition: 0,
            state: leaderless,
        });
        assert_eq!(
            state.topics["t"].partitions[0].leader,
            Some(2),
            "another topic's change"
        );
        state.apply(Event::BrokerStarted {
            broker: 2,
            broker_epoch: 7,
        });
        state.apply(Event::BrokerStarted {
            broker: 3,
            broker_epoch: 5,
        });
        assert_eq!(state.next_broker_epoch(), 8);
    }

    #[test]
    fn users_and_acls_replay_and_old_snapshots_have_none() {
        use crate::security::acl::{AclEntry, Operation, PatternKind, Permission, ResourcePattern};
        use crate::security::principal::Principal;
        let entry = AclEntry {
            principal: Principal::User("alice".into()),
            operation: Operation::Read,
            pattern: ResourcePattern::Topic {
                name: "orders".into(),
                kind: PatternKind::Prefix,
            },
            permission: Permission::Allow,
        };
        let events = vec![
            Event::UserCreated(UserRecord {
                name: "alice".into(),
                token_hash: "ab".into(),
                created_ms: 1,
            }),
            Event::AclsCreated {
                entries: vec![entry.clone(), entry.clone()],
            },
        ];
        let mut state = ControllerState::default();
        for event in events {
            // Journaled as JSON and read back, as replay does.
            let json = serde_json::to_vec(&event).unwrap();
            state.apply(serde_json::from_slice(&json).unwrap());
        }
        assert_eq!(state.users["alice"].token_hash, "ab");
        assert_eq!(state.acls.len(), 1, "an entry is kept once");
        state.apply(Event::AclsDeleted {
            entries: vec![entry],
        });
        state.apply(Event::UserDeleted {
            name: "alice".into(),
        });
        assert!(state.users.is_empty() && state.acls.is_empty());
        // A snapshot from before security: no users, no ACLs.
        let mut value = serde_json::to_value(&state).unwrap();
        value.as_object_mut().unwrap().remove("users");
        value.as_object_mut().unwrap().remove("acls");
        let loaded: ControllerState = serde_json::from_value(value).unwrap();
        assert_eq!(loaded, state);
    }
}
