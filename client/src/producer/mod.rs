//! The [`Producer`]: Kafka-style batching, partitioning, back-pressure and retries over one
//! `ProduceStream`.
//!
//! How a record travels:
//!
//! 1. [`Producer::send`] looks up the topic's routing (partition count, partitioner, batch
//!    limit) in the client's cluster picture, the same one the sender finds each partition's
//!    owner in (fetched when it does not know the topic), picks the partition (by the
//!    producer's [`ProducerConfig::partitioner`] override, if set), and takes the record's
//!    size from the producer's buffer budget, **waiting while the buffer is full**: that wait is
//!    the back-pressure, and it is why the producer's memory is bounded by
//!    [`ProducerConfig::buffer_bytes`].
//! 2. The record is encoded into its partition's open batch in the accumulator, and `send`
//!    returns a [`DeliveryFuture`].
//! 3. The background sender task sends a batch when it is full or has lingered
//!    ([`ProducerConfig::linger`]), with up to
//!    [`ProducerConfig::max_in_flight_per_partition`] batches of a partition in flight (5 by
//!    default; 1 without idempotence), in sequence order on the partition's one link, and many
//!    partitions in flight at once. Retries go in their original order before anything newer
//!    of their partition, so a retry never lets a later batch overtake an earlier one (the
//!    rules are in the sender's docs).
//! 4. The broker's answer settles the batch: every record's future resolves to its
//!    [`RecordMetadata`] (or the error, after retries), and its bytes return to the buffer.
//!
//! Closing: [`Producer::close`] sends everything buffered and waits until every record is
//! settled; later sends fail with [`ClientError::Closed`]. Dropping the last clone of a producer
//! without `close` also sends everything buffered and settles every delivery, in the
//! background, as long as the Tokio runtime keeps running; when the runtime stops first,
//! unsettled deliveries resolve to [`ClientError::Closed`]. Call `close` (or `flush`) before a
//! program exits.

mod accumulator;
mod config;
mod delivery;
mod lanes;
mod link;
mod record;
mod sender;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{Notify, Semaphore, watch};
use weir_proto::batch::HEADER_LEN;

use crate::ClientError;
use crate::cluster::{Cluster, TopicInfo};
use crate::partitioner::Route;
use accumulator::{Accumulator, Target};
use sender::SenderTask;

pub use config::{Acks, BROKER_MAX_BATCH_BYTES, MAX_IN_FLIGHT_PER_PARTITION, ProducerConfig};
pub use delivery::DeliveryFuture;
pub use record::{ProducerRecord, RecordMetadata};

/// Where a [`Producer::send_batch`] batch was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMetadata {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition all its records went to.
    pub partition: u32,
    /// The offset of its first record.
    pub base_offset: u64,
    /// The offset of its last record.
    pub last_offset: u64,
}

/// Conditions of a [`Producer::send_batch`], checked by the broker atomically with the append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendConditions {
    /// The partition's next offset must be this.
    pub expected_offset: Option<u64>,
    /// Per key (topics created with a key index): its last record must be at this offset, or,
    /// for `None`, the key must have no record yet.
    pub expected_keys: Vec<(bytes::Bytes, Option<u64>)>,
}

impl AppendConditions {
    /// No conditions.
    pub fn new() -> Self {
        Self::default()
    }

    /// The partition's next offset must be `offset`.
    pub fn expected_offset(mut self, offset: u64) -> Self {
        self.expected_offset = Some(offset);
        self
    }

    /// `key`'s last record must be at `offset` (`None`: the key must be new).
    pub fn key_at(mut self, key: impl Into<bytes::Bytes>, offset: Option<u64>) -> Self {
        self.expected_keys.push((key.into(), offset));
        self
    }
}

/// State shared by the producer's handles and its sender task.
struct Shared {
    config: ProducerConfig,
    accumulator: Mutex<Accumulator>,
    /// Buffer budget in bytes: a record takes its size when sent and its batch gives it back
    /// when settled.
    buffer: Semaphore,
    /// Tells the sender task that a batch opened or closed (new deadline or work).
    wake: Notify,
    closing: AtomicBool,
    /// Counts settled batches; `flush` waits on its changes. Its sender is the task's, so a
    /// task that stopped reads as closed.
    settled: watch::Receiver<u64>,
    /// The topics (`send` routes records by it) and where each partition lives (the sender
    /// task and `send_batch` send by it).
    cluster: Arc<Cluster>,
}

