//! The sender: the producer's background task. It takes batches from the accumulator, sends
//! each over a link to its partition's owner ([`super::link`]: a `ProduceStream` or a produce
//! connection on the data port; one link per broker, found through
//! the client's cluster picture), routes responses back by correlation id, retries,
//! reconnects, and settles every batch exactly once (acknowledged, failed or timed out).
//!
//! Invariants:
//! - **At most one batch per partition is in flight** (sent and unanswered, or waiting to be
//!   sent again): a partition is in `busy` from the moment its batch is sent until that batch is
//!   settled, and the accumulator only hands out batches of partitions that are not busy. This
//!   is what keeps records of a partition in order when a batch is retried: the next batch
//!   cannot overtake it. (Without idempotence a retry after a lost response can duplicate a
//!   batch the broker did append; with it, the broker recognizes the retry.) Different
//!   partitions are in flight concurrently on the same stream.
//! - Every batch is settled once: its outcome is written, its buffer bytes are released and it
//!   is marked complete in the accumulator (which `flush` waits on).
//! - A broken stream (transport error, broker shutdown) puts that broker's in-flight batches
//!   back to be retried, subject to `retries` and the delivery timeout, and makes the cluster
//!   picture refresh (the partition may have an owner that is down, or a new one). So does a
//!   NOT_LEADER answer. A batch whose owner is unknown or down waits (its partition busy, so
//!   order holds) until the picture says where to send it, or its delivery timeout.
//! - **Idempotence** (on by default): before its first send the task gets a producer id from
//!   the broker (`InitProducer`). A batch is stamped with that id and its partition's next
//!   sequence number when it is first sent (so sequences follow send order) and keeps the stamp
//!   for every retry, so the broker stores a retried batch once. A batch the broker explicitly
//!   refused gives its sequence numbers back; one whose fate is unknown (timed out, retries
//!   exhausted) or that the broker found out of sequence makes the task take a new producer id,
//!   which restarts every partition's sequence at 0.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use weir_proto::v1::{ErrorCode, InitProducerRequest, ProduceRequest, ProduceResponse};

use weir_proto::batch::sequence_after;

use super::Shared;
use super::accumulator::{ProducerBatch, Stamp};
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
    /// Sent and unanswered, with the address of the broker they went to.
    in_flight: HashMap<u64, (Arc<str>, ProducerBatch)>,
    /// Batches waiting for their retry time; their partitions stay busy.
    retrying: Vec<(Instant, ProducerBatch)>,
    busy: HashSet<TopicPartition>,
    next_correlation_id: u64,
}

impl SenderTask {
    pub fn new(
        shared: Arc<Shared>,
        cluster: Arc<Cluster>,
        completions: watch::Sender<u64>,
    ) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
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
            retrying: Vec::new(),
            busy: HashSet::new(),
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

