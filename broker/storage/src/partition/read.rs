//! The read path: `read` and `read_bounded` (whole batches as file ranges and zero-copy
//! `Bytes`, the latter only up to a limit such as the committed high watermark) and
//! `offset_for_time`.
//!
//! Owns `read_once` (the handles a read needs, cloned under the partition lock, then walked
//! without it), `select_batches` (which whole batches of a segment answer a read), and the time
//! lookup within a segment.
//!
//! Invariants enforced here:
//! - Only bytes below the high watermark, at or above the log start, are served, and only whole
//!   batches, each checked to start at the offset the one before it ends at (so a wrong index
//!   hint or a damaged segment is an error, never wrong data; a hint is retried from the
//!   segment start before giving up).
//! - Damage (a torn, zeroed or inconsistent batch below the high watermark) ends a read after
//!   the last whole batch before it; a read that starts at it is `CorruptLog` naming the
//!   partition and the first unreadable offset, logged once per place. Nothing past it is
//!   served from this copy, and the batches before it stay readable. (CRCs are not read here:
//!   sendfile never touches the bytes. `verify` and the scrub check them.)
//! - The first batch of a read is returned whole even past `max_bytes`, so a consumer always
//!   makes progress; an offset below the high watermark never gets an empty answer, unless
//!   the batch holding it ends past the read's limit (`read_bounded`: batches are never split,
//!   and nothing ending past the limit is served).
//! - A read holds its own `Arc`s of the maps and files it returns, so retention or truncation
//!   meanwhile never invalidates it (a segment removed before it was opened is retried).

use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use memmap2::MmapRaw;
use tracing::error;
use weir_proto::batch::{BatchHeader, RecordBatch};

use super::{PartitionLog, ReadChunk, ReadResult, lock};
use crate::error::{Result, StorageError};
use crate::fs::{LOG_SUFFIX, segment_path};
use crate::index::{self, OffsetEntry};
use crate::mmap::{region_bytes, region_slice};
use crate::segment::SealedSegment;

/// A segment a read may draw from, with handles cloned under the lock.
enum ReadSource {
    Sealed(Arc<SealedSegment>),
    Active {
        map: Arc<MmapRaw>,
        file: Arc<File>,
        base_offset: u64,
        size: u64,
        hint: OffsetEntry,
    },
}

