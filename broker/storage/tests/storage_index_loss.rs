//! Index loss: deleting or garbling `.index`/`.timeindex` files must not change any answer.
//! Reopen (clean or not) rebuilds what it cannot trust, and lookups agree with the originals.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use weir_storage::PartitionLog;

/// Every answer the indexes influence: reads at many offsets and sizes, and time lookups.
fn answers(log: &PartitionLog) -> Vec<String> {
    let hw = log.high_watermark();
    let mut out = Vec::new();
    for offset in (0..hw).step_by(3) {
        for max in [1, 700, 5000] {
            out.push(format!(
                "read {offset} {max}: {:?}",
                records_of(&log.read(offset, max).unwrap())
            ));
        }
    }
    for ts in (-10..(hw as i64 * 5 + 10)).step_by(7) {
        out.push(format!("time {ts}: {:?}", log.offset_for_time(ts).unwrap()));
    }
    out
}

fn index_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "index" || e == "timeindex")
        })
        .collect();
    v.sort();
    v
}

fn build(dir: &Path) -> Vec<String> {
    let logs = open(dir, small_config());
    let log = logs.create_partition(tp("idx", 0), None).unwrap();
    for i in 0..150u64 {
        // Timestamps mostly rising, sometimes jumping back.
        let ts = if i % 17 == 0 {
            (i as i64) * 5 - 40
        } else {
            (i as i64) * 5
        };
        log.append(&batch(i * 2, 2, 150, ts)).unwrap();
    }
    assert!(log.segment_count() >= 3);
    let want = answers(&log);
    drop(log);
    logs.close().unwrap();
    want
}

fn check(dir: &Path, want: &[String], damage: impl Fn(&Path)) {
    let partition_dir = dir.join("idx-0");
    let files = index_files(&partition_dir);
    assert!(files.len() >= 6, "index files of every segment: {files:?}");
    for f in &files {
        damage(f);
    }
    let logs = open(dir, small_config());
    let log = logs.partition(&tp("idx", 0)).unwrap();
    assert_eq!(answers(&log), want);
    // Rebuilt indexes were written back: they pass a clean reopen's checks again.
    drop(log);
    logs.close().unwrap();
    let logs = open(dir, small_config());
    assert_eq!(answers(&logs.partition(&tp("idx", 0)).unwrap()), want);
}

#[test]
fn deleted_indexes_are_rebuilt() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let want = build(dir.path());
    check(dir.path(), &want, |f| fs::remove_file(f).unwrap());
}

#[test]
fn garbled_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let want = build(dir.path());
    check(dir.path(), &want, |f| {
        let mut bytes = fs::read(f).unwrap();
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = b.wrapping_mul(31).wrapping_add(i as u8);
        }
        fs::write(f, bytes).unwrap();
    });
}

#[test]
fn truncated_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let want = build(dir.path());
    check(dir.path(), &want, |f| {
        let len = fs::metadata(f).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(f)
            .unwrap()
            .set_len(len.saturating_sub(5))
            .unwrap();
    });
}

#[test]
fn plausible_but_wrong_positions_do_not_change_reads() {
    // Shift every position by a little: entries stay sorted and in range, so only the reader's
    // own header checks can notice.
    let dir = tempfile::tempdir().unwrap();
    let want = build(dir.path());
    check(dir.path(), &want, |f| {
        if f.extension().is_some_and(|e| e == "index") {
            let mut bytes = fs::read(f).unwrap();
            for entry in bytes.chunks_exact_mut(8) {
                let pos = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]);
                entry[4..8].copy_from_slice(&(pos + 1).to_be_bytes());
            }
            fs::write(f, bytes).unwrap();
        }
    });
}
