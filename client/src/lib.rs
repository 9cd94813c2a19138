//! weir-client: the library services use to talk to a weir broker.
//!
//! Everything goes through one [`Client`], a cheap-to-clone handle on one HTTP/2 connection
//! (a tonic channel tuned for bulk transfer). From it:
//!
//! - [`Admin`] creates, lists, describes and deletes topics, looks up offsets, and lists,
//!   describes and resets consumer groups.
//! - [`Producer`] batches records per partition (by size and linger), picks partitions with the
//!   topic's [`partitioner`], sends batches over one `ProduceStream`, retries what is
//!   retriable, and resolves one [`DeliveryFuture`] per record. Its buffer is bounded: `send`
//!   waits (back-pressure) instead of growing.
//! - [`Consumer`] reads assigned partitions from a position ([`Seek`]) as one merged
//!   [`Stream`](futures::Stream) of [`ConsumerRecord`]s, verifying every batch's CRC and riding
//!   out broker restarts without skipping or repeating a record.
//! - [`GroupConsumer`] is a consumer whose partitions a consumer group's controller assigns,
//!   with committed offsets, heartbeats and rebalances.
//!
//! ```no_run
//! use futures::StreamExt;
//! use weir_client::{Client, ConsumerConfig, NewTopic, ProducerConfig, ProducerRecord};
//!
//! # async fn demo() -> Result<(), weir_client::ClientError> {
//! let client = Client::connect("127.0.0.1:7070").await?;
//! client.admin().create_topic(NewTopic::new("orders").partitions(3)).await?;
//!
//! let producer = client.producer(ProducerConfig::default())?;
//! let delivery = producer
//!     .send(ProducerRecord::new("orders").key("user-1").value("paid"))
//!     .await?;
//! let metadata = delivery.await?;
//! println!("stored at {}-{} offset {}", metadata.topic, metadata.partition, metadata.offset);
//!
//! let mut consumer = client.consumer(ConsumerConfig { follow: false, ..Default::default() });
//! consumer.assign_topic("orders").await?;
//! let mut records = consumer.stream();
//! while let Some(record) = records.next().await {
//!     let record = record?;
//!     println!("{} {:?}", record.offset, record.value);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The wire formats are re-exported for programs that handle batches themselves: [`batch`]
//! (the record batch encoder and zero-copy decoder, byte for byte what the broker stores),
//! [`topic`] (the topic name rule) and [`proto`] (the generated gRPC types of package
//! `weir.v1`).

#![warn(missing_docs)]

// Layering, bottom up (each imports only from those before it): error, partitioner, backoff;
// connection (making tuned channels); cluster (the one shared picture: topics, owners, a
// connection per broker); admin, producer, consumer; client (which hands them the picture).
// One exception, public API: `GroupConsumer::join` takes the `Client` it joins through.

pub mod admin;
mod backoff;
mod client;
mod cluster;
mod connection;
pub mod consumer;
mod error;
pub mod partitioner;
pub mod producer;
mod transport;

pub use weir_proto::v1 as proto;
pub use weir_proto::{batch, topic};

pub use admin::{
    Admin, BrokerDescription, ClusterDescription, CommittedOffset, FlushPolicy, GroupAssignor,
    GroupDescription, GroupMemberDescription, GroupSummary, NewTopic, OffsetSpec,
    PartitionDescription, PartitionLag, Placement, ResetTo, TopicConfig, TopicDescription,
};
pub use client::{Client, DEFAULT_BROKER};
pub use connection::{ClientTls, ConnectOptions, MAX_MESSAGE_BYTES};
pub use consumer::{
    AutoOffsetReset, Consumer, ConsumerBatch, ConsumerConfig, ConsumerRecord, GroupConfig,
    GroupConsumer, RecordStream, Seek, Transport,
};
pub use error::{ClientError, TlsFailure};
pub use partitioner::PartitionerKind;
pub use producer::{
    Acks, AppendConditions, BatchMetadata, DeliveryFuture, MAX_IN_FLIGHT_PER_PARTITION, Producer,
    ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use weir_proto::batch::Header;
pub use weir_proto::topic::TopicPartition;
pub use weir_proto::v1::ErrorCode;
