//! The storage engine on its own: append to a partition log on disk and read it back, with the
//! engine embedded in this process (no broker, no network). For the broker, see the README.
//!
//! ```text
//! cargo run --release --example quickstart            # data in ./weir-quickstart-data
//! cargo run --release --example quickstart -- DIR 5   # data in DIR, append 5 records
//! ```
//!
//! Run it twice: the second run finds the first run's records (offsets continue), because the
//! log is on disk; kill it mid-run and the next run recovers the log to its last whole batch.

use std::io::IsTerminal;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use weir::batch::{BatchBuilder, RecordInput, split_batches};
use weir_storage::{LogDir, LogDirConfig, TopicPartition};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut args = std::env::args().skip(1);
    let data_dir = args.next().unwrap_or_else(|| "weir-quickstart-data".into());
    let count: usize = args
        .next()
        .map(|n| n.parse())
        .transpose()
        .context("count must be a number")?
        .unwrap_or(3);

    let (logs, report) = LogDir::open(&data_dir, LogDirConfig::default())
        .with_context(|| format!("opening {data_dir}"))?;
    eprintln!(
        "opened {data_dir}: {} partition(s), clean={}, {} truncation(s)",
        report.partitions,
        report.clean,
        report.truncations.len()
    );

    let tp = TopicPartition::validated("quickstart", 0)?;
    let log = match logs.partition(&tp) {
        Some(log) => log,
        None => logs.create_partition(tp.clone(), None)?,
    };

    // A producer encodes a batch; the log validates it, assigns offsets and stores it as is.
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let mut builder = BatchBuilder::new();
    for i in 0..count {
        let key = format!("user-{}", i % 2);
        let value = format!("event {i} at {now}");
        builder.push(RecordInput {
            key: Some(key.as_bytes()),
            value: Some(value.as_bytes()),
            timestamp: now,
            headers: &[],
        })?;
    }
    let appended = log.append_durable(&builder.build()?)?;
    eprintln!(
        "appended offsets {}..={} (synced to disk)",
        appended.base_offset, appended.last_offset
    );

    // Replay the whole partition from the beginning, as an event-sourced service would.
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let read = log.read(offset, 1 << 20)?;
        for chunk in &read.chunks {
            for batch in split_batches(chunk.bytes.clone()) {
                for record in batch?.records() {
                    if record.offset >= offset {
                        let key = record
                            .key
                            .as_deref()
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default();
                        let value = record
                            .value
                            .as_deref()
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default();
                        println!("{}\t{key}\t{value}", record.offset);
                    }
                }
            }
        }
        offset = read.next_offset().unwrap_or(offset);
    }
    drop(log);
    logs.close()?;
    Ok(())
}
