//! Crash corpus: a log with several segments is stopped uncleanly, then its active `.log` is
//! cut at every byte of its last two batches, and single bits are flipped in their headers and
//! payloads. Every reopen must recover exactly the valid prefix, report the cut, and serve
//! nothing past it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use weir_storage::{LogConfig, LogDir, TruncationReport};

const BATCHES: u64 = 60;
const PER_BATCH: u64 = 2;

fn config() -> LogConfig {
    small_config()
}

/// Builds the template: a few segments, then an unclean stop. Returns the template dir, the
/// active segment's path, and the byte ranges of its last two batches.
fn template() -> (tempfile::TempDir, PathBuf, [(u64, u64); 2]) {
    let dir = tempfile::tempdir().unwrap();
    let t = tp("crash", 0);
    let logs = open(dir.path(), config());
    let log = logs.create_partition(t.clone(), None).unwrap();
    for i in 0..BATCHES {
        log.append(&batch(i * PER_BATCH, PER_BATCH as usize, 300, i as i64))
            .unwrap();
    }
    assert!(log.segment_count() >= 3, "several segments");
    // The last two batches are in the active segment: find their positions from a read.
    let last_two = log.read((BATCHES - 2) * PER_BATCH, 1 << 20).unwrap();
    assert_eq!(last_two.chunks.len(), 1);
    let chunk = &last_two.chunks[0];
    let second_len = batch((BATCHES - 2) * PER_BATCH, PER_BATCH as usize, 300, 0).len() as u64;
    let start = chunk.position;
    let ranges = [
        (start, start + second_len),
        (start + second_len, start + chunk.bytes.len() as u64),
    ];
    let active = dir.path().join(t.dir_name()).join(format!(
        "{:020}.log",
        active_base(&dir.path().join(t.dir_name()))
    ));
    drop(log);
    drop(logs); // unclean stop: no marker, preallocated tail left in place
    (dir, active, ranges)
}

fn active_base(partition_dir: &Path) -> u64 {
    let mut bases: Vec<u64> = fs::read_dir(partition_dir)
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    bases.sort_unstable();
    *bases.last().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// What a reopen of a damaged copy found.
struct Reopened {
    high_watermark: u64,
    records: Vec<(u64, u64, i64)>,
    truncations: Vec<TruncationReport>,
    /// The damaged active log's bytes, as recovery found them.
    damaged: Vec<u8>,
}

/// Copies the template, damages the active log with `damage`, reopens, and reports.
fn reopen_damaged(template: &Path, active: &Path, damage: impl FnOnce(&Path)) -> Reopened {
    let work = tempfile::tempdir().unwrap();
    copy_dir(template, work.path());
    let target = work.path().join(active.strip_prefix(template).unwrap());
    damage(&target);
    let damaged = fs::read(&target).unwrap();
    let (logs, report) = LogDir::open(work.path(), quiet_dir_config(config())).unwrap();
    assert!(!report.clean);
    let log = logs.partition(&tp("crash", 0)).unwrap();
    let high_watermark = log.high_watermark();
    let records = read_all(&log, 0, 4096);
    // Appending after recovery continues at the recovered end.
    assert_eq!(
        log.append(&batch(10_000, 1, 10, 0)).unwrap().base_offset,
        high_watermark
    );
    Reopened {
        high_watermark,
        records,
        truncations: report.truncations,
        damaged,
    }
}

fn assert_prefix(records: &[(u64, u64, i64)], hw: u64) {
    assert_eq!(records.len() as u64, hw);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(
            (r.0, r.1),
            (i as u64, i as u64),
            "recovered records are the original prefix"
        );
    }
}

#[test]
fn cut_at_every_byte_of_the_last_two_batches() {
    init_tracing();
    let (dir, active, [second_last, last]) = template();
    let (first_lost_second, first_lost_last) =
        ((BATCHES - 2) * PER_BATCH, (BATCHES - 1) * PER_BATCH);
    let mut reported = 0;
    for cut in second_last.0..=last.1 {
        let Reopened {
            high_watermark: hw,
            records,
            truncations,
            damaged: bytes,
        } = reopen_damaged(dir.path(), &active, |p| {
            let file = fs::OpenOptions::new().write(true).open(p).unwrap();
            file.set_len(cut).unwrap();
        });
        let expected_hw = if cut == last.1 {
            BATCHES * PER_BATCH
        } else if cut >= last.0 {
            first_lost_last
        } else {
            first_lost_second
        };
        assert_eq!(hw, expected_hw, "cut at byte {cut}");
        assert_prefix(&records, hw);
        // What recovery discards is the torn batch's surviving bytes; only zeros among them
        // (e.g. the high bytes of its base offset) are indistinguishable from the unwritten tail.
        let torn_start = if cut >= last.0 { last.0 } else { second_last.0 };
        let discarded_nonzero = cut != last.1
            && bytes[torn_start as usize..cut as usize]
                .iter()
                .any(|&b| b != 0);
        if !discarded_nonzero {
            assert!(
                truncations.is_empty(),
                "nothing but zeros discarded at cut {cut}: {truncations:?}"
            );
        } else {
            assert_eq!(truncations.len(), 1, "cut {cut} must be reported");
            assert_eq!(truncations[0].first_lost_offset, expected_hw);
            assert_eq!(
                truncations[0].valid_bytes + truncations[0].cut_bytes,
                cut,
                "the report accounts for every byte"
            );
            reported += 1;
        }
    }
    println!(
        "cut corpus: {} cuts, {reported} reported truncations",
        last.1 - second_last.0 + 1
    );
}

#[test]
fn single_bit_flips_in_the_last_two_batches_are_cut() {
    let (dir, active, [second_last, last]) = template();
    let mut cases = 0;
    for byte in second_last.0..last.1 {
        // Every bit of each header byte; one bit (rotating) of each payload byte.
        let in_header = (byte - second_last.0) < 57 || (byte >= last.0 && byte - last.0 < 57);
        let bits: Vec<u8> = if in_header {
            (0..8).collect()
        } else {
            vec![(byte % 8) as u8]
        };
        for bit in bits {
            let Reopened {
                high_watermark: hw,
                records,
                truncations,
                ..
            } = reopen_damaged(dir.path(), &active, |p| {
                let mut bytes = fs::read(p).unwrap();
                bytes[byte as usize] ^= 1 << bit;
                fs::write(p, bytes).unwrap();
            });
            let expected_hw = if byte >= last.0 {
                (BATCHES - 1) * PER_BATCH
            } else {
                (BATCHES - 2) * PER_BATCH
            };
            assert_eq!(hw, expected_hw, "flip of bit {bit} at byte {byte}");
            assert_prefix(&records, hw);
            assert_eq!(
                truncations.len(),
                1,
                "flip at byte {byte} bit {bit} must be reported"
            );
            cases += 1;
        }
    }
    println!("bit-flip corpus: {cases} flips, all detected and cut");
}
