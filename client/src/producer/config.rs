//! [`ProducerConfig`] and [`Acks`]: the producer's knobs, with Kafka-like defaults, and the
//! checks that keep them inside what the broker accepts.

use std::time::Duration;

use weir_proto::batch::HEADER_LEN;
use weir_proto::v1;

use crate::{ClientError, PartitionerKind, Transport};

/// The broker's default largest batch (`max_batch_bytes`, 8 MiB). A producer never builds a
/// batch above it, nor above a topic's own limit when the topic's description gives one.
pub const BROKER_MAX_BATCH_BYTES: usize = 8 << 20;

/// The most batches of one partition a producer keeps in flight: the broker remembers the last
/// 5 batches of each producer per partition for deduplication (`RECENT_BATCHES` in weir's
/// storage), so a retry of any unacknowledged batch is recognized only while no more than that
/// many are outstanding. Kafka's idempotent producer has the same bound
/// (`max.in.flight.requests.per.connection` <= 5).
pub const MAX_IN_FLIGHT_PER_PARTITION: usize = 5;

/// When the broker acknowledges a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Once the batch is in the partition's log (page cache): survives the broker process being
    /// killed, not a power loss before the next flush.
    #[default]
    Leader,
    /// Once the batch is synced to disk: survives power loss. On a replicated topic: synced by
    /// every in-sync replica.
    Durable,
    /// Once every in-sync replica has the batch in its log (the high watermark passed it):
    /// survives the loss of `min_insync_replicas - 1` brokers. [`Acks::Leader`] on a topic
    /// without replication.
    All,
}

impl Acks {
    pub(crate) fn to_proto(self) -> v1::Acks {
        match self {
            Acks::Leader => v1::Acks::Leader,
            Acks::Durable => v1::Acks::Durable,
            Acks::All => v1::Acks::All,
        }
    }
}

/// How a [`Producer`](super::Producer) batches, buffers and retries.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// When the broker acknowledges. Default [`Acks::Leader`].
    pub acks: Acks,
    /// Target size of one batch (one partition's records sent together). A record larger than
    /// this goes alone in its own batch. Default 256 KiB; at most 8 MiB (the broker's default
    /// batch limit).
    pub batch_bytes: usize,
    /// How long a batch that is not full waits for more records before it is sent. Default
    /// 5 ms. Zero sends as soon as a partition has room in flight
    /// ([`max_in_flight_per_partition`](Self::max_in_flight_per_partition)).
    pub linger: Duration,
    /// Bytes of records buffered (waiting or in flight) before [`send`](super::Producer::send)
    /// waits for deliveries to free room: the producer's memory bound. Default 32 MiB; at least
    /// `batch_bytes`.
    pub buffer_bytes: usize,
    /// How many times a batch is sent again after a retriable failure. Default 10.
    pub retries: u32,
    /// Wait before the first retry, doubling per retry up to `retry_backoff_max`.
    /// Default 100 ms.
    pub retry_backoff: Duration,
    /// The longest wait between retries. Default 1 s.
    pub retry_backoff_max: Duration,
    /// The longest time from `send` returning to a record's delivery being decided; past it the
    /// record fails with [`ClientError::Timeout`]. Default 120 s.
    pub delivery_timeout: Duration,
    /// Overrides every topic's own partitioner (`None`, the default, uses the topic's).
    pub partitioner: Option<PartitionerKind>,
    /// Idempotent produce (the default): the producer gets an id from the broker and numbers
    /// its batches per partition, so a batch retried after a lost answer is stored once.
    pub idempotent: bool,
    /// Data port or gRPC `ProduceStream`. Default [`Transport::Auto`]: the data port where
    /// the broker advertises one. Both store the same bytes with the same answers.
    pub transport: Transport,
    /// How many batches of one partition may be sent and unanswered at once (all on the
    /// partition's one link, in sequence order, so the broker appends them in order). More
    /// overlaps encoding, network and the broker's append for one partition's records. Default
    /// and most [`MAX_IN_FLIGHT_PER_PARTITION`] (5, the broker's deduplication window); at
    /// least 1.
    ///
    /// Honoured only when `idempotent`: without sequence numbers a retried batch could land
    /// after a later one (a reorder the broker cannot see), so a producer with `idempotent:
    /// false` keeps one batch in flight per partition whatever this says, as Kafka requires
    /// `max.in.flight.requests.per.connection=1` for ordering without idempotence.
    pub max_in_flight_per_partition: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::Leader,
            batch_bytes: 256 << 10,
            linger: Duration::from_millis(5),
            buffer_bytes: 32 << 20,
            retries: 10,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            delivery_timeout: Duration::from_secs(120),
            partitioner: None,
            idempotent: true,
            transport: Transport::Auto,
            max_in_flight_per_partition: MAX_IN_FLIGHT_PER_PARTITION,
        }
    }
}

