//! The accumulator: records waiting to be sent, encoded into one open batch per partition.
//!
//! Pure bookkeeping (no I/O, no locks, time passed in), so batching is unit-tested exactly:
//!
//! - A record is encoded into its partition's *open* batch when it is sent (so the buffer holds
//!   wire bytes, never a second copy). A batch that would pass its size limit is closed and the
//!   record starts the next one; a record larger than the limit goes alone.
//! - Closed batches wait in a per-partition FIFO (*ready*). [`Accumulator::drain`] hands out,
//!   per partition, as many of the oldest batches as the sender says that partition has room
//!   for in flight (its `max_in_flight_per_partition` rules, which keep records in order across
//!   retries, live in the sender), in FIFO order, taking the open batch once it has lingered.
//! - Sticky routing: keyless records of a topic fill one partition's batch; when that batch
//!   closes (full, lingered, flushed) the next keyless record moves to the next partition.
//! - Every batch gets an increasing id when it opens and stays *outstanding* until the sender
//!   reports it [`complete`](Accumulator::complete)d (acknowledged or failed); `flush` waits on
//!   that.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_proto::batch::{BatchBuilder, BatchError, RecordInput};

use super::delivery::{BatchOutcome, DeliveryFuture};
use crate::TopicPartition;

/// Which partition a record is appended to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// This partition (chosen by key, or explicit).
    Partition(u32),
    /// The topic's sticky partition, among this many.
    Sticky { partitions: u32 },
}

/// A record appended: where it went and its delivery future.
#[derive(Debug)]
pub(crate) struct Appended {
    /// Knows the partition and the record's position in its batch (offset = base offset +
    /// index).
    pub delivery: DeliveryFuture,
    /// A batch opened or closed: the sender has a new deadline or a batch to send.
    pub wake_sender: bool,
}

/// A closed batch, ready to send (and to send again on a retry: `bytes` never changes once
/// sealed at its first send).
#[derive(Debug)]
pub(crate) struct ProducerBatch {
    pub id: u64,
    pub tp: TopicPartition,
    /// The encoded batch, or why encoding failed (then it is failed, not sent). Built unsealed
    /// (CRC 0): the sender stamps and seals it in place at its first send (`sealed`), so the
    /// records are CRC'd once, after the last CRC-covered field is written.
    pub bytes: Result<Bytes, BatchError>,
    /// Whether `bytes` carries its CRC: set once, before the first send.
    pub sealed: bool,
    pub record_count: usize,
    /// Buffer bytes the batch's records hold; released when it completes.
    pub reserved: usize,
    /// When its first record was appended: the delivery timeout counts from here.
    pub created: Instant,
    pub outcome: BatchOutcome,
    /// How many times it has been sent (retries that never reached a stream are not counted).
    pub attempts: u32,
    /// Whether the broker may have stored it under its `stamp`: set by any attempt whose fate
    /// is open (its link failed, it went unanswered, it was refused after the append), cleared
    /// only by an OUT_OF_ORDER_SEQUENCE answer, which proves it is not stored (see the sender).
    pub maybe_stored: bool,
    /// The idempotent identity and first sequence stamped into `bytes` at its first send; kept
    /// for every retry (a retry must be byte-identical to be recognized), unless the batch is
    /// known not stored and its identity was given up (then it is stamped again).
    pub stamp: Option<Stamp>,
}

/// An idempotent producer's identity and a batch's first sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
}

#[derive(Debug)]
struct OpenBatch {
    id: u64,
    builder: BatchBuilder,
    limit: usize,
    reserved: usize,
    created: Instant,
    outcome: BatchOutcome,
}

impl OpenBatch {
    fn fits(&self, record: &RecordInput<'_>) -> bool {
        self.builder.size_in_bytes() + self.builder.encoded_len(record) <= self.limit
    }

    fn close(self, tp: TopicPartition) -> ProducerBatch {
        let record_count = self.builder.record_count();
        ProducerBatch {
            id: self.id,
            tp,
            bytes: self.builder.build_unsealed().map(Bytes::from),
            sealed: false,
            record_count,
            reserved: self.reserved,
            created: self.created,
            outcome: self.outcome,
            attempts: 0,
            maybe_stored: false,
            stamp: None,
        }
    }
}

#[derive(Debug, Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    ready: VecDeque<ProducerBatch>,
}

impl PartitionQueue {
    fn close_open(&mut self, tp: &TopicPartition) {
        if let Some(open) = self.open.take() {
            self.ready.push_back(open.close(tp.clone()));
        }
    }

