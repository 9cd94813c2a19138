//! Behaviour of one partition log through its public API: appends, reads across segments,
//! refusals that change nothing, time lookups, truncation, retention, reopening, group commit.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use weir_storage::{AppendConditions, LogConfig, LogDir, StorageError};

#[test]
fn appends_get_dense_offsets_and_read_back_across_segments() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("orders", 0), None).unwrap();
    let mut next_id = 0;
    for i in 0..300u64 {
        let n = 1 + (i % 4) as usize;
        let info = log
            .append(&batch(
                next_id,
                n,
                20 + (i % 7) as usize * 10,
                1000 + next_id as i64,
            ))
            .unwrap();
        assert_eq!(info.base_offset, next_id, "offsets are dense");
        assert_eq!(info.last_offset, next_id + n as u64 - 1);
        next_id += n as u64;
    }
    assert_eq!(log.high_watermark(), next_id);
    assert!(
        log.segment_count() > 3,
        "small segments roll: {}",
        log.segment_count()
    );
    let all = read_all(&log, 0, 1000);
    assert_eq!(all.len() as u64, next_id);
    for (i, (offset, id, ts)) in all.iter().enumerate() {
        assert_eq!((*offset, *id, *ts), (i as u64, i as u64, 1000 + i as i64));
    }
    // Every offset reads back starting at its own batch.
    for offset in (0..next_id).step_by(7) {
        let r = log.read(offset, 1).unwrap();
        let recs = records_of(&r);
        assert!(recs.first().unwrap().0 <= offset && recs.iter().any(|rec| rec.0 == offset));
    }
    // One big read crosses segment boundaries.
    let r = log.read(0, 1 << 20).unwrap();
    assert!(r.chunks.len() > 1);
    assert_eq!(records_of(&r).len() as u64, next_id);
}

#[test]
fn read_limits_bytes_but_always_returns_one_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    let b = batch(0, 5, 500, 0);
    log.append(&b).unwrap();
    log.append(&batch(5, 5, 500, 0)).unwrap();
    let r = log.read(2, 10).unwrap();
    assert_eq!(
        r.total_bytes(),
        b.len(),
        "first batch is returned whole even over max_bytes"
    );
    assert_eq!(r.next_offset(), Some(5));
    let r = log.read(0, b.len() * 2).unwrap();
    assert_eq!(r.total_bytes(), b.len() * 2);
    let r = log.read(10, 100).unwrap();
    assert!(
        r.chunks.is_empty(),
        "reading at the high watermark returns nothing"
    );
    assert_eq!(r.high_watermark, 10);
    assert!(matches!(
        log.read(11, 100),
        Err(StorageError::OffsetOutOfRange {
            offset: 11,
            log_start: 0,
            high_watermark: 10
        })
    ));
}

#[test]
fn refused_batches_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    log.append(&batch(0, 3, 10, 0)).unwrap();
    let before = log.read(0, 1 << 20).unwrap().to_vec();

    let good = batch(3, 2, 10, 0).to_vec();
    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    let mut bad_magic = good.clone();
    bad_magic[12] = 9;
    let truncated = &good[..good.len() - 3];
    let too_large = batch(3, 1, 9000, 0);

    assert!(matches!(
        log.append(&bad_crc),
        Err(StorageError::InvalidBatch(
            weir_proto::batch::BatchError::CrcMismatch { .. }
        ))
    ));
    assert!(matches!(
        log.append(&bad_magic),
        Err(StorageError::InvalidBatch(
            weir_proto::batch::BatchError::UnsupportedMagic(9)
        ))
    ));
    assert!(matches!(
        log.append(truncated),
        Err(StorageError::InvalidBatch(_))
    ));
    assert!(matches!(
        log.append(&too_large),
        Err(StorageError::BatchTooLarge { max: 8192, .. })
    ));
    assert!(matches!(
        log.append(&[]),
        Err(StorageError::InvalidBatch(_))
    ));
    assert_eq!(log.high_watermark(), 3);
    assert_eq!(log.read(0, 1 << 20).unwrap().to_vec(), before);
    assert_eq!(
        log.append(&good).unwrap().base_offset,
        3,
        "a good batch after bad ones gets the next offset"
    );
}

