//! The sender: the producer's background task. It takes batches from the accumulator, sends
//! them over one `ProduceStream`, routes responses back by correlation id, retries, reconnects,
//! and settles every batch exactly once (acknowledged, failed or timed out).
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
//! - A broken stream (transport error, broker shutdown) puts every in-flight batch back to be
//!   retried on the next stream, subject to `retries` and the delivery timeout.
//! - **Idempotence** (on by default): before its first send the task gets a producer id from
//!   the broker (`InitProducer`). A batch is stamped with that id and its partition's next
//!   sequence number when it is first sent (so sequences follow send order) and keeps the stamp
//!   for every retry, so the broker stores a retried batch once. A batch the broker explicitly
//!   refused gives its sequence numbers back; one whose fate is unknown (timed out, retries
//!   exhausted) or that the broker found out of sequence makes the task take a new producer id,
//!   which restarts every partition's sequence at 0.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};
use weir_proto::v1::{
    ErrorCode, InitProducerRequest, ProduceRequest, ProduceResponse, weir_client::WeirClient,
};

use weir_proto::batch::sequence_after;

use super::Shared;
use super::accumulator::{ProducerBatch, Stamp};
use crate::{ClientError, TopicPartition};

type OpenCall = Pin<Box<dyn Future<Output = Result<Streaming<ProduceResponse>, Status>> + Send>>;

/// The `ProduceStream` call, as far as it has got.
enum Link {
    /// No stream; open one at `retry_at` if there is anything to send.
    Down { retry_at: Instant },
    /// Requests can already be queued (some brokers answer the call only after the first
    /// request); the response stream is on its way.
    Opening {
        requests: mpsc::UnboundedSender<ProduceRequest>,
        call: OpenCall,
    },
    Open {
        requests: mpsc::UnboundedSender<ProduceRequest>,
        // Boxed: a `Streaming` is large, and the link is mostly in this state anyway.
        responses: Box<Streaming<ProduceResponse>>,
    },
}

impl Link {
    fn requests(&self) -> Option<&mpsc::UnboundedSender<ProduceRequest>> {
        match self {
            Link::Down { .. } => None,
            Link::Opening { requests, .. } | Link::Open { requests, .. } => Some(requests),
        }
    }
}

enum LinkEvent {
    Opened(Result<Streaming<ProduceResponse>, Status>),
    Response(Result<Option<ProduceResponse>, Status>),
}

/// The next thing that happens on the link (never, while it is down).
async fn link_event(link: &mut Link) -> LinkEvent {
    match link {
        Link::Down { .. } => std::future::pending().await,
        Link::Opening { call, .. } => LinkEvent::Opened(call.await),
        Link::Open { responses, .. } => LinkEvent::Response(responses.message().await),
    }
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
    grpc: WeirClient<Channel>,
    completions: watch::Sender<u64>,
    link: Link,
    in_flight: HashMap<u64, ProducerBatch>,
    /// Batches waiting for their retry time; their partitions stay busy.
    retrying: Vec<(Instant, ProducerBatch)>,
    busy: HashSet<TopicPartition>,
    next_correlation_id: u64,
    /// Stream failures since the last acknowledged batch: the reconnect backoff.
    failures: u32,
}

impl SenderTask {
    pub fn new(
        shared: Arc<Shared>,
        grpc: WeirClient<Channel>,
        completions: watch::Sender<u64>,
    ) -> Self {
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
            grpc,
            completions,
            link: Link::Down {
                retry_at: Instant::now(),
            },
            in_flight: HashMap::new(),
            retrying: Vec::new(),
            busy: HashSet::new(),
            next_correlation_id: 0,
            failures: 0,
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
            self.open_link_if_needed(now);
            if self.link.requests().is_some() && self.identity != Identity::Missing {
                self.send_due_retries(now);
                self.send_ready(now);
            }
            if self.finished() {
                break;
            }
            let deadline = self.next_deadline(now);
            tokio::select! {
                event = link_event(&mut self.link) => self.on_link_event(event),
                () = self.shared.wake.notified() => {}
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
        tracing::debug!("producer closed: every batch settled");
    }

    /// Asks the broker for a producer id; on failure, backs off (the delivery timeout still
    /// bounds how long batches wait).
    async fn init_identity(&mut self) {
        let mut grpc = self.grpc.clone();
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

    /// Stamps a batch's first send with the identity and its partition's next sequence.
    fn stamp(&mut self, batch: &mut ProducerBatch) {
        let Identity::Ready { producer_id, epoch } = self.identity else {
            return;
        };
        if batch.stamp.is_some() {
            return;
        }
        let bytes = match std::mem::replace(&mut batch.bytes, Ok(bytes::Bytes::new())) {
            Ok(bytes) => bytes,
            Err(e) => {
                batch.bytes = Err(e);
                return;
            }
        };
        let base_sequence = self.next_sequence.get(&batch.tp).copied().unwrap_or(0);
        // The batch is normally the only owner of its bytes before its first send: stamp them in
        // place instead of copying a whole batch.
        let mut stamped = bytes
            .try_into_mut()
            .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]));
        if let Err(e) =
            weir_proto::batch::stamp_producer(&mut stamped, producer_id, epoch, base_sequence)
        {
            batch.bytes = Err(e);
            return;
        }
        batch.bytes = Ok(stamped.freeze());
        batch.stamp = Some(Stamp {
            producer_id,
            epoch,
            base_sequence,
        });
        let next = sequence_after(base_sequence, batch.record_count as i64);
        self.next_sequence.insert(batch.tp.clone(), next);
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

