//! Damage below the recovery point, where recovery never looks (a bad sector in a sealed
//! segment): what reads serve, and what `verify_log_dir` reports.
//!
//! - Reads serve every whole batch before a torn or zeroed batch, from any earlier segment, and
//!   a read that starts at it is `CorruptLog` naming the partition and the first unreadable
//!   offset; nothing past it is served.
//! - The scrub, and `verify_batch_at` (its check of one batch, on demand), find a flipped
//!   payload bit, and reads stop before it from then on; a truncation at or past damage cuts
//!   where it starts (a follower healing), and the offsets are written again.
//! - `verify_log_dir` checks every batch, CRC included: a clean log passes, and each kind of
//!   damage (a flipped bit, a zeroed header, a torn batch) is reported at the right partition,
//!   segment, position and offset, while an unflushed torn tail past the recovery point is
//!   listed as a tail, not damage.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;
use weir_proto::batch::HEADER_LEN;
use weir_storage::verify::verify_segment;
use weir_storage::{LogConfig, ScanStop, StorageError, verify_log_dir};

const BATCHES: u64 = 80;

fn config() -> LogConfig {
    small_config()
}

/// A partition with several segments, closed cleanly or not; the sorted `.log` paths.
fn build(dir: &Path, clean: bool) -> Vec<PathBuf> {
    let logs = open(dir, config());
    let log = logs.create_partition(tp("v", 0), None).unwrap();
    for i in 0..BATCHES {
        log.append(&batch(i * 2, 2, 300, i as i64)).unwrap();
    }
    if clean {
        logs.close().unwrap();
    } else {
        log.flush().unwrap();
        drop(log);
        drop(logs);
    }
    let mut paths: Vec<_> = fs::read_dir(dir.join("v-0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 3,
        "the test needs sealed segments: {paths:?}"
    );
    paths
}

fn base_of(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// (position, base offset) of each batch of a sealed segment.
fn batches_of(path: &Path) -> Vec<(u64, u64)> {
    let bytes = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let h = weir_proto::batch::BatchHeader::parse(&bytes[pos..]).unwrap();
        out.push((pos as u64, h.base_offset));
        pos += h.total_len().unwrap();
    }
    out
}

#[test]
fn a_clean_log_verifies_clean() {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path(), true);
    let mut progressed = 0;
    let report = verify_log_dir(dir.path(), |n| progressed += n).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.partitions, 1);
    assert_eq!(report.segments, paths.len());
    assert_eq!(
        progressed,
        weir_storage::verify::log_bytes(dir.path()).unwrap()
    );
    assert!(report.bytes_checked > 0 && report.bytes_checked <= progressed);
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_is_found_at_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path(), true);
    let sealed = &paths[1];
    let batches = batches_of(sealed);
    let (pos, offset) = batches[1];
    // A payload byte: the header still parses, only the CRC can tell.
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(sealed)
        .unwrap();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, pos + 80).unwrap();
    f.write_all_at(&[byte[0] ^ 0x10], pos + 80).unwrap();
    let report = verify_log_dir(dir.path(), |_| {}).unwrap();
    assert_eq!(report.damage.len(), 1, "{report:?}");
    let d = &report.damage[0];
    assert_eq!(d.partition, tp("v", 0));
    assert_eq!(&d.segment, sealed);
    assert_eq!((d.position, d.offset), (pos, offset));
    assert!(matches!(d.reason, ScanStop::BadCrc(_)), "{:?}", d.reason);
    assert_eq!(d.bytes_lost, fs::metadata(sealed).unwrap().len() - pos);
}

#[test]
fn a_zeroed_header_in_a_sealed_segment_is_damage_not_a_tail() {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path(), true);
    let sealed = &paths[0];
    let batches = batches_of(sealed);
    let (pos, offset) = batches[batches.len() / 2];
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(sealed)
        .unwrap();
    f.write_all_at(&[0u8; HEADER_LEN], pos).unwrap();
    let report = verify_log_dir(dir.path(), |_| {}).unwrap();
    assert_eq!(report.damage.len(), 1, "{report:?}");
    assert_eq!(report.damage[0].offset, offset);
    assert_eq!(report.damage[0].reason, ScanStop::ZeroHeader);
    // The segment walk alone agrees.
    let len = fs::metadata(sealed).unwrap().len();
    let check = verify_segment(sealed, base_of(sealed), len).unwrap();
    assert_eq!((check.valid_len, check.next_offset), (pos, offset));
}

