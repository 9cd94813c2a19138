//! Consumer: replay a topic from the beginning to rebuild state, then optionally follow it.
//!
//! ```text
//! cargo run --release --example producer               # something to read
//! cargo run --release --example consumer                # replay "orders", print totals, exit
//! cargo run --release --example consumer -- orders -f   # then keep following (Ctrl-C stops)
//! ```
//!
//! This is the event-sourcing pattern: the topic is the history, and the service's state (here,
//! the number of records per key) is a fold over it, rebuilt from offset 0 on every start.

use std::collections::BTreeMap;

use futures::StreamExt;
use weir::{Client, ConsumerConfig, DEFAULT_BROKER};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let topic = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .cloned()
        .unwrap_or_else(|| "orders".into());
    let follow = args.iter().any(|a| a == "-f" || a == "--follow");
    let broker = std::env::var("WEIR_BROKER").unwrap_or_else(|_| DEFAULT_BROKER.into());

    let client = Client::connect(&broker).await?;
    let mut consumer = client.consumer(ConsumerConfig {
        follow,
        ..ConsumerConfig::default()
    });
    // Every partition, from its oldest record (`consumer.seek` moves to an offset or a time).
    let partitions = consumer.assign_topic(&topic).await?;
    eprintln!("reading {topic}, partitions {partitions:?}");

    let mut records_per_key: BTreeMap<String, u64> = BTreeMap::new();
    let mut records = consumer.stream();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let record = tokio::select! {
            _ = &mut interrupted => break,
            record = records.next() => match record {
                Some(record) => record?, // a corrupt batch or a deleted topic is an error
                None => break,           // without -f: the end of the data
            },
        };
        let key = record
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        *records_per_key.entry(key).or_default() += 1;
        if follow {
            let value = record.value.as_deref().unwrap_or_default();
            println!(
                "{}-{}@{} {}",
                record.topic,
                record.partition,
                record.offset,
                String::from_utf8_lossy(value)
            );
        }
    }
    drop(records);

    for (key, count) in &records_per_key {
        println!("{key:>16} {count}");
    }
    for partition in partitions {
        let position = consumer.position(&topic, partition).unwrap_or_default();
        eprintln!("{topic}-{partition}: next offset {position}");
    }
    Ok(())
}