#[test]
fn offset_for_time_finds_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    // Record i has timestamp 10 * i, except that batch 50 goes back in time.
    let mut id = 0;
    for b in 0..100u64 {
        let ts = if b == 50 { 5 } else { (id * 10) as i64 };
        let pad = "p".repeat(100);
        let mut builder = weir_proto::batch::BatchBuilder::new();
        for k in 0..3 {
            let value = format!("{}:{pad}", id + k);
            builder
                .push(weir_proto::batch::RecordInput {
                    key: None,
                    value: Some(value.as_bytes()),
                    timestamp: ts + 10 * k as i64,
                    headers: &[],
                })
                .unwrap();
        }
        log.append(&builder.build().unwrap()).unwrap();
        id += 3;
    }
    assert!(log.segment_count() > 1);
    let all = read_all(&log, 0, 4096);
    for target in [-1, 0, 1, 6, 15, 149, 150, 151, 1495, 1500, 2990, 2991] {
        let expected = all.iter().find(|r| r.2 >= target).map(|r| r.0);
        assert_eq!(
            log.offset_for_time(target).unwrap(),
            expected,
            "target {target}"
        );
    }
}

#[test]
fn truncate_cuts_at_the_batch_holding_the_offset_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let logs = open(dir.path(), small_config());
        let log = logs.create_partition(tp("t", 0), None).unwrap();
        for i in 0..100u64 {
            log.append(&batch(i * 2, 2, 400, 0)).unwrap();
        }
        let segments = log.segment_count();
        assert!(segments > 3);
        // A reader holding bytes from before the truncation keeps them intact.
        let held = log.read(100, 1 << 20).unwrap();
        let held_records = records_of(&held);
        assert_eq!(
            log.truncate_to(101).unwrap(),
            100,
            "offset 101 is inside batch [100, 101]"
        );
        assert_eq!(log.high_watermark(), 100);
        assert!(log.segment_count() < segments);
        assert_eq!(records_of(&held), held_records);
        assert!(matches!(
            log.read(101, 10),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.append(&batch(1000, 3, 10, 0)).unwrap().base_offset, 100);
        let all = read_all(&log, 0, 4096);
        assert_eq!(all.len(), 103);
        assert_eq!(all[99].1, 99);
        assert_eq!(all[100].1, 1000);
        logs.close().unwrap();
    }
    let logs = open(dir.path(), small_config());
    let log = logs.partition(&tp("t", 0)).unwrap();
    assert_eq!(log.high_watermark(), 103);
    assert_eq!(read_all(&log, 0, 4096)[100].1, 1000);
}

