//! [`NewTopic`]: what [`Admin::create_topic`](super::Admin::create_topic) asks for.
//!
//! The checks the client can make without the broker (the name rule, a partition count, split
//! keys strictly increasing and only with `range`) are made here, so a mistake is reported
//! before any network call; the broker checks everything again.

use bytes::Bytes;
use weir_proto::topic::validate_topic_name;
use weir_proto::v1;

use super::topic::Placement;
use super::{FlushPolicy, TopicConfig};
use crate::{ClientError, PartitionerKind};

/// A topic to create: name, partitions, partitioner and storage settings (unset settings take
/// the broker's defaults).
///
/// ```
/// use weir_client::{NewTopic, PartitionerKind};
/// let by_hash = NewTopic::new("orders").partitions(6);
/// let by_range = NewTopic::new("users")
///     .partitioner(PartitionerKind::Range)
///     .split_keys(["g", "n", "t"]) // 4 partitions: [..g) [g..n) [n..t) [t..)
///     .retention_ms(7 * 24 * 3600 * 1000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    name: String,
    partitions: Option<u32>,
    partitioner: PartitionerKind,
    split_keys: Vec<Bytes>,
    config: TopicConfig,
    placement: Placement,
}

impl NewTopic {
    /// A topic named `name` with the `hash` partitioner. Set
    /// [`partitions`](NewTopic::partitions), unless it is a `range` topic whose split keys
    /// imply the count.
    pub fn new(name: impl Into<String>) -> Self {
        NewTopic {
            name: name.into(),
            partitions: None,
            partitioner: PartitionerKind::Hash,
            split_keys: Vec::new(),
            config: TopicConfig::default(),
            placement: Placement::Hash,
        }
    }

    /// How the partitions are spread over the cluster's brokers. Default `hash`.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// The number of partitions (at least 1). With `range`, it must be split keys + 1.
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// How producers map records to partitions. Default `hash`.
    pub fn partitioner(mut self, partitioner: PartitionerKind) -> Self {
        self.partitioner = partitioner;
        self
    }

    /// The split keys of a `range` topic, strictly increasing (bytewise).
    pub fn split_keys<K: Into<Bytes>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.split_keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Delete whole old segments once a partition is larger than this.
    pub fn retention_bytes(mut self, bytes: u64) -> Self {
        self.config.retention_bytes = Some(bytes);
        self
    }

    /// Delete whole segments whose newest record is older than this many milliseconds.
    pub fn retention_ms(mut self, ms: u64) -> Self {
        self.config.retention_ms = Some(ms);
        self
    }

