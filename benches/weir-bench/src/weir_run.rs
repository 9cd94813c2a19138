//! The weir side of a run: produce, consume or e2e through the client library against the
//! broker under test. Each returns what was measured; `main` turns it into the JSON line.
//!
//! Timing covers the data movement only (connections and topic creation happen before the
//! clock starts). Records are keyless (round-robin over the partitions) with `record_bytes`
//! values; in e2e mode a value's first 8 bytes carry its send time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::sync::mpsc;
use weir_client::{
    Acks, ConsumerConfig, DeliveryFuture, ErrorCode, NewTopic, PartitionerKind, ProducerConfig,
    ProducerRecord, Seek, Transport,
};

/// What the user asked the weir run to do.
#[derive(Debug, Clone)]
pub struct Workload {
    pub topic: String,
    pub record_bytes: usize,
    pub records: u64,
    pub producers: usize,
    pub consumers: usize,
    pub partitions: u32,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub acks: Acks,
    pub transport: Transport,
    /// e2e only: records per second and for how long.
    pub rate: u64,
    pub duration: Duration,
    pub idempotent: bool,
    /// Each producer waits for a record's acknowledgment before sending the next (one record
    /// in flight per producer: what concurrent request/response writers do).
    pub sync_sends: bool,
    /// Consume through the per-record stream (a `ConsumerRecord` per record) instead of whole
    /// batches of borrowed records (`RecordStream::next_batch`).
    pub per_record: bool,
    /// The producer's `max_in_flight_per_partition`.
    pub max_in_flight: usize,
    /// The topic's replication factor and min in-sync replicas (`None`: the broker's default).
    pub replication_factor: Option<u32>,
    pub min_insync_replicas: Option<u32>,
}

/// What one run measured.
pub struct Measured {
    pub elapsed: Duration,
    pub records: u64,
    pub payload_bytes: u64,
    /// Microseconds: delivery latency (produce) or send-to-receipt (e2e).
    pub latency_us: Option<Histogram<u64>>,
}

/// Produce mode times one record in this many for the delivery-latency histogram.
const LATENCY_SAMPLE: u64 = 16;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub async fn create_topic(grpc: &str, w: &Workload) -> anyhow::Result<()> {
    let client = crate::connect(grpc).await?;
    let mut topic = NewTopic::new(w.topic.clone())
        .partitions(w.partitions)
        .partitioner(PartitionerKind::RoundRobin);
    if let Some(replicas) = w.replication_factor {
        topic = topic.replication_factor(replicas);
    }
    if let Some(replicas) = w.min_insync_replicas {
        topic = topic.min_insync_replicas(replicas);
    }
    match client.admin().create_topic(topic).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(ErrorCode::TopicExists) => Ok(()),
        Err(e) => Err(e).context("creating the bench topic"),
    }
}

pub fn producer_config(w: &Workload) -> ProducerConfig {
    ProducerConfig {
        acks: w.acks,
        batch_bytes: w.batch_bytes,
        linger: w.linger,
        idempotent: w.idempotent,
        max_in_flight_per_partition: w.max_in_flight,
        transport: w.transport,
        ..ProducerConfig::default()
    }
}

/// Produces `w.records` records from `w.producers` producers (each on its own connection).
pub async fn produce(grpc: &str, w: &Workload, progress: &ProgressBar) -> anyhow::Result<Measured> {
    let value = Bytes::from(
        (0..w.record_bytes)
            .map(|i| (i * 31 + 7) as u8)
            .collect::<Vec<_>>(),
    );
    let mut clients = Vec::new();
    for _ in 0..w.producers {
        clients.push(crate::connect(grpc).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let share =
            w.records / w.producers as u64 + u64::from((i as u64) < w.records % w.producers as u64);
        let (w, value, progress) = (w.clone(), value.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let producer = client.producer(producer_config(&w))?;
            // One topic name for every record: a record then costs no allocation for it.
            let topic: Arc<str> = w.topic.as_str().into();
            // Deliveries are awaited in send order by a second task, so their latency is seen
            // as they complete while sending goes on. Every delivery is checked; the clock is
            // read for one record in LATENCY_SAMPLE (reading it per record cost 5% of the run).
            let (tx, mut rx) = mpsc::unbounded_channel::<(Option<Instant>, DeliveryFuture)>();
            let waiter = tokio::spawn(async move {
                let mut latency = histogram();
                while let Some((sent, delivery)) = rx.recv().await {
                    delivery.await?;
                    if let Some(sent) = sent {
                        latency.saturating_record(sent.elapsed().as_micros() as u64);
                    }
                    progress.inc(1);
                }
                anyhow::Ok(latency)
            });
            for n in 0..share {
                let record = ProducerRecord::new(topic.clone()).value(value.clone());
                let sent = (w.sync_sends || n.is_multiple_of(LATENCY_SAMPLE)).then(Instant::now);
                let delivery = producer.send(record).await?;
                if w.sync_sends {
                    producer.flush().await?;
                }
                let _ = tx.send((sent, delivery));
            }
            drop(tx);
            producer.flush().await?;
            waiter.await?
        }));
    }
    let mut latency = histogram();
    for task in tasks {
        latency.add(task.await??)?;
    }
    Ok(Measured {
        elapsed: started.elapsed(),
        records: w.records,
        payload_bytes: w.records * w.record_bytes as u64,
        latency_us: Some(latency),
    })
}

