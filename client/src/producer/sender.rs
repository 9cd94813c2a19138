//! The sender: the producer's background task. It takes batches from the accumulator, sends
//! each over a link to its partition's owner ([`super::link`]: a `ProduceStream` or a produce
//! connection on the data port; one link per broker, found through
//! the client's cluster picture), routes responses back by correlation id, retries,
//! reconnects, and settles every batch exactly once (acknowledged, failed or timed out).
//!
//! Invariants:
//! - **Up to `max_in_flight_per_partition` batches of a partition are out at once** (5 by
//!   default, at most 5: the batches per producer the broker remembers to recognize a retry;
//!   1 without idempotence). Out means sent and unanswered, or waiting to be sent again: the
//!   partition's *lane* ([`super::lanes`]) holds them from their first send until they are
//!   settled, and the accumulator hands out only as many as the lane has room for. A lane's
//!   batches on the wire are on one link (one ordered connection; the broker appends a link's
//!   requests in arrival order), went out in batch id order, which is their sequence order, and
//!   under one producer id. Different partitions are in flight concurrently on the same link.
//! - Every batch is settled once: its outcome is written, its buffer bytes are released and it
//!   is marked complete in the accumulator (which `flush` waits on). Settling takes it out of
//!   its lane first, so `flush`, `close` and the delivery timeout see each batch exactly once
//!   wherever it is (accumulator, wire, waiting).
//! - A broken link (transport error, broker shutdown) puts that broker's in-flight batches
//!   back to be retried, subject to `retries` and the delivery timeout, and makes the cluster
//!   picture refresh (the partition may have an owner that is down, or a new one). So does a
//!   NOT_LEADER answer. A batch whose owner is unknown or down waits in its lane (so order
//!   holds) until the picture says where to send it, or its delivery timeout.
//! - **Idempotence** (on by default): before its first send the task gets a producer id from
//!   the broker (`InitProducer`). A batch is stamped with that id and its partition's next
//!   sequence number when it is first sent (so sequences follow send order, which is batch id
//!   order) and keeps the stamp, byte for byte, for every retry, so the broker stores a retried
//!   batch once and answers it with its original offsets.
//!
//! Retries never reorder or duplicate. The rules, and why they hold:
//! 1. *What the broker does* (weir-storage's `producer_state`): per partition and producer id
//!    it appends only the batch whose first sequence follows the last one it stored, answers a
//!    batch equal to one of its last 5 with the original offsets (a duplicate, nothing
//!    written), and refuses anything else OUT_OF_ORDER_SEQUENCE, writing nothing. So under one
//!    producer id the stored batches of a partition are always a prefix, in sequence order, of
//!    the ones stamped. With at most 5 of a partition out, every stored-but-unacknowledged
//!    batch is among the broker's last 5: a retry of it is answered as a duplicate, never
//!    refused. Hence an OUT_OF_ORDER_SEQUENCE answer proves the batch is not stored
//!    (`maybe_stored` is cleared), and every other open fate (a broken link, no answer, a
//!    refusal after the append) sets `maybe_stored`. Only the refusals the broker documents
//!    as writing nothing (`refused_unwritten`) leave it as it was; the others (NOT_LEADER
//!    among them) count as open, which at worst costs a new producer id where giving the
//!    sequence back would have done.
//! 2. *A partition with a batch waiting sends nothing new, and re-sends its waiting batches in
//!    batch id order only once nothing of it is on the wire* (every earlier answer is in), with
//!    their original stamps. Per-batch backoff times never release a later batch first: a lane
//!    releases from its front, and the batches behind the front go with it.
//! 3. *A link breaks*: every in-flight batch on it comes back and waits (rule 2): re-sent in
//!    their original order, byte-identical, before anything newer; the ones the broker had
//!    appended are answered as duplicates.
//! 4. *Batch k is refused with a retriable error that wrote nothing* (NOT_LEADER,
//!    NOT_ENOUGH_REPLICAS, DISK_FULL, SHUTTING_DOWN, ...) while k+1.. are on the wire: the broker
//!    refuses those too, OUT_OF_ORDER_SEQUENCE (the gap) or the same error. An
//!    OUT_OF_ORDER_SEQUENCE answer for a batch with an earlier batch of its partition still
//!    unsettled (on the wire or waiting) is retried after it, stamp unchanged (as Kafka does),
//!    without using up its own retries (the refusal is k's doing; the delivery timeout still bounds
//!    it); by rule 2 k goes again first. Only an OUT_OF_ORDER_SEQUENCE for a batch of the current
//!    producer id with no earlier unsettled batch means the broker lost track of the producer (its
//!    state rebuilt without it): that batch fails and the task takes a new producer id.
//! 5. *A batch fails for good* (not retriable, retries exhausted, delivery timeout). If it is
//!    surely not stored (`maybe_stored` unset) and it was its partition's last stamped batch, its
//!    sequence numbers go back to the partition. Otherwise (it may be stored, or later batches were
//!    stamped after it, which a rollback would leave behind a gap) the task gives up its producer
//!    id and takes a new one, which restarts every partition's sequence at 0. The later batches of
//!    the partition keep their old stamps while they may be stored: sent again as they are, they
//!    are either answered (stored, in order, under the old id) or refused OUT_OF_ORDER_SEQUENCE,
//!    which proves them not stored (rule 1): a batch of a given-up producer id known not stored is
//!    stamped again, under the current id, at its next send (that refusal does not use up its
//!    retries either). A lane's wire never mixes producer ids (rule 2 and [`super::lanes`]), so a
//!    batch restamped under the new id cannot overtake an earlier one that still carries the old id
//!    and may yet come back to be restamped. So per partition, records reach the log in batch id
//!    order: under the old id a prefix of the old stamps, then under the new id the rest, each
//!    once; no batch is ever stamped anew while a copy of it may be stored.
//!
//! What is not covered: a batch given up with an open fate (delivery timeout) may still have
//! been stored, where it was sent (reported as "may or may not have been written"). And the
//! task assumes that once a link has failed the broker appends nothing more from it; for a
//! link the task itself gives up (a request unanswered for the whole delivery timeout), a
//! request still queued in the broker could land late.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use weir_proto::v1::{ErrorCode, InitProducerRequest, ProduceRequest, ProduceResponse};

