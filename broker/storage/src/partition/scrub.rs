//! The scrub's part of a partition: CRC-checking one sealed segment at a time (or one batch on
//! demand, `verify_batch_at`), and remembering damage it found so reads stop before it.
//!
//! The fetch path never reads the bytes it sends (sendfile), so a batch whose payload rotted on
//! disk (its header intact) would be served and only a consumer's CRC check would notice. The
//! scrub (`crate::scrub`, a background thread of the data dir) walks sealed segments with CRCs on;
//! what it finds is recorded here as the partition's known damage.
//!
//! Invariants enforced here:
//! - Known damage is the lowest damaged offset found; a read that reaches the batch starting at
//!   it stops there and one that starts at it is `CorruptLog`, as for damage a read finds itself.
//! - It only ever names an offset in `[log start, high watermark)` of the log it was found in:
//!   `truncate_to` at or below it forgets it (the offsets may be written again), and once
//!   retention moves the log start past it, it no longer applies.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::error;

use super::{PartitionLog, lock};
use crate::error::{Result, StorageError};
use crate::fs::{LOG_SUFFIX, segment_path};
use crate::mmap::region_slice;
use crate::scan::{ScanStop, scan_batches};

/// Damage the scrub found: the first batch of a sealed segment that fails its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownDamage {
    /// The first offset that cannot be read (the failing batch's base offset).
    pub offset: u64,
    /// The segment's `.log`.
    pub segment: PathBuf,
    /// Byte position of the failing batch in the segment.
    pub position: u64,
    pub reason: ScanStop,
}

/// What scrubbing one segment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubbedSegment {
    /// Bytes walked.
    pub bytes: u64,
    pub damage: Option<KnownDamage>,
}

impl PartitionLog {
    /// Base offsets of the sealed segments now, oldest first: the scrub's work list.
    pub fn sealed_segment_bases(&self) -> Vec<u64> {
        lock(&self.inner)
            .sealed
            .iter()
            .map(|s| s.base_offset)
            .collect()
    }

    /// CRC-checks every batch of the sealed segment based at `base`, if it is still in the log
    /// (`None` otherwise: retention or truncation removed it meanwhile). Damage found is
    /// recorded (reads then stop before it) and logged loudly.
    pub fn scrub_segment(&self, base: u64) -> Result<Option<ScrubbedSegment>> {
        let segment = {
            let inner = lock(&self.inner);
            self.check_open(&inner)?;
            match inner.sealed.iter().find(|s| s.base_offset == base) {
                Some(s) => Arc::clone(s),
                None => return Ok(None),
            }
        };
        let open = match segment.open() {
            Ok(open) => open,
            Err(StorageError::SegmentRemoved { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(map) = open.map.clone() else {
            return Ok(Some(ScrubbedSegment {
                bytes: 0,
                damage: None,
            }));
        };
        let bytes = region_slice(&map, 0, segment.size as usize);
        let outcome = scan_batches(bytes, 0, base, true, None);
        let damage = outcome.stop.map(|reason| KnownDamage {
            offset: outcome.next_offset,
            segment: segment_path(&self.dir, base, LOG_SUFFIX),
            position: outcome.valid_len,
            reason,
        });
        if let Some(found) = &damage {
            self.record_damage(found.clone(), "the scrub");
        }
        Ok(Some(ScrubbedSegment {
            bytes: segment.size,
            damage,
        }))
    }

    /// CRC-checks the one batch holding `offset` (the scrub's check, for one batch), and
    /// records what fails as the scrub's damage (reads then stop before it). Reads never look
    /// at the bytes they send (sendfile), so a leader whose follower keeps refusing the batch
    /// there (a follower checks every batch it appends) asks this before the scrub gets there.
    /// A batch the read itself finds damaged (its header, its place in the chain) is found by
    /// walking its sealed segment as the scrub does; damage already known is answered as is.
    /// `None` when the batch is intact, `offset` is the log end, or the damage lies in the
    /// active segment (recovery's, not the scrub's); a read's other errors otherwise
    /// (`OffsetOutOfRange`, `Closed`).
    pub fn verify_batch_at(&self, offset: u64) -> Result<Option<KnownDamage>> {
        let read = match self.read(offset, 1) {
            Ok(read) => read,
            // Damage the read met by itself (a batch that does not parse, or does not follow
            // the one before): the scrub's walk of that sealed segment names and records it.
            Err(StorageError::CorruptLog { offset: at, .. })
                if self.known_damage().is_none_or(|k| k.offset > at) =>
            {
                let base = lock(&self.inner)
                    .sealed
                    .iter()
                    .find(|s| s.base_offset <= at && at < s.next_offset)
                    .map(|s| s.base_offset);
                return match base {
                    Some(base) => Ok(self.scrub_segment(base)?.and_then(|s| s.damage)),
                    None => Ok(None),
                };
            }
            Err(StorageError::CorruptLog { .. }) => return Ok(self.known_damage()),
            Err(e) => return Err(e),
        };
        let Some(chunk) = read.chunks.first() else {
            return Ok(None);
        };
        // `read` with a budget of one byte returns exactly the batch holding `offset`.
        let outcome = scan_batches(&chunk.bytes, 0, chunk.first_offset, true, None);
        let Some(reason) = outcome.stop else {
            return Ok(None);
        };
        // The segment the batch came from, for the report (the newest one based at or below it).
        let base = {
            let inner = lock(&self.inner);
            if chunk.first_offset >= inner.active.base_offset {
                inner.active.base_offset
            } else {
                inner
                    .sealed
                    .iter()
                    .rev()
                    .find(|s| s.base_offset <= chunk.first_offset)
                    .map_or(inner.active.base_offset, |s| s.base_offset)
            }
        };
        let found = KnownDamage {
            offset: outcome.next_offset,
            segment: segment_path(&self.dir, base, LOG_SUFFIX),
            position: chunk.position + outcome.valid_len,
            reason,
        };
        self.record_damage(found.clone(), "a check of the batch");
        Ok(Some(found))
    }

    /// The damage the scrub found and reads now stop before, if it still applies.
    pub fn known_damage(&self) -> Option<KnownDamage> {
        let damage = lock(&self.known_damage).clone()?;
        (damage.offset >= self.log_start_offset()).then_some(damage)
    }

    /// Records `found` (by `found_by`, for the log line) unless damage at or below it is known.
    fn record_damage(&self, found: KnownDamage, found_by: &str) {
        let mut known = lock(&self.known_damage);
        if known.as_ref().is_some_and(|k| k.offset <= found.offset) {
            return;
        }
        error!(
            partition = %self.tp,
            offset = found.offset,
            segment = %found.segment.display(),
            position = found.position,
            reason = %found.reason,
            found_by,
            "DAMAGED LOG: a stored batch fails its checks; reads stop before it from now on. Run `weir-broker --verify` on the stopped broker to list all damage."
        );
        *known = Some(found);
    }

    /// Forgets known damage at or past `offset`: `truncate_to(offset)` removed it.
    pub(super) fn forget_damage_from(&self, offset: u64) {
        let mut known = lock(&self.known_damage);
        if known.as_ref().is_some_and(|k| k.offset >= offset) {
            *known = None;
        }
    }
}
