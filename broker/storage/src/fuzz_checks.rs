//! Property checks for the storage engine's parsers of on-disk bytes, one per fuzz target.
//!
//! A data directory is read back after crashes, bad sectors and people: every file format is
//! parsed as untrusted input. Shared by the cargo-fuzz targets in `fuzz/fuzz_targets/` and by
//! the bounded runs on stable in `tests/storage_fuzz_parsers.rs`; not an API (hidden from the
//! docs). The [`Target`] type and the conventions (`parse` is the production path and is held
//! to `max_alloc`; `check` panics when a property fails) are those of
//! `weir_proto::fuzz_checks`.
//!
//! Inputs that stand for several files, or for a file and its name, are containers:
//! - `segment_scan`: an 8-byte big-endian base offset (the `.log` file's name), then the `.log`.
//! - `segment_index`: the base offset, then a `u32` length and the `.index` bytes, a `u32` length
//!   and the `.timeindex` bytes, then the `.log` (lengths past the end are clamped).
//!
//! `epoch_history` is the `leader-epoch` file (the epoch history replication keeps beside each
//! partition), as opening a partition decodes it.

use std::hint::black_box;

use weir_proto::batch::{BatchHeader, NO_PRODUCER_ID};
use weir_proto::fuzz_checks::fix_batch_crcs;
pub use weir_proto::fuzz_checks::{ALLOC_SLACK, Target};
use weir_proto::topic::{TopicPartition, validate_topic_name};

use crate::checkpoint::{parse_offsets, render_offsets};
use crate::derived_snapshot;
use crate::index::{
    IndexBuilder, OffsetEntry, check_offset_index, check_time_index, lookup_offset, lookup_time,
    offset_entry, offset_entry_count, time_entry, time_entry_count,
};
use crate::leader_epoch;
use crate::scan::{ScanOutcome, ScanStop, scan_batches};

/// The storage engine's targets.
pub const TARGETS: &[Target] = &[
    Target {
        name: "checkpoint",
        parse: parse_checkpoint,
        max_alloc: checkpoint_max_alloc,
        check: check_checkpoint,
        fix_checksums: |_| {},
        length_fields: &[],
        tokens: &[
            b"\n",
            b" ",
            b"\r",
            b"\r\n",
            b"+",
            b"-",
            b"0",
            b"00",
            b"4294967295",
            b"4294967296",
            b"18446744073709551615",
            b"18446744073709551616",
            b"9223372036854775808",
            b".",
            b"..",
            b"-0",
            b"\xff",
            b"\xc3\xa9",
            b"\t",
            b"a-b_c.d",
        ],
    },
    Target {
        name: "derived_snapshot",
        parse: parse_derived_snapshot,
        max_alloc: derived_snapshot_max_alloc,
        check: check_derived_snapshot,
        fix_checksums: fix_snapshot_crc,
        // `through`, then the producer count (after a 12-byte last batch), its first producer's
        // batch count byte, the producer count when no last batch is named; in a snapshot of
        // one producer with 5 batches (the `with-keys` seed), the key count and first key length.
        length_fields: &[(8, 8), (29, 4), (43, 1), (17, 4), (165, 4), (169, 4)],
        tokens: &[],
    },
    Target {
        name: "segment_scan",
        parse: parse_segment_scan,
        max_alloc: segment_scan_max_alloc,
        check: check_segment_scan,
        fix_checksums: |buf| fix_batch_crcs(buf.get_mut(8..).unwrap_or_default()),
        // The base offset; the first batch's base offset, batch_length, last_offset_delta and
        // record_count.
        length_fields: &[(0, 8), (8, 8), (16, 4), (27, 4), (61, 4)],
        tokens: &[],
    },
    Target {
        name: "segment_index",
        parse: parse_segment_index,
        max_alloc: segment_index_max_alloc,
        check: check_segment_index,
        fix_checksums: fix_segment_container_crcs,
        // The base offset, the two length prefixes, the first offset-index entry.
        length_fields: &[(0, 8), (8, 4), (12, 4), (16, 4)],
        tokens: &[],
    },
    Target {
        name: "epoch_history",
        parse: parse_epoch_history,
        max_alloc: epoch_history_max_alloc,
        check: check_epoch_history,
        fix_checksums: fix_snapshot_crc,
        // The entry count; the first entry's epoch and start offset.
        length_fields: &[(8, 4), (12, 4), (16, 8)],
        tokens: &[],
    },
];

