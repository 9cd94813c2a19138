//! The [`Consumer`]: read assigned partitions from chosen positions as one merged stream.
//!
//! A consumer holds an *assignment*: partitions and, for each, its *position*, the offset of the
//! next record to read. [`Consumer::assign`] starts a partition at its oldest kept record;
//! [`Consumer::seek`] moves it (to the beginning, the end, an offset or a time, resolved with
//! ListOffsets). [`Consumer::stream`] then reads every assigned partition, each over its own
//! `Fetch` stream, merged into one [`RecordStream`]:
//!
//! - every fetched batch's CRC and structure are verified before its records are yielded; a
//!   corrupt batch is an `Err` item, never data;
//! - a dropped connection or a broker restart is ridden out: the partition reconnects with
//!   backoff and resumes at the first record it has not yet yielded;
//! - positions advance as records are yielded, so a new stream (after the old one was dropped)
//!   carries on exactly where the old one stopped.
//!
//! Positions belong to the consumer; a stream started before a `seek` keeps its own course (it
//! no longer moves the sought partition's position).
//!
//! A partition assigned while its owner is down starts *unresolved* ([`Unresolved`]): its
//! position is not known ([`Consumer::position`] says `None`) until its fetch task has asked
//! the owner, once the owner is back. With follow the task waits for the owner; without, a
//! partition whose owner is down ends with that error, and the others are read to their end.

mod batch;
mod config;
mod data_port;
mod fetcher;
mod group;
mod record;
mod stream;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use weir_proto::v1::ErrorCode;

use crate::admin::{Admin, OffsetSpec, TopicDescription};
use crate::cluster::Cluster;
use crate::{ClientError, TopicPartition};
use fetcher::PartitionFetch;

pub use batch::ConsumerBatch;
pub use config::{ConsumerConfig, Transport};
pub use group::{AutoOffsetReset, GroupConfig, GroupConsumer};
pub use record::ConsumerRecord;
pub use stream::RecordStream;

/// A position not known yet, held in a position cell until the partition's fetch task
/// resolves it: the log start or end of a partition whose owner could not be asked when it was
/// assigned. No offset comes near these values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unresolved {
    Earliest,
    Latest,
}

impl Unresolved {
    const EARLIEST: u64 = u64::MAX;
    const LATEST: u64 = u64::MAX - 1;

    /// The value a position cell holds for it.
    pub(crate) fn cell_value(self) -> u64 {
        match self {
            Unresolved::Earliest => Self::EARLIEST,
            Unresolved::Latest => Self::LATEST,
        }
    }

    /// What a position cell's value means: `None` for a real offset.
    pub(crate) fn of(position: u64) -> Option<Unresolved> {
        match position {
            Self::EARLIEST => Some(Unresolved::Earliest),
            Self::LATEST => Some(Unresolved::Latest),
            _ => None,
        }
    }

    /// The look-up that resolves it.
    pub(crate) fn wire_spec(self) -> weir_proto::v1::OffsetSpec {
        match self {
            Unresolved::Earliest => weir_proto::v1::OffsetSpec::Earliest,
            Unresolved::Latest => weir_proto::v1::OffsetSpec::Latest,
        }
    }
}

/// Where to move a partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    /// The oldest record still kept (the log start offset).
    Beginning,
    /// After the newest record (the high watermark): only records produced from now on.
    End,
    /// This offset. A position outside the log fails the partition's stream with
    /// `OFFSET_OUT_OF_RANGE`.
    Offset(u64),
    /// The first record whose timestamp is at or after this time (milliseconds since the Unix
    /// epoch); the end when no record is that recent.
    Timestamp(i64),
}

impl Seek {
    /// The offset itself, or the ListOffsets look-up that finds it (`Err`).
    fn fixed_offset(self) -> Result<u64, OffsetSpec> {
        match self {
            Seek::Offset(offset) => Ok(offset),
            Seek::Beginning => Err(OffsetSpec::Earliest),
            Seek::End => Err(OffsetSpec::Latest),
            Seek::Timestamp(ms) => Err(OffsetSpec::Timestamp(ms)),
        }
    }
}

/// Reads records. Made by [`Client::consumer`](crate::Client::consumer); see the
/// [module docs](self).
#[derive(Debug)]
pub struct Consumer {
    admin: Admin,
    /// Routes each partition's fetches to its owner.
    cluster: Arc<Cluster>,
    config: Arc<ConsumerConfig>,
    assignment: BTreeMap<TopicPartition, Arc<AtomicU64>>,
    /// Positions that could not be checked against the log when they were set (a group's
    /// committed offset, its owner down): the fetch task checks them first, and starts at
    /// this instead if they are outside the log.
    unchecked: BTreeMap<TopicPartition, Unresolved>,
}

