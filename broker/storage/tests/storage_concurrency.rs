//! Races the partition log's operations against each other: durable appenders, a flusher,
//! readers, a truncator, retention and idle closing all at once for a few seconds. Nothing may
//! panic or deadlock; every error must be one the API documents for the race; and afterwards
//! the log must still be dense, readable and recoverable.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use weir_storage::{LogConfig, LogDir, StorageError};

#[test]
fn everything_at_once() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 32 << 10,
        ..small_config()
    };
    let logs = open(dir.path(), config.clone());
    let log = logs.create_partition(tp("race", 0), None).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..4u64 {
        let (log, stop, acked) = (Arc::clone(&log), Arc::clone(&stop), Arc::clone(&acked));
        threads.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                match log.append_durable(&batch(t << 32 | i, 2, 200, 0)) {
                    Ok(_) => {}
                    Err(StorageError::TruncatedBeforeSync { .. }) => {}
                    Err(e) => panic!("append: {e}"),
                }
                acked.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    {
        let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                log.flush().unwrap();
                log.close_idle(i64::MAX);
            }
        }));
    }
    for r in 0..2u64 {
        let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            let mut n = r;
            while !stop.load(Ordering::Relaxed) {
                let (start, hw) = (log.log_start_offset(), log.high_watermark());
                if hw <= start {
                    continue;
                }
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let offset = start + (n >> 33) % (hw - start);
                match log.read(offset, 4096) {
                    Ok(result) => {
                        let recs = records_of(&result);
                        for pair in recs.windows(2) {
                            assert_eq!(pair[1].0, pair[0].0 + 1, "dense offsets within a read");
                        }
                    }
                    // Retention or truncation moved the range between the two loads above.
                    Err(StorageError::OffsetOutOfRange { .. }) => {}
                    Err(e) => panic!("read {offset}: {e}"),
                }
                let _ = log.offset_for_time(n as i64 % 100).unwrap();
            }
        }));
    }
    {
        let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                round += 1;
                if round.is_multiple_of(3) {
                    log.set_config(LogConfig {
                        retention_bytes: Some(64 << 10),
                        segment_bytes: 32 << 10,
                        ..small_config()
                    })
                    .unwrap();
                    log.apply_retention(0).unwrap();
                    log.set_config(LogConfig {
                        segment_bytes: 32 << 10,
                        ..small_config()
                    })
                    .unwrap();
                } else {
                    let hw = log.high_watermark();
                    let start = log.log_start_offset();
                    if hw > start + 10 {
                        match log.truncate_to(hw - 5) {
                            Ok(_) | Err(StorageError::OffsetOutOfRange { .. }) => {}
                            Err(e) => panic!("truncate: {e}"),
                        }
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    // A deadlock (e.g. a lost wakeup in group commit) must fail the test, not hang CI.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome: Vec<_> = threads.into_iter().map(|t| t.join().is_ok()).collect();
        let _ = done_tx.send(outcome);
    });
    let outcome = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("threads still blocked 60 s after stop: deadlock");
    assert!(outcome.iter().all(|ok| *ok), "no thread panicked");
    assert!(
        acked.load(Ordering::Relaxed) > 100,
        "appenders made progress"
    );
    // The log is dense and whole, before and after a crash and a clean restart.
    let check = |log: &weir_storage::PartitionLog| {
        let all = read_all(log, log.log_start_offset(), 4096);
        assert_eq!(
            all.len() as u64,
            log.high_watermark() - log.log_start_offset()
        );
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.0, log.log_start_offset() + i as u64);
        }
        (log.log_start_offset(), log.high_watermark())
    };
    let before = check(&log);
    drop(log);
    drop(logs); // crash
    let (logs, report) = LogDir::open(dir.path(), quiet_dir_config(config.clone())).unwrap();
    assert!(report.truncations.is_empty(), "{:?}", report.truncations);
    assert_eq!(check(&logs.partition(&tp("race", 0)).unwrap()), before);
    logs.close().unwrap();
    let logs = open(dir.path(), config);
    assert_eq!(check(&logs.partition(&tp("race", 0)).unwrap()), before);
}
