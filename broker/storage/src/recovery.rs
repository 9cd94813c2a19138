//! Opening a partition log from its directory, and crash recovery.
//!
//! After a clean shutdown only the active segment's tail is checked: its index is loaded (or
//! rebuilt if missing or inconsistent) and the batches after the last index entry are
//! validated. After an unclean stop, every segment from the one holding the checkpointed
//! recovery point on is scanned (length, version, dense offsets, CRC); the log is cut at the
//! first invalid batch, later segments are deleted, the scanned segments' indexes are rebuilt,
//! and the cut is logged and reported. Files are truncated here, before anything maps them.
//! Either way, nothing past the last valid batch is ever served or counted. The epoch history
//! (`leader-epoch`) is loaded last and fitted to the recovered log: entries at or past the
//! log end, and wholly below the log start, are dropped (and the file rewritten).

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;

use tracing::{debug, warn};

use super::config::LogConfig;
use super::error::{Result, StorageError};
use super::fs::{
    INDEX_SUFFIX, LOG_SUFFIX, SyncMode, TIME_INDEX_SUFFIX, fsync_dir, is_tmp_file,
    parse_segment_file_name, remove_if_exists, segment_path,
};
use super::index::{self, IndexBuilder};
use super::leader_epoch;
use super::mmap::{map_read_only, region_slice};
use super::partition::{Inner, PartitionLog};
use super::scan::{ScanOutcome, ScanStop, scan_batches};
use super::segment::{ActiveSegment, SealedSegment, rebuild_indexes, write_index_files};
use super::sys;
use weir_proto::topic::TopicPartition;
use weir_replication::EpochHistory;

/// How the previous process left the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// The clean-shutdown marker was present: trust sealed segments and indexes, check the tail.
    Clean,
    /// No marker: scan everything from the segment holding `recovery_point` on.
    Unclean { recovery_point: u64 },
}

/// What recovery cut from one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncationReport {
    pub partition: String,
    /// The segment the cut falls in.
    pub segment_base: u64,
    /// Bytes of that segment that were kept.
    pub valid_bytes: u64,
    /// Bytes removed from that segment (not counting deleted later segments).
    pub cut_bytes: u64,
    /// The first offset no longer in the log (the new high watermark).
    pub first_lost_offset: u64,
    /// Base offsets of later segments deleted whole.
    pub deleted_segments: Vec<u64>,
    pub reason: String,
}

struct Kept {
    base: u64,
    size: u64,
    next_offset: u64,
    index: IndexBuilder,
}