impl Shared {
    fn lock_accumulator(&self) -> MutexGuard<'_, Accumulator> {
        // No code panics while holding the lock; if one did, the data is still consistent
        // enough to settle every batch, which beats losing them all.
        self.accumulator.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where a record goes in `topic`: by this producer's partitioner override, if it has one.
    fn route(
        &self,
        topic: &TopicInfo,
        key: Option<&[u8]>,
        partition: Option<u32>,
    ) -> Result<Route, ClientError> {
        topic.route(self.config.partitioner, key, partition)
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn begin_close(&self) {
        self.closing.store(true, Ordering::Release);
        self.lock_accumulator().close_open_batches();
        self.wake.notify_one();
    }

    /// Waits until every batch with an id below `upto` is settled.
    async fn wait_until_settled(&self, upto: u64) -> Result<(), ClientError> {
        let mut settled = self.settled.clone();
        loop {
            settled.borrow_and_update();
            let done = self
                .lock_accumulator()
                .oldest_outstanding()
                .is_none_or(|id| id >= upto);
            if done {
                return Ok(());
            }
            if settled.changed().await.is_err() {
                // The task stopped; whatever it had not settled never will be.
                let done = self
                    .lock_accumulator()
                    .oldest_outstanding()
                    .is_none_or(|id| id >= upto);
                return if done {
                    Ok(())
                } else {
                    Err(ClientError::Closed)
                };
            }
        }
    }
}

/// The handle whose drop closes the producer: shared by every clone of one [`Producer`].
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.begin_close();
    }
}

/// Sends records to weir. Cheap to clone; clones share one buffer, one background task and one
/// stream. Made by [`Client::producer`](crate::Client::producer). See the
/// [module docs](self) for how records travel and what closing does.
#[derive(Clone)]
pub struct Producer {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.handle.shared.config)
            .field("closing", &self.handle.shared.is_closing())
            .finish_non_exhaustive()
    }
}