    /// Readies a batch's first send: stamps it with the identity and its partition's next
    /// sequence (when idempotent), then seals it (its one CRC pass). A retry is sent as sealed.
    fn stamp_and_seal(&mut self, batch: &mut ProducerBatch) {
        if batch.sealed {
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
        // in place instead of copying a whole batch.
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
        if let Some(s) = stamp {
            batch.stamp = Some(s);
            let next = sequence_after(s.base_sequence, batch.record_count as i64);
            self.next_sequence.insert(batch.tp.clone(), next);
        }
    }

    /// A stamped batch failed for good: if the broker surely did not store it, its sequence
    /// numbers go back to its partition; if that is unknown (or the broker lost track of the
    /// sequence), the producer starts over with a new id.
    fn forget_stamp(&mut self, batch: &ProducerBatch, error: &ClientError) {
        let (Some(stamp), Identity::Ready { producer_id, .. }) = (batch.stamp, self.identity)
        else {
            return;
        };
        if stamp.producer_id != producer_id {
            return; // an older identity's batch: nothing to undo
        }
        // Only refusals the broker makes before writing anything give the sequence back; any
        // other failure (a sync error after the append, a lost answer, a timeout) may have
        // stored the batch, and reusing its sequence would make the broker answer the next
        // batch as a duplicate of it.
        let surely_not_stored = !batch.ever_sent
            || matches!(
                error,
                ClientError::Refused { code, .. } if matches!(
                    code,
                    ErrorCode::CorruptBatch
                        | ErrorCode::BatchTooLarge
                        | ErrorCode::UnknownTopic
                        | ErrorCode::UnknownPartition
                        | ErrorCode::InvalidRequest
                        | ErrorCode::InvalidName
                        | ErrorCode::DiskFull
                        | ErrorCode::Throttled
                )
            );
        // With one batch in flight per partition the failed batch is always the partition's
        // last stamped one; checked anyway, since rolling back under a later batch would gap.
        let next = self.next_sequence.get(&batch.tp).copied();
        let was_last = next
            == Some(sequence_after(
                stamp.base_sequence,
                batch.record_count as i64,
            ));
        if surely_not_stored && was_last {
            self.next_sequence
                .insert(batch.tp.clone(), stamp.base_sequence);
        } else {
            tracing::debug!(partition = %batch.tp, %error, "batch fate unknown; taking a new producer id");
            self.identity = Identity::Missing;
            self.next_sequence.clear();
        }
    }

    fn finished(&self) -> bool {
        self.shared.is_closing()
            && self.in_flight.is_empty()
            && self.retrying.is_empty()
            && self.shared.lock_accumulator().is_empty()
    }

    fn has_work(&self) -> bool {
        !self.in_flight.is_empty()
            || !self.retrying.is_empty()
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
            (_, Some(data)) => Wire::DataPort(Arc::clone(data)),
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
    /// whether the failed send counts as one of the batches' attempts.
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
        for mut batch in batches {
            if !counts {
                batch.attempts = batch.attempts.saturating_sub(1);
            }
            self.retry_or_fail(batch, error.clone(), now);
        }
    }

    fn on_response(&mut self, response: ProduceResponse) {
        let Some((address, batch)) = self.in_flight.remove(&response.correlation_id) else {
            // Its batch was already settled (timed out); nothing waits for this answer.
            tracing::debug!(
                correlation_id = response.correlation_id,
                "response for a settled batch"
            );
            return;
        };
        match response.error {
            None => {
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
                self.busy.remove(&batch.tp);
                self.settle(batch, Ok(response.base_offset));
            }
            Some(error) => {
                let error = ClientError::from_weir(error);
                if matches!(
                    error.code(),
                    Some(ErrorCode::UnknownTopic | ErrorCode::UnknownPartition)
                ) {
                    // Deleted or recreated: the next send looks the topic up again.
                    self.cluster.forget_topic(&batch.tp.topic);
                }
                if matches!(
                    error.code(),
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
                self.retry_or_fail(batch, error, Instant::now());
            }
        }
    }

    /// A sent batch failed with `error`: schedule it again if that may help and the retry budget
    /// and delivery timeout allow (its partition stays busy), else settle it with the error.
    fn retry_or_fail(&mut self, batch: ProducerBatch, error: ClientError, now: Instant) {
        let config = &self.shared.config;
        if error.is_retriable() && batch.attempts <= config.retries {
            let at = now + config.backoff(batch.attempts);
            if at < batch.created + config.delivery_timeout {
                tracing::debug!(partition = %batch.tp, attempt = batch.attempts, %error, "retrying batch");
                self.retrying.push((at, batch));
                return;
            }
        }
        tracing::debug!(partition = %batch.tp, %error, "batch failed");
        self.busy.remove(&batch.tp);
        self.settle(batch, Err(error));
    }

    /// Decides a batch: writes its outcome, releases its buffer bytes, marks it complete. The
    /// caller has already freed its partition if it was in flight.
    fn settle(&mut self, batch: ProducerBatch, outcome: Result<u64, ClientError>) {
        if let Err(error) = &outcome {
            self.forget_stamp(&batch, error);
        }
        batch.outcome.send_replace(Some(outcome));
        self.shared.buffer.add_permits(batch.reserved);
        self.shared.lock_accumulator().complete(batch.id);
        self.completions.send_modify(|settled| *settled += 1);
    }

    fn send_due_retries(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retrying)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.retrying = later;
        for (_, batch) in due {
            self.send(batch);
        }
    }

    fn send_ready(&mut self, now: Instant) {
        let busy = &self.busy;
        let batches = self
            .shared
            .lock_accumulator()
            .drain(now, self.shared.config.linger, |tp| busy.contains(tp));
        for batch in batches {
            self.send(batch);
        }
    }

    /// Puts `batch` on the stream and marks its partition busy.
    fn send(&mut self, mut batch: ProducerBatch) {
        self.stamp_and_seal(&mut batch);
        let bytes = match &batch.bytes {
            Ok(bytes) => bytes.clone(),
            Err(error) => {
                let error = ClientError::InvalidArgument(format!(
                    "the batch could not be encoded: {error}"
                ));
                self.busy.remove(&batch.tp);
                self.settle(batch, Err(error));
                return;
            }
        };
        let now = Instant::now();
        let leader = match self
            .cluster
            .cached_leader(&batch.tp.topic, batch.tp.partition)
        {
            Some(Ok(leader)) => leader,
            // Not in the picture (new topic, or the picture was invalidated): refresh first.
            None => {
                self.refresh_needed = true;
                self.park(batch, self.refresh_at.max(now));
                return;
            }
            Some(Err(error)) if error.is_retriable() => {
                // The owner is down: wait for it (refreshing to learn when it is back) until
                // the delivery timeout.
                self.refresh_needed = true;
                self.refresh_at = self.refresh_at.max(now + self.shared.config.backoff(1));
                tracing::debug!(partition = %batch.tp, %error, "partition unavailable; waiting");
                self.park(batch, self.refresh_at);
                return;
            }
            Some(Err(error)) => {
                self.busy.remove(&batch.tp);
                self.settle(batch, Err(error));
                return;
            }
        };
        if self.shared.config.transport == Transport::DataPort && leader.data_address.is_none() {
            self.busy.remove(&batch.tp);
            let why = format!(
                "broker {} advertises no data port for {}; use Transport::Auto or Grpc",
                leader.id, batch.tp
            );
            self.settle(batch, Err(ClientError::InvalidArgument(why)));
            return;
        }
        let requests = match self.link_to(&leader, now) {
            Ok(requests) => requests,
            Err(retry_at) => {
                self.park(batch, retry_at);
                return;
            }
        };
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        batch.attempts += 1;
        batch.ever_sent = true;
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
        self.busy.insert(batch.tp.clone());
        self.in_flight
            .insert(correlation_id, (leader.address, batch));
    }

    /// Holds a batch that cannot be sent yet (its partition stays busy) until `at`.
    fn park(&mut self, batch: ProducerBatch, at: Instant) {
        self.busy.insert(batch.tp.clone());
        self.retrying.push((at, batch));
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
        let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retrying)
            .into_iter()
            .partition(|(_, batch)| batch.created <= cutoff);
        self.retrying = waiting;
        for (_, batch) in expired {
            self.busy.remove(&batch.tp);
            self.settle(batch, Err(unanswered.clone()));
        }
        let stale: Vec<(Arc<str>, ProducerBatch)> = self
            .in_flight
            .extract_if(|_, (_, batch)| batch.created <= cutoff)
            .map(|(_, sent)| sent)
            .collect();
        let mut unhealthy = HashSet::new();
        for (address, batch) in stale {
            self.busy.remove(&batch.tp);
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
        let waiting = !accumulator.is_empty() || !self.retrying.is_empty();
        if self.identity == Identity::Missing {
            if waiting {
                consider(Some(self.identity_retry_at));
            }
        } else {
            consider(accumulator.next_drain_time(config.linger, |tp| self.busy.contains(tp)));
            consider(self.retrying.iter().map(|(at, _)| *at).min());
        }
        if self.refresh_needed && waiting {
            consider(Some(self.refresh_at));
        }
        let oldest = [
            accumulator.oldest(),
            self.retrying.iter().map(|(_, b)| b.created).min(),
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
