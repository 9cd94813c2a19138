//! Disk faults injected through the engine's syscall seam (`weir_storage::sys`, whose module
//! docs list the failpoints): a failed fdatasync, a full disk while rolling, a failed rename
//! while checkpointing, a short write, a failed epoch-history write after a truncation's cut, a
//! failed reset (`reset_to`). Each checks what a user of the engine sees (the typed
//! error, what still works) and that nothing acknowledged is lost across a reopen.
//!
//! Run with `cargo test -p weir-storage --features failpoints`; without the feature this file
//! compiles to nothing. Failpoints are process-global, so every test holds a
//! `fail::FailScenario` (see [`faults`]) for its whole run: that takes `fail`'s global lock, so
//! these tests run one at a time even under the default parallel test runner, and tearing the
//! scenario down (also on a panic) switches every failpoint off again.
#![cfg(feature = "failpoints")]

mod common;

use std::path::Path;
use std::thread;
use std::time::Duration;

use common::*;
use fail::FailScenario;
use weir_storage::{AppendConditions, LogDir, OpenReport, PartitionLog, StorageError};

/// The scenario every test here holds: serializes the tests, and turns every failpoint off when
/// dropped (also on a panic).
fn faults() -> FailScenario<'static> {
    init_tracing();
    FailScenario::setup()
}

fn set(failpoint: &str, actions: &str) {
    fail::cfg(failpoint, actions).expect("failpoint actions parse");
}

fn reopen(path: &Path) -> (LogDir, OpenReport) {
    LogDir::open(path, quiet_dir_config(small_config())).expect("reopen data dir")
}

/// The (offset, id) pairs `n` records appended from offset 0 with ids equal to their offsets
/// read back as.
fn dense(n: u64) -> Vec<(u64, u64)> {
    (0..n).map(|i| (i, i)).collect()
}

fn offsets_and_ids(log: &PartitionLog) -> Vec<(u64, u64)> {
    read_all(log, 0, 1 << 20)
        .into_iter()
        .map(|(offset, id, _)| (offset, id))
        .collect()
}

fn is_sync_failed<T: std::fmt::Debug>(r: &Result<T, StorageError>) -> bool {
    matches!(r, Err(StorageError::SyncFailed { .. }))
}

#[test]
fn eio_on_fdatasync_fails_the_waiting_appends_and_leaves_the_partition_read_only() {
    let _faults = faults();
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("sync", 0), None).unwrap();

    // Acknowledged durable before anything fails.
    let mut next = 0u64;
    for _ in 0..6 {
        let info = log.append_durable(&batch(next, 3, 100, 0)).unwrap();
        assert_eq!(info.base_offset, next);
        next += 3;
    }
    let durable = next;
    assert_eq!(log.recovery_point(), durable);
    // A sealed segment left to sync (its trim), and a batch appended but not yet synced.
    log.roll().unwrap();
    let (info, ticket) = log
        .append_for_sync(&batch(next, 3, 100, 0), AppendConditions::default())
        .unwrap();
    assert_eq!(info.base_offset, durable);

    // The next sync fsyncs the sealed segment slowly (so other appenders join and park behind
    // it), then fails the active segment's fdatasync with EIO.
    set("storage::fsync", "1*sleep(300)");
    set("storage::fdatasync", "return(eio)");
    let (leader, waiters) = thread::scope(|s| {
        let leader = s.spawn(|| log.wait_durable(ticket));
        thread::sleep(Duration::from_millis(50));
        let waiters: Vec<_> = (0..4u64)
            .map(|i| {
                let log = &log;
                s.spawn(move || log.append_durable(&batch(1000 + 10 * i, 2, 100, 0)))
            })
            .collect();
        (
            leader.join().unwrap(),
            waiters
                .into_iter()
                .map(|w| w.join().unwrap())
                .collect::<Vec<_>>(),
        )
    });
    assert!(
        is_sync_failed(&leader),
        "the batch waiting for the failed sync learns it may not be on disk: {leader:?}"
    );
    for w in &waiters {
        assert!(
            is_sync_failed(w),
            "every durable appender of the failed group (or after it) gets SyncFailed: {w:?}"
        );
    }
    let hw = log.high_watermark();
    println!(
        "{} batches appended while the failing sync ran",
        (hw - durable - 3) / 2
    );

    // Read-only from now on: no write is accepted, however it asks.
    assert!(is_sync_failed(&log.append(&batch(2000, 1, 10, 0))));
    assert!(is_sync_failed(&log.append_durable(&batch(2000, 1, 10, 0))));
    assert!(is_sync_failed(&log.append_for_sync(
        &batch(2000, 1, 10, 0),
        AppendConditions::default()
    )));
    assert!(is_sync_failed(&log.sync_through(hw)));
    assert!(is_sync_failed(&log.flush()));
    assert_eq!(
        log.high_watermark(),
        hw,
        "nothing appended after the failure"
    );
    // Nothing is reported durable that was not synced.
    assert_eq!(log.recovery_point(), durable);
    // Reads keep serving everything below the high watermark.
    assert_eq!(read_all(&log, 0, 1 << 20).len() as u64, hw);
    assert_eq!(
        offsets_and_ids(&log)[..durable as usize],
        dense(durable)[..]
    );

    // The checkpoint cannot be written while fdatasync fails; once it can, it claims no more
    // than what was synced.
    assert!(logs.checkpoint().is_err());
    fail::remove("storage::fdatasync");
    fail::remove("storage::fsync");
    logs.checkpoint().unwrap();
    let checkpoint =
        std::fs::read_to_string(dir.path().join("recovery-point-offset-checkpoint")).unwrap();
    assert!(
        checkpoint.contains(&format!("sync 0 {durable}\n")),
        "checkpoint: {checkpoint:?}"
    );
    // The failure is sticky although the disk answers again: only a restart clears it, and the
    // close is not recorded as clean.
    assert!(is_sync_failed(&log.append(&batch(2000, 1, 10, 0))));
    assert!(is_sync_failed(&logs.close()));

    let (logs, report) = reopen(dir.path());
    assert!(!report.clean, "a close after a failed sync is not clean");
    let log = logs.partition(&tp("sync", 0)).unwrap();
    let after = offsets_and_ids(&log);
    assert!(after.len() as u64 >= durable);
    assert_eq!(
        after[..durable as usize],
        dense(durable)[..],
        "every batch acknowledged durable before the failure survives"
    );
    let info = log.append_durable(&batch(5000, 1, 10, 0)).unwrap();
    assert_eq!(info.base_offset, log.high_watermark() - 1);
    logs.close().unwrap();
}