impl PartitionLog {
    /// Reads whole batches starting with the one that holds `offset`, up to `max_bytes` (the
    /// first batch is returned whole even if larger, so a consumer always makes progress).
    /// Reading at the high watermark returns no chunks; outside `[log start, high watermark]`
    /// is `OffsetOutOfRange`.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult> {
        self.read_bounded(offset, max_bytes, u64::MAX)
    }

    /// [`PartitionLog::read`], returning only whole batches that end at or before `limit` (a
    /// leader serving consumers passes its committed high watermark): a batch straddling
    /// `limit` is not split, so it and everything after it are left out, and a read at or past
    /// `limit` (within the log) returns no chunks. A `limit` past the log end is the log end.
    /// Outside `[log start, log end]` is `OffsetOutOfRange`, as for `read`;
    /// [`ReadResult::high_watermark`] is still the log end.
    pub fn read_bounded(&self, offset: u64, max_bytes: usize, limit: u64) -> Result<ReadResult> {
        retry_if_segment_removed(|| self.read_once(offset, max_bytes, limit))
    }

    fn read_once(&self, offset: u64, max_bytes: usize, limit: u64) -> Result<ReadResult> {
        let (sources, high_watermark, log_start_offset, limit) = {
            let mut inner = lock(&self.inner);
            self.check_open(&inner)?;
            let hw = inner.active.next_offset;
            let start = inner.log_start_offset;
            if offset < start || offset > hw {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start: start,
                    high_watermark: hw,
                });
            }
            let limit = limit.min(hw);
            let mut sources = Vec::new();
            if offset < limit {
                // Sealed segments from the one holding `offset`, until they hold enough bytes.
                let mut reached_active = true;
                if offset < inner.active.base_offset {
                    let first = inner
                        .sealed
                        .partition_point(|s| s.base_offset <= offset)
                        .saturating_sub(1);
                    let mut after_first = 0u64;
                    for (k, s) in inner.sealed.iter().enumerate().skip(first) {
                        if s.base_offset >= limit {
                            // Every batch from here on ends past the limit.
                            reached_active = false;
                            break;
                        }
                        sources.push(ReadSource::Sealed(Arc::clone(s)));
                        if k > first {
                            after_first += s.size;
                        }
                        if after_first >= max_bytes as u64 {
                            reached_active = false;
                            break;
                        }
                    }
                }
                if reached_active && inner.active.size > 0 && inner.active.base_offset < limit {
                    let hint = if offset >= inner.active.base_offset {
                        index::lookup_offset(
                            &inner.active.index.offsets,
                            offset - inner.active.base_offset,
                        )
                    } else {
                        OffsetEntry {
                            relative_offset: 0,
                            position: 0,
                        }
                    };
                    let (base_offset, size) = (inner.active.base_offset, inner.active.size);
                    let (map, file) = inner.active.read_handles()?;
                    sources.push(ReadSource::Active {
                        map,
                        file,
                        base_offset,
                        size,
                        hint,
                    });
                }
            }
            (sources, hw, start, limit)
        };
        let known_damage = self
            .known_damage()
            .map(|d| (d.offset, d.reason.to_string()));
        let mut result = ReadResult {
            chunks: Vec::new(),
            high_watermark,
            log_start_offset,
        };
        let mut used = 0usize;
        let mut reached_limit = false;
        for source in sources {
            let (map, file, base_offset, size, hint) = match source {
                ReadSource::Sealed(segment) => {
                    let open = match segment.open() {
                        Ok(open) => open,
                        // What was read before this segment is served; the next read starts
                        // here and meets the error itself.
                        Err(_) if !result.chunks.is_empty() => break,
                        Err(StorageError::Corrupt { path, detail, .. }) => {
                            let damage = WalkDamage {
                                position: 0,
                                offset: offset.max(segment.base_offset),
                                detail,
                            };
                            return Err(self.damaged(path, damage));
                        }
                        Err(e) => return Err(e),
                    };
                    let Some(map) = open.map.clone() else {
                        continue;
                    };
                    let hint = if offset >= segment.base_offset && offset < segment.next_offset {
                        index::lookup_offset(open.offsets.as_slice(), offset - segment.base_offset)
                    } else {
                        OffsetEntry {
                            relative_offset: 0,
                            position: 0,
                        }
                    };
                    (
                        map,
                        Arc::clone(&open.file),
                        segment.base_offset,
                        segment.size,
                        hint,
                    )
                }
                ReadSource::Active {
                    map,
                    file,
                    base_offset,
                    size,
                    hint,
                } => (map, file, base_offset, size, hint),
            };
            let log = region_slice(&map, 0, size as usize);
            let must_take_one = result.chunks.is_empty();
            let budget = max_bytes.saturating_sub(used);
            // Only the batch starting exactly there matches, so every segment may be told.
            let damage_here = known_damage.as_ref().map(|(o, r)| (*o, r.as_str()));
            let mut walk = select_batches(
                log,
                u64::from(hint.position),
                base_offset + u64::from(hint.relative_offset),
                offset..limit,
                budget,
                must_take_one,
                damage_here,
            );
            if walk.selection.is_none() && walk.damage.is_some() && hint.position != 0 {
                // Perhaps only the index hint was wrong: walk the segment from its start.
                walk = select_batches(
                    log,
                    0,
                    base_offset,
                    offset..limit,
                    budget,
                    must_take_one,
                    damage_here,
                );
            }
            reached_limit |= walk.reached_limit;
            let stop = walk.reached_limit
                || match &walk.selection {
                    Some(sel) => {
                        used + (sel.end - sel.start) as usize >= max_bytes || sel.stopped_for_budget
                    }
                    None => true,
                };
            if let Some(sel) = walk.selection {
                used += (sel.end - sel.start) as usize;
                result.chunks.push(ReadChunk {
                    file,
                    position: sel.start,
                    bytes: region_bytes(&map, sel.start as usize, (sel.end - sel.start) as usize),
                    first_offset: sel.first_offset,
                    next_offset: sel.next_offset,
                });
            }
            if let Some(damage) = walk.damage {
                // Every whole batch before the damage is served; the read that starts at it
                // gets the error, so a consumer learns exactly where this copy ends.
                let error = self.damaged(segment_path(&self.dir, base_offset, LOG_SUFFIX), damage);
                if result.chunks.is_empty() {
                    return Err(error);
                }
                break;
            }
            if stop {
                break;
            }
        }
        if result.chunks.is_empty() && offset < limit && !reached_limit {
            // Below the high watermark there is always a batch (unless it straddles the limit);
            // finding none means the segment does not hold what its neighbours promise. An
            // error beats an empty answer a consumer would poll forever.
            let damage = WalkDamage {
                position: 0,
                offset,
                detail: format!(
                    "no batch found for offset {offset} below high watermark {high_watermark}"
                ),
            };
            return Err(self.damaged(self.dir.clone(), damage));
        }
        Ok(result)
    }

    /// The error for damage a read met, logged loudly the first time this place is met (a
    /// consumer retrying must not flood the log).
    fn damaged(&self, path: PathBuf, damage: WalkDamage) -> StorageError {
        let key = damage.offset.saturating_add(1);
        if self.damage_logged.swap(key, Ordering::Relaxed) != key {
            error!(
                partition = %self.tp,
                offset = damage.offset,
                segment = %path.display(),
                position = damage.position,
                detail = %damage.detail,
                "DAMAGED LOG: a stored batch below the high watermark is unreadable; batches before it are served, nothing from it on. Run `weir-broker --verify` on the stopped broker to list all damage."
            );
        }
        StorageError::CorruptLog {
            partition: self.tp.to_string(),
            offset: damage.offset,
            path,
            position: damage.position,
            detail: damage.detail,
        }
    }

    /// The offset of the first record whose timestamp is >= `timestamp`, or `None` if every
    /// record is older (Kafka's ListOffsets by time).
    pub fn offset_for_time(&self, timestamp: i64) -> Result<Option<u64>> {
        retry_if_segment_removed(|| self.offset_for_time_once(timestamp))
    }

    fn offset_for_time_once(&self, timestamp: i64) -> Result<Option<u64>> {
        let (sealed, active, log_start) = {
            let mut inner = lock(&self.inner);
            self.check_open(&inner)?;
            let sealed: Vec<Arc<SealedSegment>> = inner.sealed.iter().cloned().collect();
            let active = if inner.active.size > 0 && inner.active.index.max_timestamp >= timestamp {
                let start_rel = index::lookup_time(&inner.active.index.times, timestamp);
                let hint = index::lookup_offset(&inner.active.index.offsets, u64::from(start_rel));
                let (map, _) = inner.active.read_handles()?;
                Some((
                    map,
                    inner.active.base_offset,
                    inner.active.size,
                    start_rel,
                    hint,
                ))
            } else {
                None
            };
            (sealed, active, inner.log_start_offset)
        };
        for segment in sealed {
            if segment.next_offset <= log_start || segment.max_timestamp()? < timestamp {
                continue;
            }
            let open = segment.open()?;
            let Some(map) = open.map.clone() else {
                continue;
            };
            let start_rel = index::lookup_time(open.times.as_slice(), timestamp);
            let hint = index::lookup_offset(open.offsets.as_slice(), u64::from(start_rel));
            let corrupt = |detail| self.corrupt_segment(segment.base_offset, detail);
            let found = find_time_in_segment(
                &map,
                segment.size,
                segment.base_offset,
                hint,
                start_rel,
                timestamp,
                log_start,
            )
            .map_err(corrupt)?;
            if found.is_some() {
                return Ok(found);
            }
        }
        if let Some((map, base, size, start_rel, hint)) = active {
            return find_time_in_segment(&map, size, base, hint, start_rel, timestamp, log_start)
                .map_err(|detail| self.corrupt_segment(base, detail));
        }
        Ok(None)
    }

    fn corrupt_segment(&self, base_offset: u64, detail: String) -> StorageError {
        StorageError::Corrupt {
            what: "segment",
            path: segment_path(&self.dir, base_offset, LOG_SUFFIX),
            detail,
        }
    }
}