/// Opens (recovering if needed) the log in `dir`, creating it if it does not exist.
pub(crate) fn open_partition(
    dir: &Path,
    tp: TopicPartition,
    config: LogConfig,
    mode: OpenMode,
    log_start_hint: Option<u64>,
) -> Result<(PartitionLog, Option<TruncationReport>)> {
    config.validate()?;
    sys::create_dir_all(dir)
        .map_err(|e| StorageError::io("creating partition directory", dir, e))?;
    let bases = list_segments(dir)?;
    let interval = config.index_interval_bytes;

    if bases.is_empty() {
        let base = log_start_hint.unwrap_or(0);
        let active = ActiveSegment::create(
            dir,
            base,
            config.segment_bytes,
            config.preallocate_min_bytes,
            interval,
        )?;
        let mut inner = Inner::new(VecDeque::new(), active, base);
        inner.epochs = load_epochs(dir, base, base)?;
        return Ok((
            PartitionLog::from_parts(tp, dir.to_owned(), config, inner),
            None,
        ));
    }

    let sizes = bases
        .iter()
        .map(|&b| {
            let p = segment_path(dir, b, LOG_SUFFIX);
            sys::path_len(&p).map_err(|e| StorageError::io("reading segment size", p, e))
        })
        .collect::<Result<Vec<u64>>>()?;
    let n = bases.len();
    let scan_from = match mode {
        OpenMode::Clean => n - 1,
        OpenMode::Unclean { recovery_point } => bases
            .partition_point(|&b| b <= recovery_point)
            .saturating_sub(1),
    };

    let mut report: Option<TruncationReport> = None;
    let mut kept: Vec<Kept> = Vec::new();
    // Segments whose files recovery changed or must make durable.
    let mut touched: Vec<u64> = Vec::new();
    for i in scan_from..n {
        let (base, size) = (bases[i], sizes[i]);
        if let Some(prev) = kept.last()
            && prev.next_offset != base
        {
            let deleted = delete_segments(dir, &bases[i..])?;
            report = Some(TruncationReport {
                partition: tp.to_string(),
                segment_base: prev.base,
                valid_bytes: prev.size,
                cut_bytes: 0,
                first_lost_offset: prev.next_offset,
                deleted_segments: deleted,
                reason: format!(
                    "segment {base} does not start where segment {} ends ({})",
                    prev.base, prev.next_offset
                ),
            });
            break;
        }
        let path = segment_path(dir, base, LOG_SUFFIX);
        let (outcome, index) = if mode == OpenMode::Clean {
            check_clean_tail(dir, base, size, interval)?
        } else {
            let mut index = IndexBuilder::new(base, interval);
            let outcome = scan_file(&path, size, |log| {
                scan_batches(log, 0, base, true, Some(&mut index))
            })?;
            (outcome, index)
        };
        let mut cut_here = false;
        if outcome.valid_len < size {
            let benign = outcome.stop == Some(ScanStop::ZeroHeader)
                && tail_is_zero(&path, outcome.valid_len, size)?;
            truncate_file(&path, outcome.valid_len)?;
            touched.push(base);
            if benign {
                debug!(partition = %tp, segment = base, bytes = size - outcome.valid_len, "trimmed unwritten preallocated tail");
            } else {
                let deleted = delete_segments(dir, &bases[i + 1..])?;
                report = Some(TruncationReport {
                    partition: tp.to_string(),
                    segment_base: base,
                    valid_bytes: outcome.valid_len,
                    cut_bytes: size - outcome.valid_len,
                    first_lost_offset: outcome.next_offset,
                    deleted_segments: deleted,
                    reason: outcome
                        .stop
                        .as_ref()
                        .map_or_else(|| "unknown".into(), ToString::to_string),
                });
                cut_here = true;
            }
        }
        kept.push(Kept {
            base,
            size: outcome.valid_len,
            next_offset: outcome.next_offset,
            index,
        });
        if cut_here {
            break;
        }
    }
    if let Some(r) = &report {
        warn!(
            partition = %r.partition, segment = r.segment_base, kept_bytes = r.valid_bytes, cut_bytes = r.cut_bytes,
            first_lost_offset = r.first_lost_offset, deleted_segments = ?r.deleted_segments, reason = %r.reason,
            "recovery truncated the log"
        );
    }

    // Segments before the scan are trusted as sealed; scanned ones get fresh index files.
    let mut sealed: VecDeque<Arc<SealedSegment>> = (0..scan_from)
        .map(|i| {
            Arc::new(SealedSegment::new(
                dir,
                bases[i],
                bases[i + 1],
                sizes[i],
                interval,
                None,
            ))
        })
        .collect();
    // Every scanned segment may hold pages that only the page cache has (a killed process
    // leaves them dirty); they become the log, so they are synced before the recovery point
    // covers them.
    touched.extend(kept.iter().map(|k| k.base));
    let Some(last) = kept.pop() else {
        return Err(StorageError::Corrupt {
            what: "partition",
            path: dir.to_owned(),
            detail: "no segment survived recovery".into(),
        });
    };
    for mut k in kept {
        k.index.finish();
        write_index_files(dir, k.base, &k.index, SyncMode::Now)?;
        sealed.push_back(Arc::new(SealedSegment::new(
            dir,
            k.base,
            k.next_offset,
            k.size,
            interval,
            Some(k.index.max_timestamp),
        )));
    }
    if mode != OpenMode::Clean || report.is_some() {
        // The scanned tail is now the log: make it durable before it counts as recovered.
        for base in touched.iter().copied() {
            let p = segment_path(dir, base, LOG_SUFFIX);
            if let Ok(f) = sys::open_read(&p) {
                sys::fsync(&f).map_err(|e| StorageError::io("syncing recovered segment", &p, e))?;
            }
        }
        fsync_dir(dir)?;
    }
    let active = ActiveSegment::resume(
        dir,
        last.base,
        last.next_offset,
        last.size,
        last.index,
        config.segment_bytes,
    );
    let high_watermark = active.next_offset;

    // Segments wholly below a checkpointed log start were deleted by retention before a crash
    // could finish removing them.
    let first_base = sealed.front().map_or(active.base_offset, |s| s.base_offset);
    let mut log_start = log_start_hint
        .unwrap_or(first_base)
        .clamp(first_base, high_watermark);
    while sealed.front().is_some_and(|s| s.next_offset <= log_start) {
        if let Some(s) = sealed.pop_front() {
            s.delete_files()?;
        }
    }
    if let Some(s) = sealed.front() {
        log_start = log_start.max(s.base_offset);
    }
    let mut inner = Inner::new(sealed, active, log_start);
    inner.epochs = load_epochs(dir, log_start, high_watermark)?;
    Ok((
        PartitionLog::from_parts(tp, dir.to_owned(), config, inner),
        report,
    ))
}

