//! The epoch history kept beside each partition (`leader-epoch`, segments-format.md section 7):
//! `assign_epoch` and its refusals, durability across clean and unclean reopens, truncation
//! and retention fitting it to the log, recovery dropping what the log no longer holds, a
//! corrupt file refusing the open, and `verify` checking it.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use weir_replication::{EpochHistory, LeaderEpoch};
use weir_storage::leader_epoch;
use weir_storage::{LogConfig, PartitionLog, StorageError, verify_log_dir};

fn pairs(log: &PartitionLog) -> Vec<(u32, u64)> {
    log.epoch_history()
        .entries()
        .iter()
        .map(|&(e, s)| (e.0, s))
        .collect()
}

fn epoch_file(log: &PartitionLog) -> PathBuf {
    log.dir().join(leader_epoch::FILE_NAME)
}

/// The history the file on disk holds.
fn on_disk(log: &PartitionLog) -> Vec<(u32, u64)> {
    let history = leader_epoch::decode(&fs::read(epoch_file(log)).unwrap()).unwrap();
    history.entries().iter().map(|&(e, s)| (e.0, s)).collect()
}

fn inode(path: &Path) -> u64 {
    fs::metadata(path).unwrap().ino()
}

fn history(entries: &[(u32, u64)]) -> EpochHistory {
    let mut h = EpochHistory::new();
    for &(e, s) in entries {
        h.assign(LeaderEpoch(e), s).unwrap();
    }
    h
}

/// Appends `n` batches of 2 records.
fn fill(log: &PartitionLog, n: u64) {
    for _ in 0..n {
        let at = log.high_watermark();
        log.append(&batch(at, 2, 100, 0)).unwrap();
    }
}

#[test]
fn an_epoch_history_survives_clean_and_unclean_reopens() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    assert!(log.epoch_history().entries().is_empty());
    assert!(
        !epoch_file(&log).exists(),
        "no file until an epoch is assigned"
    );
    log.assign_epoch(LeaderEpoch(1), 0).unwrap();
    fill(&log, 3);
    log.assign_epoch(LeaderEpoch(4), 6).unwrap();
    fill(&log, 2);
    assert_eq!(pairs(&log), [(1, 0), (4, 6)]);
    assert_eq!(
        on_disk(&log),
        [(1, 0), (4, 6)],
        "durable before assign returns"
    );
    logs.close().unwrap();

    let logs = open(dir.path(), small_config());
    let log = logs.partition(&tp("t", 0)).unwrap();
    assert_eq!(pairs(&log), [(1, 0), (4, 6)]);
    log.assign_epoch(LeaderEpoch(5), 10).unwrap();
    log.append_durable(&batch(10, 1, 10, 0)).unwrap();
    drop(log);
    drop(logs); // a crash: no clean close

    let logs = open(dir.path(), small_config());
    let log = logs.partition(&tp("t", 0)).unwrap();
    assert_eq!(pairs(&log), [(1, 0), (4, 6), (5, 10)]);
}

#[test]
fn assign_epoch_refuses_with_typed_errors_and_a_repeat_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    fill(&log, 2); // log end 4
    log.assign_epoch(LeaderEpoch(3), 2).unwrap();
    let file = epoch_file(&log);
    let written = inode(&file);

    // The same epoch at the same start: a no-op, the file is not even rewritten.
    log.assign_epoch(LeaderEpoch(3), 2).unwrap();
    assert_eq!(inode(&file), written);
    match log.assign_epoch(LeaderEpoch(2), 4) {
        Err(StorageError::EpochNotNewer {
            partition,
            latest,
            given,
        }) => {
            assert_eq!(partition, "t-0");
            assert_eq!((latest, given), (LeaderEpoch(3), LeaderEpoch(2)));
        }
        other => panic!("expected EpochNotNewer, got {other:?}"),
    }
    assert!(matches!(
        log.assign_epoch(LeaderEpoch(3), 4),
        Err(StorageError::EpochNotNewer { .. })
    ));
    assert!(matches!(
        log.assign_epoch(LeaderEpoch(4), 1),
        Err(StorageError::EpochStartBeforeLatest {
            latest_start: 2,
            given: 1,
            ..
        })
    ));
    assert!(matches!(
        log.assign_epoch(LeaderEpoch(4), 5),
        Err(StorageError::EpochStartPastLogEnd {
            start_offset: 5,
            log_end: 4,
            ..
        })
    ));
    assert_eq!(pairs(&log), [(3, 2)]);
    assert_eq!(inode(&file), written, "a refusal writes nothing");
    // At the log end is fine (a new leader's epoch before it appends).
    log.assign_epoch(LeaderEpoch(4), 4).unwrap();
    assert_eq!(on_disk(&log), [(3, 2), (4, 4)]);
}