#[test]
fn a_torn_tail_past_the_recovery_point_is_a_tail_and_below_it_damage() {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path(), false);
    let active = paths.last().unwrap();
    let batches = batches_of_prefix(active);
    let (pos, offset) = *batches.last().unwrap();
    let f = fs::OpenOptions::new().write(true).open(active).unwrap();
    // Tear the last batch: keep its header, zero the rest of it.
    f.write_all_at(&[0u8; 100], pos + 70).unwrap();
    // An unclean stop before any checkpoint: the recovery point is 0, so the torn batch was
    // never acknowledged durable as far as the data dir can tell. A tail, not damage.
    let report = verify_log_dir(dir.path(), |_| {}).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.unflushed_tails.len(), 1, "{report:?}");
    assert_eq!(report.unflushed_tails[0].offset, offset);
    assert_eq!(report.unflushed_tails[0].position, pos);
    // A damaged sealed segment is damage whatever the checkpoint says.
    let sealed = &paths[0];
    let (spos, soffset) = batches_of(sealed)[2];
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(sealed)
        .unwrap();
    f.write_all_at(&[0xffu8; 4], spos + 8).unwrap();
    let report = verify_log_dir(dir.path(), |_| {}).unwrap();
    assert!(
        report
            .damage
            .iter()
            .any(|d| d.offset == soffset && &d.segment == sealed),
        "{report:?}"
    );
}

/// (position, base offset) of each batch of an active segment (stops at the zero tail).
fn batches_of_prefix(path: &Path) -> Vec<(u64, u64)> {
    let bytes = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + HEADER_LEN <= bytes.len() && bytes[pos..pos + HEADER_LEN].iter().any(|&b| b != 0) {
        let h = weir_proto::batch::BatchHeader::parse(&bytes[pos..]).unwrap();
        out.push((pos as u64, h.base_offset));
        pos += h.total_len().unwrap();
    }
    out
}

#[test]
fn reads_serve_every_batch_before_a_zeroed_batch_in_a_sealed_segment_then_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path(), true);
    let damaged = &paths[1];
    let batches = batches_of(damaged);
    let (pos, bad_offset) = batches[batches.len() / 2];
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(damaged)
        .unwrap();
    f.write_all_at(&[0u8; HEADER_LEN], pos).unwrap();

    let logs = open(dir.path(), config());
    let log = logs.partition(&tp("v", 0)).unwrap();
    let hw = log.high_watermark();
    // From the start of the log (an intact segment), in reads of any size: exactly the records
    // before the damage, then the error at it.
    for max_bytes in [1, 4096, 1 << 20] {
        let (ids, error) = read_until_error(&log, max_bytes);
        assert_eq!(
            ids,
            (0..bad_offset).collect::<Vec<_>>(),
            "max_bytes {max_bytes}"
        );
        match error {
            StorageError::CorruptLog {
                partition,
                offset,
                path,
                position,
                ..
            } => {
                assert_eq!(partition, "v-0");
                assert_eq!(offset, bad_offset);
                assert_eq!(&path, damaged);
                assert_eq!(position, pos);
            }
            other => panic!("expected CorruptLog, got {other:?}"),
        }
    }
    // Inside the damaged range too: the damage is named, nothing from past it is served.
    assert!(matches!(
        log.read(bad_offset + 1, 1 << 20),
        Err(StorageError::CorruptLog { offset, .. }) if offset == bad_offset
    ));
    // Later segments are intact and still readable on their own.
    let later = base_of(&paths[2]);
    let r = log.read(later, 1 << 20).unwrap();
    assert_eq!(records_of(&r)[0].0, later);
    assert!(later < hw);
}