/// The partition's epoch history, fitted to the recovered log `[log_start, log_end)` and
/// stored again if that changed it: recovery may have cut a tail (its epochs own no record
/// now), a crash may have come between a truncation's cut and its history write (the cut is
/// made first, so the stale entries are exactly those at or past the log end), or between
/// retention's deletion and its history write (entries below the log start). A file that does
/// not decode keeps the partition from opening (`Corrupt`): it cannot be rebuilt from the log.
fn load_epochs(dir: &Path, log_start: u64, log_end: u64) -> Result<EpochHistory> {
    let stored = leader_epoch::load(dir)?;
    let fitted = leader_epoch::fit_to_log(&stored, log_start, log_end);
    if fitted != stored {
        debug!(dir = %dir.display(), stored = ?stored.entries(), fitted = ?fitted.entries(), "fitted the epoch history to the recovered log");
        leader_epoch::store(dir, &fitted)?;
    }
    Ok(fitted)
}

/// Segment base offsets in `dir`, sorted; removes leftovers of interrupted writes and index
/// files whose log is gone.
fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    let mut indexes = Vec::new();
    let entries =
        sys::read_dir(dir).map_err(|e| StorageError::io("listing partition directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("listing partition directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_tmp_file(name) {
            remove_if_exists(&entry.path())?;
            continue;
        }
        match parse_segment_file_name(name) {
            Some((base, LOG_SUFFIX)) => bases.push(base),
            Some((base, INDEX_SUFFIX | TIME_INDEX_SUFFIX)) => indexes.push((base, entry.path())),
            _ => {}
        }
    }
    bases.sort_unstable();
    for (base, path) in indexes {
        if bases.binary_search(&base).is_err() {
            remove_if_exists(&path)?;
        }
    }
    Ok(bases)
}

/// Runs `f` over the first `len` bytes of the file, mapped read-only (and unmapped after).
fn scan_file(path: &Path, len: u64, f: impl FnOnce(&[u8]) -> ScanOutcome) -> Result<ScanOutcome> {
    let file = sys::open_read(path).map_err(|e| StorageError::io("opening segment", path, e))?;
    let map = map_read_only(&file, path, len)?;
    Ok(f(map
        .as_ref()
        .map(|m| region_slice(m, 0, m.len()))
        .unwrap_or_default()))
}