/// The index interval of the scans here: small, so that seed segments produce entries.
const INDEX_INTERVAL: u32 = 64;

// ---------------------------------------------------------------------------------------------
// checkpoint: `recovery-point-offset-checkpoint` and `log-start-offset-checkpoint`.

/// What opening a data directory runs on each checkpoint file's bytes.
pub fn parse_checkpoint(bytes: &[u8]) {
    let _ = black_box(parse_offsets(bytes));
}

/// The map holds one entry (a B-tree slot and a shared topic name) per line of at least 6 bytes;
/// an error quotes one line, escaped (at most 10 bytes out per byte in).
pub fn checkpoint_max_alloc(len: usize) -> usize {
    32 * len + ALLOC_SLACK
}

/// Properties of the checkpoint reader:
/// - it accepts exactly what a reader written from `segments-format.md` ("Checkpoints")
///   accepts, with the same entries;
/// - what it accepts, rendered as the writer renders it, reads back as the same entries.
pub fn check_checkpoint(bytes: &[u8]) {
    parse_checkpoint(bytes);
    let parsed = parse_offsets(bytes);
    let reference = reference_checkpoint(bytes);
    assert_eq!(
        parsed.as_ref().ok(),
        reference.as_ref(),
        "the checkpoint reader and the spec disagree ({:?})",
        parsed.as_ref().err()
    );
    if let Ok(map) = parsed {
        let text = render_offsets(&map);
        assert_eq!(
            parse_offsets(text.as_bytes()).ok(),
            Some(map),
            "render/parse round trip"
        );
    }
}