#[test]
fn the_scrub_finds_a_flipped_bit_and_reads_stop_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path(), true);
    let damaged = &paths[1];
    let (pos, bad_offset) = batches_of(damaged)[3];
    // A payload bit: headers and lengths still agree, so only a CRC check can tell.
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(damaged)
        .unwrap();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, pos + 90).unwrap();
    f.write_all_at(&[byte[0] ^ 0x01], pos + 90).unwrap();

    let mut dir_config = quiet_dir_config(config());
    dir_config.scrub_bytes_per_sec = 1 << 30;
    let (logs, _) = weir_storage::LogDir::open(dir.path(), dir_config).unwrap();
    let log = logs.partition(&tp("v", 0)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let found = loop {
        if let Some(found) = log.known_damage() {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scrub never found the damage"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!((found.offset, found.position), (bad_offset, pos));
    assert_eq!(&found.segment, damaged);
    assert!(
        matches!(found.reason, ScanStop::BadCrc(_)),
        "{:?}",
        found.reason
    );

    // Reads now end before it and name it, as for damage a read finds itself.
    let (offsets, error) = read_until_error(&log, 1 << 20);
    assert_eq!(offsets.last().copied(), Some(bad_offset - 1));
    assert!(
        matches!(error, StorageError::CorruptLog { offset, .. } if offset == bad_offset),
        "{error:?}"
    );

    // Cutting the log at the damage forgets it: the offsets are written again and read back.
    log.truncate_to(bad_offset).unwrap();
    assert_eq!(log.known_damage(), None);
    log.append(&batch(bad_offset, 2, 300, 0)).unwrap();
    let r = log.read(bad_offset, 1 << 20).unwrap();
    assert_eq!(records_of(&r)[0].0, bad_offset);
    logs.close().unwrap();
}

/// `verify_batch_at`: the scrub's check of one batch, on demand (a leader whose follower keeps
/// refusing a batch asks it): an intact batch is `None`, a flipped payload bit is found at its
/// batch (asked at any offset inside it) and recorded, so reads stop before it from then on.
#[test]
fn verifying_one_batch_finds_a_flipped_bit_and_reads_stop_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path(), true);
    let damaged = &paths[1];
    let (pos, bad_offset) = batches_of(damaged)[2];
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(damaged)
        .unwrap();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, pos + 90).unwrap();
    f.write_all_at(&[byte[0] ^ 0x01], pos + 90).unwrap();

    let logs = open(dir.path(), config());
    let log = logs.partition(&tp("v", 0)).unwrap();
    assert_eq!(log.verify_batch_at(0).unwrap(), None, "an intact batch");
    assert_eq!(log.verify_batch_at(bad_offset - 1).unwrap(), None);
    assert_eq!(
        log.verify_batch_at(log.high_watermark()).unwrap(),
        None,
        "the log end"
    );
    assert_eq!(log.known_damage(), None);
    // Inside the damaged batch (each holds two records): found at its base.
    let found = log.verify_batch_at(bad_offset + 1).unwrap().unwrap();
    assert_eq!((found.offset, found.position), (bad_offset, pos));
    assert_eq!(&found.segment, damaged);
    assert!(
        matches!(found.reason, ScanStop::BadCrc(_)),
        "{:?}",
        found.reason
    );
    assert_eq!(log.known_damage(), Some(found));
    let (offsets, error) = read_until_error(&log, 1 << 20);
    assert_eq!(offsets.last().copied(), Some(bad_offset - 1));
    assert!(
        matches!(error, StorageError::CorruptLog { offset, .. } if offset == bad_offset),
        "{error:?}"
    );
    assert!(matches!(
        log.verify_batch_at(log.high_watermark() + 1),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    logs.close().unwrap();
}

/// `verify_batch_at` where the read itself meets damage (a zeroed header): the walk of that
/// sealed segment names it, as the scrub would, and records it.
#[test]
fn verifying_at_a_zeroed_header_finds_it_as_the_scrub_would() {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path(), true);
    let sealed = &paths[1];
    let (pos, offset) = batches_of(sealed)[2];
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(sealed)
        .unwrap();
    f.write_all_at(&[0u8; HEADER_LEN], pos).unwrap();
    let logs = open(dir.path(), config());
    let log = logs.partition(&tp("v", 0)).unwrap();
    assert_eq!(log.known_damage(), None);
    let found = log.verify_batch_at(offset).unwrap().unwrap();
    assert_eq!((found.offset, found.position), (offset, pos));
    assert_eq!(found.reason, ScanStop::ZeroHeader);
    assert_eq!(log.known_damage(), Some(found.clone()));
    assert_eq!(log.verify_batch_at(offset).unwrap(), Some(found), "known");
    logs.close().unwrap();
}

/// A follower cutting its log at damage the scrub found: `truncate_to` the damaged batch's
/// offset, or any offset past it in the same segment, cuts where the damaged batch starts (the
/// batch holding the offset cannot be told), and the log takes the offsets again.
#[test]
fn a_truncation_at_or_past_a_zeroed_header_cuts_where_the_damage_starts() {
    for past in [0, 3] {
        let dir = tempfile::tempdir().unwrap();
        let paths = build(dir.path(), true);
        let sealed = &paths[1];
        let (pos, offset) = batches_of(sealed)[2];
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(sealed)
            .unwrap();
        f.write_all_at(&[0u8; HEADER_LEN], pos).unwrap();
        let logs = open(dir.path(), config());
        let log = logs.partition(&tp("v", 0)).unwrap();
        assert_eq!(
            log.truncate_to(offset + past).unwrap(),
            offset,
            "past {past}"
        );
        assert_eq!(log.high_watermark(), offset);
        log.append(&batch(offset, 2, 300, 0)).unwrap();
        let ids: Vec<u64> = read_all(&log, 0, 1 << 20).iter().map(|r| r.1).collect();
        let mut expected: Vec<u64> = (0..offset).collect();
        expected.extend([offset, offset + 1]);
        assert_eq!(
            ids, expected,
            "dense, and the new batch where the damage was"
        );
        logs.close().unwrap();
    }
}

/// Reads from offset 0 in `max_bytes` steps until a read fails: the offsets read (each checked
/// to be the id written there, and no answer below the high watermark empty) and the error.
fn read_until_error(
    log: &weir_storage::PartitionLog,
    max_bytes: usize,
) -> (Vec<u64>, StorageError) {
    let mut at = 0;
    let mut offsets = Vec::new();
    loop {
        match log.read(at, max_bytes) {
            Ok(r) => {
                assert!(
                    !r.chunks.is_empty(),
                    "an empty answer below the high watermark"
                );
                offsets.extend(records_of(&r).into_iter().map(|(o, id, _)| {
                    assert_eq!(o, id, "offsets are the ids written");
                    o
                }));
                at = r.next_offset().unwrap();
            }
            Err(e) => return (offsets, e),
        }
    }
}
