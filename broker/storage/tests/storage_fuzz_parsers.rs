//! Bounded runs, on stable, of the storage engine's fuzz targets (`fuzz/fuzz_targets/`, which run
//! the same checks unbounded under cargo-fuzz): the checkpoint reader, the derived-state
//! snapshot decoder, the segment scan, the index files' checks and lookups, and the
//! leader-epoch file's decoder. Each target runs
//! over its committed seed corpus (files of a real data directory) and cuts of it, over
//! arbitrary bytes, and over mutated seeds; every case must not panic, must finish, and must
//! allocate within its declared bound (see `proto/tests/support/fuzz_harness.rs`).
//!
//! `PROPTEST_CASES=100000 cargo test -p weir-storage --test storage_fuzz_parsers` searches
//! longer. `WEIR_REGENERATE_CORPUS=1 cargo test -p weir-storage --test storage_fuzz_parsers
//! corpus` rewrites the seeds from a data directory written by the engine itself.

mod common;
#[macro_use]
#[path = "../../../proto/tests/support/fuzz_harness.rs"]
mod fuzz_harness;

use std::fs;
use std::path::Path;

use common::*;
use weir_proto::batch::{BatchBuilder, RecordInput};
use weir_storage::fuzz_checks::TARGETS;
use weir_storage::{LogConfig, LogDir, PartitionLog};

fuzz_target_tests!(TARGETS; checkpoint, derived_snapshot, segment_scan, segment_index, epoch_history);

type Seeds = Vec<(String, Vec<u8>)>;

/// A batch of `count` records keyed `acct-{n % 5}`, from an idempotent producer if `producer`
/// is given as (id, epoch, first sequence).
fn keyed_batch(first: u64, count: usize, producer: Option<(i64, i16, i32)>) -> Vec<u8> {
    let mut b = match producer {
        Some((id, epoch, seq)) => BatchBuilder::new().producer(id, epoch, seq),
        None => BatchBuilder::new(),
    };
    for i in 0..count as u64 {
        let key = format!("acct-{}", (first + i) % 5);
        let value = format!("{}:event", first + i);
        b.push(RecordInput {
            key: Some(key.as_bytes()),
            value: Some(value.as_bytes()),
            timestamp: 1_700_000_000_000 + (first + i) as i64,
            headers: &[],
        })
        .unwrap();
    }
    b.build().unwrap().to_vec()
}

fn fill(log: &PartitionLog, batches: u64, producer: Option<(i64, i16)>) {
    let mut seq = 0;
    for i in 0..batches {
        let count = 1 + (i % 3) as usize;
        let p = producer.map(|(id, epoch)| (id, epoch, seq));
        log.append(&keyed_batch(i * 3, count, p)).unwrap();
        seq += count as i32;
    }
}

