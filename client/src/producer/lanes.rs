//! Lanes: each partition's batches between the accumulator and the broker, and the rules that
//! decide when the next one may go. Pure bookkeeping (no I/O, time passed in), so the ordering
//! rules the sender relies on are unit-tested exactly; the sender ([`super::sender`]) says why
//! they keep records in order and stored once.
//!
//! A partition's lane holds the batches that left the accumulator and are not settled:
//! - *on the wire*: sent and unanswered, each with the producer id it was sent under;
//! - *waiting*: back from the wire to be sent again (a retriable failure, a broken link), or
//!   held before reaching it (no leader known, its link reconnecting, behind a waiting batch),
//!   each with the earliest time it may go.
//!
//! Invariants:
//! - A lane's batches on the wire are on one broker link and were all sent under one producer
//!   id, in batch id order (which within a partition is sequence order).
//! - Waiting batches are kept in batch id order and leave only from the front, and only once
//!   the lane has nothing on the wire (every earlier answer is in): so after any failure a
//!   partition's batches go out again in their original order, before anything newer.
//! - A lane with a waiting batch takes nothing new from the accumulator
//!   ([`Lanes::room`] is 0), and a lane never holds more than `max_in_flight` batches (on the
//!   wire and waiting together): the broker's deduplication window covers every batch of the
//!   partition whose fate is open.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use super::accumulator::ProducerBatch;
use crate::TopicPartition;

/// The producer id a batch goes out under (`None`: unstamped, the producer is not idempotent).
pub(crate) type ProducerId = Option<i64>;

#[derive(Debug, Default)]
struct Lane {
    /// Sent and unanswered: batch id -> the producer id it was sent under.
    wire: BTreeMap<u64, ProducerId>,
    /// The broker the wire's batches went to (meaningful while `wire` is not empty).
    link: Option<Arc<str>>,
    /// Batch id -> (earliest next send, batch).
    waiting: BTreeMap<u64, (Instant, ProducerBatch)>,
}

impl Lane {
    fn is_empty(&self) -> bool {
        self.wire.is_empty() && self.waiting.is_empty()
    }

    fn len(&self) -> usize {
        self.wire.len() + self.waiting.len()
    }

    /// Whether the wire holds only batches sent under `producer` (or nothing).
    fn wire_is_all(&self, producer: ProducerId) -> bool {
        self.wire.values().all(|&p| p == producer)
    }
}

/// Every partition's lane (see the module docs).
#[derive(Debug)]
pub(crate) struct Lanes {
    lanes: HashMap<TopicPartition, Lane>,
    max_in_flight: usize,
}

impl Lanes {
    pub fn new(max_in_flight: usize) -> Self {
        Lanes {
            lanes: HashMap::new(),
            max_in_flight: max_in_flight.max(1),
        }
    }

    /// How many new batches `tp` may take from the accumulator now, to be sent under
    /// `producer`: none while it has a batch waiting (that goes first) or a batch on the wire
    /// under another producer id (which may yet come back to be stamped again, and must then
    /// still go first).
    pub fn room(&self, tp: &TopicPartition, producer: ProducerId) -> usize {
        match self.lanes.get(tp) {
            None => self.max_in_flight,
            Some(lane) if !lane.waiting.is_empty() || !lane.wire_is_all(producer) => 0,
            Some(lane) => self.max_in_flight.saturating_sub(lane.len()),
        }
    }

    /// Batch `id` of `tp` went on the wire to `link` under `producer`.
    pub fn sent(&mut self, tp: &TopicPartition, id: u64, producer: ProducerId, link: &Arc<str>) {
        let lane = self.lanes.entry(tp.clone()).or_default();
        lane.wire.insert(id, producer);
        lane.link = Some(Arc::clone(link));
    }

    /// Batch `id` of `tp` is off the wire (answered, or its link failed).
    pub fn off_wire(&mut self, tp: &TopicPartition, id: u64) {
        if let Some(lane) = self.lanes.get_mut(tp) {
            lane.wire.remove(&id);
            if lane.is_empty() {
                self.lanes.remove(tp);
            }
        }
    }