use weir_proto::batch::sequence_after;

use super::Shared;
use super::accumulator::{ProducerBatch, Stamp};
use super::lanes::{Lanes, ProducerId};
use super::link::{self, LinkEvent, Tagged, Wire};
use crate::Transport;
use crate::cluster::{Cluster, Leader};
use crate::{ClientError, TopicPartition};

/// One broker's link ([`link::run`], over gRPC or the data port). Requests are queued on
/// `requests` as soon as the link is started (some brokers answer a `ProduceStream` call only
/// after the first request); a spawned task reads the responses and forwards them, tagged with
/// the link's epoch, so events of a replaced link are recognized and dropped.
struct BrokerLink {
    /// `None` while down.
    requests: Option<mpsc::UnboundedSender<ProduceRequest>>,
    epoch: u64,
    /// When to open the stream again after a failure.
    retry_at: Instant,
    /// Stream failures since its last acknowledged batch: the reconnect backoff.
    failures: u32,
}

/// With nothing scheduled, the task still wakes this often (a safety net, not a poll).
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// The producer's idempotent identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    /// Idempotence is off: batches go unstamped.
    Disabled,
    /// Needed before the next send (first send, or after the old one was given up).
    Missing,
    Ready {
        producer_id: i64,
        epoch: i16,
    },
}

/// How long an `InitProducer` call may take before it counts as failed.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct SenderTask {
    shared: Arc<Shared>,
    identity: Identity,
    /// When to ask for an identity again after a failed `InitProducer`, and how many failed.
    identity_retry_at: Instant,
    identity_failures: u32,
    /// Per partition, the sequence number the next stamped batch starts at.
    next_sequence: HashMap<TopicPartition, i32>,
    cluster: Arc<Cluster>,
    completions: watch::Sender<u64>,
    /// Broker address -> its stream.
    links: HashMap<Arc<str>, BrokerLink>,
    events: mpsc::UnboundedReceiver<Tagged>,
    events_tx: mpsc::UnboundedSender<Tagged>,
    next_epoch: u64,
    /// The cluster picture must be refreshed before some batch can be routed.
    refresh_needed: bool,
    refresh_at: Instant,
    refresh_failures: u32,
    /// Sent and unanswered, by correlation id, with the address of the broker they went to.
    in_flight: HashMap<u64, (Arc<str>, ProducerBatch)>,
    /// Per partition: which batches are on the wire, and the ones waiting to go again.
    lanes: Lanes,
    next_correlation_id: u64,
}

