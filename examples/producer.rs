//! Producer: create a topic if it does not exist, send keyed records, wait for every delivery.
//!
//! ```text
//! weir-broker &                                      # a broker on 127.0.0.1:7070
//! cargo run --release --example producer              # 1,000 orders to topic "orders"
//! cargo run --release --example producer -- payments 100000   # TOPIC COUNT
//! WEIR_BROKER=10.0.0.5:7070 cargo run --release --example producer
//! ```
//!
//! Records with the same key (here a customer) always land on the same partition (murmur2 of
//! the key, as Kafka's default partitioner), so each customer's orders stay in order.

use std::time::Instant;

use anyhow::Context;
use weir::{Client, DEFAULT_BROKER, ErrorCode, NewTopic, ProducerConfig, ProducerRecord};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "orders".into());
    let count: u64 = args
        .next()
        .map(|n| n.parse())
        .transpose()
        .context("COUNT must be a number")?
        .unwrap_or(1000);
    let broker = std::env::var("WEIR_BROKER").unwrap_or_else(|_| DEFAULT_BROKER.into());

    let client = Client::connect(&broker).await?;
    match client
        .admin()
        .create_topic(NewTopic::new(&topic).partitions(3))
        .await
    {
        Ok(created) => eprintln!(
            "created topic {} with {} partitions",
            created.name, created.partition_count
        ),
        // Second run: the topic is already there.
        Err(error) if error.code() == Some(ErrorCode::TopicExists) => {}
        Err(error) => return Err(error.into()),
    }

    let producer = client.producer(ProducerConfig::default())?;
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(count as usize);
    for i in 0..count {
        let record = ProducerRecord::new(topic.as_str())
            .key(format!("customer-{}", i % 10))
            .value(format!(r#"{{"order":{i},"total":{}}}"#, i * 7 % 100))
            .header("content-type", "application/json");
        // `send` waits only while the producer's buffer is full (back-pressure); the record is
        // then batched with others for its partition and sent in the background.
        deliveries.push(producer.send(record).await?);
    }
    // Send what is still lingering in batches, then read each record's outcome.
    producer.flush().await?;
    let mut last = None;
    for delivery in deliveries {
        last = Some(delivery.await?);
    }
    producer.close().await?;

    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{count} records acknowledged in {seconds:.2} s ({:.0} records/s)",
        count as f64 / seconds.max(1e-9)
    );
    if let Some(last) = last {
        eprintln!(
            "the last one is {}-{} at offset {}",
            last.topic, last.partition, last.offset
        );
    }
    Ok(())
}
