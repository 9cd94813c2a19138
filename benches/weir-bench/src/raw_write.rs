//! The raw sequential write baselines: the same number of payload bytes written to a fresh
//! file in the directory the broker's data dir is made in (the same filesystem), in writes of
//! the batch size.
//!
//! - [`write_and_sync`]: each write followed by `fdatasync`. What a broker that acknowledges a
//!   batch only once it is on disk (`acks=durable`) pays at least, one batch at a time.
//! - [`write_cached`]: no sync. The copy into the page cache that every produced byte takes
//!   once on the broker (`acks=leader` acknowledges after it): the ceiling of a one-partition
//!   producer on this machine, whatever the network does.

use std::io::Write;
use std::time::{Duration, Instant};

/// Writes `total` bytes in `chunk`-byte writes, syncing each; returns the time taken.
pub fn write_and_sync(total: u64, chunk: usize) -> anyhow::Result<Duration> {
    write(total, chunk, true)
}

/// Writes `total` bytes in `chunk`-byte writes into the page cache (no sync); returns the time
/// taken.
pub fn write_cached(total: u64, chunk: usize) -> anyhow::Result<Duration> {
    write(total, chunk, false)
}

fn write(total: u64, chunk: usize, sync_each: bool) -> anyhow::Result<Duration> {
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
        if sync_each {
            file.sync_data()?;
        }
        written += n as u64;
    }
    Ok(started.elapsed())
}
