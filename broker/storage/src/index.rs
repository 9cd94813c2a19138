//! Sparse segment indexes: `.index` (offset -> file position) and `.timeindex` (timestamp ->
//! offset). Layouts (big-endian, see `segments-format.md`):
//!
//! - `.index`: 8-byte entries `relative_offset: u32, position: u32`. An entry says "the batch
//!   starting at `base + relative_offset` is at byte `position` of the `.log`".
//! - `.timeindex`: 12-byte entries `timestamp: i64, relative_offset: u32`. An entry says "every
//!   record before `base + relative_offset` has a timestamp <= `timestamp`" (`timestamp` is the
//!   largest seen so far, so entries grow strictly).
//!
//! One entry is added per `index_interval_bytes` of batches by [`IndexBuilder`], which appends,
//! recovery and index rebuilds all share, so an index rebuilt from the log answers lookups the
//! same way as the one written while appending. The active segment keeps its index in memory
//! (it is rebuilt from the log after a crash anyway); sealed segments' index files are mapped.
//!
//! Invariants ([`check_offset_index`], [`check_time_index`]): relative offsets and positions
//! strictly increase; timestamps strictly increase; every entry lies inside its segment.

use weir_proto::batch::BatchHeader;

pub(crate) const OFFSET_ENTRY_LEN: usize = 8;
pub(crate) const TIME_ENTRY_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

pub(crate) fn offset_entry_count(index: &[u8]) -> usize {
    index.len() / OFFSET_ENTRY_LEN
}

pub(crate) fn offset_entry(index: &[u8], i: usize) -> OffsetEntry {
    let at = i * OFFSET_ENTRY_LEN;
    OffsetEntry {
        relative_offset: u32_at(index, at),
        position: u32_at(index, at + 4),
    }
}

pub(crate) fn time_entry_count(index: &[u8]) -> usize {
    index.len() / TIME_ENTRY_LEN
}

pub(crate) fn time_entry(index: &[u8], i: usize) -> TimeEntry {
    let at = i * TIME_ENTRY_LEN;
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&index[at..at + 8]);
    TimeEntry {
        timestamp: i64::from_be_bytes(ts),
        relative_offset: u32_at(index, at + 8),
    }
}

/// The nearest indexed batch at or before `relative_offset`: the largest entry whose relative
/// offset is <= it, or the segment start.
pub(crate) fn lookup_offset(index: &[u8], relative_offset: u64) -> OffsetEntry {
    let n = offset_entry_count(index);
    // partition_point: first entry with relative_offset > target.
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if u64::from(offset_entry(index, mid).relative_offset) <= relative_offset {
            lo = mid + 1
        } else {
            hi = mid
        }
    }
    if lo == 0 {
        OffsetEntry {
            relative_offset: 0,
            position: 0,
        }
    } else {
        offset_entry(index, lo - 1)
    }
}

/// Where to start looking for the first record with timestamp >= `timestamp`: the relative
/// offset of the last entry whose timestamp is < it (every record before it is older), or 0.
pub(crate) fn lookup_time(index: &[u8], timestamp: i64) -> u32 {
    let n = time_entry_count(index);
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if time_entry(index, mid).timestamp < timestamp {
            lo = mid + 1
        } else {
            hi = mid
        }
    }
    if lo == 0 {
        0
    } else {
        time_entry(index, lo - 1).relative_offset
    }
}

/// Checks an offset index against its segment: whole entries, strictly increasing offsets and
/// positions, all inside the segment (`offsets` relative offsets, `log_len` bytes).
pub(crate) fn check_offset_index(index: &[u8], offsets: u64, log_len: u64) -> Result<(), String> {
    if !index.len().is_multiple_of(OFFSET_ENTRY_LEN) {
        return Err(format!(
            "{} bytes is not a whole number of 8-byte entries",
            index.len()
        ));
    }
    let mut prev: Option<OffsetEntry> = None;
    for i in 0..offset_entry_count(index) {
        let e = offset_entry(index, i);
        if u64::from(e.relative_offset) >= offsets || u64::from(e.position) >= log_len {
            return Err(format!("entry {i} ({e:?}) points outside the segment"));
        }
        if let Some(p) = prev
            && (e.relative_offset <= p.relative_offset || e.position <= p.position)
        {
            return Err(format!(
                "entry {i} ({e:?}) does not follow entry {} ({p:?})",
                i - 1
            ));
        }
        prev = Some(e);
    }
    Ok(())
}

