//! Shared by the benches: batch construction and storage configs. (Not a bench itself.)
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use weir::batch::{BatchBuilder, RecordInput};
use weir_storage::{FlushPolicy, LogConfig, LogDirConfig};

/// A batch of about `batch_bytes` made of `record_bytes`-byte values (non-zero, varied bytes).
pub fn batch_of(record_bytes: usize, batch_bytes: usize) -> Bytes {
    let mut builder = BatchBuilder::with_capacity(batch_bytes + 1024);
    let value: Vec<u8> = (0..record_bytes).map(|i| (i * 31 + 7) as u8).collect();
    let mut i = 0u64;
    loop {
        let key = i.to_be_bytes();
        let record = RecordInput {
            key: Some(&key),
            value: Some(&value),
            timestamp: 1_700_000_000_000 + i as i64,
            headers: &[],
        };
        if builder.record_count() > 0
            && builder.size_in_bytes() + builder.encoded_len(&record) > batch_bytes
        {
            break;
        }
        builder.push(record).expect("record fits");
        i += 1;
    }
    builder.build().expect("non-empty batch")
}

/// Page-cache appends (no background flush), 256 MiB segments, batches up to 8 MiB.
pub fn bench_log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 20,
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    }
}

pub fn bench_dir_config(log: LogConfig) -> LogDirConfig {
    LogDirConfig {
        default_log: log,
        checkpoint_interval: Duration::from_secs(3600),
        retention_check_interval: Duration::from_secs(3600),
        ..LogDirConfig::default()
    }
}

pub fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}