    fn open_link_if_needed(&mut self, now: Instant) {
        let Link::Down { retry_at } = self.link else {
            return;
        };
        if now < retry_at || !self.has_work() {
            return;
        }
        let (requests, outgoing) = mpsc::unbounded_channel();
        let mut grpc = self.grpc.clone();
        let call: OpenCall = Box::pin(async move {
            let response = grpc
                .produce_stream(UnboundedReceiverStream::new(outgoing))
                .await?;
            Ok(response.into_inner())
        });
        self.link = Link::Opening { requests, call };
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Opened(Ok(responses)) => {
                let link = std::mem::replace(
                    &mut self.link,
                    Link::Down {
                        retry_at: Instant::now(),
                    },
                );
                if let Link::Opening { requests, .. } = link {
                    self.link = Link::Open {
                        requests,
                        responses: Box::new(responses),
                    };
                }
            }
            // The call never opened (e.g. the broker is down): the batches queued on it were
            // never answered, so this does not count against their retries; the delivery
            // timeout still bounds how long they wait.
            LinkEvent::Opened(Err(status)) => self.link_failed(ClientError::from(status), false),
            LinkEvent::Response(Err(status)) => self.link_failed(ClientError::from(status), true),
            LinkEvent::Response(Ok(None)) => self.link_failed(
                ClientError::Transport {
                    code: tonic::Code::Unavailable,
                    message: "the broker ended the produce stream".into(),
                },
                true,
            ),
            LinkEvent::Response(Ok(Some(response))) => self.on_response(response),
        }
    }

    /// The stream is gone: every in-flight batch goes back to be retried (or fails), and the
    /// next stream opens after a backoff. `counts` says whether the failed send counts as one of
    /// the batches' attempts.
    fn link_failed(&mut self, error: ClientError, counts: bool) {
        self.failures += 1;
        let delay = self.shared.config.backoff(self.failures);
        // One warning per outage, not one per attempt.
        if self.failures == 1 {
            tracing::warn!(%error, "produce stream failed; reconnecting");
        } else {
            tracing::debug!(%error, ?delay, "produce stream failed again; reconnecting");
        }
        let now = Instant::now();
        self.link = Link::Down {
            retry_at: now + delay,
        };
        let mut in_flight: Vec<ProducerBatch> = self.in_flight.drain().map(|(_, b)| b).collect();
        in_flight.sort_by_key(|batch| batch.id);
        for mut batch in in_flight {
            if !counts {
                batch.attempts = batch.attempts.saturating_sub(1);
            }
            self.retry_or_fail(batch, error.clone(), now);
        }
    }

    fn on_response(&mut self, response: ProduceResponse) {
        let Some(batch) = self.in_flight.remove(&response.correlation_id) else {
            // Its batch was already settled (timed out); nothing waits for this answer.
            tracing::debug!(
                correlation_id = response.correlation_id,
                "response for a settled batch"
            );
            return;
        };
        match response.error {
            None => {
                self.failures = 0;
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
                    // Deleted or recreated: the next send describes the topic again.
                    self.shared.metadata.invalidate(&batch.tp.topic);
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
        self.stamp(&mut batch);
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
        let Some(requests) = self.link.requests() else {
            // Not reachable (callers check the link); keep the batch rather than lose it.
            self.busy.insert(batch.tp.clone());
            self.retrying.push((Instant::now(), batch));
            return;
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
        self.in_flight.insert(correlation_id, batch);
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
        let stale: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, batch)| batch.created <= cutoff)
            .map(|(&id, _)| id)
            .collect();
        if !stale.is_empty() {
            for id in stale {
                if let Some(batch) = self.in_flight.remove(&id) {
                    self.busy.remove(&batch.tp);
                    self.settle(batch, Err(unanswered.clone()));
                }
            }
            // A request unanswered for the whole delivery timeout: the stream is not healthy.
            // Start over so a late answer cannot land after the partition's next batch.
            self.link_failed(
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
        match self.link {
            Link::Down { retry_at } => {
                if !accumulator.is_empty() || !self.retrying.is_empty() {
                    consider(Some(retry_at));
                }
            }
            _ if self.identity == Identity::Missing => {
                if !accumulator.is_empty() || !self.retrying.is_empty() {
                    consider(Some(self.identity_retry_at));
                }
            }
            Link::Opening { .. } | Link::Open { .. } => {
                consider(accumulator.next_drain_time(config.linger, |tp| self.busy.contains(tp)));
                consider(self.retrying.iter().map(|(at, _)| *at).min());
            }
        }
        let oldest = [
            accumulator.oldest(),
            self.retrying.iter().map(|(_, b)| b.created).min(),
            self.in_flight.values().map(|b| b.created).min(),
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
