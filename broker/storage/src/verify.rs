//! Checking a data directory from outside: every batch of every segment, CRC included, without
//! changing a byte. What `weir-broker --verify` runs, and what the background scrub runs on one
//! sealed segment at a time ([`verify_segment`]).
//!
//! The fetch path never reads the bytes it sends (sendfile), and recovery scans only past the
//! recovery point, so a bit flipped below the recovery point (a bad sector, a stray write) is
//! otherwise found only by a consumer's CRC check. This walk finds it first and names it by
//! partition, segment, byte position and offset.
//!
//! Rules (the same walk recovery uses, [`scan_batches`] with CRCs on):
//! - Segments of a partition are contiguous: each starts at the offset the previous one ends at.
//! - A sealed segment is whole batches to its last byte.
//! - The active (last) segment may end in zeros (its preallocated tail). Past the checkpointed
//!   recovery point of an unclean stop it may also end in a torn batch: that tail was never
//!   acknowledged as durable and the next start cuts it; it is reported as a tail, not damage.
//!
//! - A partition's `leader-epoch` file decodes (CRC, layout, ordered entries) and its entries
//!   start within the log; one that does not decode is damage (the partition would not open),
//!   entries outside the log are listed (the next open drops or clamps them).
//!
//! Read-only: no lock is taken and no file is opened for writing, so it may run beside a broker
//! (a segment that changes under it may then be reported torn at its end).

use std::path::{Path, PathBuf};

use weir_proto::topic::TopicPartition;

use super::checkpoint::{CLEAN_SHUTDOWN_FILE, LOG_START_FILE, RECOVERY_POINT_FILE, read_offsets};
use super::error::{Result, StorageError};
use super::fs::{LOG_SUFFIX, parse_segment_file_name};
use super::leader_epoch;
use super::mmap::map_read_only;
use super::scan::{ScanStop, scan_batches};
use super::sys;

/// One place where a log is not what its format promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub partition: TopicPartition,
    /// The segment's `.log` file.
    pub segment: PathBuf,
    /// Byte position in the segment where the first bad batch starts.
    pub position: u64,
    /// The first offset that cannot be read: every batch before it is intact.
    pub offset: u64,
    pub reason: ScanStop,
    /// Bytes from `position` to the segment's end that are not served (the damaged batch and
    /// whatever follows it in that segment).
    pub bytes_lost: u64,
}

/// A torn end of an active segment past its recovery point: never acknowledged as durable, cut
/// by the next start. Listed for completeness, not counted as damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnflushedTail {
    pub partition: TopicPartition,
    pub segment: PathBuf,
    pub position: u64,
    pub offset: u64,
    pub reason: ScanStop,
}

/// A partition's `leader-epoch` file that does not describe its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochFileIssue {
    pub partition: TopicPartition,
    pub path: PathBuf,
    pub detail: String,
    /// The next open repairs it by itself (entries past the log end, left by a crash during a
    /// truncation, or below the log start, left by one during retention): listed, not damage.
    /// `false` for a file that does not decode: the partition does not open.
    pub repaired_at_open: bool,
}

/// What [`verify_log_dir`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub partitions: usize,
    pub segments: usize,
    /// Bytes of valid batches checked.
    pub bytes_checked: u64,
    pub damage: Vec<Damage>,
    pub unflushed_tails: Vec<UnflushedTail>,
    /// `leader-epoch` files that fail to decode, or whose entries lie outside the log.
    pub epoch_files: Vec<EpochFileIssue>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty() && self.epoch_files.iter().all(|e| e.repaired_at_open)
    }
}

/// The total size of the `.log` files under `dir` (for a progress bar's length).
pub fn log_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for (_, part_dir) in partition_dirs(dir)? {
        for (_, path) in segment_logs(&part_dir)? {
            total += sys::path_len(&path)
                .map_err(|e| StorageError::io("reading segment size", &path, e))?;
        }
    }
    Ok(total)
}