impl Consumer {
    pub(crate) fn new(cluster: Arc<Cluster>, config: ConsumerConfig) -> Self {
        Consumer {
            admin: Admin::new(cluster.clone()),
            cluster,
            config: Arc::new(config),
            assignment: BTreeMap::new(),
            unchecked: BTreeMap::new(),
        }
    }

    /// Adds `partitions` of `topic` to the assignment, each positioned at its oldest kept
    /// record (partitions already assigned keep their position; one whose owner is down starts
    /// unresolved, see the module docs). Fails with `UNKNOWN_TOPIC` or `UNKNOWN_PARTITION`,
    /// assigning nothing.
    pub async fn assign(
        &mut self,
        topic: &str,
        partitions: impl IntoIterator<Item = u32>,
    ) -> Result<(), ClientError> {
        let description = self.admin.describe_topic(topic).await?;
        let partitions: Vec<u32> = partitions.into_iter().collect();
        self.assign_described(&description, &partitions).await
    }

    /// Adds every partition of `topic` to the assignment (see [`assign`](Consumer::assign)) and
    /// returns their numbers.
    pub async fn assign_topic(&mut self, topic: &str) -> Result<Vec<u32>, ClientError> {
        let description = self.admin.describe_topic(topic).await?;
        let partitions: Vec<u32> = (0..description.partition_count).collect();
        self.assign_described(&description, &partitions).await?;
        Ok(partitions)
    }

    async fn assign_described(
        &mut self,
        description: &TopicDescription,
        partitions: &[u32],
    ) -> Result<(), ClientError> {
        if let Some(missing) = partitions
            .iter()
            .find(|&&p| p >= description.partition_count)
        {
            return Err(ClientError::refused(
                ErrorCode::UnknownPartition,
                format!(
                    "topic {} has partitions 0..{}; there is no partition {missing}",
                    description.name, description.partition_count
                ),
            ));
        }
        let topic = self.shared_topic_name(&description.name);
        let new: Vec<u32> = partitions
            .iter()
            .copied()
            .filter(|&p| {
                !self
                    .assignment
                    .contains_key(&TopicPartition::new(topic.clone(), p))
            })
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let starts = self.log_ends(&topic, &new, Unresolved::Earliest).await?;
        self.assign_at(&topic, starts);
        Ok(())
    }

    /// The log start or end (`end`) of each of `partitions`, as position cell values: the
    /// offset, or `end` unresolved where the owner is down or unreachable (its fetch task asks
    /// when the owner is back). Fails on any other error.
    async fn log_ends(
        &self,
        topic: &str,
        partitions: &[u32],
        end: Unresolved,
    ) -> Result<BTreeMap<u32, u64>, ClientError> {
        let spec = match end {
            Unresolved::Earliest => OffsetSpec::Earliest,
            Unresolved::Latest => OffsetSpec::Latest,
        };
        let mut positions = BTreeMap::new();
        for (partition, offset) in self
            .admin
            .list_offsets_each(topic, partitions, spec)
            .await?
        {
            let position = match offset {
                Ok(offset) => offset,
                Err(error) if error.is_retriable() => end.cell_value(),
                Err(error) => return Err(error),
            };
            positions.insert(partition, position);
        }
        Ok(positions)
    }

    /// Assigns partitions of `topic` at the given positions (real offsets or
    /// [`Unresolved`] cell values), replacing any position they had.
    pub(crate) fn assign_at(&mut self, topic: &str, positions: BTreeMap<u32, u64>) {
        let topic = self.shared_topic_name(topic);
        for (partition, position) in positions {
            let tp = TopicPartition::new(topic.clone(), partition);
            self.unchecked.remove(&tp);
            self.assignment
                .insert(tp, Arc::new(AtomicU64::new(position)));
        }
    }

    /// Marks an assigned partition's position as not checked against the log: if it turns
    /// out to be outside, the partition starts at `otherwise` instead.
    pub(crate) fn mark_unchecked(&mut self, topic: &str, partition: u32, otherwise: Unresolved) {
        if let Ok(tp) = self.assigned(topic, partition) {
            self.unchecked.insert(tp, otherwise);
        }
    }