    /// Roll to a new segment at this size.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.config.segment_bytes = Some(bytes);
        self
    }

    /// When the broker syncs the topic's partitions without being asked by `acks=durable`.
    pub fn flush(mut self, policy: FlushPolicy) -> Self {
        self.config.flush = Some(policy);
        self
    }

    /// The largest batch the topic accepts.
    pub fn max_batch_bytes(mut self, bytes: u32) -> Self {
        self.config.max_batch_bytes = Some(bytes);
        self
    }

    /// Index each key's last offset, so appends can be conditional on it (`expected_keys`).
    /// Costs broker memory per distinct key (about key length + 56 bytes per partition).
    pub fn key_index(mut self, on: bool) -> Self {
        self.config.key_index = Some(on);
        self
    }

    /// Copies of each partition, on distinct brokers. Default: 3 with 3 or more brokers alive,
    /// else as many as are alive.
    pub fn replication_factor(mut self, replicas: u32) -> Self {
        self.config.replication_factor = Some(replicas);
        self
    }

    /// In-sync replicas a partition needs for `acks=all`/`durable` and for its high watermark
    /// to advance. Default: 2 with a replication factor of 3 or more, else 1.
    pub fn min_insync_replicas(mut self, replicas: u32) -> Self {
        self.config.min_insync_replicas = Some(replicas);
        self
    }

    /// Elect a replica outside the in-sync set when none in it is alive: available again, at
    /// the price of acknowledged records the new leader lacks. Default off.
    pub fn unclean_leader_election(mut self, on: bool) -> Self {
        self.config.unclean_leader_election = Some(on);
        self
    }

    /// The request, after the checks that need no broker.
    pub(crate) fn into_request(self) -> Result<v1::CreateTopicRequest, ClientError> {
        validate_topic_name(&self.name)?;
        let invalid =
            |message: String| Err(ClientError::refused(v1::ErrorCode::InvalidRequest, message));
        if self.partitioner != PartitionerKind::Range && !self.split_keys.is_empty() {
            return invalid(format!(
                "split keys apply only to the range partitioner, not {}",
                self.partitioner
            ));
        }
        if let Some(pair) = self.split_keys.windows(2).find(|pair| pair[0] >= pair[1]) {
            return invalid(format!(
                "split keys must be strictly increasing, but {:?} is not below {:?}",
                String::from_utf8_lossy(&pair[0]),
                String::from_utf8_lossy(&pair[1])
            ));
        }
        let partitions = match (self.partitions, self.partitioner) {
            (Some(0), _) => return invalid("a topic needs at least 1 partition".into()),
            (Some(n), PartitionerKind::Range)
                if !self.split_keys.is_empty() && n as usize != self.split_keys.len() + 1 =>
            {
                return invalid(format!(
                    "{} split keys make {} partitions, not {n}",
                    self.split_keys.len(),
                    self.split_keys.len() + 1
                ));
            }
            (Some(n), _) => n,
            // The broker derives the count from the split keys.
            (None, PartitionerKind::Range) if !self.split_keys.is_empty() => 0,
            (None, _) => return invalid("set the number of partitions".into()),
        };
        Ok(v1::CreateTopicRequest {
            name: self.name,
            partitions,
            partitioner: self.partitioner.to_proto() as i32,
            split_keys: self.split_keys,
            config: Some(self.config.to_proto()),
            placement: self.placement.to_proto() as i32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_topic() {
        let request = NewTopic::new("orders")
            .partitions(3)
            .retention_bytes(1 << 30)
            .flush(FlushPolicy::Always)
            .into_request()
            .unwrap();
        assert_eq!(request.name, "orders");
        assert_eq!(request.partitions, 3);
        assert_eq!(request.partitioner, v1::Partitioner::Hash as i32);
        let config = request.config.unwrap();
        assert_eq!(config.retention_bytes, Some(1 << 30));
        assert_eq!(config.retention_ms, None);
        assert_eq!(
            config.flush.unwrap().kind,
            v1::flush_policy::Kind::FlushAlways as i32
        );
    }

    #[test]
    fn a_range_topic_derives_its_partition_count() {
        let request = NewTopic::new("users")
            .partitioner(PartitionerKind::Range)
            .split_keys(["g", "n"])
            .into_request()
            .unwrap();
        assert_eq!(request.partitions, 0);
        assert_eq!(request.split_keys.len(), 2);
        let request = NewTopic::new("users")
            .partitioner(PartitionerKind::Range)
            .split_keys(["g", "n"])
            .partitions(3)
            .into_request()
            .unwrap();
        assert_eq!(request.partitions, 3);
    }

    #[test]
    fn mistakes_are_caught_before_the_network() {
        let refused = |topic: NewTopic| topic.into_request().unwrap_err().code();
        assert_eq!(
            refused(NewTopic::new("a/b").partitions(1)),
            Some(v1::ErrorCode::InvalidName)
        );
        assert_eq!(
            refused(NewTopic::new("t")),
            Some(v1::ErrorCode::InvalidRequest)
        );
        assert_eq!(
            refused(NewTopic::new("t").partitions(0)),
            Some(v1::ErrorCode::InvalidRequest)
        );
        assert_eq!(
            refused(NewTopic::new("t").partitions(2).split_keys(["m"])),
            Some(v1::ErrorCode::InvalidRequest)
        );
        let range = || NewTopic::new("t").partitioner(PartitionerKind::Range);
        assert_eq!(
            refused(range().split_keys(["n", "g"])),
            Some(v1::ErrorCode::InvalidRequest)
        );
        assert_eq!(
            refused(range().split_keys(["g", "g"])),
            Some(v1::ErrorCode::InvalidRequest)
        );
        assert_eq!(
            refused(range().split_keys(["g"]).partitions(5)),
            Some(v1::ErrorCode::InvalidRequest)
        );
    }
}