    fn is_empty(&self) -> bool {
        self.open.is_none() && self.ready.is_empty()
    }
}

/// The producer's buffer of unsent records (see the module docs).
#[derive(Debug)]
pub(crate) struct Accumulator {
    queues: HashMap<TopicPartition, PartitionQueue>,
    /// Per topic: the partition keyless records currently fill.
    sticky: HashMap<Arc<str>, u32>,
    /// Where a topic's sticky rotation starts, so producers started together do not all begin
    /// on partition 0.
    sticky_seed: u32,
    next_batch_id: u64,
    outstanding: BTreeSet<u64>,
}

/// The first buffer size of a batch: large enough to avoid most regrowth, small enough that
/// thousands of lightly used partitions do not each reserve a full batch.
const INITIAL_BATCH_CAPACITY: usize = 64 << 10;

/// The smallest encoded record (one-byte varints, null key, empty value, no headers): a batch
/// with less room than this left is full.
const MIN_RECORD_BYTES: usize = 7;

impl Accumulator {
    pub fn new() -> Self {
        Accumulator::with_sticky_seed(RandomState::new().hash_one(0u8) as u32)
    }

    pub fn with_sticky_seed(sticky_seed: u32) -> Self {
        Accumulator {
            queues: HashMap::new(),
            sticky: HashMap::new(),
            sticky_seed,
            next_batch_id: 0,
            outstanding: BTreeSet::new(),
        }
    }

    /// Encodes `record` into its partition's open batch. `reserved` is what it holds of the
    /// buffer; `limit` the topic's batch size limit; `now` is read only if a batch opens (a
    /// clock read per record showed in profiles). Fails only if the encoder refuses the record
    /// (then nothing changed).
    pub fn append(
        &mut self,
        topic: &Arc<str>,
        target: Target,
        record: RecordInput<'_>,
        reserved: usize,
        limit: usize,
        now: impl FnOnce() -> Instant,
    ) -> Result<Appended, BatchError> {
        let mut wake_sender = false;
        let partition = match target {
            Target::Partition(partition) => partition,
            Target::Sticky { partitions } => {
                let (partition, closed) = self.sticky_partition(topic, partitions, &record);
                wake_sender |= closed;
                partition
            }
        };
        let tp = TopicPartition::new(topic.clone(), partition);
        let queue = self.queues.entry(tp.clone()).or_default();
        if queue.open.as_ref().is_some_and(|open| !open.fits(&record)) {
            queue.close_open(&tp);
            wake_sender = true;
        }
        let open = match &mut queue.open {
            Some(open) => open,
            None => {
                wake_sender = true;
                let id = self.next_batch_id;
                self.next_batch_id += 1;
                self.outstanding.insert(id);
                queue.open.insert(OpenBatch {
                    id,
                    builder: BatchBuilder::with_capacity(limit.min(INITIAL_BATCH_CAPACITY)),
                    limit,
                    reserved: 0,
                    created: now(),
                    outcome: BatchOutcome::new(),
                })
            }
        };
        let index = open.builder.record_count() as u32;
        let timestamp = record.timestamp;
        if let Err(error) = open.builder.push(record) {
            if open.builder.record_count() == 0 {
                // Do not leave an empty batch behind: it could never be built.
                let id = open.id;
                queue.open = None;
                self.outstanding.remove(&id);
            }
            return Err(error);
        }
        open.reserved += reserved;
        let delivery = open
            .outcome
            .delivery(topic.clone(), partition, index, timestamp);
        // Full (or a lone oversized record): nothing more fits, so send it without lingering.
        if open.builder.size_in_bytes() + MIN_RECORD_BYTES > open.limit {
            queue.close_open(&tp);
            wake_sender = true;
        }
        Ok(Appended {
            delivery,
            wake_sender,
        })
    }

    /// The partition a keyless record of `topic` goes to, moving on when the batch being filled
    /// has closed or cannot take the record (which is then closed). Returns whether it closed
    /// a batch.
    fn sticky_partition(
        &mut self,
        topic: &Arc<str>,
        partitions: u32,
        record: &RecordInput<'_>,
    ) -> (u32, bool) {
        let partitions = partitions.max(1);
        let next = |p: u32| (p + 1) % partitions;
        let mut closed = false;
        let current = self.sticky.get(topic).copied().filter(|&p| p < partitions);
        let partition = match current {
            None => self.sticky_seed % partitions,
            Some(current) => {
                let tp = TopicPartition::new(topic.clone(), current);
                match self.queues.get_mut(&tp) {
                    Some(queue) => match &queue.open {
                        Some(open) if open.fits(record) => current,
                        Some(_) => {
                            queue.close_open(&tp);
                            closed = true;
                            next(current)
                        }
                        None => next(current),
                    },
                    None => next(current),
                }
            }
        };
        // Written only when it moves: this runs per keyless record, a map write is a hash.
        if current != Some(partition) {
            self.sticky.insert(topic.clone(), partition);
        }
        (partition, closed)
    }