/// Reads the first `w.records` records of the topic with `w.consumers` consumers (partitions
/// split between them), over the chosen transport.
pub async fn consume(grpc: &str, w: &Workload, progress: &ProgressBar) -> anyhow::Result<Measured> {
    let mut streams = Vec::new();
    for i in 0..w.consumers {
        let client = crate::connect(grpc).await?;
        let mut consumer = client.consumer(ConsumerConfig {
            follow: false,
            transport: w.transport,
            ..ConsumerConfig::default()
        });
        let mine: Vec<u32> = (0..w.partitions)
            .filter(|p| *p as usize % w.consumers == i)
            .collect();
        if mine.is_empty() {
            continue;
        }
        consumer.assign(&w.topic, mine).await?;
        streams.push(consumer);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for consumer in streams {
        let progress = progress.clone();
        let per_record = w.per_record;
        tasks.push(tokio::spawn(async move {
            let mut stream = consumer.stream();
            let (mut records, mut bytes) = (0u64, 0u64);
            if per_record {
                while let Some(record) = stream.next().await {
                    let record = record?;
                    records += 1;
                    bytes += record.value.as_ref().map_or(0, |v| v.len() as u64);
                    progress.inc(1);
                }
            } else {
                while let Some(batch) = stream.next_batch().await {
                    let batch = batch?;
                    for record in batch.records() {
                        records += 1;
                        bytes += record.value.map_or(0, |v| v.len() as u64);
                    }
                    progress.inc(batch.len() as u64);
                }
            }
            anyhow::Ok((records, bytes))
        }));
    }
    let (mut records, mut payload_bytes) = (0, 0);
    for task in tasks {
        let (r, b) = task.await??;
        records += r;
        payload_bytes += b;
    }
    Ok(Measured {
        elapsed: started.elapsed(),
        records,
        payload_bytes,
        latency_us: None,
    })
}

/// Sends at `w.rate` records/s for `w.duration` while a following consumer receives them;
/// records the latency from send to receipt of every record.
pub async fn e2e(grpc: &str, w: &Workload, progress: &ProgressBar) -> anyhow::Result<Measured> {
    anyhow::ensure!(
        w.record_bytes >= 8,
        "e2e needs records of at least 8 bytes (a send time)"
    );
    let epoch = Arc::new(Instant::now());
    let client = crate::connect(grpc).await?;
    let mut consumer = client.consumer(ConsumerConfig {
        follow: true,
        transport: w.transport,
        ..ConsumerConfig::default()
    });
    consumer.assign_topic(&w.topic).await?;
    consumer.seek_topic(&w.topic, Seek::End).await?;
    let total = w.rate * w.duration.as_secs().max(1);
    let receiver = {
        let epoch = Arc::clone(&epoch);
        let progress = progress.clone();
        let mut stream = consumer.stream();
        tokio::spawn(async move {
            let mut latency = histogram();
            let mut received = 0u64;
            while received < total {
                let record = stream.next().await.context("the consumer stream ended")??;
                let value = record.value.context("a value")?;
                let sent_ns = u64::from_be_bytes(value[..8].try_into()?);
                let now_ns = epoch.elapsed().as_nanos() as u64;
                latency.saturating_record(now_ns.saturating_sub(sent_ns) / 1000);
                received += 1;
                progress.inc(1);
            }
            anyhow::Ok(latency)
        })
    };
    // Give the follow fetches a moment to be in place before the first send.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let producer = crate::connect(grpc).await?.producer(producer_config(w))?;
    let filler = vec![0x5a_u8; w.record_bytes - 8];
    let topic: Arc<str> = w.topic.as_str().into();
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let due = ((started.elapsed().as_secs_f64() * w.rate as f64) as u64).min(total);
        while sent < due {
            let mut value = Vec::with_capacity(w.record_bytes);
            value.extend_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
            value.extend_from_slice(&filler);
            // Deliveries are not awaited one by one: latency here is send to receipt.
            drop(
                producer
                    .send(ProducerRecord::new(topic.clone()).value(value))
                    .await?,
            );
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    producer.flush().await?;
    let latency = tokio::time::timeout(Duration::from_secs(60), receiver)
        .await
        .context("not every record arrived within 60 s of the last send")???;
    Ok(Measured {
        elapsed: started.elapsed(),
        records: total,
        payload_bytes: total * w.record_bytes as u64,
        latency_us: Some(latency),
    })
}