#[test]
fn retention_by_size_and_age_deletes_oldest_segments_and_moves_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let now = weir_storage::fs::now_ms();
    {
        let logs = open(dir.path(), small_config());
        let log = logs.create_partition(tp("t", 0), None).unwrap();
        // Old records (an hour ago) then new ones.
        for i in 0..100u64 {
            let ts = if i < 30 { now - 3_600_000 } else { now };
            log.append(&batch(i * 2, 2, 300, ts)).unwrap();
        }
        let total = log.size_bytes();
        let held = log.read(0, 1 << 10).unwrap();
        log.set_config(LogConfig {
            retention_age: Some(Duration::from_secs(60)),
            ..small_config()
        })
        .unwrap();
        let deleted = log.apply_retention(now).unwrap();
        assert!(deleted > 0);
        let start = log.log_start_offset();
        assert!(
            start > 0 && start <= 100,
            "old segments gone, new kept: start {start}"
        );
        assert!(matches!(
            log.read(0, 10),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(
            records_of(&held)[0].0,
            0,
            "a read in flight keeps its bytes after deletion"
        );
        // By size: keep at most a third.
        log.set_config(LogConfig {
            retention_bytes: Some(total / 4),
            ..small_config()
        })
        .unwrap();
        log.apply_retention(now).unwrap();
        assert!(log.size_bytes() <= total / 4 + small_config().segment_bytes);
        assert!(log.log_start_offset() > start);
        let remaining = read_all(&log, log.log_start_offset(), 4096);
        assert_eq!(remaining.first().unwrap().0, log.log_start_offset());
        assert_eq!(remaining.last().unwrap().0, 199);
        logs.close().unwrap();
    }
    let start = {
        let logs = open(dir.path(), small_config());
        let log = logs.partition(&tp("t", 0)).unwrap();
        let start = log.log_start_offset();
        assert!(start > 0);
        assert_eq!(log.high_watermark(), 200);
        start
    }; // dropped without close: an unclean stop
    let logs = open(dir.path(), small_config());
    assert_eq!(
        logs.partition(&tp("t", 0)).unwrap().log_start_offset(),
        start,
        "log start survives an unclean stop"
    );
}

#[test]
fn clean_and_unclean_reopen_keep_every_batch() {
    let dir = tempfile::tempdir().unwrap();
    let expected;
    {
        let logs = open(dir.path(), small_config());
        for p in 0..3 {
            let log = logs.create_partition(tp("multi", p), None).unwrap();
            for i in 0..60u64 {
                log.append(&batch(i, 1, 100 * p as usize, i as i64))
                    .unwrap();
            }
        }
        expected = read_all(&logs.partition(&tp("multi", 1)).unwrap(), 0, 4096);
        logs.close().unwrap();
    }
    let (logs, report) = LogDir::open(dir.path(), quiet_dir_config(small_config())).unwrap();
    assert!(report.clean);
    assert_eq!(report.partitions, 3);
    let log = logs.partition(&tp("multi", 1)).unwrap();
    assert_eq!(read_all(&log, 0, 4096), expected);
    log.append(&batch(60, 1, 100, 60)).unwrap();
    drop(log);
    drop(logs); // crash
    let (logs, report) = LogDir::open(dir.path(), quiet_dir_config(small_config())).unwrap();
    assert!(!report.clean);
    assert!(
        report.truncations.is_empty(),
        "an unwritten preallocated tail is not a truncation: {:?}",
        report.truncations
    );
    let log = logs.partition(&tp("multi", 1)).unwrap();
    assert_eq!(log.high_watermark(), 61);
    assert_eq!(&read_all(&log, 0, 4096)[..60], &expected[..]);
}

#[test]
fn durable_appends_from_many_threads_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..25u64 {
                    let info = log.append_durable(&batch(t * 1000 + i, 1, 50, 0)).unwrap();
                    assert!(
                        log.recovery_point() > info.last_offset,
                        "acknowledged only once synced"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(log.high_watermark(), 200);
    assert_eq!(log.recovery_point(), 200);
    let mut ids: Vec<u64> = read_all(&log, 0, 4096).iter().map(|r| r.1).collect();
    ids.sort_unstable();
    let mut want: Vec<u64> = (0..8)
        .flat_map(|t| (0..25).map(move |i| t * 1000 + i))
        .collect();
    want.sort_unstable();
    assert_eq!(ids, want, "every acknowledged record is there exactly once");
}

#[test]
fn appends_waiting_for_their_sync_later_are_durable_once_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(
        dir.path(),
        LogConfig {
            flush: weir_storage::FlushPolicy::Never,
            ..small_config()
        },
    );
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    let mut tickets = Vec::new();
    for i in 0..10u64 {
        let (info, ticket) = log
            .append_for_sync(&batch(i, 1, 50, 0), AppendConditions::default())
            .unwrap();
        assert_eq!(info.base_offset, i, "appended in call order");
        tickets.push((info, ticket));
    }
    assert_eq!(
        log.recovery_point(),
        0,
        "nothing synced before anyone waits"
    );
    // Waiting for the last one covers all: one sync for the whole pipeline.
    let (last, ticket) = tickets.pop().unwrap();
    log.wait_durable(ticket).unwrap();
    assert!(log.recovery_point() > last.last_offset);
    for (_, ticket) in tickets {
        log.wait_durable(ticket).unwrap();
    }
    // A batch cut by a truncation before its sync is never reported durable.
    let (_, cut) = log
        .append_for_sync(&batch(10, 1, 50, 0), AppendConditions::default())
        .unwrap();
    log.truncate_to(10).unwrap();
    log.append(&batch(11, 1, 50, 0)).unwrap();
    assert!(matches!(
        log.wait_durable(cut),
        Err(StorageError::TruncatedBeforeSync { .. })
    ));
}

#[test]
fn a_data_dir_is_locked_to_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let _logs = open(dir.path(), small_config());
    assert!(matches!(
        LogDir::open(dir.path(), quiet_dir_config(small_config())),
        Err(StorageError::DirLocked(_))
    ));
}