/// Checks every batch of every partition in the data directory `dir` (a [`super::LogDir`]'s
/// path). `progress` is called with the bytes of each segment once it has been walked.
pub fn verify_log_dir(dir: &Path, mut progress: impl FnMut(u64)) -> Result<VerifyReport> {
    let clean = sys::exists(&dir.join(CLEAN_SHUTDOWN_FILE));
    let recovery_points = read_offsets(&dir.join(RECOVERY_POINT_FILE))?;
    let log_starts = read_offsets(&dir.join(LOG_START_FILE))?;
    let mut report = VerifyReport::default();
    for (tp, part_dir) in partition_dirs(dir)? {
        report.partitions += 1;
        let segments = segment_logs(&part_dir)?;
        let last = segments.len().saturating_sub(1);
        let mut expected: Option<u64> = None;
        // The log's extent as walked: the first segment's base and the end of valid batches.
        let first_base = segments.first().map(|(base, _)| *base);
        let mut log_end = first_base.unwrap_or(0);
        for (k, (base, path)) in segments.into_iter().enumerate() {
            report.segments += 1;
            let len = sys::path_len(&path)
                .map_err(|e| StorageError::io("reading segment size", &path, e))?;
            if let Some(expected) = expected
                && expected != base
            {
                report.damage.push(Damage {
                    partition: tp.clone(),
                    segment: path.clone(),
                    position: 0,
                    offset: expected,
                    reason: ScanStop::WrongOffset {
                        expected,
                        found: base,
                    },
                    bytes_lost: 0,
                });
            }
            let checked = verify_segment(&path, base, len)?;
            report.bytes_checked += checked.valid_len;
            log_end = checked.next_offset;
            // Past damage the segment's true end is unknown: the next one is checked on its own.
            expected = checked.stop.is_none().then_some(checked.next_offset);
            progress(len);
            let Some(stop) = checked.stop else { continue };
            let active = k == last;
            if active && stop == ScanStop::ZeroHeader {
                continue; // the preallocated tail
            }
            // Past the recovery point of an unclean stop, the active segment's end was never
            // acknowledged durable: the next start cuts it.
            let recovery_point = recovery_points.get(&tp).copied().unwrap_or(0);
            if active && !clean && checked.next_offset >= recovery_point {
                report.unflushed_tails.push(UnflushedTail {
                    partition: tp.clone(),
                    segment: path,
                    position: checked.valid_len,
                    offset: checked.next_offset,
                    reason: stop,
                });
                continue;
            }
            report.damage.push(Damage {
                partition: tp.clone(),
                segment: path,
                position: checked.valid_len,
                offset: checked.next_offset,
                reason: stop,
                bytes_lost: len - checked.valid_len,
            });
        }
        let log_start = log_starts
            .get(&tp)
            .copied()
            .unwrap_or(0)
            .max(first_base.unwrap_or(0));
        report
            .epoch_files
            .extend(check_epoch_file(&tp, &part_dir, log_start, log_end));
    }
    Ok(report)
}

/// Checks a partition's `leader-epoch` file: it decodes, and its entries start within
/// `[log_start, log_end]` (an entry at the log end is a leader's epoch that has not written
/// yet). No file is fine: an empty history.
fn check_epoch_file(
    tp: &TopicPartition,
    part_dir: &Path,
    log_start: u64,
    log_end: u64,
) -> Option<EpochFileIssue> {
    let path = part_dir.join(leader_epoch::FILE_NAME);
    let issue = |detail: String, repaired_at_open| EpochFileIssue {
        partition: tp.clone(),
        path: path.clone(),
        detail,
        repaired_at_open,
    };
    let history = match leader_epoch::load(part_dir) {
        Ok(history) => history,
        Err(StorageError::Corrupt { detail, .. }) => return Some(issue(detail, false)),
        Err(e) => return Some(issue(e.to_string(), false)),
    };
    let outside: Vec<String> = history
        .entries()
        .iter()
        .filter(|&&(_, start)| start > log_end || start < log_start)
        .map(|&(epoch, start)| format!("epoch {} at {start}", epoch.0))
        .collect();
    (!outside.is_empty()).then(|| {
        issue(
            format!(
                "entries outside the log [{log_start}, {log_end}]: {}; the next open drops or clamps them",
                outside.join(", ")
            ),
            true,
        )
    })
}

/// Where one segment's walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCheck {
    /// Bytes `[0, valid_len)` are whole batches with matching CRCs.
    pub valid_len: u64,
    /// The offset after the last valid batch.
    pub next_offset: u64,
    /// Why the walk stopped before `len`; `None` if every byte is valid batches.
    pub stop: Option<ScanStop>,
}

/// Walks the first `len` bytes of the segment `.log` at `path` (base offset `base`), verifying
/// every CRC.
pub fn verify_segment(path: &Path, base: u64, len: u64) -> Result<SegmentCheck> {
    let file = sys::open_read(path).map_err(|e| StorageError::io("opening segment", path, e))?;
    let Some(map) = map_read_only(&file, path, len)? else {
        return Ok(SegmentCheck {
            valid_len: 0,
            next_offset: base,
            stop: None,
        });
    };
    // SAFETY of the view: `map_read_only` maps `len` bytes of a file this walk only reads.
    // A writer truncating it meanwhile (a broker running beside `--verify`) could make pages
    // vanish (SIGBUS); the data dir is meant to be verified while its broker is stopped, and
    // the background scrub only walks sealed segments, which are never truncated while mapped
    // (retention unlinks, and the map keeps the inode alive).
    let bytes = super::mmap::region_slice(&map, 0, len as usize);
    let outcome = scan_batches(bytes, 0, base, true, None);
    Ok(SegmentCheck {
        valid_len: outcome.valid_len,
        next_offset: outcome.next_offset,
        stop: outcome.stop,
    })
}

/// Partition directories of a data dir, sorted by name.
fn partition_dirs(dir: &Path) -> Result<Vec<(TopicPartition, PathBuf)>> {
    let mut out = Vec::new();
    let entries =
        sys::read_dir(dir).map_err(|e| StorageError::io("listing data directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("listing data directory", dir, e))?;
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name();
        if let Some(tp) = name.to_str().and_then(TopicPartition::from_dir_name) {
            out.push((tp, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A partition's segment `.log` files, in offset order.
fn segment_logs(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries =
        sys::read_dir(dir).map_err(|e| StorageError::io("listing partition directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("listing partition directory", dir, e))?;
        let name = entry.file_name();
        if let Some((base, LOG_SUFFIX)) = name.to_str().and_then(parse_segment_file_name) {
            out.push((base, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}