    /// The broker `tp`'s batches on the wire went to, if any are.
    pub fn wire_link(&self, tp: &TopicPartition) -> Option<&Arc<str>> {
        self.lanes
            .get(tp)
            .filter(|lane| !lane.wire.is_empty())
            .and_then(|lane| lane.link.as_ref())
    }

    /// Keeps `batch` waiting until at least `at`.
    pub fn hold(&mut self, at: Instant, batch: ProducerBatch) {
        let lane = self.lanes.entry(batch.tp.clone()).or_default();
        lane.waiting.insert(batch.id, (at, batch));
    }

    /// Whether batch `id` of `tp` must wait behind an earlier waiting batch of its partition.
    pub fn must_follow(&self, tp: &TopicPartition, id: u64) -> bool {
        self.lanes
            .get(tp)
            .and_then(|lane| lane.waiting.keys().next())
            .is_some_and(|&first| first < id)
    }

    /// Whether an earlier batch of `tp` than `id` is unsettled (on the wire or waiting).
    pub fn has_earlier(&self, tp: &TopicPartition, id: u64) -> bool {
        self.lanes.get(tp).is_some_and(|lane| {
            lane.wire.keys().next().is_some_and(|&first| first < id)
                || lane.waiting.keys().next().is_some_and(|&first| first < id)
        })
    }