impl SenderTask {
    pub fn new(
        shared: Arc<Shared>,
        cluster: Arc<Cluster>,
        completions: watch::Sender<u64>,
    ) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        let lanes = Lanes::new(shared.config.in_flight_per_partition());
        let identity = if shared.config.idempotent {
            Identity::Missing
        } else {
            Identity::Disabled
        };
        SenderTask {
            shared,
            identity,
            identity_retry_at: Instant::now(),
            identity_failures: 0,
            next_sequence: HashMap::new(),
            cluster,
            completions,
            links: HashMap::new(),
            events,
            events_tx,
            next_epoch: 0,
            refresh_needed: false,
            refresh_at: Instant::now(),
            refresh_failures: 0,
            in_flight: HashMap::new(),
            lanes,
            next_correlation_id: 0,
        }
    }

    /// Runs until the producer is closed (or dropped) and every batch is settled.
    pub async fn run(mut self) {
        loop {
            let now = Instant::now();
            self.expire(now);
            if self.identity == Identity::Missing
                && self.has_work()
                && now >= self.identity_retry_at
            {
                self.init_identity().await;
            }
            if self.refresh_needed && self.has_work() && now >= self.refresh_at {
                self.refresh().await;
            }
            let now = Instant::now();
            if self.identity != Identity::Missing {
                self.send_due_retries(now);
                self.send_ready(now);
            }
            if self.finished() {
                break;
            }
            let deadline = self.next_deadline(now);
            tokio::select! {
                Some(event) = self.events.recv() => self.on_event(event),
                () = self.shared.wake.notified() => {}
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
        tracing::debug!("producer closed: every batch settled");
    }

    /// Asks the broker for a producer id; on failure, backs off (the delivery timeout still
    /// bounds how long batches wait).
    async fn init_identity(&mut self) {
        let mut grpc = self.cluster.bootstrap();
        let result = tokio::time::timeout(INIT_TIMEOUT, grpc.init_producer(InitProducerRequest {}))
            .await
            .map_err(|_| ClientError::Timeout {
                what: "InitProducer",
                after: INIT_TIMEOUT,
            })
            .and_then(|r| r.map_err(ClientError::from));
        match result {
            Ok(response) => {
                let response = response.into_inner();
                self.identity = Identity::Ready {
                    producer_id: response.producer_id,
                    epoch: i16::try_from(response.producer_epoch).unwrap_or(i16::MAX),
                };
                self.next_sequence.clear();
                self.identity_failures = 0;
                tracing::debug!(producer_id = response.producer_id, "idempotent producer id");
            }
            Err(error) => {
                self.identity_failures += 1;
                let delay = self.shared.config.backoff(self.identity_failures);
                if self.identity_failures == 1 {
                    tracing::warn!(%error, "cannot get a producer id; retrying");
                }
                self.identity_retry_at = Instant::now() + delay;
            }
        }
    }

    /// The producer id batches are stamped with now (`None`: not idempotent, or none yet).
    fn producer_id(&self) -> ProducerId {
        match self.identity {
            Identity::Ready { producer_id, .. } => Some(producer_id),
            Identity::Disabled | Identity::Missing => None,
        }
    }

    /// The producer id `batch` goes out under at its next send: its own stamp's while the
    /// broker may hold it under that stamp (or the stamp is current), else the current one
    /// (a first send, or a batch of a given-up id known not stored: stamped again).
    fn send_identity(batch: &ProducerBatch, current: ProducerId) -> ProducerId {
        match batch.stamp {
            Some(stamp) if Some(stamp.producer_id) == current || batch.maybe_stored => {
                Some(stamp.producer_id)
            }
            _ => current,
        }
    }

    /// Readies a batch's send: at its first, stamps it with the identity and its partition's
    /// next sequence (when idempotent), then seals it (its one CRC pass). A retry is sent as
    /// sealed, byte-identical, except a batch stamped under a given-up producer id that is
    /// known not stored (module docs, rule 5): that one is stamped again under the current id.
    fn stamp_and_seal(&mut self, batch: &mut ProducerBatch) {
        let current = self.producer_id();
        let restamp = batch.stamp.is_some()
            && Self::send_identity(batch, current) != batch.stamp.map(|s| s.producer_id);
        if batch.sealed && !restamp {
            return;
        }
        let identity = match self.identity {
            Identity::Ready { producer_id, epoch } => Some((producer_id, epoch)),
            // Sends wait for an identity when idempotent (see `run`).
            Identity::Disabled | Identity::Missing => None,
        };
        let bytes = match std::mem::replace(&mut batch.bytes, Ok(bytes::Bytes::new())) {
            Ok(bytes) => bytes,
            Err(e) => {
                batch.bytes = Err(e);
                return;
            }
        };
        // The batch is the only owner of its bytes before its first send: stamp and seal them
        // in place instead of copying a whole batch. (A restamped batch's bytes may still be
        // shared with the request that carried them: then they are copied.)
        let mut stamped = bytes
            .try_into_mut()
            .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]));
        let stamp = identity.map(|(producer_id, epoch)| Stamp {
            producer_id,
            epoch,
            base_sequence: self.next_sequence.get(&batch.tp).copied().unwrap_or(0),
        });
        let written = match stamp {
            Some(s) => weir_proto::batch::write_producer(
                &mut stamped,
                s.producer_id,
                s.epoch,
                s.base_sequence,
            ),
            None => Ok(()),
        }
        .and_then(|()| weir_proto::batch::seal(&mut stamped));
        if let Err(e) = written {
            batch.bytes = Err(e);
            return;
        }
        batch.bytes = Ok(stamped.freeze());
        batch.sealed = true;
        if restamp {
            tracing::debug!(partition = %batch.tp, old = ?batch.stamp, new = ?stamp, "batch not stored under a given-up producer id; stamped again");
        }
        batch.stamp = stamp;
        if let Some(s) = stamp {
            let next = sequence_after(s.base_sequence, batch.record_count as i64);
            self.next_sequence.insert(batch.tp.clone(), next);
        }
    }

    /// A stamped batch failed for good (module docs, rule 5): if the broker surely did not
    /// store it and no later batch of its partition was stamped, its sequence numbers go back
    /// to its partition; otherwise the producer starts over with a new id.
    fn forget_stamp(&mut self, batch: &ProducerBatch, error: &ClientError) {
        let (Some(stamp), Some(producer_id)) = (batch.stamp, self.producer_id()) else {
            return;
        };
        if stamp.producer_id != producer_id {
            return; // an older identity's batch: nothing to undo
        }
        // The broker lost track of this producer's sequence: reusing it would be refused again.
        let lost_track = error.code() == Some(ErrorCode::OutOfOrderSequence);
        // With several batches of a partition out, a later one may already carry the next
        // sequence: rolling back under it would leave it (and every batch after it) a gap.
        let next = self.next_sequence.get(&batch.tp).copied();
        let was_last = next
            == Some(sequence_after(
                stamp.base_sequence,
                batch.record_count as i64,
            ));
        if !batch.maybe_stored && !lost_track && was_last {
            self.next_sequence
                .insert(batch.tp.clone(), stamp.base_sequence);
        } else {
            tracing::debug!(partition = %batch.tp, %error, maybe_stored = batch.maybe_stored, was_last, "giving up the producer id; taking a new one");
            self.identity = Identity::Missing;
            self.next_sequence.clear();
        }
    }

    fn finished(&self) -> bool {
        self.shared.is_closing()
            && self.in_flight.is_empty()
            && self.lanes.nothing_waiting()
            && self.shared.lock_accumulator().is_empty()
    }

    fn has_work(&self) -> bool {
        !self.in_flight.is_empty()
            || !self.lanes.nothing_waiting()
            || !self.shared.lock_accumulator().is_empty()
    }

    /// Refreshes the cluster picture; on failure, tries again after a backoff.
    async fn refresh(&mut self) {
        match self.cluster.refresh().await {
            Ok(()) => {
                self.refresh_needed = false;
                self.refresh_failures = 0;
            }
            Err(error) => {
                self.refresh_failures += 1;
                if self.refresh_failures == 1 {
                    tracing::warn!(%error, "cannot refresh the cluster metadata; retrying");
                }
                self.refresh_at =
                    Instant::now() + self.shared.config.backoff(self.refresh_failures);
            }
        }
    }

    /// The link to `leader`'s broker, opened (over the configured wire) if it is down and due;
    /// `Err(when)` while it waits for its reconnect time.
    fn link_to(
        &mut self,
        leader: &Leader,
        now: Instant,
    ) -> Result<mpsc::UnboundedSender<ProduceRequest>, Instant> {
        let address = &leader.address;
        let wire = match (self.shared.config.transport, &leader.data_address) {
            (Transport::Grpc, _) | (Transport::Auto, None) => Wire::Grpc(leader.grpc.clone()),
            (_, Some(data)) => Wire::DataPort {
                address: Arc::clone(data),
                token: self.cluster.token().map(Arc::from),
                tls: self.cluster.tls().cloned(),
            },
            // `send` refuses the batch before asking for a link.
            (Transport::DataPort, None) => Wire::Grpc(leader.grpc.clone()),
        };
        let link = self
            .links
            .entry(Arc::clone(address))
            .or_insert_with(|| BrokerLink {
                requests: None,
                epoch: 0,
                retry_at: now,
                failures: 0,
            });
        if let Some(requests) = &link.requests {
            return Ok(requests.clone());
        }
        if now < link.retry_at {
            return Err(link.retry_at);
        }
        self.next_epoch += 1;
        let (requests, outgoing) = mpsc::unbounded_channel();
        link.requests = Some(requests.clone());
        link.epoch = self.next_epoch;
        tokio::spawn(link::run(
            wire,
            outgoing,
            Arc::clone(address),
            link.epoch,
            self.events_tx.clone(),
        ));
        Ok(requests)
    }

    fn on_event(&mut self, tagged: Tagged) {
        let current = self
            .links
            .get(&tagged.address)
            .is_some_and(|link| link.epoch == tagged.epoch && link.requests.is_some());
        match tagged.event {
            // A replaced stream's answers still settle their batches (correlation ids are
            // unique); its failure is old news.
            LinkEvent::Response(response) => self.on_response(response),
            LinkEvent::Failed { error, opened } if current => {
                // A call that never opened was never answered: not one of the batches' attempts.
                self.link_failed(&tagged.address, error, opened);
            }
            LinkEvent::Failed { .. } => {}
        }
    }

    /// A broker's stream is gone: its in-flight batches go back to be retried (or fail), the
    /// stream reopens after a backoff, and the cluster picture is refreshed. `counts` says
    /// whether the failed send counts as one of the batches' attempts. Each partition's
    /// batches come back in id order and wait in its lane (module docs, rule 3).
    fn link_failed(&mut self, address: &str, error: ClientError, counts: bool) {
        let now = Instant::now();
        let backoff = |failures| self.shared.config.backoff(failures);
        if let Some(link) = self.links.get_mut(address) {
            link.failures += 1;
            link.requests = None;
            link.retry_at = now + backoff(link.failures);
            // One warning per outage, not one per attempt.
            if link.failures == 1 {
                tracing::warn!(broker = address, %error, "produce stream failed; reconnecting");
            } else {
                tracing::debug!(broker = address, %error, "produce stream failed again; reconnecting");
            }
        }
        self.cluster.invalidate();
        self.refresh_needed = true;
        let mut batches: Vec<ProducerBatch> = self
            .in_flight
            .extract_if(|_, (sent_to, _)| **sent_to == *address)
            .map(|(_, (_, batch))| batch)
            .collect();
        batches.sort_by_key(|batch| batch.id);
        let retriable = error.is_retriable();
        for mut batch in batches {
            self.lanes.off_wire(&batch.tp, batch.id);
            if !counts {
                batch.attempts = batch.attempts.saturating_sub(1);
            }
            // Unanswered: the broker may have appended it before the link went. (Even a call
            // that never opened may have been read: not worth betting a duplicate on.)
            batch.maybe_stored = true;
            self.retry_or_fail(batch, error.clone(), now, retriable);
        }
    }

    fn on_response(&mut self, response: ProduceResponse) {
        let Some((address, mut batch)) = self.in_flight.remove(&response.correlation_id) else {
            // Its batch was already settled (timed out); nothing waits for this answer.
            tracing::debug!(
                correlation_id = response.correlation_id,
                "response for a settled batch"
            );
            return;
        };
        self.lanes.off_wire(&batch.tp, batch.id);
        let Some(error) = response.error else {
            if let Some(link) = self.links.get_mut(&address) {
                link.failures = 0;
            }
            let acknowledged = response.last_offset.wrapping_sub(response.base_offset) + 1;
            if acknowledged != batch.record_count as u64 {
                tracing::warn!(
                    partition = %batch.tp,
                    acknowledged,
                    sent = batch.record_count,
                    "broker acknowledged a different number of records than the batch holds"
                );
            }
            self.settle(batch, Ok(response.base_offset));
            return;
        };
        let error = ClientError::from_weir(error);
        let code = error.code();
        if matches!(
            code,
            Some(ErrorCode::UnknownTopic | ErrorCode::UnknownPartition)
        ) {
            // Deleted or recreated: the next send looks the topic up again.
            self.cluster.forget_topic(&batch.tp.topic);
        }
        if matches!(
            code,
            Some(
                ErrorCode::NotLeader
                    | ErrorCode::PartitionUnavailable
                    | ErrorCode::UnknownTopic
                    | ErrorCode::UnknownPartition
            )
        ) {
            // The picture is out of date: where the partition lives is news.
            self.cluster.invalidate();
            self.refresh_needed = true;
        }
        let mut retriable = error.is_retriable();
        if code == Some(ErrorCode::OutOfOrderSequence) {
            // Nothing written, and no copy stored under this stamp (module docs, rule 1).
            batch.maybe_stored = false;
            // Rule 4: behind an earlier unsettled batch, it goes again after that one. Rule 5:
            // its producer id was given up, so it is stamped again. Only otherwise did the
            // broker lose track, and the batch fails.
            let behind = self.lanes.has_earlier(&batch.tp, batch.id);
            let given_up = batch.stamp.map(|s| s.producer_id) != self.producer_id();
            retriable = behind || given_up;
            if retriable {
                // The refusal is an earlier batch's doing, not this one's: it does not use up
                // this batch's retries (its delivery timeout still bounds it).
                batch.attempts = batch.attempts.saturating_sub(1);
            }
        } else if !code.is_some_and(refused_unwritten) {
            // Refused after the append (a sync or replication wait that failed): stored, maybe.
            batch.maybe_stored = true;
        }
        self.retry_or_fail(batch, error, Instant::now(), retriable);
    }

    /// A sent batch failed with `error`: if `retriable` and the retry budget and delivery
    /// timeout allow, it waits in its lane to go again (module docs, rule 2), else it is
    /// settled with the error.
    fn retry_or_fail(
        &mut self,
        batch: ProducerBatch,
        error: ClientError,
        now: Instant,
        retriable: bool,
    ) {
        let config = &self.shared.config;
        if retriable && batch.attempts <= config.retries {
            let at = now + config.backoff(batch.attempts);
            if at < batch.created + config.delivery_timeout {
                tracing::debug!(partition = %batch.tp, attempt = batch.attempts, %error, "retrying batch");
                self.lanes.hold(at, batch);
                return;
            }
        }
        tracing::debug!(partition = %batch.tp, %error, "batch failed");
        self.settle(batch, Err(error));
    }

    /// Decides a batch: writes its outcome, releases its buffer bytes, marks it complete. The
    /// caller has already taken it out of its lane.
    fn settle(&mut self, batch: ProducerBatch, outcome: Result<u64, ClientError>) {
        if let Err(error) = &outcome {
            self.forget_stamp(&batch, error);
        }
        batch.outcome.decide(outcome);
        self.shared.buffer.add_permits(batch.reserved);
        self.shared.lock_accumulator().complete(batch.id);
        self.completions.send_modify(|settled| *settled += 1);
    }

    /// Sends the waiting batches of every lane that may release them (module docs, rule 2):
    /// from the front, in order, while they go on the wire under one producer id.
    fn send_due_retries(&mut self, now: Instant) {
        let current = self.producer_id();
        for tp in self.lanes.due(now) {
            while let Some(batch) = self
                .lanes
                .next_out(&tp, |b| Self::send_identity(b, current))
            {
                if !self.send(batch) {
                    break; // it waits again (or failed): the ones behind it wait too
                }
            }
        }
    }

    fn send_ready(&mut self, now: Instant) {
        let current = self.producer_id();
        let lanes = &self.lanes;
        let batches = self
            .shared
            .lock_accumulator()
            .drain(now, self.shared.config.linger, |tp| lanes.room(tp, current));
        for batch in batches {
            self.send(batch);
        }
    }

    /// Puts `batch` on its partition's link; returns whether it went. A batch that cannot go
    /// yet waits in its lane: behind a waiting batch of its partition, while its owner is
    /// unknown or its link reconnects, or while its partition's batches on the wire are on
    /// another broker's link (the two links would race: order holds only within one).
    fn send(&mut self, mut batch: ProducerBatch) -> bool {
        let now = Instant::now();
        if self.lanes.must_follow(&batch.tp, batch.id) {
            // Unstamped if new: stamped when it goes, right after the batch ahead of it.
            self.lanes.hold(now, batch);
            return false;
        }
        self.stamp_and_seal(&mut batch);
        let bytes = match &batch.bytes {
            Ok(bytes) => bytes.clone(),
            Err(error) => {
                let error = ClientError::InvalidArgument(format!(
                    "the batch could not be encoded: {error}"
                ));
                self.settle(batch, Err(error));
                return false;
            }
        };
        let leader = match self
            .cluster
            .cached_leader(&batch.tp.topic, batch.tp.partition)
        {
            Some(Ok(leader)) => leader,
            // Not in the picture (new topic, or the picture was invalidated): refresh first.
            None => {
                self.refresh_needed = true;
                self.lanes.hold(self.refresh_at.max(now), batch);
                return false;
            }
            Some(Err(error)) if error.is_retriable() => {
                // The owner is down: wait for it (refreshing to learn when it is back) until
                // the delivery timeout.
                self.refresh_needed = true;
                self.refresh_at = self.refresh_at.max(now + self.shared.config.backoff(1));
                tracing::debug!(partition = %batch.tp, %error, "partition unavailable; waiting");
                self.lanes.hold(self.refresh_at, batch);
                return false;
            }
            Some(Err(error)) => {
                self.settle(batch, Err(error));
                return false;
            }
        };
        if self.shared.config.transport == Transport::DataPort && leader.data_address.is_none() {
            let why = format!(
                "broker {} advertises no data port for {}; use Transport::Auto or Grpc",
                leader.id, batch.tp
            );
            self.settle(batch, Err(ClientError::InvalidArgument(why)));
            return false;
        }
        if self
            .lanes
            .wire_link(&batch.tp)
            .is_some_and(|link| **link != *leader.address)
        {
            // The partition moved while batches of it are out on the old owner's link: they
            // are answered (or come back) first; this one then goes to the new owner.
            self.lanes.hold(now, batch);
            return false;
        }
        let requests = match self.link_to(&leader, now) {
            Ok(requests) => requests,
            Err(retry_at) => {
                self.lanes.hold(retry_at, batch);
                return false;
            }
        };
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        batch.attempts += 1;
        let request = ProduceRequest {
            correlation_id,
            topic: batch.tp.topic.to_string(),
            partition: batch.tp.partition,
            batch: bytes,
            acks: self.shared.config.acks.to_proto() as i32,
            expected_offset: None,
            expected_keys: Vec::new(),
        };
        // If the call has already ended, the send fails and the link's failure event, which is
        // on its way, retries the batch with the rest of the in-flight ones.
        let _ = requests.send(request);
        let producer = batch.stamp.map(|s| s.producer_id);
        self.lanes
            .sent(&batch.tp, batch.id, producer, &leader.address);
        self.in_flight
            .insert(correlation_id, (leader.address, batch));
        true
    }

    /// Fails batches past their delivery timeout, wherever they are.
    fn expire(&mut self, now: Instant) {
        let timeout = self.shared.config.delivery_timeout;
        let Some(cutoff) = now.checked_sub(timeout) else {
            return;
        };
        let never_sent = ClientError::Timeout {
            what: "delivery (the batch was never sent: is the broker reachable?)",
            after: timeout,
        };
        let unanswered = ClientError::Timeout {
            what: "delivery (the batch was sent but not acknowledged; it may or may not have been written)",
            after: timeout,
        };
        let expired = self.shared.lock_accumulator().expire(cutoff);
        for batch in expired {
            self.settle(batch, Err(never_sent.clone()));
        }
        for batch in self.lanes.expire(cutoff) {
            let error = if batch.attempts == 0 && !batch.maybe_stored {
                &never_sent
            } else {
                &unanswered
            };
            self.settle(batch, Err(error.clone()));
        }
        let mut stale: Vec<(Arc<str>, ProducerBatch)> = self
            .in_flight
            .extract_if(|_, (_, batch)| batch.created <= cutoff)
            .map(|(_, sent)| sent)
            .collect();
        // Oldest first, so a partition's batches are given up in order.
        stale.sort_by_key(|(_, batch)| batch.id);
        let mut unhealthy = HashSet::new();
        for (address, mut batch) in stale {
            self.lanes.off_wire(&batch.tp, batch.id);
            batch.maybe_stored = true;
            self.settle(batch, Err(unanswered.clone()));
            unhealthy.insert(address);
        }
        // A request unanswered for the whole delivery timeout: that stream is not healthy.
        // Start over so a late answer cannot land after the partition's next batch.
        for address in unhealthy {
            self.link_failed(
                &address,
                ClientError::Transport {
                    code: tonic::Code::DeadlineExceeded,
                    message: "a produce request went unanswered past the delivery timeout".into(),
                },
                true,
            );
        }
    }

    /// When the loop must next run on its own (no wake-up, no link event).
    fn next_deadline(&self, now: Instant) -> Instant {
        let config = &self.shared.config;
        let accumulator = self.shared.lock_accumulator();
        let mut deadline = now + IDLE_WAKE;
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at {
                deadline = deadline.min(at);
            }
        };
        let waiting = !accumulator.is_empty() || !self.lanes.nothing_waiting();
        if self.identity == Identity::Missing {
            if waiting {
                consider(Some(self.identity_retry_at));
            }
        } else {
            let current = self.producer_id();
            consider(
                accumulator.next_drain_time(config.linger, |tp| self.lanes.room(tp, current) > 0),
            );
            consider(self.lanes.next_release());
        }
        if self.refresh_needed && waiting {
            consider(Some(self.refresh_at));
        }
        let oldest = [
            accumulator.oldest(),
            self.lanes.oldest_waiting(),
            self.in_flight.values().map(|(_, b)| b.created).min(),
        ]
        .into_iter()
        .flatten()
        .min();
        consider(oldest.map(|created| created + config.delivery_timeout));
        // Never in the past: a due item is handled before the wait, so this avoids a spin
        // when a deadline is reached by a hair.
        deadline.max(now + Duration::from_micros(100))
    }
}