#[test]
fn enospc_while_rolling_refuses_the_append_and_publishes_nothing() {
    let _faults = faults();
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("full", 0), None).unwrap();
    let segment_bytes = small_config().segment_bytes;

    // Fill the first segment until the next batch must roll.
    let mut next = 0u64;
    while log.size_bytes() + batch(next, 4, 200, 0).len() as u64 <= segment_bytes {
        log.append(&batch(next, 4, 200, 0)).unwrap();
        next += 4;
    }
    let (hw, size) = (log.high_watermark(), log.size_bytes());
    assert_eq!(hw, next);
    assert_eq!(log.segment_count(), 1);

    set("storage::fallocate", "return(enospc)");
    let err = log.append(&batch(next, 4, 200, 0)).unwrap_err();
    assert!(
        matches!(err, StorageError::DiskFull { .. }),
        "a typed disk-full error, got {err}"
    );
    assert_eq!(log.high_watermark(), hw, "nothing published");
    assert_eq!(log.size_bytes(), size);
    assert_eq!(log.segment_count(), 1, "the roll did not happen");
    assert_eq!(offsets_and_ids(&log), dense(hw), "the log still reads");
    let names: Vec<String> = std::fs::read_dir(log.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["00000000000000000000.log"],
        "no half-made segment or tmp file left behind (it would look like a gap)"
    );
    // Still full: still refused.
    assert!(
        log.append(&batch(next, 4, 200, 0))
            .unwrap_err()
            .is_disk_full()
    );

    // Space comes back: the same append rolls and lands at the next offset.
    fail::remove("storage::fallocate");
    let info = log.append(&batch(next, 4, 200, 0)).unwrap();
    assert_eq!(info.base_offset, hw);
    assert_eq!(log.segment_count(), 2);
    assert_eq!(offsets_and_ids(&log), dense(hw + 4));
    logs.close().unwrap();

    let (logs, report) = reopen(dir.path());
    assert!(report.clean && report.truncations.is_empty());
    let log = logs.partition(&tp("full", 0)).unwrap();
    assert_eq!(offsets_and_ids(&log), dense(hw + 4));
    logs.close().unwrap();
}