fn container(base: u64, parts: &[&[u8]], log: &[u8]) -> Vec<u8> {
    let mut out = base.to_be_bytes().to_vec();
    for part in parts {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(log);
    out
}

fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().ok()?;
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// Seeds from a data directory the engine wrote: three partitions (one with a key index and
/// an idempotent producer, one with an idempotent producer only), several segments each, a
/// clean close; then one more append and a crash, for an active segment with its
/// preallocated tail.
fn generated_corpus() -> Vec<(&'static str, Seeds)> {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 2 << 10,
        max_batch_bytes: 1 << 10,
        preallocate_min_bytes: 1 << 10,
        preallocate_max_bytes: 2 << 10,
        index_interval_bytes: 128,
        key_index: true,
        ..small_config()
    };
    let logs = open(dir.path(), config.clone());
    let (keyed, plain, other) = (tp("orders", 2), tp("payments-eu", 0), tp("orders", 10));
    fill(
        &logs.create_partition(keyed.clone(), None).unwrap(),
        100,
        Some((7, 0)),
    );
    let plain_config = LogConfig {
        key_index: false,
        ..config.clone()
    };
    fill(
        &logs
            .create_partition(plain.clone(), Some(plain_config))
            .unwrap(),
        12,
        Some((3, 2)),
    );
    // Leadership changed a few times on `other` (epochs 1, 2 and 5; 3 and 4 never wrote).
    let other_log = logs.create_partition(other.clone(), None).unwrap();
    for (epoch, batches) in [(1, 3), (2, 2), (5, 4)] {
        let at = other_log.high_watermark();
        other_log
            .assign_epoch(weir_replication::LeaderEpoch(epoch), at)
            .unwrap();
        for i in 0..batches {
            other_log.append(&keyed_batch(at + i * 3, 2, None)).unwrap();
        }
    }
    drop(other_log);
    logs.close().unwrap();

    let read = |p: &Path| fs::read(p).unwrap();
    let keyed_dir = dir.path().join(keyed.dir_name());
    let snapshot = |tp: &weir_storage::TopicPartition| {
        read(
            &dir.path()
                .join(tp.dir_name())
                .join("derived-state.snapshot"),
        )
    };
    let checkpoints: Seeds = vec![
        (
            "recovery-point".into(),
            read(&dir.path().join("recovery-point-offset-checkpoint")),
        ),
        (
            "log-start".into(),
            read(&dir.path().join("log-start-offset-checkpoint")),
        ),
        ("empty".into(), b"0\n0\n".to_vec()),
    ];
    let epochs: Seeds = vec![
        (
            "three-leaders".into(),
            read(&dir.path().join(other.dir_name()).join("leader-epoch")),
        ),
        (
            "one-leader".into(),
            weir_storage::leader_epoch::encode(&{
                let mut h = weir_replication::EpochHistory::new();
                h.assign(weir_replication::LeaderEpoch(0), 0).unwrap();
                h
            }),
        ),
        (
            "empty".into(),
            weir_storage::leader_epoch::encode(&weir_replication::EpochHistory::new()),
        ),
    ];
    let snapshots: Seeds = vec![
        ("with-keys".into(), snapshot(&keyed)),
        ("producers-only".into(), snapshot(&plain)),
    ];
    let bases = segment_bases(&keyed_dir);
    assert!(bases.len() >= 3, "several segments: {bases:?}");
    let files = |base: u64| {
        let f = |suffix: &str| read(&keyed_dir.join(format!("{base:020}.{suffix}")));
        (f("log"), f("index"), f("timeindex"))
    };
    let (first_log, first_index, first_times) = files(bases[0]);
    let (second_log, second_index, second_times) = files(bases[1]);
    assert!(
        !second_index.is_empty() && !second_times.is_empty(),
        "seed indexes have entries"
    );
    let mut scans: Seeds = vec![
        ("first-segment".into(), container(bases[0], &[], &first_log)),
        (
            "second-segment".into(),
            container(bases[1], &[], &second_log),
        ),
    ];
    let indexes: Seeds = vec![
        (
            "first-segment".into(),
            container(bases[0], &[&first_index, &first_times], &first_log),
        ),
        (
            "second-segment".into(),
            container(bases[1], &[&second_index, &second_times], &second_log),
        ),
    ];

    // An unclean stop: the active segment keeps its zero-filled preallocated tail.
    let (logs, _) = LogDir::open(dir.path(), quiet_dir_config(config)).unwrap();
    let log = logs.partition(&keyed).unwrap();
    log.append(&keyed_batch(500, 2, None)).unwrap();
    let active = *segment_bases(&keyed_dir).last().unwrap();
    drop(log);
    drop(logs);
    let tail = read(&keyed_dir.join(format!("{active:020}.log")));
    assert!(
        tail.ends_with(&[0; 64]),
        "the active segment has a zero tail"
    );
    scans.push(("active-with-tail".into(), container(active, &[], &tail)));
    // Batches with the largest record count: the fourth passes the 2^32 - 1 offsets a segment
    // holds.
    let huge: Vec<u8> = (0..4u64)
        .flat_map(|i| crafted_batch(i * i32::MAX as u64, i32::MAX))
        .collect();
    scans.push(("huge-record-counts".into(), container(0, &[], &huge)));

    use fuzz_harness::with_truncations;
    let scan_cuts = [8, 65, 100, 200, first_log.len() / 2];
    vec![
        (
            "checkpoint",
            with_truncations(checkpoints, &[0, 1, 2, 3, 20]),
        ),
        (
            "derived_snapshot",
            with_truncations(snapshots, &[4, 8, 17, 29, 60]),
        ),
        ("segment_scan", with_truncations(scans, &scan_cuts)),
        ("segment_index", with_truncations(indexes, &[8, 16, 30, 60])),
        ("epoch_history", with_truncations(epochs, &[4, 8, 12, 30])),
    ]
}

