//! Walking the batches of a segment's bytes: the one routine recovery, index rebuilds and clean
//! reopens share to decide where the valid log ends.
//!
//! A batch is accepted only if its header parses (right magic), its declared length fits in the
//! bytes left, its base offset is exactly the next expected offset (offsets are dense), its
//! record count agrees with its last offset delta, (when asked) its CRC matches, and (when an
//! index is built) it lies within the 2^32 - 1 offsets and bytes a segment can hold. The scan
//! stops at the first batch that fails, and reports why; everything before it is the valid
//! prefix.

use std::fmt;

use weir_proto::batch::{BatchError, BatchHeader, HEADER_LEN};

use super::index::IndexBuilder;

/// Why a scan stopped before the end of the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStop {
    /// A header of zeros: the unwritten (preallocated) tail of an active segment.
    ZeroHeader,
    /// Fewer bytes left than a header, or than the header's declared length: a torn write.
    Torn { needed: u64, available: u64 },
    /// The header is not a batch header.
    BadHeader(BatchError),
    /// The batch's base offset is not the next offset of the log.
    WrongOffset { expected: u64, found: u64 },
    /// The CRC does not match the bytes.
    BadCrc(BatchError),
}

impl fmt::Display for ScanStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanStop::ZeroHeader => write!(f, "zero-filled header (unwritten tail)"),
            ScanStop::Torn { needed, available } => {
                write!(f, "torn batch: needs {needed} bytes, {available} present")
            }
            ScanStop::BadHeader(e) => write!(f, "invalid batch header: {e}"),
            ScanStop::WrongOffset { expected, found } => {
                write!(f, "batch base offset {found}, expected {expected}")
            }
            ScanStop::BadCrc(e) => write!(f, "{e}"),
        }
    }
}

/// Where a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanOutcome {
    /// Bytes `[0, valid_len)` hold whole valid batches.
    pub valid_len: u64,
    /// The offset after the last valid batch.
    pub next_offset: u64,
    /// Why the scan stopped early; `None` if it reached the end of the bytes.
    pub stop: Option<ScanStop>,
}

/// Scans `bytes` from `start_position`, where the batch with base offset `start_offset` is
/// expected, feeding each valid batch to `index` if given.
pub(crate) fn scan_batches(
    bytes: &[u8],
    start_position: u64,
    start_offset: u64,
    verify_crc: bool,
    mut index: Option<&mut IndexBuilder>,
) -> ScanOutcome {
    let mut pos = start_position as usize;
    let mut next_offset = start_offset;
    let stop = loop {
        let rest = &bytes[pos.min(bytes.len())..];
        if rest.is_empty() {
            break None;
        }
        if rest.len() < HEADER_LEN {
            break Some(if rest.iter().all(|&b| b == 0) {
                ScanStop::ZeroHeader
            } else {
                ScanStop::Torn {
                    needed: HEADER_LEN as u64,
                    available: rest.len() as u64,
                }
            });
        }
        if rest[..HEADER_LEN].iter().all(|&b| b == 0) {
            break Some(ScanStop::ZeroHeader);
        }
        let header = match BatchHeader::parse(rest) {
            Ok(h) => h,
            Err(e) => break Some(ScanStop::BadHeader(e)),
        };
        let Some(total) = header.total_len() else {
            break Some(ScanStop::BadHeader(BatchError::LengthMismatch {
                declared: i64::from(header.batch_length),
                actual: rest.len().saturating_sub(12),
            }));
        };
        if total > rest.len() {
            break Some(ScanStop::Torn {
                needed: total as u64,
                available: rest.len() as u64,
            });
        }
        if header.base_offset != next_offset {
            break Some(ScanStop::WrongOffset {
                expected: next_offset,
                found: header.base_offset,
            });
        }
        if verify_crc && let Err(e) = header.check_crc(&rest[..total]) {
            break Some(ScanStop::BadCrc(e));
        }
        if header.record_count < 1 || header.last_offset_delta != header.record_count - 1 {
            break Some(ScanStop::BadHeader(BatchError::Inconsistent(
                "record count and last offset delta disagree",
            )));
        }
        if let Some(index) = index.as_deref_mut() {
            if !index.fits(&header, pos as u64, total as u64) {
                break Some(ScanStop::BadHeader(BatchError::Inconsistent(
                    "batch runs past the 2^32 - 1 offsets or bytes of a segment",
                )));
            }
            index.on_batch(&header, pos as u64, total as u64);
        }
        pos += total;
        next_offset = header.next_offset();
    };
    ScanOutcome {
        valid_len: pos as u64,
        next_offset,
        stop,
    }
}