impl ProducerConfig {
    /// Refuses settings the producer cannot honour.
    pub(crate) fn validate(&self) -> Result<(), ClientError> {
        let invalid = |message: String| Err(ClientError::InvalidArgument(message));
        if self.batch_bytes <= HEADER_LEN || self.batch_bytes > BROKER_MAX_BATCH_BYTES {
            return invalid(format!(
                "batch_bytes is {}; it must be above {HEADER_LEN} and at most {BROKER_MAX_BATCH_BYTES} (the broker's batch limit)",
                self.batch_bytes
            ));
        }
        // Permits are taken per record as u32 and the semaphore holds at most usize::MAX >> 3.
        if self.buffer_bytes < self.batch_bytes || self.buffer_bytes > u32::MAX as usize {
            return invalid(format!(
                "buffer_bytes is {}; it must be at least batch_bytes ({}) and below 4 GiB",
                self.buffer_bytes, self.batch_bytes
            ));
        }
        if self.delivery_timeout.is_zero() {
            return invalid("delivery_timeout must be above zero".into());
        }
        if !(1..=MAX_IN_FLIGHT_PER_PARTITION).contains(&self.max_in_flight_per_partition) {
            return invalid(format!(
                "max_in_flight_per_partition is {}; it must be 1 to {MAX_IN_FLIGHT_PER_PARTITION} (the batches per producer the broker remembers to recognize a retry)",
                self.max_in_flight_per_partition
            ));
        }
        Ok(())
    }

    /// Batches of one partition the sender keeps in flight: one without idempotence (see
    /// [`max_in_flight_per_partition`](Self::max_in_flight_per_partition)).
    pub(crate) fn in_flight_per_partition(&self) -> usize {
        if self.idempotent {
            self.max_in_flight_per_partition
        } else {
            1
        }
    }

    /// The wait before retry number `attempt` (1-based): exponential, capped.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        crate::backoff::exponential(self.retry_backoff, self.retry_backoff_max, attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ProducerConfig::default().validate().unwrap();
    }

    #[test]
    fn limits_are_enforced() {
        let bad = [
            ProducerConfig {
                batch_bytes: 9 << 20,
                ..Default::default()
            },
            ProducerConfig {
                batch_bytes: 10,
                ..Default::default()
            },
            ProducerConfig {
                buffer_bytes: 1024,
                ..Default::default()
            },
            ProducerConfig {
                delivery_timeout: Duration::ZERO,
                ..Default::default()
            },
            ProducerConfig {
                max_in_flight_per_partition: 0,
                ..Default::default()
            },
            ProducerConfig {
                max_in_flight_per_partition: MAX_IN_FLIGHT_PER_PARTITION + 1,
                ..Default::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    #[test]
    fn without_idempotence_one_batch_per_partition_is_in_flight() {
        let config = ProducerConfig::default();
        assert_eq!(
            config.in_flight_per_partition(),
            MAX_IN_FLIGHT_PER_PARTITION
        );
        let plain = ProducerConfig {
            idempotent: false,
            ..Default::default()
        };
        plain.validate().unwrap();
        assert_eq!(plain.in_flight_per_partition(), 1);
        let error = ProducerConfig {
            max_in_flight_per_partition: 6,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            matches!(&error, ClientError::InvalidArgument(m) if m.contains("max_in_flight_per_partition")),
            "{error}"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = ProducerConfig::default();
        assert_eq!(config.backoff(1), Duration::from_millis(100));
        assert_eq!(config.backoff(2), Duration::from_millis(200));
        assert_eq!(config.backoff(4), Duration::from_millis(800));
        assert_eq!(config.backoff(5), Duration::from_secs(1));
        assert_eq!(config.backoff(1000), Duration::from_secs(1));
    }
}