/// Checks a time index: whole entries, strictly increasing timestamps, non-decreasing offsets
/// no further than the segment's end (`offsets` relative offsets).
pub(crate) fn check_time_index(index: &[u8], offsets: u64) -> Result<(), String> {
    if !index.len().is_multiple_of(TIME_ENTRY_LEN) {
        return Err(format!(
            "{} bytes is not a whole number of 12-byte entries",
            index.len()
        ));
    }
    let mut prev: Option<TimeEntry> = None;
    for i in 0..time_entry_count(index) {
        let e = time_entry(index, i);
        if u64::from(e.relative_offset) > offsets {
            return Err(format!("entry {i} ({e:?}) points past the segment"));
        }
        if let Some(p) = prev
            && (e.timestamp <= p.timestamp || e.relative_offset < p.relative_offset)
        {
            return Err(format!(
                "entry {i} ({e:?}) does not follow entry {} ({p:?})",
                i - 1
            ));
        }
        prev = Some(e);
    }
    Ok(())
}

/// Builds both indexes of one segment as batches are appended (or re-read).
#[derive(Debug, Clone)]
pub(crate) struct IndexBuilder {
    base_offset: u64,
    interval: u64,
    pub offsets: Vec<u8>,
    pub times: Vec<u8>,
    bytes_since_offset_entry: u64,
    bytes_since_time_entry: u64,
    /// Largest record timestamp in the segment so far (`i64::MIN` when empty).
    pub max_timestamp: i64,
    /// The offset after the latest batch seen: a time entry made now covers every record
    /// before it.
    next_offset: u64,
    /// The entries so far came from files (`resume`), so they are only as good as the files:
    /// the caller checks the resumed index against the segment once it has scanned the rest.
    from_files: bool,
}

impl IndexBuilder {
    pub(crate) fn new(base_offset: u64, interval: u32) -> Self {
        IndexBuilder {
            base_offset,
            interval: u64::from(interval),
            offsets: Vec::new(),
            times: Vec::new(),
            bytes_since_offset_entry: 0,
            bytes_since_time_entry: 0,
            max_timestamp: i64::MIN,
            next_offset: base_offset,
            from_files: false,
        }
    }

    /// Resumes from indexes loaded from files: the next batch starts a fresh interval.
    pub(crate) fn resume(
        base_offset: u64,
        interval: u32,
        offsets: Vec<u8>,
        times: Vec<u8>,
    ) -> Self {
        let mut b = Self::new(base_offset, interval);
        if let Some(last) = time_entry_count(&times)
            .checked_sub(1)
            .map(|i| time_entry(&times, i))
        {
            b.max_timestamp = last.timestamp;
            b.next_offset = base_offset + u64::from(last.relative_offset);
        }
        b.offsets = offsets;
        b.times = times;
        b.from_files = true;
        b
    }

    /// Whether a batch at `position` of `len` bytes can be indexed in this segment: a segment
    /// holds at most 2^32 - 1 offsets and bytes (entries are relative `u32`s; the log rolls
    /// before a segment would pass either), so a batch past that is not one of its batches.
    pub(crate) fn fits(&self, header: &BatchHeader, position: u64, len: u64) -> bool {
        header.base_offset >= self.base_offset
            && header.next_offset() - self.base_offset <= u64::from(u32::MAX)
            && position.saturating_add(len) <= u64::from(u32::MAX)
    }