#[test]
fn a_failed_rename_while_checkpointing_keeps_the_old_checkpoint() {
    let _faults = faults();
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("ckpt", 0), None).unwrap();
    let recovery_file = dir.path().join("recovery-point-offset-checkpoint");
    let start_file = dir.path().join("log-start-offset-checkpoint");

    let mut next = 0u64;
    for _ in 0..10 {
        log.append(&batch(next, 4, 300, 0)).unwrap();
        next += 4;
    }
    log.flush().unwrap();
    logs.checkpoint().unwrap();
    let old_recovery = std::fs::read_to_string(&recovery_file).unwrap();
    let old_start = std::fs::read_to_string(&start_file).unwrap();
    assert!(old_recovery.contains(&format!("ckpt 0 {next}\n")));
    let checkpointed = next;

    // More data, synced (so a new checkpoint would name a higher recovery point).
    for _ in 0..10 {
        log.append(&batch(next, 4, 300, 0)).unwrap();
        next += 4;
    }
    log.flush().unwrap();
    assert!(log.recovery_point() > checkpointed);

    set("storage::rename", "return(eio)");
    let err = logs.checkpoint().unwrap_err();
    assert!(
        matches!(err, StorageError::Io { .. }),
        "the error is returned: {err}"
    );
    fail::remove("storage::rename");
    assert_eq!(
        std::fs::read_to_string(&recovery_file).unwrap(),
        old_recovery
    );
    assert_eq!(std::fs::read_to_string(&start_file).unwrap(), old_start);
    let tmp_files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(tmp_files.is_empty(), "tmp files left: {tmp_files:?}");

    // A crash now: recovery starts from the old checkpoint and keeps everything.
    drop(logs);
    let (logs, report) = reopen(dir.path());
    assert!(!report.clean);
    assert!(report.truncations.is_empty(), "{:?}", report.truncations);
    let log = logs.partition(&tp("ckpt", 0)).unwrap();
    assert_eq!(log.high_watermark(), next);
    assert_eq!(offsets_and_ids(&log), dense(next));
    logs.close().unwrap();
}

#[test]
fn a_short_write_then_a_failure_publishes_nothing_and_recovery_keeps_the_valid_prefix() {
    let _faults = faults();
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("torn", 0), None).unwrap();

    let mut next = 0u64;
    for _ in 0..5 {
        log.append_durable(&batch(next, 3, 150, 0)).unwrap();
        next += 3;
    }
    let (hw, size) = (log.high_watermark(), log.size_bytes());

    // The batch's first pwritev writes half of it; the call writing the rest fails.
    set("storage::pwrite", "1*return(short)->return(eio)");
    let err = log.append(&batch(next, 3, 150, 0)).unwrap_err();
    assert!(
        matches!(err, StorageError::Io { .. }),
        "an I/O error, got {err}"
    );
    fail::remove("storage::pwrite");
    assert_eq!(log.high_watermark(), hw, "nothing published");
    assert_eq!(log.size_bytes(), size);
    assert_eq!(offsets_and_ids(&log), dense(hw), "the log still reads");

    // A crash with the torn half on disk past the published end: recovery cuts exactly there.
    drop(logs);
    let (logs, report) = reopen(dir.path());
    assert!(!report.clean);
    assert_eq!(report.truncations.len(), 1, "{:?}", report.truncations);
    let cut = &report.truncations[0];
    assert_eq!(cut.first_lost_offset, hw);
    assert_eq!(cut.valid_bytes, size);
    assert!(cut.cut_bytes > 0);
    let log = logs.partition(&tp("torn", 0)).unwrap();
    assert_eq!(log.high_watermark(), hw);
    assert_eq!(offsets_and_ids(&log), dense(hw), "exactly the valid prefix");
    // And the log goes on from there.
    let info = log.append(&batch(next, 3, 150, 0)).unwrap();
    assert_eq!(info.base_offset, hw);
    logs.close().unwrap();
    let (logs, report) = reopen(dir.path());
    assert!(report.clean && report.truncations.is_empty());
    assert_eq!(
        offsets_and_ids(&logs.partition(&tp("torn", 0)).unwrap()),
        dense(hw + 3)
    );
    logs.close().unwrap();
}