    /// Up to `room(tp)` batches of each partition, oldest first: its ready ones, then the open
    /// one once it has lingered (or at once if `linger` is zero). A partition's batches come
    /// out consecutive and in order (the sender stamps sequence numbers in this order).
    pub fn drain(
        &mut self,
        now: Instant,
        linger: Duration,
        mut room: impl FnMut(&TopicPartition) -> usize,
    ) -> Vec<ProducerBatch> {
        let mut out = Vec::new();
        for (tp, queue) in &mut self.queues {
            let room = room(tp);
            if room == 0 {
                continue;
            }
            let take = room.min(queue.ready.len());
            out.extend(queue.ready.drain(..take));
            if take < room
                && queue
                    .open
                    .as_ref()
                    .is_some_and(|open| now >= open.created + linger)
            {
                queue.close_open(tp);
                out.extend(queue.ready.pop_front());
            }
        }
        self.queues.retain(|_, queue| !queue.is_empty());
        out
    }

    /// When [`drain`](Accumulator::drain) would next hand out a batch to one of the partitions
    /// `has_room` says can take one (in the past if one is ready now).
    pub fn next_drain_time(
        &self,
        linger: Duration,
        mut has_room: impl FnMut(&TopicPartition) -> bool,
    ) -> Option<Instant> {
        self.queues
            .iter()
            .filter(|(tp, _)| has_room(tp))
            .filter_map(|(_, queue)| match (queue.ready.front(), &queue.open) {
                (Some(ready), _) => Some(ready.created),
                (None, Some(open)) => Some(open.created + linger),
                (None, None) => None,
            })
            .min()
    }

    /// Closes every open batch, so the next drain sends everything buffered now (flush, close).
    pub fn close_open_batches(&mut self) {
        for (tp, queue) in &mut self.queues {
            queue.close_open(tp);
        }
    }

    /// Removes and returns every batch created at or before `cutoff` (past its delivery
    /// timeout), open or ready.
    pub fn expire(&mut self, cutoff: Instant) -> Vec<ProducerBatch> {
        let mut out = Vec::new();
        for (tp, queue) in &mut self.queues {
            if queue
                .open
                .as_ref()
                .is_some_and(|open| open.created <= cutoff)
            {
                queue.close_open(tp);
            }
            // Ready batches queue in creation order and the open one is the youngest.
            while queue.ready.front().is_some_and(|b| b.created <= cutoff) {
                out.extend(queue.ready.pop_front());
            }
        }
        self.queues.retain(|_, queue| !queue.is_empty());
        out
    }

    /// Removes and returns every batch, open ones closed.
    #[cfg(test)]
    pub fn take_all(&mut self) -> Vec<ProducerBatch> {
        self.close_open_batches();
        self.queues
            .drain()
            .flat_map(|(_, queue)| queue.ready)
            .collect()
    }

    /// The creation time of the oldest batch still buffered.
    pub fn oldest(&self) -> Option<Instant> {
        self.queues
            .values()
            .filter_map(|queue| {
                let ready = queue.ready.front().map(|b| b.created);
                let open = queue.open.as_ref().map(|b| b.created);
                ready.into_iter().chain(open).min()
            })
            .min()
    }

    /// True when nothing is buffered (batches in flight are the sender's).
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// The id the next batch will get: every batch opened so far has a smaller one.
    pub fn next_batch_id(&self) -> u64 {
        self.next_batch_id
    }

    /// The oldest batch not yet acknowledged or failed.
    pub fn oldest_outstanding(&self) -> Option<u64> {
        self.outstanding.first().copied()
    }

    /// Marks batch `id` decided (acknowledged or failed).
    pub fn complete(&mut self, id: u64) {
        self.outstanding.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    const LIMIT: usize = 1024;

    fn value(len: usize) -> Vec<u8> {
        vec![b'x'; len]
    }

    fn input(value: &[u8]) -> RecordInput<'_> {
        RecordInput {
            key: None,
            value: Some(value),
            timestamp: 1_700_000_000_000,
            headers: &[],
        }
    }

    fn topic() -> Arc<str> {
        "t".into()
    }