#[test]
fn idle_segments_close_their_files_and_reopen_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    for i in 0..100u64 {
        log.append(&batch(i, 1, 400, 0)).unwrap();
    }
    read_all(&log, 0, 4096);
    assert!(log.open_segment_count() > 1);
    log.close_idle(i64::MAX);
    assert_eq!(log.open_segment_count(), 0);
    assert_eq!(read_all(&log, 0, 4096).len(), 100);
    assert_eq!(log.append(&batch(100, 1, 10, 0)).unwrap().base_offset, 100);
}

#[test]
fn invalid_names_and_duplicates_are_refused() {
    assert!(matches!(
        weir_storage::TopicPartition::validated("../etc", 0),
        Err(weir_proto::topic::InvalidTopicName::BadCharacter('/'))
    ));
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    logs.create_partition(tp("t", 0), None).unwrap();
    assert!(matches!(
        logs.create_partition(tp("t", 0), None),
        Err(StorageError::PartitionExists(_))
    ));
    logs.delete_partition(&tp("t", 0)).unwrap();
    assert!(logs.partition(&tp("t", 0)).is_none());
    assert!(!dir.path().join("t-0").exists());
    assert!(matches!(
        logs.delete_partition(&tp("t", 0)),
        Err(StorageError::UnknownPartition(_))
    ));
    let bad = LogConfig {
        segment_bytes: 1024,
        ..small_config()
    };
    assert!(matches!(
        logs.create_partition(tp("u", 0), Some(bad)),
        Err(StorageError::InvalidConfig(_))
    ));
}

#[test]
fn raising_segment_bytes_at_runtime_takes_effect_at_the_next_roll() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    log.append(&batch(0, 1, 100, 0)).unwrap();
    // The active segment was mapped for 16 KiB; a bigger limit must not push writes past it.
    log.set_config(LogConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    })
    .unwrap();
    for i in 1..200u64 {
        log.append(&batch(i, 1, 400, 0)).unwrap();
    }
    assert!(
        log.segment_count() >= 2,
        "the first segment rolled at its own capacity"
    );
    assert_eq!(read_all(&log, 0, 4096).len(), 200);
}

#[test]
fn handles_outliving_their_data_dir_are_retired() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let stale = logs.create_partition(tp("t", 0), None).unwrap();
    for i in 0..50u64 {
        stale.append(&batch(i, 1, 300, 0)).unwrap();
    }
    drop(logs); // crash
    let logs = open(dir.path(), small_config());
    let fresh = logs.partition(&tp("t", 0)).unwrap();
    // The old handle must not write, read or reopen files the new data dir owns.
    assert!(matches!(
        stale.append(&batch(50, 1, 10, 0)),
        Err(StorageError::Closed)
    ));
    assert!(matches!(stale.read(0, 100), Err(StorageError::Closed)));
    assert!(matches!(stale.truncate_to(1), Err(StorageError::Closed)));
    assert!(matches!(
        stale.offset_for_time(0),
        Err(StorageError::Closed)
    ));
    assert_eq!(fresh.append(&batch(50, 1, 10, 0)).unwrap().base_offset, 50);
    assert_eq!(read_all(&fresh, 0, 4096).len(), 51);
}