#[test]
fn truncate_to_cuts_the_history_and_stores_it() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    log.assign_epoch(LeaderEpoch(1), 0).unwrap();
    fill(&log, 400); // several segments
    log.assign_epoch(LeaderEpoch(2), 800).unwrap();
    fill(&log, 10);
    log.assign_epoch(LeaderEpoch(5), 820).unwrap();
    fill(&log, 10);
    assert!(log.segment_count() > 3);

    // A cut inside epoch 2: epoch 5 goes.
    assert_eq!(log.truncate_to(810).unwrap(), 810);
    assert_eq!(pairs(&log), [(1, 0), (2, 800)]);
    assert_eq!(on_disk(&log), [(1, 0), (2, 800)]);
    // A cut exactly at epoch 2's start: it owns nothing any more.
    assert_eq!(log.truncate_to(800).unwrap(), 800);
    assert_eq!(on_disk(&log), [(1, 0)]);
    // Truncating at the log end drops an epoch that starts there (assigned, nothing written)...
    log.assign_epoch(LeaderEpoch(6), 800).unwrap();
    assert_eq!(log.truncate_to(800).unwrap(), 800);
    assert_eq!(on_disk(&log), [(1, 0)]);
    // ...so the follower can take an older epoch's batches next; past the end is a no-op.
    log.assign_epoch(LeaderEpoch(3), 800).unwrap();
    assert_eq!(log.truncate_to(900).unwrap(), 800);
    assert_eq!(pairs(&log), [(1, 0), (3, 800)]);
    // A cut into an earlier segment, then a reopen.
    fill(&log, 1);
    assert_eq!(log.truncate_to(100).unwrap(), 100);
    assert_eq!(pairs(&log), [(1, 0)]);
    drop(log);
    logs.close().unwrap();
    let logs = open(dir.path(), small_config());
    assert_eq!(pairs(&logs.partition(&tp("t", 0)).unwrap()), [(1, 0)]);
}

#[test]
fn retention_collapses_the_entries_below_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    for (epoch, batches) in [(1u32, 100u64), (2, 100), (3, 100), (4, 100)] {
        let at = log.high_watermark();
        log.assign_epoch(LeaderEpoch(epoch), at).unwrap();
        fill(&log, batches);
    }
    assert_eq!(pairs(&log), [(1, 0), (2, 200), (3, 400), (4, 600)]);
    // Past epoch 2's start, inside it: epoch 1 is gone, epoch 2 starts at the log start.
    log.delete_segments_before(330).unwrap();
    let start = log.log_start_offset();
    assert!(start > 200 && start <= 330, "log start {start}");
    assert_eq!(pairs(&log), [(2, start), (3, 400), (4, 600)]);
    assert_eq!(on_disk(&log), pairs(&log));

    // Retention by size does the same.
    log.set_config(LogConfig {
        retention_bytes: Some(20 << 10),
        ..small_config()
    })
    .unwrap();
    assert!(log.apply_retention(0).unwrap() > 0);
    let start = log.log_start_offset();
    assert!(start > 400 && start < 600, "log start {start}");
    assert_eq!(pairs(&log), [(3, start), (4, 600)]);
    assert_eq!(on_disk(&log), pairs(&log));
    drop(log);
    logs.close().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.partition(&tp("t", 0)).unwrap();
    assert_eq!(pairs(&log), [(3, start), (4, 600)]);
}