    /// Moves the position of an assigned partition and returns the new position.
    pub async fn seek(
        &mut self,
        topic: &str,
        partition: u32,
        to: Seek,
    ) -> Result<u64, ClientError> {
        let tp = self.assigned(topic, partition)?;
        let offset = match to.fixed_offset() {
            Ok(offset) => offset,
            Err(spec) => {
                let offsets = self.admin.list_offsets(topic, &[partition], spec).await?;
                // list_offsets checked that the asked partition is in the answer.
                offsets.get(&partition).copied().unwrap_or_default()
            }
        };
        // A fresh cell: a stream started earlier keeps advancing the old one, not this.
        self.unchecked.remove(&tp);
        self.assignment.insert(tp, Arc::new(AtomicU64::new(offset)));
        Ok(offset)
    }

    /// Moves the position of every assigned partition of `topic` (one ListOffsets call per
    /// owner). To the beginning or the end, a partition whose owner is down is moved there
    /// when the owner is back (its position is unknown until then); to a time, every owner
    /// must answer.
    pub async fn seek_topic(&mut self, topic: &str, to: Seek) -> Result<(), ClientError> {
        let partitions: Vec<u32> = self
            .assignment
            .keys()
            .filter(|tp| &*tp.topic == topic)
            .map(|tp| tp.partition)
            .collect();
        if partitions.is_empty() {
            return Err(ClientError::InvalidArgument(format!(
                "no partition of {topic} is assigned; assign it before seeking"
            )));
        }
        let offsets: BTreeMap<u32, u64> = match to {
            Seek::Offset(offset) => partitions.iter().map(|&p| (p, offset)).collect(),
            Seek::Beginning => {
                self.log_ends(topic, &partitions, Unresolved::Earliest)
                    .await?
            }
            Seek::End => {
                self.log_ends(topic, &partitions, Unresolved::Latest)
                    .await?
            }
            Seek::Timestamp(ms) => {
                self.admin
                    .list_offsets(topic, &partitions, OffsetSpec::Timestamp(ms))
                    .await?
            }
        };
        self.assign_at(topic, offsets);
        Ok(())
    }

    /// The position (offset of the next record to read) of an assigned partition; `None` if
    /// it is not assigned, or not known yet (assigned while its owner was down).
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.assignment
            .iter()
            .find(|(tp, _)| &*tp.topic == topic && tp.partition == partition)
            .map(|(_, position)| position.load(Ordering::Acquire))
            .filter(|&position| Unresolved::of(position).is_none())
    }

    /// Removes a partition from the assignment and returns its position, `None` if it was not
    /// assigned (or its position was not known yet). A stream already started keeps reading
    /// it; start a new one.
    pub fn unassign(&mut self, topic: &str, partition: u32) -> Option<u64> {
        let tp = self.assigned(topic, partition).ok()?;
        self.unchecked.remove(&tp);
        self.assignment
            .remove(&tp)
            .map(|position| position.load(Ordering::Acquire))
            .filter(|&position| Unresolved::of(position).is_none())
    }

    /// The assigned partitions, sorted.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assignment.keys().cloned().collect()
    }

    /// Starts reading every assigned partition from its position (see [`RecordStream`]). Must
    /// be called inside a Tokio runtime (it spawns one fetch task per partition); outside one,
    /// the stream yields that as an error.
    pub fn stream(&self) -> RecordStream {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return RecordStream::failed(ClientError::InvalidArgument(
                "a consumer stream runs fetch tasks: start it inside a Tokio runtime".into(),
            ));
        };
        let (out, incoming) = mpsc::channel(self.config.prefetch.max(1));
        let mut tasks = JoinSet::new();
        for (tp, position) in &self.assignment {
            let fetch = PartitionFetch {
                cluster: self.cluster.clone(),
                tp: tp.clone(),
                position: position.clone(),
                start: position.load(Ordering::Acquire),
                check_start: self.unchecked.get(tp).copied(),
                config: self.config.clone(),
                out: out.clone(),
            };
            tasks.spawn_on(fetch.run(), &runtime);
        }
        RecordStream::new(incoming, tasks)
    }

    fn assigned(&self, topic: &str, partition: u32) -> Result<TopicPartition, ClientError> {
        self.assignment
            .keys()
            .find(|tp| &*tp.topic == topic && tp.partition == partition)
            .cloned()
            .ok_or_else(|| {
                ClientError::InvalidArgument(format!(
                    "{topic}-{partition} is not assigned; assign it before seeking"
                ))
            })
    }

    /// The topic's name as already shared by the assignment, or a new shared copy.
    fn shared_topic_name(&self, topic: &str) -> Arc<str> {
        self.assignment
            .keys()
            .find(|tp| &*tp.topic == topic)
            .map_or_else(|| topic.into(), |tp| tp.topic.clone())
    }
}