/// With `WEIR_REGENERATE_CORPUS=1`, rewrites the committed corpus from a fresh data directory
/// (snapshots list producers in hash order, so regenerated bytes differ run to run; the
/// committed files are one such run).
#[test]
fn regenerate_seed_corpus() {
    if fuzz_harness::regenerate() {
        for (target, seeds) in generated_corpus() {
            fuzz_harness::write_corpus(target, &seeds);
        }
    }
}

/// The uncut committed seeds are what they claim to be, so mutations start deep in each parser:
/// checkpoints with entries, snapshots with producers (and keys), whole segments whose scans
/// end at their end or at their zero tail, index files that pass the reopen checks.
#[test]
fn committed_seeds_are_valid_inputs() {
    let whole = |target: &str| {
        fuzz_harness::load_corpus(target)
            .into_iter()
            .filter(|(name, _)| !name.contains(".cut"))
            .collect::<Vec<_>>()
    };
    for (name, bytes) in whole("checkpoint") {
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("0\n"), "{name}");
    }
    for (name, bytes) in whole("derived_snapshot") {
        let s = weir_storage::derived_snapshot::decode(&bytes).expect("snapshot seed decodes");
        assert!(!s.producers.is_empty(), "{name}");
        assert_eq!(s.keys.is_some(), name == "with-keys", "{name}");
    }
    for (name, bytes) in whole("epoch_history") {
        let h = weir_storage::leader_epoch::decode(&bytes).expect("epoch seed decodes");
        let expected = match name.as_str() {
            "three-leaders" => 3,
            "one-leader" => 1,
            _ => 0,
        };
        assert_eq!(h.entries().len(), expected, "{name}");
    }
    assert!(whole("segment_scan").len() >= 3);
    assert!(whole("segment_index").len() >= 2);
    for target in [
        "segment_scan",
        "segment_index",
        "checkpoint",
        "derived_snapshot",
        "epoch_history",
    ] {
        for (_, bytes) in whole(target) {
            fuzz_harness::run_case(TARGETS.iter().find(|t| t.name == target).unwrap(), bytes);
        }
    }
}

#[test]
fn the_fuzz_crate_runs_these_checks() {
    fuzz_harness::fuzz_crate_declares(TARGETS, "weir_storage::fuzz_checks");
}

/// Found while writing the checkpoint target: a checkpoint file that is not UTF-8 made opening
/// the data directory fail with an I/O error; the spec says a malformed checkpoint counts as
/// empty (recovery then scans whole logs, and nothing is lost).
#[test]
fn a_data_dir_opens_when_a_checkpoint_is_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let t = tp("t", 0);
    let logs = open(dir.path(), small_config());
    fill(&logs.create_partition(t.clone(), None).unwrap(), 5, None);
    drop(logs); // unclean: recovery reads the checkpoint
    fs::write(
        dir.path().join("recovery-point-offset-checkpoint"),
        b"0\n1\nt 0 \xff\n",
    )
    .unwrap();
    fs::write(dir.path().join("log-start-offset-checkpoint"), b"\xfe\xff").unwrap();
    let (logs, report) = LogDir::open(dir.path(), quiet_dir_config(small_config())).unwrap();
    assert!(!report.clean);
    assert_eq!(logs.partition(&t).unwrap().high_watermark(), 9);
}