#[test]
fn an_open_drops_entries_the_log_no_longer_holds_and_rewrites_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    fill(&log, 5); // log end 10
    let part_dir = log.dir().to_owned();
    drop(log);
    logs.close().unwrap();
    // As a crash between a truncation's cut and its history write leaves it: epochs at and
    // past the log end.
    fs::write(
        part_dir.join(leader_epoch::FILE_NAME),
        leader_epoch::encode(&history(&[(1, 0), (2, 8), (3, 10), (4, 12)])),
    )
    .unwrap();
    let report = verify_log_dir(dir.path(), |_| {}).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.epoch_files.len(), 1, "{report:?}");
    assert!(report.epoch_files[0].repaired_at_open);
    assert!(
        report.epoch_files[0].detail.contains("epoch 4 at 12"),
        "{report:?}"
    );

    let logs = open(dir.path(), small_config());
    let log = logs.partition(&tp("t", 0)).unwrap();
    assert_eq!(pairs(&log), [(1, 0), (2, 8)]);
    assert_eq!(on_disk(&log), [(1, 0), (2, 8)], "the file was rewritten");
    assert!(
        verify_log_dir(dir.path(), |_| {})
            .unwrap()
            .epoch_files
            .is_empty()
    );
}

#[test]
fn a_corrupt_epoch_file_is_a_typed_error_naming_it_and_the_partition_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    log.assign_epoch(LeaderEpoch(1), 0).unwrap();
    fill(&log, 2);
    let file = epoch_file(&log);
    drop(log);
    logs.close().unwrap();

    let good = fs::read(&file).unwrap();
    let mut flipped = good.clone();
    flipped[14] ^= 0x01; // inside the first entry: the CRC no longer matches
    for bad in [
        flipped,
        good[..good.len() - 3].to_vec(),
        b"garbage".to_vec(),
    ] {
        fs::write(&file, &bad).unwrap();
        match weir_storage::LogDir::open(dir.path(), quiet_dir_config(small_config())) {
            Err(StorageError::Corrupt { what, path, detail }) => {
                assert_eq!(what, "leader-epoch file");
                assert_eq!(path, file);
                assert!(!detail.is_empty());
            }
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok(_) => panic!("a corrupt epoch file was accepted"),
        }
        let report = verify_log_dir(dir.path(), |_| {}).unwrap();
        assert!(!report.is_clean(), "verify reports it");
        assert_eq!(report.epoch_files[0].path, file);
        assert!(!report.epoch_files[0].repaired_at_open);
    }
    // Removing it (losing the history) lets the partition open with an empty one.
    fs::remove_file(&file).unwrap();
    let logs = open(dir.path(), small_config());
    assert!(pairs(&logs.partition(&tp("t", 0)).unwrap()).is_empty());
}

/// Recovery cutting an unsynced tail also cuts the epochs that started in it.
#[test]
fn a_recovery_cut_drops_the_epochs_that_started_in_the_lost_tail() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    log.assign_epoch(LeaderEpoch(1), 0).unwrap();
    log.append_durable(&batch(0, 2, 10, 0)).unwrap();
    log.assign_epoch(LeaderEpoch(2), 2).unwrap();
    log.append(&batch(2, 2, 10, 0)).unwrap();
    let segment = log.dir().join("00000000000000000000.log");
    drop(log);
    drop(logs); // crash
    // The unsynced batch is torn: its last byte never reached the disk.
    let bytes = fs::read(&segment).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap();
    let mut torn = bytes.clone();
    torn[end] ^= 0xff;
    fs::write(&segment, torn).unwrap();
    let (logs, report) =
        weir_storage::LogDir::open(dir.path(), quiet_dir_config(small_config())).unwrap();
    assert_eq!(report.truncations.len(), 1, "{report:?}");
    let log = logs.partition(&tp("t", 0)).unwrap();
    assert_eq!(log.high_watermark(), 2);
    assert_eq!(pairs(&log), [(1, 0)]);
    assert_eq!(on_disk(&log), [(1, 0)]);
}