/// A crash between `truncate_to`'s cut of the log and its write of the epoch history (here: the
/// history file's rename fails, and the process then dies): the file still lists the epoch
/// that started in the cut part, and the next open drops it, so log and history agree again.
#[test]
fn a_crash_between_the_truncation_and_the_history_write_recovers_consistently() {
    use weir_replication::LeaderEpoch;
    use weir_storage::leader_epoch;

    let _faults = faults();
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("epochs", 0), None).unwrap();
    let epochs_of = |log: &PartitionLog| -> Vec<(u32, u64)> {
        log.epoch_history()
            .entries()
            .iter()
            .map(|&(e, s)| (e.0, s))
            .collect()
    };
    let file = log.dir().join(leader_epoch::FILE_NAME);
    let on_disk = || -> Vec<(u32, u64)> {
        let h = leader_epoch::decode(&std::fs::read(&file).unwrap()).unwrap();
        h.entries().iter().map(|&(e, s)| (e.0, s)).collect()
    };
    log.assign_epoch(LeaderEpoch(1), 0).unwrap();
    for i in 0..60 {
        log.append(&batch(i * 2, 2, 200, 0)).unwrap();
    }
    log.assign_epoch(LeaderEpoch(2), 120).unwrap();
    for i in 60..70 {
        log.append(&batch(i * 2, 2, 200, 0)).unwrap();
    }
    log.flush().unwrap();
    assert!(log.segment_count() > 1);

    // truncate_to renames the two checkpoints (its recovery-point step), then the truncated
    // segment copy; the fifth rename is the epoch history's.
    set("storage::rename", "4*off->return(eio)");
    let err = log.truncate_to(120).unwrap_err();
    fail::remove("storage::rename");
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    // The window: the log is cut, the file still names epoch 2.
    assert_eq!(log.high_watermark(), 120);
    assert_eq!(on_disk(), [(1, 0), (2, 120)]);
    assert_eq!(epochs_of(&log), [(1, 0)]);
    // Read-only until a restart fits the file to the log.
    assert!(is_sync_failed(&log.append(&batch(120, 1, 10, 0))));
    drop(log);
    drop(logs); // the crash

    let (logs, _) = reopen(dir.path());
    let log = logs.partition(&tp("epochs", 0)).unwrap();
    assert_eq!(log.high_watermark(), 120);
    assert_eq!(offsets_and_ids(&log), dense(120));
    assert_eq!(epochs_of(&log), [(1, 0)]);
    assert_eq!(on_disk(), [(1, 0)], "the open rewrote the file");
    // And the follower goes on: an epoch newer than 1 starts at the log end.
    log.assign_epoch(LeaderEpoch(3), 120).unwrap();
    log.append(&batch(120, 1, 10, 0)).unwrap();
    assert_eq!(epochs_of(&log), [(1, 0), (3, 120)]);
    logs.close().unwrap();
}

/// `reset_to` under disk faults: a failed checkpoint (its first step) changes nothing and the
/// log stays writable; a failed unlink midway leaves it read-only, and the crash after it
/// reopens to a dense prefix of the old log, from which a second reset succeeds.
#[test]
fn a_reset_that_fails_changes_nothing_or_leaves_a_prefix_of_the_old_log() {
    let _faults = faults();
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("reset", 0), None).unwrap();
    for i in 0..100 {
        log.append(&batch(i, 1, 500, 0)).unwrap();
    }
    log.flush().unwrap();
    assert!(log.segment_count() > 3);

    set("storage::rename", "return(eio)");
    let err = log.reset_to(500).unwrap_err();
    fail::remove("storage::rename");
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    assert_eq!((log.log_start_offset(), log.high_watermark()), (0, 100));
    assert_eq!(log.recovery_point(), 100, "the lowered marks were restored");
    log.append(&batch(100, 1, 500, 0)).unwrap();
    assert_eq!(offsets_and_ids(&log), dense(101));

    // The snapshot and the active segment's three files go, then a sealed segment's log fails.
    set("storage::unlink", "4*off->return(eio)");
    let err = log.reset_to(500).unwrap_err();
    fail::remove("storage::unlink");
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    assert!(is_sync_failed(&log.append(&batch(101, 1, 10, 0))));
    drop(log);
    drop(logs); // the crash

    let (logs, _) = reopen(dir.path());
    let log = logs.partition(&tp("reset", 0)).unwrap();
    let kept = log.high_watermark();
    assert!(kept < 101, "the active segment was gone: {kept}");
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(offsets_and_ids(&log), dense(kept), "a dense prefix");
    log.reset_to(500).unwrap();
    assert_eq!((log.log_start_offset(), log.high_watermark()), (500, 500));
    log.append(&batch(500, 2, 10, 0)).unwrap();
    drop(log);
    drop(logs);
    let (logs, _) = reopen(dir.path());
    let log = logs.partition(&tp("reset", 0)).unwrap();
    assert_eq!((log.log_start_offset(), log.high_watermark()), (500, 502));
    logs.close().unwrap();
}