/// Found by the `segment_index` target (after main asserted index invariants in debug builds):
/// a clean reopen resumes the active segment's `.timeindex` from its file, and one whose last
/// entry claims a later relative offset than the log reaches, with an older timestamp than the
/// tail's batches, made the resumed builder push an entry that goes back: a debug build
/// panicked. The reopen must instead notice the stale index and rebuild it.
#[test]
fn a_clean_reopen_survives_an_active_time_index_that_runs_past_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let t = tp("t", 0);
    let config = LogConfig {
        index_interval_bytes: 1,
        ..small_config()
    };
    let logs = open(dir.path(), config.clone());
    let log = logs.create_partition(t.clone(), None).unwrap();
    for i in 0..6u64 {
        // Timestamps 10 apart, so an entry can be slipped in below the last batch's.
        let b = weir_proto::batch::BatchBuilder::new();
        let mut b = b;
        b.push(RecordInput {
            key: None,
            value: Some(b"v"),
            timestamp: 1000 + 10 * i as i64,
            headers: &[],
        })
        .unwrap();
        log.append(&b.build().unwrap()).unwrap();
    }
    drop(log);
    logs.close().unwrap();
    let times_path = dir
        .path()
        .join(t.dir_name())
        .join(format!("{:020}.timeindex", 0));
    let mut times = fs::read(&times_path).unwrap();
    assert!(times.len() >= 24, "time entries per batch");
    // The last entry: a timestamp just above the one before it, a relative offset past the log.
    let last = times.len() - 12;
    let prev_ts = i64::from_be_bytes(times[last - 12..last - 4].try_into().unwrap());
    times[last..last + 8].copy_from_slice(&(prev_ts + 1).to_be_bytes());
    times[last + 8..].copy_from_slice(&100u32.to_be_bytes());
    fs::write(&times_path, &times).unwrap();

    let (logs, report) = LogDir::open(dir.path(), quiet_dir_config(config)).unwrap();
    assert!(report.clean);
    let log = logs.partition(&t).unwrap();
    assert_eq!(log.high_watermark(), 6);
    assert_eq!(log.offset_for_time(1055).unwrap(), None);
    assert_eq!(log.offset_for_time(1050).unwrap(), Some(5));
}

/// A batch of `count` records' header with a single record (scan checks headers and CRCs,
/// not records): what a crafted or garbled segment can hold.
fn crafted_batch(base_offset: u64, count: i32) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    b.push(RecordInput {
        value: Some(b"v"),
        ..Default::default()
    })
    .unwrap();
    let mut bytes = b.build().unwrap().to_vec();
    bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
    bytes[19..23].copy_from_slice(&(count - 1).to_be_bytes());
    bytes[53..57].copy_from_slice(&count.to_be_bytes());
    let crc = crc32fast::hash(&bytes[17..]);
    bytes[13..17].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// Found writing the `segment_scan` target: a segment holds at most 2^32 - 1 offsets (index
/// entries are relative u32s, and the log rolls before a segment would pass that), but recovery's
/// scan accepted dense batches past it, so the index builder got entries that do not fit 32 bits
/// (a debug build panicked; a release build wrapped them). Recovery must cut there instead.
#[test]
fn recovery_cuts_a_segment_whose_batches_pass_u32_relative_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let t = tp("t", 0);
    let config = LogConfig {
        index_interval_bytes: 1,
        ..small_config()
    };
    drop(
        open(dir.path(), config.clone())
            .create_partition(t.clone(), None)
            .unwrap(),
    );
    let count = i32::MAX;
    let mut log = Vec::new();
    let mut next = 0u64;
    for _ in 0..4 {
        log.extend(crafted_batch(next, count));
        next += count as u64;
    }
    let partition = dir.path().join(t.dir_name());
    for e in fs::read_dir(&partition).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    fs::write(partition.join(format!("{:020}.log", 0)), &log).unwrap();

    let (logs, report) = LogDir::open(dir.path(), quiet_dir_config(config)).unwrap();
    assert!(!report.clean);
    let log = logs.partition(&t).unwrap();
    // Two batches end at 2^32 - 2 offsets; the third would end past 2^32 - 1.
    assert_eq!(log.high_watermark(), 2 * count as u64);
    assert_eq!(report.truncations.len(), 1, "{:?}", report.truncations);
}
