//! Helpers shared by the storage engine's integration tests: batches whose record values name
//! their own sequence number, small-segment configs that make rolls frequent, and readers that
//! turn read results back into those numbers.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use weir_proto::batch::{BatchBuilder, RecordInput, split_batches};
use weir_storage::{
    FlushPolicy, LogConfig, LogDir, LogDirConfig, PartitionLog, ReadResult, TopicPartition,
};

/// A batch of `count` records with values `"{id}:{padding}"` for ids `first_id..`, timestamps
/// `ts, ts+1, ...`, keys `k{id}`.
pub fn batch(first_id: u64, count: usize, value_len: usize, ts: i64) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..count {
        let id = first_id + i as u64;
        let mut value = format!("{id}:").into_bytes();
        value.resize(value.len().max(value_len), b'x');
        let key = format!("k{id}");
        b.push(RecordInput {
            key: Some(key.as_bytes()),
            value: Some(&value),
            timestamp: ts + i as i64,
            headers: &[],
        })
        .unwrap();
    }
    b.build().unwrap()
}

/// The id encoded in a record value by [`batch`].
pub fn id_of(value: &[u8]) -> u64 {
    let s = std::str::from_utf8(value).unwrap();
    s.split(':').next().unwrap().parse().unwrap()
}

/// (offset, id, timestamp) of every record in a read, CRCs verified by the decoder.
pub fn records_of(result: &ReadResult) -> Vec<(u64, u64, i64)> {
    let mut out = Vec::new();
    for chunk in &result.chunks {
        for batch in split_batches(chunk.bytes.clone()) {
            let batch = batch.expect("read returned an invalid batch");
            for r in batch.records() {
                out.push((r.offset, id_of(r.value.as_ref().unwrap()), r.timestamp));
            }
        }
    }
    out
}

/// Every record from `from` to the high watermark, reading in `max_bytes` steps.
pub fn read_all(log: &PartitionLog, from: u64, max_bytes: usize) -> Vec<(u64, u64, i64)> {
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let r = log.read(at, max_bytes).expect("read");
        let Some(next) = r.next_offset() else { break };
        out.extend(records_of(&r).into_iter().filter(|rec| rec.0 >= at));
        at = next;
    }
    out
}

/// Small segments (so tests roll often), sparse-index every 256 bytes, no background flushes.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 << 10,
        segment_age: None,
        index_interval_bytes: 256,
        max_batch_bytes: 8 << 10,
        preallocate_min_bytes: 4 << 10,
        preallocate_max_bytes: 16 << 10,
        flush: FlushPolicy::Never,
        retention_bytes: None,
        retention_age: None,
        key_index: false,
    }
}

/// A data-dir config whose background thread does nothing a test could race with.
pub fn quiet_dir_config(log: LogConfig) -> LogDirConfig {
    LogDirConfig {
        default_log: log,
        tick: Duration::from_millis(50),
        checkpoint_interval: Duration::from_secs(3600),
        retention_check_interval: Duration::from_secs(3600),
        idle_close_after: Duration::from_secs(3600),
        scrub_bytes_per_sec: 0,
        scrub_pass_interval: Duration::from_secs(3600),
    }
}

pub fn open(path: &Path, log: LogConfig) -> LogDir {
    LogDir::open(path, quiet_dir_config(log))
        .expect("open data dir")
        .0
}

pub fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::validated(topic, partition).unwrap()
}

/// Installs a tracing subscriber once so `RUST_LOG=debug cargo test` shows the engine's logs.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