/// Runs `op` again (at most three times) when a segment it was reading left the log midway:
/// the retry sees the log as it is now (e.g. `OffsetOutOfRange` after retention).
fn retry_if_segment_removed<T>(mut op: impl FnMut() -> Result<T>) -> Result<T> {
    for _ in 0..3 {
        match op() {
            Err(StorageError::SegmentRemoved { .. }) => continue,
            other => return other,
        }
    }
    op()
}

/// Batches chosen from one segment for a read.
pub(super) struct Selection {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) first_offset: u64,
    pub(super) next_offset: u64,
    pub(super) stopped_for_budget: bool,
}

/// Where a walk found a segment not holding what it promises: the first unreadable batch.
pub(super) struct WalkDamage {
    /// Byte position in the segment where it starts.
    pub(super) position: u64,
    /// The offset it should have started with: the first offset that cannot be read.
    pub(super) offset: u64,
    pub(super) detail: String,
}

/// What one segment answers a read: the whole batches selected (none if the first did not fit
/// the budget or none holds the target), and the damage that stopped the walk, if any (then
/// the selection holds every batch before it).
pub(super) struct Walk {
    pub(super) selection: Option<Selection>,
    pub(super) damage: Option<WalkDamage>,
    /// The walk stopped at a batch ending past the read's limit: nothing after it may be read.
    pub(super) reached_limit: bool,
}