#[test]
fn a_recreated_partition_does_not_inherit_the_deleted_ones_offsets() {
    let dir = tempfile::tempdir().unwrap();
    {
        let logs = open(dir.path(), small_config());
        let old = logs.create_partition(tp("t", 0), None).unwrap();
        for i in 0..200u64 {
            old.append(&batch(i, 1, 300, 0)).unwrap();
        }
        old.set_config(LogConfig {
            retention_bytes: Some(1),
            ..small_config()
        })
        .unwrap();
        old.apply_retention(0).unwrap();
        logs.checkpoint().unwrap();
        assert!(old.log_start_offset() > 100);
        logs.delete_partition(&tp("t", 0)).unwrap();
        assert!(
            matches!(old.apply_retention(0), Err(StorageError::Closed)),
            "a deleted handle touches nothing"
        );
        let new = logs.create_partition(tp("t", 0), None).unwrap();
        for i in 0..100u64 {
            new.append_durable(&batch(i, 1, 300, 0)).unwrap();
        }
    } // crash before any periodic checkpoint
    let logs = open(dir.path(), small_config());
    let log = logs.partition(&tp("t", 0)).unwrap();
    assert_eq!(
        log.log_start_offset(),
        0,
        "the old log start must not delete the new data"
    );
    assert_eq!(read_all(&log, 0, 4096).len(), 100);
}

#[test]
fn truncation_lowers_the_checkpointed_recovery_point_before_cutting() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    for i in 0..100u64 {
        log.append(&batch(i, 1, 300, 0)).unwrap();
    }
    log.flush().unwrap();
    logs.checkpoint().unwrap();
    assert_eq!(log.recovery_point(), 100);
    log.truncate_to(40).unwrap();
    let text =
        std::fs::read_to_string(dir.path().join("recovery-point-offset-checkpoint")).unwrap();
    assert!(
        text.contains("t 0 40\n"),
        "checkpoint after truncate: {text:?}"
    );
}

#[test]
fn retention_never_deletes_a_segment_holding_an_offset_at_or_above_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    // Every record an hour old: without a limit, time retention takes every sealed segment.
    let old = weir_storage::fs::now_ms() - 3_600_000;
    for i in 0..200u64 {
        log.append(&batch(i, 1, 300, old)).unwrap();
    }
    let bases = log.sealed_segment_bases();
    assert!(bases.len() >= 4, "small segments roll: {bases:?}");
    log.set_config(LogConfig {
        retention_age: Some(Duration::from_secs(60)),
        ..small_config()
    })
    .unwrap();
    // A replicated partition whose high watermark lags inside the third segment: the first two
    // segments are wholly below it and go; the third holds uncommitted offsets and stays, and
    // so does everything after it.
    let hw = bases[2] + 1;
    log.set_retention_limit(hw);
    assert_eq!(log.apply_retention(weir_storage::fs::now_ms()).unwrap(), 2);
    assert_eq!(log.log_start_offset(), bases[2]);
    assert_eq!(
        read_all(&log, bases[2], 1 << 20).len() as u64,
        200 - bases[2]
    );
    // At the segment's end exactly (the next one's base): it is wholly below, so it goes.
    log.set_retention_limit(bases[3]);
    assert_eq!(log.apply_retention(weir_storage::fs::now_ms()).unwrap(), 1);
    assert_eq!(log.log_start_offset(), bases[3]);
    // A limit at the log start holds everything; lifted, retention deletes what it may.
    log.set_retention_limit(bases[3]);
    assert_eq!(log.apply_retention(weir_storage::fs::now_ms()).unwrap(), 0);
    log.set_retention_limit(u64::MAX);
    assert_eq!(
        log.apply_retention(weir_storage::fs::now_ms()).unwrap(),
        bases.len() - 3
    );
    assert_eq!(log.segment_count(), 1, "only the active segment is left");
}