    fn append(acc: &mut Accumulator, target: Target, len: usize, now: Instant) -> Appended {
        acc.append(&topic(), target, input(&value(len)), len, LIMIT, || now)
            .unwrap()
    }

    /// One batch per partition per drain.
    fn one_each(_: &TopicPartition) -> usize {
        1
    }

    fn always(_: &TopicPartition) -> bool {
        true
    }

    #[test]
    fn records_share_a_batch_until_it_is_full() {
        let mut acc = Accumulator::with_sticky_seed(0);
        let now = Instant::now();
        let first = append(&mut acc, Target::Partition(0), 100, now);
        assert!(first.wake_sender, "a new batch is a new deadline");
        let second = append(&mut acc, Target::Partition(0), 100, now);
        assert!(!second.wake_sender);
        assert_eq!((first.delivery.index(), second.delivery.index()), (0, 1));
        // Nothing is ready before the linger passes.
        assert!(
            acc.drain(now, Duration::from_millis(5), one_each)
                .is_empty()
        );

        // Fill past the limit: the full batch closes and the record starts a new one.
        let mut indexes = vec![];
        for _ in 0..10 {
            indexes.push(
                append(&mut acc, Target::Partition(0), 100, now)
                    .delivery
                    .index(),
            );
        }
        assert!(indexes.contains(&0), "a second batch started: {indexes:?}");
        let batches = acc.drain(now, Duration::from_secs(60), one_each);
        assert_eq!(batches.len(), 1, "one batch per partition per drain");
        let batch = &batches[0];
        assert!(batch.bytes.as_ref().unwrap().len() <= LIMIT);
        assert_eq!(batch.reserved, 100 * batch.record_count);
        assert_eq!(batch.id, 0);
    }