/// The clean-start check of the last segment: load its indexes (rebuilding them if missing or
/// inconsistent) and validate the batches after the last index entry.
fn check_clean_tail(
    dir: &Path,
    base: u64,
    size: u64,
    interval: u32,
) -> Result<(ScanOutcome, IndexBuilder)> {
    let path = segment_path(dir, base, LOG_SUFFIX);
    let offsets = sys::read(&segment_path(dir, base, INDEX_SUFFIX));
    let times = sys::read(&segment_path(dir, base, TIME_INDEX_SUFFIX));
    let mut result = None;
    scan_file(&path, size, |log| {
        let loaded = match (offsets, times) {
            (Ok(o), Ok(t)) => index::check_offset_index(&o, u64::MAX, size)
                .and_then(|()| index::check_time_index(&t, u64::MAX))
                .and_then(|()| {
                    let last = index::offset_entry_count(&o)
                        .checked_sub(1)
                        .map(|i| index::offset_entry(&o, i));
                    let last = last.unwrap_or(index::OffsetEntry {
                        relative_offset: 0,
                        position: 0,
                    });
                    let pos = last.position as usize;
                    match log.get(pos..).map(weir_proto::batch::BatchHeader::parse) {
                        Some(Ok(h)) if h.base_offset == base + u64::from(last.relative_offset) => {
                            Ok((o, t, last))
                        }
                        _ if log.is_empty() && last.position == 0 => Ok((o, t, last)),
                        _ => Err("last index entry does not point at its batch".to_string()),
                    }
                }),
            _ => Err("index files missing".to_string()),
        };
        match loaded {
            Ok((o, t, last)) => {
                let mut index = IndexBuilder::resume(base, interval, o, t);
                let outcome = scan_batches(
                    log,
                    u64::from(last.position),
                    base + u64::from(last.relative_offset),
                    true,
                    Some(&mut index),
                );
                // Only now is the segment's extent known: a time index pointing past it was
                // garbled or stale (it would mislead time lookups and age retention).
                if let Err(detail) =
                    index::check_time_index(&index.times, outcome.next_offset - base)
                {
                    warn!(segment = %path.display(), detail, "rebuilding active segment indexes");
                    let mut rebuilt = IndexBuilder::new(base, interval);
                    let outcome = scan_batches(log, 0, base, true, Some(&mut rebuilt));
                    result = Some(rebuilt);
                    return outcome;
                }
                result = Some(index);
                outcome
            }
            Err(detail) => {
                warn!(segment = %path.display(), detail, "rebuilding active segment indexes");
                let mut index = IndexBuilder::new(base, interval);
                let outcome = scan_batches(log, 0, base, true, Some(&mut index));
                result = Some(index);
                outcome
            }
        }
    })
    .map(|outcome| {
        (
            outcome,
            result.unwrap_or_else(|| rebuild_indexes(&[], base, interval)),
        )
    })
}

/// True if `[from, to)` of the file is all zero bytes (an unwritten preallocated tail).
fn tail_is_zero(path: &Path, from: u64, to: u64) -> Result<bool> {
    let file = sys::open_read(path).map_err(|e| StorageError::io("opening segment", path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(buf.len());
        sys::pread_exact(&file, &mut buf[..n], at)
            .map_err(|e| StorageError::io("reading segment tail", path, e))?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

fn truncate_file(path: &Path, len: u64) -> Result<()> {
    sys::open(path, OpenOptions::new().write(true))
        .and_then(|f| sys::set_len(&f, len))
        .map_err(|e| StorageError::io("truncating segment", path, e))
}

/// Deletes whole segments; returns their base offsets.
fn delete_segments(dir: &Path, bases: &[u64]) -> Result<Vec<u64>> {
    for &base in bases {
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            remove_if_exists(&segment_path(dir, base, suffix))?;
        }
    }
    Ok(bases.to_vec())
}
