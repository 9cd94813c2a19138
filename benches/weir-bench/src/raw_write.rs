//! The raw sequential write baseline: the same number of payload bytes written to a fresh file
//! in the directory the broker's data dir is made in (the same filesystem), in writes of the
//! batch size, each followed by `fdatasync`. What a broker that acknowledges a batch only once
//! it is on disk (`acks=durable`) pays at least, one batch at a time, measured in the same run.

use std::io::Write;
use std::time::{Duration, Instant};

/// Writes `total` bytes in `chunk`-byte writes, syncing each; returns the time taken.
pub fn write_and_sync(total: u64, chunk: usize) -> anyhow::Result<Duration> {
    let dir = tempfile::Builder::new()
        .prefix("weir-bench-raw-write-")
        .tempdir()?;
    let mut file = std::fs::File::create(dir.path().join("segment"))?;
    let data: Vec<u8> = (0..chunk).map(|i| (i * 31 + 7) as u8).collect();
    let started = Instant::now();
    let mut written = 0u64;
    while written < total {
        let n = (total - written).min(chunk as u64) as usize;
        file.write_all(&data[..n])?;
        file.sync_data()?;
        written += n as u64;
    }
    Ok(started.elapsed())
}