#[test]
fn a_forever_retention_age_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    for i in 0..100u64 {
        log.append(&batch(i, 1, 300, 0)).unwrap();
    }
    log.set_config(LogConfig {
        retention_age: Some(Duration::MAX),
        segment_age: Some(Duration::MAX),
        ..small_config()
    })
    .unwrap();
    assert_eq!(log.apply_retention(weir_storage::fs::now_ms()).unwrap(), 0);
    assert_eq!(log.append(&batch(100, 1, 10, 0)).unwrap().base_offset, 100);
}

/// A batch of `count` records from idempotent producer `id`, epoch 0, starting at `seq`.
fn from_producer(id: i64, seq: i32, count: usize) -> bytes::Bytes {
    let mut b = weir_proto::batch::BatchBuilder::new().producer(id, 0, seq);
    for i in 0..count {
        let value = format!("{id}/{}", seq as usize + i);
        b.push(weir_proto::batch::RecordInput {
            value: Some(value.as_bytes()),
            ..Default::default()
        })
        .unwrap();
    }
    b.build().unwrap()
}

#[test]
fn retried_batches_of_an_idempotent_producer_are_stored_once_even_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let logs = open(dir.path(), small_config());
        let log = logs.create_partition(tp("idem", 0), None).unwrap();
        log.append(&batch(0, 2, 10, 0)).unwrap(); // a plain batch first: offsets 0-1
        let first = log.append(&from_producer(7, 0, 3)).unwrap();
        assert_eq!(
            (first.base_offset, first.last_offset, first.duplicate),
            (2, 4, false)
        );
        let second = log.append(&from_producer(7, 3, 2)).unwrap();
        assert_eq!(second.base_offset, 5);
        // The retry of the first batch: its original offsets, nothing written.
        let retry = log.append(&from_producer(7, 0, 3)).unwrap();
        assert_eq!(
            (retry.base_offset, retry.last_offset, retry.duplicate),
            (2, 4, true)
        );
        assert_eq!(log.high_watermark(), 7);
        // A gap is refused and changes nothing.
        assert!(matches!(
            log.append(&from_producer(7, 9, 1)),
            Err(StorageError::OutOfOrderSequence {
                expected: 5,
                got: 9,
                ..
            })
        ));
        assert_eq!(log.high_watermark(), 7);
        drop(log);
        drop(logs); // a crash: the states must come back from the log alone
    }
    let logs = open(dir.path(), small_config());
    let log = logs.partition(&tp("idem", 0)).unwrap();
    let retry = log.append(&from_producer(7, 3, 2)).unwrap();
    assert_eq!(
        (retry.base_offset, retry.duplicate),
        (5, true),
        "recognized after reopen"
    );
    let next = log.append(&from_producer(7, 5, 1)).unwrap();
    assert_eq!((next.base_offset, next.duplicate), (7, false));
    // Truncating below a producer's batches forgets them: the sequence continues from what is
    // left in the log.
    log.truncate_to(5).unwrap();
    assert!(
        log.append(&from_producer(7, 6, 1)).is_err(),
        "5 is next after the cut"
    );
    assert_eq!(log.append(&from_producer(7, 3, 2)).unwrap().base_offset, 5);
}