impl Producer {
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        config: ProducerConfig,
    ) -> Result<Producer, ClientError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ClientError::InvalidArgument(
                "a producer runs a background task: create it inside a Tokio runtime".into(),
            )
        })?;
        let (settled_tx, settled) = watch::channel(0);
        let shared = Arc::new(Shared {
            accumulator: Mutex::new(Accumulator::new()),
            buffer: Semaphore::new(config.buffer_bytes),
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            settled,
            config,
            cluster: cluster.clone(),
        });
        runtime.spawn(SenderTask::new(shared.clone(), cluster, settled_tx).run());
        Ok(Producer {
            handle: Arc::new(Handle { shared }),
        })
    }

    /// Queues `record` for sending and returns the future of its delivery.
    ///
    /// Awaiting `send` waits while the producer's buffer is full (back-pressure); the returned
    /// [`DeliveryFuture`] resolves once the broker acknowledged the record's batch. Fails at
    /// once, sending nothing, for an unknown topic (`UNKNOWN_TOPIC`), a partition the topic does
    /// not have (`UNKNOWN_PARTITION`), a record too large to send ([`ClientError::RecordTooLarge`])
    /// or a closed producer.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        let shared = &self.handle.shared;
        if shared.is_closing() {
            return Err(ClientError::Closed);
        }
        let topic = shared.cluster.topic(&record.topic).await?;
        let target = match shared.route(&topic, record.key.as_deref(), record.partition)? {
            Route::Partition(partition) => Target::Partition(partition),
            Route::Sticky => Target::Sticky {
                partitions: topic.partition_count,
            },
        };
        let max_batch_bytes = batch_limit(&topic);
        let size = record.encoded_size_bound();
        if HEADER_LEN + size > max_batch_bytes {
            return Err(ClientError::RecordTooLarge {
                size: HEADER_LEN + size,
                limit: max_batch_bytes,
                what: "batch limit of the topic",
            });
        }
        if size > shared.config.buffer_bytes {
            return Err(ClientError::RecordTooLarge {
                size,
                limit: shared.config.buffer_bytes,
                what: "producer buffer (buffer_bytes)",
            });
        }
        // `size` fits in u32: buffer_bytes does (checked by ProducerConfig::validate).
        let permit = shared
            .buffer
            .acquire_many(size as u32)
            .await
            .map_err(|_| ClientError::Closed)?;
        let timestamp = record.timestamp.unwrap_or_else(record::now_ms);
        let limit = shared.config.batch_bytes.min(max_batch_bytes);
        let appended = {
            let mut accumulator = shared.lock_accumulator();
            // Checked under the lock: the sender decides it is finished under the same lock.
            if shared.is_closing() {
                return Err(ClientError::Closed);
            }
            record.with_input(timestamp, |input| {
                accumulator.append(&topic.name, target, input, size, limit, Instant::now)
            })
        }
        .map_err(|e| ClientError::InvalidArgument(format!("the record cannot be encoded: {e}")))?;
        // The bytes now belong to the batch, which returns them when it is settled.
        permit.forget();
        if appended.wake_sender {
            shared.wake.notify_one();
        }
        Ok(appended.delivery)
    }

    /// Appends `records` as **one batch**, atomically (readers see all of them or none, also
    /// across a crash), to one partition, and only if `conditions` hold at that moment:
    /// "append these 3 events to account-42 only if its last event is still at 1017". All
    /// records must route to the same partition (same key, or an explicit partition); a
    /// conflict is [`ClientError::Conflict`] with the actual offset, and nothing is written.
    ///
    /// The batch is sent at once, beside the producer's buffered records (call
    /// [`flush`](Self::flush) first if it must follow them), and is not retried: a conditional
    /// append is its own retry check. After a transport error, read the partition and try
    /// again; if the first attempt did land, the condition now fails with the offsets of your
    /// own events.
    pub async fn send_batch(
        &self,
        records: Vec<ProducerRecord>,
        conditions: AppendConditions,
    ) -> Result<BatchMetadata, ClientError> {
        let shared = &self.handle.shared;
        let Some(first) = records.first() else {
            return Err(ClientError::InvalidArgument(
                "send_batch needs at least one record".into(),
            ));
        };
        let topic = shared.cluster.topic(&first.topic).await?;
        let mut partition = None;
        for record in &records {
            if record.topic != first.topic {
                return Err(ClientError::InvalidArgument(
                    "send_batch: every record must be for the same topic".into(),
                ));
            }
            let p = match shared.route(&topic, record.key.as_deref(), record.partition)? {
                Route::Partition(p) => p,
                Route::Sticky => {
                    return Err(ClientError::InvalidArgument(
                        "send_batch needs keyed records or an explicit partition (round-robin has no fixed partition)".into(),
                    ));
                }
            };
            if partition.is_some_and(|q| q != p) {
                return Err(ClientError::InvalidArgument(format!(
                    "send_batch: records route to partitions {} and {p}; one batch goes to one partition",
                    partition.unwrap_or_default()
                )));
            }
            partition = Some(p);
        }
        let partition = partition.unwrap_or_default();
        let mut builder = weir_proto::batch::BatchBuilder::new();
        let now = record::now_ms();
        for record in &records {
            record
                .with_input(record.timestamp.unwrap_or(now), |input| builder.push(input))
                .map_err(|e| {
                    ClientError::InvalidArgument(format!("the record cannot be encoded: {e}"))
                })?;
        }
        let batch = builder.build().map_err(|e| {
            ClientError::InvalidArgument(format!("the batch cannot be encoded: {e}"))
        })?;
        let max_batch_bytes = batch_limit(&topic);
        if batch.len() > max_batch_bytes {
            return Err(ClientError::RecordTooLarge {
                size: batch.len(),
                limit: max_batch_bytes,
                what: "batch limit of the topic",
            });
        }
        let request = weir_proto::v1::ProduceRequest {
            correlation_id: 0,
            topic: topic.name.to_string(),
            partition,
            batch,
            acks: shared.config.acks.to_proto() as i32,
            expected_offset: conditions.expected_offset,
            expected_keys: conditions
                .expected_keys
                .into_iter()
                .map(|(key, offset)| weir_proto::v1::KeyExpectation { key, offset })
                .collect(),
        };
        let leader = shared.cluster.leader(&topic.name, partition).await?;
        let response = leader
            .grpc
            .clone()
            .produce(request)
            .await
            .inspect_err(|_| shared.cluster.invalidate())?
            .into_inner();
        Ok(BatchMetadata {
            topic: topic.name.clone(),
            partition,
            base_offset: response.base_offset,
            last_offset: response.last_offset,
        })
    }

    /// Sends everything buffered now, without waiting for linger, and waits until every record
    /// sent before this call is settled (acknowledged or failed: read each record's outcome from
    /// its [`DeliveryFuture`]). Fails only if the producer's task stopped first.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let shared = &self.handle.shared;
        let upto = {
            let mut accumulator = shared.lock_accumulator();
            accumulator.close_open_batches();
            accumulator.next_batch_id()
        };
        shared.wake.notify_one();
        shared.wait_until_settled(upto).await
    }

    /// Stops accepting records (for every clone), sends everything buffered and waits until
    /// every record is settled. Bounded by the delivery timeout when the broker is unreachable.
    pub async fn close(&self) -> Result<(), ClientError> {
        let shared = &self.handle.shared;
        shared.begin_close();
        shared.wait_until_settled(u64::MAX).await
    }
}

/// The largest batch `topic` accepts (the broker's default when the picture does not say).
fn batch_limit(topic: &TopicInfo) -> usize {
    topic
        .max_batch_bytes
        .map_or(BROKER_MAX_BATCH_BYTES, |limit| limit as usize)
}