/// The checkpoint format as `segments-format.md` states it, independently of `checkpoint.rs`.
fn reference_checkpoint(bytes: &[u8]) -> Option<std::collections::BTreeMap<TopicPartition, u64>> {
    // "Text files: ASCII, lines end in \n"; a last line without its \n is still a line.
    let text = std::str::from_utf8(bytes).ok().filter(|t| t.is_ascii())?;
    let mut lines: Vec<&str> = text.split('\n').collect();
    if text.ends_with('\n') {
        lines.pop();
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if lines.first() != Some(&"0") || !lines.get(1).is_some_and(|l| digits(l)) {
        return None;
    }
    let count: usize = lines[1].parse().ok()?;
    let mut entries = std::collections::BTreeMap::new();
    for line in &lines[2..] {
        let fields: Vec<&str> = line.split(' ').collect();
        let [topic, partition, offset] = fields[..] else {
            return None;
        };
        if validate_topic_name(topic).is_err() || !digits(partition) || !digits(offset) {
            return None;
        }
        let tp = TopicPartition::new(topic, partition.parse::<u32>().ok()?);
        entries.insert(tp, offset.parse::<u64>().ok()?);
    }
    (entries.len() == count).then_some(entries)
}

// ---------------------------------------------------------------------------------------------
// derived_snapshot: `derived-state.snapshot` (idempotent-producer states and key index).

/// What a partition runs on its snapshot file before it trusts it.
pub fn parse_derived_snapshot(bytes: &[u8]) {
    black_box(derived_snapshot::decode(bytes));
}

/// Per producer (11 bytes of input at least) a hash-table slot and room for its recent batches;
/// per key (12 bytes at least) a slot and the key's bytes; tables double as they fill.
pub fn derived_snapshot_max_alloc(len: usize) -> usize {
    64 * len + ALLOC_SLACK
}

/// Properties of the snapshot decoder:
/// - what it accepts re-encodes to at most as many bytes (repeated producer ids or keys
///   collapse), and the re-encoding decodes to the same state, whose encoding is as long;
/// - the decoded producer states answer sequence checks for any header without panicking.
pub fn check_derived_snapshot(bytes: &[u8]) {
    parse_derived_snapshot(bytes);
    let Some(s) = derived_snapshot::decode(bytes) else {
        return;
    };
    let again = derived_snapshot::encode(s.through, s.last_batch, &s.producers, s.keys.as_ref());
    assert!(again.len() <= bytes.len(), "re-encoding grew the snapshot");
    let t = derived_snapshot::decode(&again).expect("a re-encoded snapshot decodes");
    assert_eq!((t.through, t.last_batch), (s.through, s.last_batch));
    assert_eq!(t.producers.len(), s.producers.len());
    assert_eq!(
        t.keys.as_ref().map(|k| k.len()),
        s.keys.as_ref().map(|k| k.len())
    );
    let third = derived_snapshot::encode(t.through, t.last_batch, &t.producers, t.keys.as_ref());
    assert_eq!(
        third.len(),
        again.len(),
        "the state changed across a round trip"
    );
    for id in [NO_PRODUCER_ID, 0, 1, 7, i64::MAX] {
        for epoch in [-1, 0, 2, i16::MAX] {
            for (seq, count) in [(0, 1), (5, 3), (i32::MAX, 1), (i32::MAX, i32::MAX), (-1, 1)] {
                let header = BatchHeader {
                    base_offset: 0,
                    batch_length: 0,
                    magic: 1,
                    crc: 0,
                    attributes: 0,
                    last_offset_delta: count - 1,
                    base_timestamp: 0,
                    max_timestamp: 0,
                    producer_id: id,
                    producer_epoch: epoch,
                    base_sequence: seq,
                    record_count: count,
                };
                let _ = black_box(s.producers.check(&header));
            }
        }
    }
}

/// Recomputes a snapshot's CRC (bytes 4..8, over everything after them).
pub fn fix_snapshot_crc(buf: &mut [u8]) {
    if buf.len() >= 8 {
        let crc = crc32fast::hash(&buf[8..]);
        buf[4..8].copy_from_slice(&crc.to_be_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// segment_scan: `scan_batches` over a `.log`, as recovery, clean reopens and index rebuilds
// run it.

/// Splits the 8-byte base offset off a container. Base offsets are offsets, at most
/// `i64::MAX` (the top bit is dropped), which keeps `base + relative offset` in range.
fn split_base(input: &[u8]) -> Option<(u64, &[u8])> {
    let base = u64::from_be_bytes(input.get(..8)?.try_into().ok()?) & i64::MAX as u64;
    Some((base, &input[8..]))
}

fn scan_with_index(log: &[u8], base: u64, verify_crc: bool) -> (ScanOutcome, IndexBuilder) {
    let mut index = IndexBuilder::new(base, INDEX_INTERVAL);
    let outcome = scan_batches(log, 0, base, verify_crc, Some(&mut index));
    index.finish();
    (outcome, index)
}

/// The scans recovery runs on a segment: with CRC checks (an unclean open, a rebuild) and
/// without (truncation re-reading bytes it validated), building the indexes as they go.
pub fn parse_segment_scan(input: &[u8]) {
    let Some((base, log)) = split_base(input) else {
        return;
    };
    for verify_crc in [true, false] {
        black_box(scan_with_index(log, base, verify_crc));
    }
}

/// The index entries: at most 20 bytes per batch of at least 57 bytes, in vectors that double.
pub fn segment_scan_max_alloc(len: usize) -> usize {
    len + ALLOC_SLACK
}

/// Properties of the scan:
/// - the valid prefix is whole batches, dense from the base offset, CRCs matching when checked,
///   and it ends where the scan says; the stop reason describes the bytes where it stopped;
/// - the valid prefix alone scans to its end, and a scan resumed at any offset-index entry (as a
///   clean reopen resumes) stops at the same place for the same reason;
/// - with CRC checks the valid prefix is a prefix of the one without;
/// - it stops before a batch past the 2^32 - 1 offsets or bytes a segment holds, so the indexes
///   built on the way pass the checks a reopen applies to index files, and their offset
///   entries point at batch starts.
pub fn check_segment_scan(input: &[u8]) {
    parse_segment_scan(input);
    let Some((base, log)) = split_base(input) else {
        return;
    };
    let mut prefixes = [0u64; 2];
    for (i, verify_crc) in [true, false].into_iter().enumerate() {
        let (outcome, index) = scan_with_index(log, base, verify_crc);
        let starts = check_valid_prefix(log, base, verify_crc, &outcome);
        prefixes[i] = outcome.valid_len;
        let alone = scan_batches(
            &log[..outcome.valid_len as usize],
            0,
            base,
            verify_crc,
            None,
        );
        assert_eq!(
            alone,
            ScanOutcome {
                stop: None,
                ..outcome.clone()
            },
            "the valid prefix alone does not scan to its end"
        );
        for e in (0..offset_entry_count(&index.offsets)).map(|i| offset_entry(&index.offsets, i)) {
            let at = starts.iter().find(|(pos, _)| *pos == u64::from(e.position));
            assert_eq!(
                at.map(|(_, offset)| *offset),
                Some(base + u64::from(e.relative_offset)),
                "offset index entry {e:?} does not point at the start of its batch"
            );
            let resumed = scan_batches(
                log,
                u64::from(e.position),
                base + u64::from(e.relative_offset),
                verify_crc,
                Some(&mut IndexBuilder::new(base, INDEX_INTERVAL)),
            );
            assert_eq!(resumed, outcome, "a scan resumed at {e:?} ends elsewhere");
        }
        // A scan that builds an index stops before a batch the index cannot hold, so what it
        // built passes the checks a reopen applies.
        let span = outcome.next_offset - base;
        assert!(span <= u64::from(u32::MAX) && outcome.valid_len <= u64::from(u32::MAX));
        check_offset_index(&index.offsets, span, outcome.valid_len)
            .expect("a built offset index passes the reopen checks");
        check_time_index(&index.times, span).expect("a built time index passes the checks");
    }
    assert!(
        prefixes[0] <= prefixes[1],
        "checking CRCs accepted more bytes"
    );
}

/// Walks the valid prefix of a scan by its headers and checks what the scan claims about it and
/// about where it stopped. Returns (position, base offset) of every batch in the prefix.
fn check_valid_prefix(
    log: &[u8],
    base: u64,
    verify_crc: bool,
    outcome: &ScanOutcome,
) -> Vec<(u64, u64)> {
    let valid = outcome.valid_len as usize;
    assert!(valid <= log.len());
    assert_eq!(
        outcome.stop.is_none(),
        valid == log.len(),
        "a scan stops early exactly when it names a reason"
    );
    let (mut pos, mut next, mut starts) = (0usize, base, Vec::new());
    while pos < valid {
        let h = BatchHeader::parse(&log[pos..]).expect("the valid prefix holds batch headers");
        assert_eq!(
            h.base_offset, next,
            "offsets in the valid prefix are not dense"
        );
        let total = h.total_len().expect("a valid batch has a length");
        assert!(
            pos + total <= valid,
            "a valid batch runs past the valid prefix"
        );
        if verify_crc {
            h.check_crc(&log[pos..pos + total])
                .expect("a valid batch's CRC matches");
        }
        assert!(h.record_count >= 1 && h.last_offset_delta == h.record_count - 1);
        starts.push((pos as u64, h.base_offset));
        next = h.next_offset();
        pos += total;
    }
    assert_eq!((pos, next), (valid, outcome.next_offset));
    let rest = &log[valid..];
    match &outcome.stop {
        None => {}
        Some(ScanStop::ZeroHeader) => assert!(
            rest.iter().take(57).all(|&b| b == 0),
            "a zero-header stop at non-zero bytes"
        ),
        Some(ScanStop::Torn { needed, available }) => {
            assert_eq!(*available, rest.len() as u64);
            assert!(needed > available);
        }
        Some(ScanStop::WrongOffset { expected, found }) => {
            assert_eq!(*expected, next);
            assert_ne!(found, expected);
        }
        Some(ScanStop::BadCrc(_)) => assert!(verify_crc, "a CRC stop in a scan without CRCs"),
        Some(ScanStop::BadHeader(_)) => {}
    }
    starts
}

// ---------------------------------------------------------------------------------------------
// segment_index: `.index` and `.timeindex` files, checked and searched as a reopen and reads
// do.

struct SegmentFiles<'a> {
    base: u64,
    offsets: &'a [u8],
    times: &'a [u8],
    log: &'a [u8],
}

fn take_prefixed<'a>(buf: &mut &'a [u8]) -> &'a [u8] {
    let len = buf
        .get(..4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let rest = buf.get(4..).unwrap_or_default();
    let (taken, rest) = rest.split_at(len.min(rest.len()));
    *buf = rest;
    taken
}

fn split_segment(input: &[u8]) -> Option<SegmentFiles<'_>> {
    let (base, mut rest) = split_base(input)?;
    let offsets = take_prefixed(&mut rest);
    let times = take_prefixed(&mut rest);
    Some(SegmentFiles {
        base,
        offsets,
        times,
        log: rest,
    })
}

/// Recomputes the CRCs of the batches in the container's `.log` part.
fn fix_segment_container_crcs(buf: &mut [u8]) {
    let Some(files) = split_segment(buf) else {
        return;
    };
    let log_start = buf.len() - files.log.len();
    fix_batch_crcs(&mut buf[log_start..]);
}

/// Timestamps and relative offsets the lookups are asked about.
const TIMESTAMPS: [i64; 5] = [i64::MIN, -1, 0, 1_700_000_000_000, i64::MAX];

/// What the engine runs on index files: the checks a sealed segment's files get against the
/// segment's extent, and lookups in them; the checks a clean reopen gives the active segment's
/// files, and the scan it resumes from their last entry (`recovery.rs`, `check_clean_tail`).
pub fn parse_segment_index(input: &[u8]) {
    let Some(f) = split_segment(input) else {
        return;
    };
    // A sealed segment: its extent is known (recovery learned it by a scan).
    let extent = scan_batches(f.log, 0, f.base, true, None);
    let span = extent.next_offset - f.base;
    let sealed = check_offset_index(f.offsets, span, extent.valid_len).is_ok()
        && check_time_index(f.times, span).is_ok();
    if sealed {
        for rel in [0, 1, span / 2, span.saturating_sub(1), span, u64::MAX] {
            black_box(lookup_offset(f.offsets, rel));
        }
        for ts in TIMESTAMPS {
            black_box(lookup_time(f.times, ts));
        }
    }
    // The active segment after a clean close: bounds unknown until the tail is scanned.
    if check_offset_index(f.offsets, u64::MAX, f.log.len() as u64).is_ok()
        && check_time_index(f.times, u64::MAX).is_ok()
    {
        let last = offset_entry_count(f.offsets).checked_sub(1).map_or(
            OffsetEntry {
                relative_offset: 0,
                position: 0,
            },
            |i| offset_entry(f.offsets, i),
        );
        let expected = f.base + u64::from(last.relative_offset);
        let points_at_batch = f
            .log
            .get(last.position as usize..)
            .map(BatchHeader::parse)
            .is_some_and(|h| h.is_ok_and(|h| h.base_offset == expected));
        if points_at_batch {
            let mut index =
                IndexBuilder::resume(f.base, INDEX_INTERVAL, f.offsets.to_vec(), f.times.to_vec());
            let outcome = scan_batches(
                f.log,
                u64::from(last.position),
                expected,
                true,
                Some(&mut index),
            );
            let _ = black_box(check_time_index(&index.times, outcome.next_offset - f.base));
        }
    }
}

/// A copy of both index files (for the resumed builder), and what the resumed scan adds.
pub fn segment_index_max_alloc(len: usize) -> usize {
    3 * len + ALLOC_SLACK
}

/// Properties of the index checks and lookups:
/// - what the checks accept really is ordered as they claim: offsets and positions strictly
///   increasing and inside the segment, timestamps strictly increasing, relative offsets of the
///   time index non-decreasing and within the segment;
/// - offset lookups in an accepted index return the last entry at or before the offset (or
///   the segment start); time lookups return where every earlier record is older than asked.
pub fn check_segment_index(input: &[u8]) {
    parse_segment_index(input);
    let Some(f) = split_segment(input) else {
        return;
    };
    let extent = scan_batches(f.log, 0, f.base, true, None);
    let span = extent.next_offset - f.base;
    if check_offset_index(f.offsets, span, extent.valid_len).is_ok() {
        let entries: Vec<OffsetEntry> = (0..offset_entry_count(f.offsets))
            .map(|i| offset_entry(f.offsets, i))
            .collect();
        assert_eq!(
            entries.len() * 8,
            f.offsets.len(),
            "an accepted index has a partial entry"
        );
        for (a, b) in entries.iter().zip(entries.iter().skip(1)) {
            assert!(a.relative_offset < b.relative_offset && a.position < b.position);
        }
        for e in &entries {
            assert!(u64::from(e.relative_offset) < span);
            assert!(u64::from(e.position) < extent.valid_len);
        }
        for rel in [0, 1, span / 2, span.saturating_sub(1), span, u64::MAX] {
            let found = lookup_offset(f.offsets, rel);
            let want = entries
                .iter()
                .rev()
                .find(|e| u64::from(e.relative_offset) <= rel)
                .copied()
                .unwrap_or(OffsetEntry {
                    relative_offset: 0,
                    position: 0,
                });
            assert_eq!(found, want, "offset lookup of relative offset {rel}");
        }
    }
    if check_time_index(f.times, span).is_ok() {
        let entries: Vec<_> = (0..time_entry_count(f.times))
            .map(|i| time_entry(f.times, i))
            .collect();
        assert_eq!(
            entries.len() * 12,
            f.times.len(),
            "an accepted index has a partial entry"
        );
        for (a, b) in entries.iter().zip(entries.iter().skip(1)) {
            assert!(a.timestamp < b.timestamp && a.relative_offset <= b.relative_offset);
        }
        assert!(entries.iter().all(|e| u64::from(e.relative_offset) <= span));
        for ts in TIMESTAMPS {
            let want = entries
                .iter()
                .rev()
                .find(|e| e.timestamp < ts)
                .map_or(0, |e| e.relative_offset);
            assert_eq!(lookup_time(f.times, ts), want, "time lookup of {ts}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// epoch_history: the `leader-epoch` file (leader epoch -> start offset).

/// What opening a partition runs on its `leader-epoch` file's bytes.
pub fn parse_epoch_history(bytes: &[u8]) {
    let _ = black_box(leader_epoch::decode(bytes));
}

/// The history grows one 16-byte entry per 12 input bytes (a doubling `Vec`), never by what the
/// count field claims; error messages are short.
pub fn epoch_history_max_alloc(len: usize) -> usize {
    4 * len + ALLOC_SLACK
}

/// Properties of the epoch-history decoder:
/// - what it accepts has strictly increasing epochs and start offsets (at most `i64::MAX`) and
///   encodes back to exactly its bytes (the format has one encoding);
/// - the epoch lookups a leader answers followers with (`end_offset_for`) agree with the
///   entries: each epoch ends where the next starts (the latest at the log end), an epoch the
///   history lacks resolves to the last older one, one older than all to none;
/// - fitting it to a log (what recovery, truncation and retention do) keeps the invariants,
///   leaves every start within the log, and is idempotent.
pub fn check_epoch_history(bytes: &[u8]) {
    parse_epoch_history(bytes);
    let Ok(history) = leader_epoch::decode(bytes) else {
        return;
    };
    let entries = history.entries();
    for pair in entries.windows(2) {
        let ((e0, s0), (e1, s1)) = (pair[0], pair[1]);
        assert!(
            e0 < e1 && s0 < s1,
            "accepted entries out of order: {pair:?}"
        );
    }
    assert!(entries.iter().all(|&(_, s)| s <= i64::MAX as u64));
    assert_eq!(
        leader_epoch::encode(&history),
        bytes,
        "not the one encoding"
    );

    let log_end = entries.last().map_or(0, |&(_, s)| s.saturating_add(10));
    for (k, &(epoch, _)) in entries.iter().enumerate() {
        let end = entries.get(k + 1).map_or(log_end, |&(_, next)| next);
        assert_eq!(history.end_offset_for(epoch, log_end), (Some(epoch), end));
        if epoch.0 > 0 && (k == 0 || entries[k - 1].0.0 < epoch.0 - 1) {
            let older = weir_replication::LeaderEpoch(epoch.0 - 1);
            let expected = match k {
                0 => (None, 0),
                _ => (Some(entries[k - 1].0), entries[k].1),
            };
            assert_eq!(history.end_offset_for(older, log_end), expected);
        }
    }

    let mut bounds: Vec<u64> = entries.iter().flat_map(|&(_, s)| [s, s + 1]).collect();
    bounds.extend([0, log_end]);
    // A real log's start and end never pass i64::MAX (offsets are i64 on the wire).
    bounds.retain(|&b| b <= i64::MAX as u64);
    bounds.sort_unstable();
    bounds.dedup();
    for &start in bounds.iter().take(8) {
        for &end in bounds.iter().rev().take(8).filter(|&&e| e >= start) {
            let fitted = leader_epoch::fit_to_log(&history, start, end);
            let f = fitted.entries();
            assert!(
                f.iter().all(|&(_, s)| start <= s && s < end),
                "fitted to [{start}, {end}): {f:?}"
            );
            assert!(f.windows(2).all(|p| p[0].0 < p[1].0 && p[0].1 < p[1].1));
            assert_eq!(leader_epoch::fit_to_log(&fitted, start, end), fitted);
            let again = leader_epoch::decode(&leader_epoch::encode(&fitted));
            assert_eq!(again.as_ref(), Ok(&fitted));
        }
    }
}
