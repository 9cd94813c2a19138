//! Disk full: on a small tmpfs the log runs out of space while reserving blocks. Appends fail
//! with a typed `DiskFull` error (never SIGBUS, which would kill this test process), nothing is
//! half-written, reads keep working, and appends succeed again once space is freed.
//!
//! Needs permission to mount a tmpfs (root in CI); skipped with a message otherwise.

mod common;

use common::*;
use weir_storage::{LogConfig, StorageError};
use weir_testkit::Tmpfs;

#[test]
fn disk_full_is_an_error_and_recoverable() {
    init_tracing();
    let Some(mount) = Tmpfs::mount("2m", "disk_full") else {
        return;
    };
    let data = mount.path().join("data");
    let ballast = mount.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 512 << 10]).unwrap();
    let config = LogConfig {
        segment_bytes: 256 << 10,
        max_batch_bytes: 16 << 10,
        preallocate_min_bytes: 32 << 10,
        preallocate_max_bytes: 64 << 10,
        ..small_config()
    };
    let logs = open(&data, config);
    let log = logs.create_partition(tp("full", 0), None).unwrap();
    let mut appended = 0u64;
    let err = loop {
        match log.append(&batch(appended, 4, 2000, 0)) {
            Ok(info) => {
                assert_eq!(info.base_offset, appended);
                appended += 4;
            }
            Err(e) => break e,
        }
        assert!(appended < 100_000, "never filled the disk");
    };
    assert!(
        matches!(err, StorageError::DiskFull { .. }),
        "typed error, got {err}"
    );
    assert!(err.is_disk_full());
    println!("disk full after {appended} records: {err}");
    // Nothing half-written: the log ends at the last acknowledged batch and reads back whole.
    assert_eq!(log.high_watermark(), appended);
    let all = read_all(&log, 0, 1 << 16);
    assert_eq!(all.len() as u64, appended);
    // Still full: still an error, still nothing written.
    assert!(
        log.append(&batch(appended, 4, 2000, 0))
            .unwrap_err()
            .is_disk_full()
    );
    assert_eq!(log.high_watermark(), appended);
    // Space comes back: appends work again.
    std::fs::remove_file(&ballast).unwrap();
    let info = log.append(&batch(appended, 4, 2000, 0)).unwrap();
    assert_eq!(info.base_offset, appended);
    logs.close().unwrap();
    let logs = open(&data, small_config());
    assert_eq!(
        read_all(&logs.partition(&tp("full", 0)).unwrap(), 0, 1 << 16).len() as u64,
        appended + 4
    );
}