    /// Records one batch of `len` bytes stored at `position`.
    pub(crate) fn on_batch(&mut self, header: &BatchHeader, position: u64, len: u64) {
        if self.bytes_since_offset_entry >= self.interval {
            self.push_offset(header.base_offset, position);
        }
        self.bytes_since_offset_entry += len;
        self.bytes_since_time_entry += len;
        self.next_offset = header.next_offset();
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
        }
        if self.bytes_since_time_entry >= self.interval {
            self.push_time_if_newer();
        }
    }

    /// Adds the batch at `position` to the offset index unconditionally (resuming a segment).
    pub(crate) fn push_offset(&mut self, base_offset: u64, position: u64) {
        // Entries are 32-bit and strictly increasing (see `check_offset_index`): the config
        // caps a segment at 4 GiB - 1 and a roll keeps its offsets within u32.
        debug_assert!(base_offset >= self.base_offset);
        debug_assert!(
            base_offset - self.base_offset <= u64::from(u32::MAX)
                && position <= u64::from(u32::MAX),
            "index entry ({base_offset}, {position}) does not fit 32 bits"
        );
        debug_assert!(
            offset_entry_count(&self.offsets)
                .checked_sub(1)
                .map(|i| offset_entry(&self.offsets, i))
                .is_none_or(|last| u64::from(last.relative_offset)
                    < base_offset - self.base_offset
                    && u64::from(last.position) < position),
            "index entry ({base_offset}, {position}) does not follow the last one"
        );
        let rel = (base_offset - self.base_offset) as u32;
        self.offsets.extend_from_slice(&rel.to_be_bytes());
        self.offsets
            .extend_from_slice(&(position as u32).to_be_bytes());
        self.bytes_since_offset_entry = 0;
    }

    fn push_time_if_newer(&mut self) {
        let last = time_entry_count(&self.times)
            .checked_sub(1)
            .map(|i| time_entry(&self.times, i));
        let rel = (self.next_offset - self.base_offset) as u32;
        // A builder's own entries never go back. Entries resumed from a file can lie ahead of
        // the batches (a stale or garbled `.timeindex`): then nothing is added, and the caller's
        // check of the resumed index against the segment's extent fails and rebuilds it.
        let goes_back = last.is_some_and(|e| e.relative_offset > rel);
        debug_assert!(
            !goes_back || self.from_files,
            "time index entry at {rel} goes back"
        );
        if !goes_back
            && last.is_none_or(|e| self.max_timestamp > e.timestamp)
            && self.max_timestamp != i64::MIN
        {
            self.times
                .extend_from_slice(&self.max_timestamp.to_be_bytes());
            self.times.extend_from_slice(&rel.to_be_bytes());
        }
        self.bytes_since_time_entry = 0;
    }

    /// Seals the time index: a last entry for the segment's largest timestamp, so a sealed
    /// segment's newest time is its last time-index entry.
    pub(crate) fn finish(&mut self) {
        self.push_time_if_newer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(base: u64, count: i32, max_ts: i64) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 0,
            magic: 1,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: max_ts,
            max_timestamp: max_ts,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count: count,
        }
    }

    #[test]
    fn one_entry_per_interval_and_lookups() {
        let mut b = IndexBuilder::new(100, 1000);
        let mut pos = 0;
        for i in 0..10u64 {
            b.on_batch(&header(100 + i * 2, 2, 1000 + i as i64), pos, 600);
            pos += 600;
        }
        // Entries before batches 2, 4, 6, 8 (every 1200 bytes >= 1000).
        let entries: Vec<_> = (0..offset_entry_count(&b.offsets))
            .map(|i| offset_entry(&b.offsets, i))
            .collect();
        assert_eq!(
            entries
                .iter()
                .map(|e| e.relative_offset)
                .collect::<Vec<_>>(),
            vec![4, 8, 12, 16]
        );
        assert_eq!(
            lookup_offset(&b.offsets, 0),
            OffsetEntry {
                relative_offset: 0,
                position: 0
            }
        );
        assert_eq!(
            lookup_offset(&b.offsets, 9),
            OffsetEntry {
                relative_offset: 8,
                position: 2400
            }
        );
        assert_eq!(
            lookup_offset(&b.offsets, 1000),
            OffsetEntry {
                relative_offset: 16,
                position: 4800
            }
        );
        check_offset_index(&b.offsets, 20, pos).unwrap();
        b.finish();
        check_time_index(&b.times, 20).unwrap();
        let last = time_entry(&b.times, time_entry_count(&b.times) - 1);
        assert_eq!(
            last,
            TimeEntry {
                timestamp: 1009,
                relative_offset: 20
            }
        );
        // Everything before the entry found is older than the target.
        let start = lookup_time(&b.times, 1005);
        assert!(
            start <= 10,
            "records at relative offset 10 have timestamp 1005"
        );
        assert_eq!(lookup_time(&b.times, 0), 0);
    }

    #[test]
    fn garbled_indexes_fail_the_checks() {
        let mut b = IndexBuilder::new(0, 1);
        for i in 0..5u64 {
            b.on_batch(&header(i, 1, i as i64), i * 100, 100);
        }
        b.finish();
        check_offset_index(&b.offsets, 5, 500).unwrap();
        assert!(check_offset_index(&b.offsets[..7], 5, 500).is_err());
        assert!(check_offset_index(&b.offsets, 3, 500).is_err());
        let mut swapped = b.offsets.clone();
        swapped.swap(3, 11);
        assert!(check_offset_index(&swapped, 5, 500).is_err());
        let mut times = b.times.clone();
        times[7] ^= 0xff;
        assert!(check_time_index(&times, 5).is_err());
    }
}