/// Refusals the broker makes before writing anything: an answer with one of these leaves what
/// earlier attempts did unchanged. Any other error answer may come after the append.
fn refused_unwritten(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::CorruptBatch
            | ErrorCode::BatchTooLarge
            | ErrorCode::UnknownTopic
            | ErrorCode::UnknownPartition
            | ErrorCode::InvalidRequest
            | ErrorCode::InvalidName
            | ErrorCode::DiskFull
            | ErrorCode::Throttled
            | ErrorCode::OutOfOrderSequence
            | ErrorCode::ProducerFenced
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use weir_proto::batch::RecordInput;

    use super::*;
    use crate::producer::accumulator::{Accumulator, Target};

    fn batch() -> ProducerBatch {
        let mut acc = Accumulator::with_sticky_seed(0);
        let record = RecordInput {
            key: None,
            value: Some(b"v"),
            timestamp: 0,
            headers: &[],
        };
        let now = Instant::now();
        acc.append(&"t".into(), Target::Partition(0), record, 1, 1024, || now)
            .unwrap();
        acc.drain(now, Duration::ZERO, |_| 1).pop().unwrap()
    }

    fn stamped(producer_id: i64, maybe_stored: bool) -> ProducerBatch {
        let mut batch = batch();
        batch.stamp = Some(Stamp {
            producer_id,
            epoch: 0,
            base_sequence: 10,
        });
        batch.maybe_stored = maybe_stored;
        batch
    }

    #[test]
    fn a_batch_keeps_its_stamp_unless_it_is_known_not_stored_under_a_given_up_id() {
        let identity = |b: &ProducerBatch| SenderTask::send_identity(b, Some(8));
        assert_eq!(identity(&batch()), Some(8), "a first send: the current id");
        assert_eq!(identity(&stamped(8, true)), Some(8));
        assert_eq!(identity(&stamped(8, false)), Some(8));
        assert_eq!(
            identity(&stamped(7, true)),
            Some(7),
            "it may be stored under 7: sent again byte-identical"
        );
        assert_eq!(
            identity(&stamped(7, false)),
            Some(8),
            "not stored, and 7 was given up: stamped again"
        );
        assert_eq!(
            SenderTask::send_identity(&batch(), None),
            None,
            "not idempotent"
        );
    }

    #[test]
    fn only_refusals_that_write_nothing_leave_a_batch_s_fate_as_it_was() {
        assert!(refused_unwritten(ErrorCode::OutOfOrderSequence));
        assert!(refused_unwritten(ErrorCode::DiskFull));
        assert!(refused_unwritten(ErrorCode::CorruptBatch));
        // After the append (a sync or replication wait): the batch may be stored.
        assert!(!refused_unwritten(ErrorCode::NotDurable));
        assert!(!refused_unwritten(ErrorCode::NotEnoughReplicasAfterAppend));
        assert!(!refused_unwritten(ErrorCode::StorageFailed));
    }
}