#[test]
fn a_conditional_append_happens_only_at_the_expected_offset() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("cond", 0), None).unwrap();
    let at = |offset| AppendConditions {
        expected_offset: Some(offset),
        ..Default::default()
    };
    let (first, _) = log.append_for_sync(&batch(0, 3, 10, 0), at(0)).unwrap();
    assert_eq!(first.base_offset, 0);
    // Two writers both read up to offset 3; only the first to append wins.
    assert!(log.append_for_sync(&batch(3, 1, 10, 0), at(3)).is_ok());
    match log.append_for_sync(&batch(3, 1, 10, 0), at(3)) {
        Err(StorageError::OffsetConflict { expected, actual }) => {
            assert_eq!((expected, actual), (3, 4))
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(log.high_watermark(), 4, "the loser wrote nothing");
    // An idempotent conditional batch retried after it was appended: its own offsets back, not
    // a conflict with itself.
    let stamped = from_producer(3, 0, 2);
    let (first, _) = log.append_for_sync(&stamped, at(4)).unwrap();
    let (retry, _) = log.append_for_sync(&stamped, at(4)).unwrap();
    assert!(
        log.append_for_sync(&batch(9, 1, 10, 0), keyed(b"k", None))
            .is_err(),
        "key conditions need a key index"
    );
    assert_eq!(
        (retry.base_offset, retry.duplicate),
        (first.base_offset, true)
    );
}

fn keyed(key: &[u8], offset: Option<u64>) -> AppendConditions {
    AppendConditions {
        expected_keys: vec![(key.to_vec(), offset)],
        ..Default::default()
    }
}

/// One event for `account` (the record key).
fn event(account: &str, what: &str) -> bytes::Bytes {
    let mut b = weir_proto::batch::BatchBuilder::new();
    b.push(weir_proto::batch::RecordInput {
        key: Some(account.as_bytes()),
        value: Some(what.as_bytes()),
        ..Default::default()
    })
    .unwrap();
    b.build().unwrap()
}

#[test]
fn appends_conditional_on_a_keys_last_offset_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        key_index: true,
        ..small_config()
    };
    {
        let logs = open(dir.path(), config.clone());
        let log = logs.create_partition(tp("accounts", 0), None).unwrap();
        // A new key: expected "none".
        log.append_for_sync(&event("acct-1", "opened"), keyed(b"acct-1", None))
            .unwrap();
        log.append(&event("acct-2", "opened")).unwrap();
        match log.append_for_sync(&event("acct-1", "opened again"), keyed(b"acct-1", None)) {
            Err(StorageError::KeyConflict { actual, .. }) => assert_eq!(actual, Some(0)),
            other => panic!("expected a key conflict, got {other:?}"),
        }
        log.append_for_sync(&event("acct-1", "deposited"), keyed(b"acct-1", Some(0)))
            .unwrap();
        assert_eq!(log.high_watermark(), 3);
        drop(log);
        drop(logs); // crash: the index is rebuilt from the log
    }
    let logs = open(dir.path(), config);
    let log = logs.partition(&tp("accounts", 0)).unwrap();
    // The first conditional append after the reopen rebuilds the index from the log.
    match log.append_for_sync(&event("acct-1", "stale write"), keyed(b"acct-1", Some(0))) {
        Err(StorageError::KeyConflict { actual, .. }) => assert_eq!(actual, Some(2)),
        other => panic!("expected a key conflict, got {other:?}"),
    }
    log.append_for_sync(&event("acct-1", "withdrew"), keyed(b"acct-1", Some(2)))
        .unwrap();
    // Plain appends keep the built index current.
    log.append(&event("acct-2", "closed")).unwrap();
    assert!(
        log.append_for_sync(&event("acct-2", "x"), keyed(b"acct-2", Some(4)))
            .is_ok()
    );
}

#[test]
fn a_derived_state_snapshot_bounds_the_rescan_and_a_truncation_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        key_index: true,
        ..small_config()
    };
    {
        let logs = open(dir.path(), config.clone());
        let log = logs.create_partition(tp("snap", 0), None).unwrap();
        for i in 0..40 {
            log.append(&from_producer(7, i * 2, 2)).unwrap();
        }
        assert_eq!(log.high_watermark(), 80);
        drop(log);
        logs.close().unwrap(); // writes the snapshot through offset 80
    }
    {
        let logs = open(dir.path(), config.clone());
        let log = logs.partition(&tp("snap", 0)).unwrap();
        let retry = log.append(&from_producer(7, 78, 2)).unwrap();
        assert!(retry.duplicate, "the snapshot remembers the last batches");
        assert_eq!(log.derived_state_scanned_offsets(), 0, "nothing rescanned");
        log.append(&from_producer(7, 80, 2)).unwrap();
        log.append(&event("k", "after the snapshot")).unwrap();
        drop(log);
        drop(logs); // a crash: the snapshot (through 80) is older than the log (83)
    }
    let logs = open(dir.path(), config);
    let log = logs.partition(&tp("snap", 0)).unwrap();
    assert!(log.append(&from_producer(7, 80, 2)).unwrap().duplicate);
    assert_eq!(
        log.derived_state_scanned_offsets(),
        3,
        "only the tail after the snapshot"
    );
    assert!(
        log.append_for_sync(&event("k", "x"), keyed(b"k", Some(82)))
            .is_ok(),
        "the key index covers the tail too"
    );
    // A truncation deletes the snapshot: the next rebuild scans what is left, from the start.
    log.truncate_to(10).unwrap();
    assert!(!dir.path().join("snap-0/derived-state.snapshot").exists());
    assert!(
        log.append(&from_producer(7, 10, 2)).is_ok(),
        "sequence 10 follows the cut"
    );
    assert_eq!(log.derived_state_scanned_offsets(), 3 + 10);
}