    /// The partitions whose waiting batches may go now: nothing of theirs on the wire, and the
    /// first one's time has come.
    pub fn due(&self, now: Instant) -> Vec<TopicPartition> {
        self.lanes
            .iter()
            .filter(|(_, lane)| lane.wire.is_empty())
            .filter(|(_, lane)| {
                lane.waiting
                    .values()
                    .next()
                    .is_some_and(|(at, _)| *at <= now)
            })
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Takes `tp`'s first waiting batch to send it, if the wire has room and holds only
    /// batches sent under the producer id it would go out under (`producer_of`). Called for a
    /// partition [`due`](Self::due) returned, until it answers `None`: the batches behind the
    /// first go with it, in order (they waited only because it did).
    pub fn next_out(
        &mut self,
        tp: &TopicPartition,
        producer_of: impl Fn(&ProducerBatch) -> ProducerId,
    ) -> Option<ProducerBatch> {
        let lane = self.lanes.get_mut(tp)?;
        if lane.wire.len() >= self.max_in_flight {
            return None;
        }
        let (_, (_, first)) = lane.waiting.first_key_value()?;
        if !lane.wire_is_all(producer_of(first)) {
            return None;
        }
        lane.waiting.pop_first().map(|(_, (_, batch))| batch)
    }

    /// Removes and returns every waiting batch created at or before `cutoff` (past its delivery
    /// timeout). A partition's batches are created in id order, so this takes a prefix of each
    /// lane's waiting batches and the rest keep their order.
    pub fn expire(&mut self, cutoff: Instant) -> Vec<ProducerBatch> {
        let mut out = Vec::new();
        for lane in self.lanes.values_mut() {
            let expired: Vec<u64> = lane
                .waiting
                .iter()
                .filter(|(_, (_, batch))| batch.created <= cutoff)
                .map(|(&id, _)| id)
                .collect();
            out.extend(
                expired
                    .into_iter()
                    .filter_map(|id| lane.waiting.remove(&id).map(|(_, batch)| batch)),
            );
        }
        self.lanes.retain(|_, lane| !lane.is_empty());
        out
    }

    /// When the next waiting batch may go on its own (a lane with batches on the wire waits for
    /// their answers instead).
    pub fn next_release(&self) -> Option<Instant> {
        self.lanes
            .values()
            .filter(|lane| lane.wire.is_empty())
            .filter_map(|lane| lane.waiting.values().next().map(|(at, _)| *at))
            .min()
    }

    /// The creation time of the oldest waiting batch.
    pub fn oldest_waiting(&self) -> Option<Instant> {
        self.lanes
            .values()
            .flat_map(|lane| lane.waiting.values().map(|(_, batch)| batch.created))
            .min()
    }

    /// True when no batch is waiting (batches on the wire are in the sender's `in_flight`).
    pub fn nothing_waiting(&self) -> bool {
        self.lanes.values().all(|lane| lane.waiting.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::producer::accumulator::{Accumulator, Target};
    use weir_proto::batch::RecordInput;

    fn tp(partition: u32) -> TopicPartition {
        TopicPartition::new("t", partition)
    }

    /// `n` closed batches of partition `partition`, in id order.
    fn batches(partition: u32, n: usize, now: Instant) -> Vec<ProducerBatch> {
        let mut acc = Accumulator::with_sticky_seed(0);
        let value = [b'x'; 10];
        let mut out = Vec::new();
        for _ in 0..n {
            let record = RecordInput {
                key: None,
                value: Some(&value),
                timestamp: 0,
                headers: &[],
            };
            acc.append(
                &"t".into(),
                Target::Partition(partition),
                record,
                10,
                1024,
                || now,
            )
            .unwrap();
            acc.close_open_batches();
            out.extend(acc.drain(now, Duration::ZERO, |_| 1));
        }
        out
    }

    fn link(name: &str) -> Arc<str> {
        name.into()
    }

    #[test]
    fn a_partition_takes_new_batches_up_to_its_limit() {
        let mut lanes = Lanes::new(5);
        let now = Instant::now();
        assert_eq!(lanes.room(&tp(0), Some(7)), 5);
        for batch in batches(0, 3, now) {
            lanes.sent(&tp(0), batch.id, Some(7), &link("a"));
        }
        assert_eq!(lanes.room(&tp(0), Some(7)), 2);
        assert_eq!(lanes.room(&tp(1), Some(7)), 5, "lanes are per partition");
        assert_eq!(lanes.wire_link(&tp(0)).map(|l| &**l), Some("a"));
        lanes.off_wire(&tp(0), 0);
        assert_eq!(lanes.room(&tp(0), Some(7)), 3);
        assert_eq!(
            lanes.room(&tp(0), Some(8)),
            0,
            "nothing new under a new producer id while batches of the old one are out"
        );
        lanes.off_wire(&tp(0), 1);
        lanes.off_wire(&tp(0), 2);
        assert_eq!(lanes.room(&tp(0), Some(8)), 5);
        assert!(lanes.lanes.is_empty(), "an empty lane is dropped");
    }

    #[test]
    fn waiting_batches_go_first_in_order_once_the_wire_is_empty() {
        let mut lanes = Lanes::new(5);
        let now = Instant::now();
        let mut sent = batches(0, 5, now);
        for batch in &sent {
            lanes.sent(&tp(0), batch.id, Some(7), &link("a"));
        }
        // Batch 0 is refused (say NOT_LEADER); 1..4 are still on the wire.
        let later = now + Duration::from_millis(100);
        let first = sent.remove(0);
        lanes.off_wire(&tp(0), first.id);
        lanes.hold(later, first);
        assert_eq!(lanes.room(&tp(0), Some(7)), 0, "nothing new behind a retry");
        assert!(lanes.has_earlier(&tp(0), 1), "batch 1 is behind batch 0");
        assert!(!lanes.has_earlier(&tp(0), 0));
        assert!(lanes.due(later).is_empty(), "not while 1..4 are unanswered");
        assert_eq!(lanes.next_release(), None);
        // They come back out of sequence (the broker saw the gap), in any order.
        for batch in sent.into_iter().rev() {
            lanes.off_wire(&tp(0), batch.id);
            lanes.hold(now, batch);
        }
        assert_eq!(lanes.next_release(), Some(later), "the first one's time");
        assert!(lanes.due(now).is_empty());
        assert_eq!(lanes.due(later), vec![tp(0)]);
        let mut order = Vec::new();
        while let Some(batch) = lanes.next_out(&tp(0), |_| Some(7)) {
            lanes.sent(&tp(0), batch.id, Some(7), &link("b"));
            order.push(batch.id);
        }
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
        assert_eq!(lanes.room(&tp(0), Some(7)), 0, "five on the wire");
    }

    #[test]
    fn a_release_stops_where_the_producer_id_changes() {
        let mut lanes = Lanes::new(5);
        let now = Instant::now();
        for batch in batches(0, 3, now) {
            lanes.hold(now, batch);
        }
        // Batch 0 may be stored under producer 7: it goes as it is. Batches 1 and 2 are known
        // not stored and would be stamped again under producer 8: not while 0 is out.
        let producer_of = |b: &ProducerBatch| if b.id == 0 { Some(7) } else { Some(8) };
        let first = lanes.next_out(&tp(0), producer_of).unwrap();
        assert_eq!(first.id, 0);
        lanes.sent(&tp(0), 0, Some(7), &link("a"));
        assert!(lanes.next_out(&tp(0), producer_of).is_none());
        lanes.off_wire(&tp(0), 0);
        let ids: Vec<u64> = std::iter::from_fn(|| lanes.next_out(&tp(0), producer_of))
            .map(|b| b.id)
            .collect();
        assert_eq!(ids, vec![1, 2]);
    }

    #[test]
    fn a_new_batch_behind_a_waiting_one_waits_too() {
        let mut lanes = Lanes::new(5);
        let now = Instant::now();
        let mut all = batches(0, 2, now);
        let second = all.pop().unwrap();
        let first = all.pop().unwrap();
        lanes.hold(now, first);
        assert!(lanes.must_follow(&tp(0), second.id));
        assert!(!lanes.must_follow(&tp(1), second.id));
        lanes.hold(now, second);
        let ids: Vec<u64> = std::iter::from_fn(|| lanes.next_out(&tp(0), |_| None))
            .map(|b| b.id)
            .collect();
        assert_eq!(ids, vec![0, 1]);
    }

    #[test]
    fn expired_waiting_batches_leave_and_the_rest_keep_their_order() {
        let mut lanes = Lanes::new(5);
        let start = Instant::now();
        let early = batches(0, 2, start);
        let late = batches(0, 2, start + Duration::from_secs(10));
        // Ids restart per accumulator: make the late ones follow the early ones.
        for (i, mut batch) in early.into_iter().chain(late).enumerate() {
            batch.id = i as u64;
            lanes.hold(start, batch);
        }
        assert_eq!(lanes.oldest_waiting(), Some(start));
        let expired: Vec<u64> = lanes
            .expire(start + Duration::from_secs(1))
            .iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(expired, vec![0, 1]);
        assert_eq!(
            lanes.oldest_waiting(),
            Some(start + Duration::from_secs(10))
        );
        assert!(!lanes.nothing_waiting());
        let ids: Vec<u64> = std::iter::from_fn(|| lanes.next_out(&tp(0), |_| None))
            .map(|b| b.id)
            .collect();
        assert_eq!(ids, vec![2, 3]);
        assert!(lanes.nothing_waiting());
    }

    #[test]
    fn one_in_flight_serializes_a_partition() {
        let mut lanes = Lanes::new(1);
        let now = Instant::now();
        let batch = batches(0, 1, now).pop().unwrap();
        lanes.sent(&tp(0), batch.id, None, &link("a"));
        assert_eq!(lanes.room(&tp(0), None), 0);
        lanes.off_wire(&tp(0), batch.id);
        lanes.hold(now, batch);
        assert_eq!(lanes.room(&tp(0), None), 0);
        let out = lanes.next_out(&tp(0), |_| None).unwrap();
        lanes.sent(&tp(0), out.id, None, &link("a"));
        assert!(lanes.next_out(&tp(0), |_| None).is_none());
    }
}