    #[test]
    fn a_lingered_batch_is_drained_and_busy_partitions_wait() {
        let mut acc = Accumulator::with_sticky_seed(0);
        let start = Instant::now();
        let linger = Duration::from_millis(5);
        append(&mut acc, Target::Partition(0), 10, start);
        append(&mut acc, Target::Partition(1), 10, start);
        assert_eq!(acc.next_drain_time(linger, always), Some(start + linger));

        let later = start + linger;
        let room = |tp: &TopicPartition| usize::from(tp.partition != 1);
        let batches = acc.drain(later, linger, room);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].tp.partition, 0);
        assert_eq!(batches[0].record_count, 1);
        assert_eq!(acc.next_drain_time(linger, |tp| room(tp) > 0), None);
        let batches = acc.drain(later, linger, one_each);
        assert_eq!(batches[0].tp.partition, 1);
        assert!(acc.is_empty());
    }

    #[test]
    fn batches_of_a_partition_leave_in_order() {
        let mut acc = Accumulator::with_sticky_seed(0);
        let now = Instant::now();
        for _ in 0..30 {
            append(&mut acc, Target::Partition(3), 200, now);
        }
        acc.close_open_batches();
        let mut ids = vec![];
        loop {
            let batches = acc.drain(now, Duration::from_secs(60), one_each);
            if batches.is_empty() {
                break;
            }
            ids.extend(batches.iter().map(|b| b.id));
        }
        assert!(ids.len() > 1);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }

    #[test]
    fn a_partition_with_room_for_several_gets_its_oldest_in_order() {
        let mut acc = Accumulator::with_sticky_seed(0);
        let start = Instant::now();
        let linger = Duration::from_millis(5);
        // Four 200-byte records fill a 1 KiB batch: 7 full batches and an open one.
        for _ in 0..30 {
            append(&mut acc, Target::Partition(0), 200, start);
        }
        append(&mut acc, Target::Partition(1), 10, start);
        let batches = acc.drain(start, linger, |tp| if tp.partition == 0 { 5 } else { 3 });
        let ids = |tp: u32| -> Vec<u64> {
            batches
                .iter()
                .filter(|b| b.tp.partition == tp)
                .map(|b| b.id)
                .collect()
        };
        let first = ids(0);
        assert_eq!(first.len(), 5, "room for five: {first:?}");
        assert!(first.windows(2).all(|w| w[0] < w[1]), "{first:?}");
        assert!(
            ids(1).is_empty(),
            "partition 1's only batch has not lingered"
        );

        // The rest: two full ones, then the open one once it lingered; room left unused.
        let later = start + linger;
        let batches = acc.drain(later, linger, |_| 5);
        let rest: Vec<u64> = batches
            .iter()
            .filter(|b| b.tp.partition == 0)
            .map(|b| b.id)
            .collect();
        assert_eq!(rest.len(), 3, "{rest:?}");
        assert!(first.last() < rest.first(), "{first:?} then {rest:?}");
        assert!(rest.windows(2).all(|w| w[0] < w[1]), "{rest:?}");
        assert!(acc.is_empty());
    }

    #[test]
    fn a_record_larger_than_the_limit_goes_alone() {
        let mut acc = Accumulator::with_sticky_seed(0);
        let now = Instant::now();
        append(&mut acc, Target::Partition(0), 10, now);
        let big = append(&mut acc, Target::Partition(0), 4 * LIMIT, now);
        assert_eq!(big.delivery.index(), 0);
        assert!(big.wake_sender);
        let batches = acc.drain(now, Duration::from_secs(60), one_each);
        assert_eq!(batches[0].record_count, 1); // the small one, closed by the big one
        let batches = acc.drain(now, Duration::from_secs(60), one_each);
        assert_eq!(batches[0].record_count, 1);
        assert!(batches[0].bytes.as_ref().unwrap().len() > 4 * LIMIT);
        assert!(acc.is_empty(), "the big batch was closed at once");
    }

    #[test]
    fn sticky_fills_one_partition_then_moves_on() {
        let mut acc = Accumulator::with_sticky_seed(0);
        let now = Instant::now();
        let sticky = Target::Sticky { partitions: 3 };
        let partitions: Vec<u32> = (0..30)
            .map(|_| append(&mut acc, sticky, 200, now).delivery.partition())
            .collect();
        // Four 200-byte records fill a 1 KiB batch; then the next partition.
        let runs: Vec<u32> = partitions
            .chunk_by(|a, b| a == b)
            .map(|run| run[0])
            .collect();
        assert_eq!(&runs[..4], &[0, 1, 2, 0], "{partitions:?}");
        let lengths: Vec<usize> = partitions
            .chunk_by(|a, b| a == b)
            .map(<[u32]>::len)
            .collect();
        assert!(
            lengths[..lengths.len() - 1].iter().all(|&n| n == 4),
            "{lengths:?}"
        );
    }

    #[test]
    fn sticky_moves_on_when_its_batch_lingered_out() {
        let mut acc = Accumulator::with_sticky_seed(7);
        let now = Instant::now();
        let sticky = Target::Sticky { partitions: 4 };
        let first = append(&mut acc, sticky, 10, now).delivery.partition();
        assert_eq!(first, 7 % 4);
        assert_eq!(
            append(&mut acc, sticky, 10, now).delivery.partition(),
            first
        );
        let sent = acc.drain(now + Duration::from_secs(1), Duration::ZERO, one_each);
        assert_eq!(sent.len(), 1);
        assert_eq!(
            append(&mut acc, sticky, 10, now).delivery.partition(),
            (first + 1) % 4
        );
    }

    #[test]
    fn outstanding_batches_are_tracked_until_complete() {
        let mut acc = Accumulator::with_sticky_seed(0);
        let now = Instant::now();
        append(&mut acc, Target::Partition(0), 10, now);
        append(&mut acc, Target::Partition(1), 10, now);
        assert_eq!(acc.next_batch_id(), 2);
        assert_eq!(acc.oldest_outstanding(), Some(0));
        let batches = acc.take_all();
        assert_eq!(batches.len(), 2);
        acc.complete(0);
        assert_eq!(acc.oldest_outstanding(), Some(1));
        acc.complete(1);
        assert_eq!(acc.oldest_outstanding(), None);
    }

    #[test]
    fn old_batches_expire() {
        let mut acc = Accumulator::with_sticky_seed(0);
        let start = Instant::now();
        append(&mut acc, Target::Partition(0), 10, start);
        append(
            &mut acc,
            Target::Partition(1),
            10,
            start + Duration::from_secs(10),
        );
        assert_eq!(acc.oldest(), Some(start));
        let expired = acc.expire(start + Duration::from_secs(1));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].tp.partition, 0);
        assert_eq!(acc.oldest(), Some(start + Duration::from_secs(10)));
    }

    #[test]
    fn outcomes_reach_every_record_of_a_batch() {
        let mut acc = Accumulator::with_sticky_seed(0);
        let now = Instant::now();
        let a = append(&mut acc, Target::Partition(0), 10, now);
        let b = append(&mut acc, Target::Partition(0), 10, now);
        let batch = acc.take_all().pop().unwrap();
        batch.outcome.decide(Ok(41));
        let a = a.delivery.now_or_never().expect("decided").unwrap();
        assert_eq!(a.offset, 41);
        assert_eq!(b.delivery.index(), 1);
    }
}