#[test]
fn a_key_index_rebuilt_while_plain_appends_continue_misses_none_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        key_index: true,
        segment_bytes: 1 << 20,
        ..small_config()
    };
    {
        let logs = open(dir.path(), config.clone());
        let log = logs.create_partition(tp("race", 0), None).unwrap();
        for i in 0..5000 {
            log.append(&event("k", &format!("before {i}"))).unwrap();
        }
        drop(log);
        drop(logs); // the index must be rebuilt after this reopen
    }
    let logs = open(dir.path(), config);
    let log = logs.partition(&tp("race", 0)).unwrap();
    let writer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for i in 0..5000 {
                log.append(&event(&format!("w{i}"), "during")).unwrap();
            }
        })
    };
    // Triggers the rebuild (a scan of 5,000+ batches) while the writer is appending.
    while log.high_watermark() < 5100 {
        std::thread::yield_now();
    }
    log.append_for_sync(&event("j", "new"), keyed(b"j", None))
        .unwrap();
    writer.join().unwrap();
    // Every key the writer wrote, each once, is in the index: "must be new" conflicts for all.
    let missed: Vec<usize> = (0..5000)
        .filter(|i| {
            let key = format!("w{i}");
            !matches!(
                log.append_for_sync(&event(&key, "probe"), keyed(key.as_bytes(), None)),
                Err(StorageError::KeyConflict {
                    actual: Some(_),
                    ..
                })
            )
        })
        .collect();
    assert!(
        missed.is_empty(),
        "the index missed keys appended during its rebuild: {missed:?}"
    );
}

#[test]
fn a_snapshot_that_outlived_its_log_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("lost-0/derived-state.snapshot");
    let saved = dir.path().join("saved.snapshot");
    {
        let logs = open(dir.path(), small_config());
        let log = logs.create_partition(tp("lost", 0), None).unwrap();
        for i in 0..20 {
            log.append(&from_producer(5, i * 2, 2)).unwrap();
        }
        drop(log);
        logs.close().unwrap(); // snapshot through 40
    }
    std::fs::copy(&snapshot, &saved).unwrap();
    {
        // A power failure lost the tail after offset 20, and the log grew back past 40 with
        // other batches; the old snapshot file survived.
        let logs = open(dir.path(), small_config());
        let log = logs.partition(&tp("lost", 0)).unwrap();
        log.truncate_to(20).unwrap();
        for i in 0..30 {
            log.append(&batch(1000 + i, 1, 10, 0)).unwrap();
        }
        drop(log);
        drop(logs);
        std::fs::copy(&saved, &snapshot).unwrap();
    }
    let logs = open(dir.path(), small_config());
    let log = logs.partition(&tp("lost", 0)).unwrap();
    // Producer 5's batch at sequence 30 was lost with the tail: it must be appended, not
    // answered with the offsets the stale snapshot remembers.
    let retry = log.append(&from_producer(5, 20, 2)).unwrap();
    assert!(
        !retry.duplicate,
        "a stale snapshot made a lost batch look stored"
    );
    assert_eq!(
        log.derived_state_scanned_offsets(),
        50,
        "rebuilt from the log start"
    );
}