/// Walks `log` from `position` (where the batch with base `expected` starts) and selects the
/// whole batches from the one holding `wanted.start` on that end at or before `wanted.end`
/// (the read's limit; the first batch past it ends the walk, [`Walk::reached_limit`]), within
/// `budget` bytes (`must_take_one`: the first selected batch is taken even if larger). An inconsistent header ends the walk with
/// [`Walk::damage`] (a caller that started from an index hint retries from the segment start,
/// in case the hint was wrong), and so does the batch starting at `known_damage`'s offset (one
/// the scrub found failing its CRC, which this walk does not compute).
pub(super) fn select_batches(
    log: &[u8],
    position: u64,
    expected: u64,
    wanted: Range<u64>,
    budget: usize,
    must_take_one: bool,
    known_damage: Option<(u64, &str)>,
) -> Walk {
    let (target, limit) = (wanted.start, wanted.end);
    let mut pos = position as usize;
    let mut expected = expected;
    let mut selected: Option<Selection> = None;
    let damage = |pos: usize, expected: u64, detail: String| WalkDamage {
        position: pos as u64,
        offset: expected,
        detail,
    };
    while pos < log.len() {
        // `log` is exactly the published bytes: anything but a whole batch here is corruption
        // (or a wrong index hint, which the caller retries from the segment start).
        let rest = &log[pos..];
        let header = match BatchHeader::parse(rest) {
            Ok(header) => header,
            Err(e) => {
                return Walk {
                    selection: selected,
                    damage: Some(damage(pos, expected, e.to_string())),
                    reached_limit: false,
                };
            }
        };
        if let Some((offset, reason)) = known_damage
            && header.base_offset == offset
        {
            let detail = format!("found damaged by a CRC check: {reason}");
            return Walk {
                selection: selected,
                damage: Some(damage(pos, expected, detail)),
                reached_limit: false,
            };
        }
        if header.base_offset != expected {
            let detail = format!(
                "batch base offset {} where {expected} was expected",
                header.base_offset
            );
            return Walk {
                selection: selected,
                damage: Some(damage(pos, expected, detail)),
                reached_limit: false,
            };
        }
        let Some(total) = header.total_len().filter(|&n| n <= rest.len()) else {
            let detail = "batch length runs past the segment".to_string();
            return Walk {
                selection: selected,
                damage: Some(damage(pos, expected, detail)),
                reached_limit: false,
            };
        };
        if header.next_offset() > target {
            if header.next_offset() > limit {
                return Walk {
                    selection: selected,
                    damage: None,
                    reached_limit: true,
                };
            }
            match &mut selected {
                None => {
                    if total > budget && !must_take_one {
                        return Walk {
                            selection: None,
                            damage: None,
                            reached_limit: false,
                        };
                    }
                    selected = Some(Selection {
                        start: pos as u64,
                        end: (pos + total) as u64,
                        first_offset: header.base_offset,
                        next_offset: header.next_offset(),
                        stopped_for_budget: false,
                    });
                }
                Some(sel) => {
                    if (pos + total) as u64 - sel.start > budget as u64 {
                        sel.stopped_for_budget = true;
                        break;
                    }
                    sel.end = (pos + total) as u64;
                    sel.next_offset = header.next_offset();
                }
            }
        }
        pos += total;
        expected = header.next_offset();
    }
    Walk {
        selection: selected,
        damage: None,
        reached_limit: false,
    }
}

/// Within one segment: the first record at or after `start_rel` (relative) whose timestamp is
/// at least `timestamp`. Walks from the index hint, checking the chain of base offsets as reads do,
/// and from the segment start if the hint proves wrong.
fn find_time_in_segment(
    map: &Arc<MmapRaw>,
    size: u64,
    base: u64,
    hint: OffsetEntry,
    start_rel: u32,
    timestamp: i64,
    log_start: u64,
) -> std::result::Result<Option<u64>, String> {
    let from = (base + u64::from(start_rel)).max(log_start);
    let walk = |position: usize, expected: u64| -> std::result::Result<Option<u64>, String> {
        let log = region_slice(map, 0, size as usize);
        let (mut pos, mut expected) = (position, expected);
        while pos < log.len() {
            let header =
                BatchHeader::parse(&log[pos..]).map_err(|e| format!("at byte {pos}: {e}"))?;
            if header.base_offset != expected {
                return Err(format!(
                    "at byte {pos}: base offset {} where {expected} was expected",
                    header.base_offset
                ));
            }
            let total = header
                .total_len()
                .filter(|&n| pos + n <= log.len())
                .ok_or_else(|| format!("at byte {pos}: batch runs past the segment"))?;
            if header.next_offset() > from && header.max_timestamp >= timestamp {
                let batch = RecordBatch::parse(region_bytes(map, pos, total))
                    .map_err(|e| format!("at byte {pos}: {e}"))?;
                // The batch's newest record may lie before `from` (a log start inside it):
                // then keep looking in later batches.
                if let Some(r) = batch
                    .records()
                    .find(|r| r.offset >= from && r.timestamp >= timestamp)
                {
                    return Ok(Some(r.offset));
                }
            }
            pos += total;
            expected = header.next_offset();
        }
        Ok(None)
    };
    walk(
        hint.position as usize,
        base + u64::from(hint.relative_offset),
    )
    .or_else(|_| walk(0, base))
}
