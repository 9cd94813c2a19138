//! The active segment's preallocation stays within `segment_bytes` across clean and unclean
//! restarts (segments-format.md: blocks are reserved "at most to `segment_bytes`").
//!
//! The broker opens its data dir with the dir's default settings and then gives each partition
//! its topic's (`PartitionLog::set_config`), so a reopened active segment was mapped for the
//! default `segment_bytes` (1 GiB), not the topic's: the reservation must still stop at the
//! topic's limit. This is what the test replays.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use weir_storage::LogConfig;

const SEGMENT_BYTES: u64 = 1 << 20;

fn topic_config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        max_batch_bytes: 256 << 10,
        ..LogConfig::default()
    }
}

/// Lengths of the partition's `.log` files, oldest first (the last is the active one).
fn log_lengths(dir: &Path) -> Vec<u64> {
    let part = dir.join("grow-0");
    let mut logs: Vec<_> = fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .collect()
}

#[test]
fn restarts_never_grow_the_active_segment_past_segment_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let t = tp("grow", 0);
    let mut next_id = 0;
    {
        let logs = open(dir.path(), LogConfig::default());
        let log = logs
            .create_partition(t.clone(), Some(topic_config()))
            .unwrap();
        // About 300 KB in the active segment.
        while log.size_bytes() < 300_000 {
            log.append(&batch(next_id, 10, 1000, 0)).unwrap();
            next_id += 10;
        }
        logs.close().unwrap();
    }
    let mut seen = vec![log_lengths(dir.path())];
    // Clean and unclean restarts, each followed by enough appends to need more blocks: the
    // segment fills, rolls, and the next one starts; no file may exceed the limit meanwhile.
    for round in 0..12 {
        let logs = open(dir.path(), LogConfig::default());
        let log = logs.partition(&t).unwrap();
        log.set_config(topic_config()).unwrap();
        for _ in 0..(5 + round * 3) {
            log.append(&batch(next_id, 10, 1000, 0)).unwrap();
            next_id += 10;
        }
        let running = log_lengths(dir.path());
        if round % 3 == 2 {
            drop(log);
            drop(logs);
        } else {
            logs.close().unwrap();
        }
        seen.push(running);
        seen.push(log_lengths(dir.path()));
    }
    assert!(
        seen.iter().flatten().all(|&len| len <= SEGMENT_BYTES),
        "a .log grew past segment_bytes ({SEGMENT_BYTES}): {seen:?}"
    );
    assert!(
        seen.last().unwrap().len() > 1,
        "the test must cross a roll: {seen:?}"
    );
}
