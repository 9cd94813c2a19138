//! The fixed 57-byte batch header (big-endian). Byte layout, from `segments-format.md`:
//!
//! | offset | size | field               | set by   | in CRC |
//! |-------:|-----:|---------------------|----------|--------|
//! |      0 |    8 | base_offset (u64)   | broker   | no     |
//! |      8 |    4 | batch_length (i32)  | producer | no (but it bounds the CRC range) |
//! |     12 |    1 | magic (i8) = 1      | producer | no (checked first) |
//! |     13 |    4 | crc (u32)           | producer | -      |
//! |     17 |    2 | attributes (i16)    | producer | yes    |
//! |     19 |    4 | last_offset_delta   | producer | yes    |
//! |     23 |    8 | base_timestamp (ms) | producer | yes    |
//! |     31 |    8 | max_timestamp (ms)  | producer | yes    |
//! |     39 |    8 | producer_id (i64)   | producer | yes    |
//! |     47 |    2 | producer_epoch (i16)| producer | yes    |
//! |     49 |    4 | base_sequence (i32) | producer | yes    |
//! |     53 |    4 | record_count (i32)  | producer | yes    |

use super::BatchError;

/// Length of the fixed header; records start here.
pub const HEADER_LEN: usize = 57;
/// `batch_length` counts the bytes after this position.
pub const LENGTH_FIELD_END: usize = 12;
/// The CRC covers `[CRC_COVERAGE_START, end of batch)`.
pub const CRC_COVERAGE_START: usize = 17;
/// The only batch format version this code reads and writes.
pub const MAGIC: i8 = 1;
/// Attribute bits 0-2: compression codec. Only 0 (none) is supported today.
pub const COMPRESSION_MASK: i16 = 0b111;
/// `producer_id` of a batch from a producer without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// `producer_epoch` of a batch from a producer without idempotence.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// `base_sequence` of a batch from a producer without idempotence.
pub const NO_SEQUENCE: i32 = -1;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const MAGIC_AT: usize = 12;
const CRC: usize = 13;
const ATTRIBUTES: usize = 17;
const LAST_OFFSET_DELTA: usize = 19;
const BASE_TIMESTAMP: usize = 23;
const MAX_TIMESTAMP: usize = 31;
const PRODUCER_ID: usize = 39;
const PRODUCER_EPOCH: usize = 47;
const BASE_SEQUENCE: usize = 49;
const RECORD_COUNT: usize = 53;

/// The decoded fixed header of one batch. Cheap to parse: reads 57 bytes, checks nothing but
/// the buffer length and the magic byte. Use [`BatchHeader::check_crc`] or
/// [`super::RecordBatch::validate`] before trusting the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    /// Bytes after the length field: the whole batch is `batch_length + 12` bytes.
    pub batch_length: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

impl BatchHeader {
    /// Parses the header at the start of `buf`. Fails if `buf` is shorter than the header or the
    /// magic byte is not [`MAGIC`] (checked first, so a future version is refused by name
    /// rather than misread).
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::TooShort {
                len: buf.len(),
                needed: HEADER_LEN,
            });
        }
        let magic = buf[MAGIC_AT] as i8;
        if magic != MAGIC {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        Ok(BatchHeader {
            base_offset: u64::from_be_bytes(be(buf, BASE_OFFSET)),
            batch_length: i32::from_be_bytes(be(buf, BATCH_LENGTH)),
            magic,
            crc: u32::from_be_bytes(be(buf, CRC)),
            attributes: i16::from_be_bytes(be(buf, ATTRIBUTES)),
            last_offset_delta: i32::from_be_bytes(be(buf, LAST_OFFSET_DELTA)),
            base_timestamp: i64::from_be_bytes(be(buf, BASE_TIMESTAMP)),
            max_timestamp: i64::from_be_bytes(be(buf, MAX_TIMESTAMP)),
            producer_id: i64::from_be_bytes(be(buf, PRODUCER_ID)),
            producer_epoch: i16::from_be_bytes(be(buf, PRODUCER_EPOCH)),
            base_sequence: i32::from_be_bytes(be(buf, BASE_SEQUENCE)),
            record_count: i32::from_be_bytes(be(buf, RECORD_COUNT)),
        })
    }

    /// The size of the whole batch, header included, as declared by its length field.
    /// `None` when the declared length is too small to hold a header (a lie or garbage).
    pub fn total_len(&self) -> Option<usize> {
        let total = i64::from(self.batch_length) + LENGTH_FIELD_END as i64;
        if total < HEADER_LEN as i64 {
            None
        } else {
            usize::try_from(total).ok()
        }
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> u64 {
        // Saturating: headers are parsed from untrusted bytes before they are validated.
        self.base_offset
            .saturating_add(u64::try_from(self.last_offset_delta.max(0)).unwrap_or(0))
    }

    /// The offset after this batch: where the next batch starts.
    pub fn next_offset(&self) -> u64 {
        self.last_offset().saturating_add(1)
    }

    /// Checks the stored CRC against `batch`, the whole batch this header was parsed from.
    pub fn check_crc(&self, batch: &[u8]) -> Result<(), BatchError> {
        if batch.len() < HEADER_LEN {
            return Err(BatchError::TooShort {
                len: batch.len(),
                needed: HEADER_LEN,
            });
        }
        let computed = crc32fast::hash(&batch[CRC_COVERAGE_START..]);
        if computed != self.crc {
            return Err(BatchError::CrcMismatch {
                stored: self.crc,
                computed,
            });
        }
        Ok(())
    }

    /// Writes this header into the first [`HEADER_LEN`] bytes of `out` (the CRC as given: the
    /// builder computes it after the records are in place).
    pub(crate) fn write_to(&self, out: &mut [u8]) {
        out[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&self.base_offset.to_be_bytes());
        out[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&self.batch_length.to_be_bytes());
        out[MAGIC_AT] = self.magic as u8;
        out[CRC..CRC + 4].copy_from_slice(&self.crc.to_be_bytes());
        out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&self.attributes.to_be_bytes());
        out[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&self.last_offset_delta.to_be_bytes());
        out[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&self.base_timestamp.to_be_bytes());
        out[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&self.max_timestamp.to_be_bytes());
        out[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&self.producer_id.to_be_bytes());
        out[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&self.producer_epoch.to_be_bytes());
        out[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&self.base_sequence.to_be_bytes());
        out[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&self.record_count.to_be_bytes());
    }
}

/// The sequence number `count` records after `sequence`. An idempotent producer's records are
/// numbered per partition with i32 sequences that wrap from `i32::MAX` to 0 (Kafka's rule);
/// producer and broker both count with this.
pub fn sequence_after(sequence: i32, count: i64) -> i32 {
    ((i64::from(sequence) + count).rem_euclid(i64::from(i32::MAX) + 1)) as i32
}

/// Writes an idempotent producer's identity and the batch's first sequence number into an
/// encoded batch and recomputes its CRC (these fields are CRC-covered): [`write_producer`],
/// then [`seal`].
pub fn stamp_producer(
    batch: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<(), BatchError> {
    write_producer(batch, producer_id, producer_epoch, base_sequence)?;
    seal(batch)
}

/// Writes an idempotent producer's identity and the batch's first sequence number into an
/// encoded batch, leaving its CRC stale: the producer stamps a batch built unsealed
/// ([`crate::batch::BatchBuilder::build_unsealed`]) at its first send, so sequences follow send
/// order, then [`seal`]s it, so the records are CRC'd once.
pub fn write_producer(
    batch: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<(), BatchError> {
    if batch.len() < HEADER_LEN {
        return Err(BatchError::TooShort {
            len: batch.len(),
            needed: HEADER_LEN,
        });
    }
    batch[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
    Ok(())
}

/// Computes an encoded batch's CRC over the bytes it covers and writes it: the last change to
/// a batch before it leaves the producer.
pub fn seal(batch: &mut [u8]) -> Result<(), BatchError> {
    if batch.len() < HEADER_LEN {
        return Err(BatchError::TooShort {
            len: batch.len(),
            needed: HEADER_LEN,
        });
    }
    let crc = crc32fast::hash(&batch[CRC_COVERAGE_START..]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Writes `base_offset` into a stored batch. The broker calls this on its own copy of a batch
/// it has validated; the CRC does not cover these bytes, so the batch stays valid.
///
/// # Panics
/// If `batch` is shorter than 8 bytes; callers pass a validated batch.
pub fn stamp_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

#[cfg(test)]
mod stamp_tests {
    use super::super::{BatchBuilder, RecordBatch, RecordInput};
    use super::*;

    #[test]
    fn a_stamped_batch_carries_the_identity_and_stays_valid() {
        let mut b = BatchBuilder::new();
        b.push(RecordInput {
            value: Some(b"v"),
            ..Default::default()
        })
        .unwrap();
        let mut bytes = b.build().unwrap().to_vec();
        stamp_producer(&mut bytes, 42, 3, 17).unwrap();
        let header = RecordBatch::validate(&bytes).expect("CRC recomputed");
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (42, 3, 17)
        );
        assert!(stamp_producer(&mut [0u8; 10], 1, 0, 0).is_err());
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        assert_eq!(sequence_after(5, 3), 8);
        assert_eq!(sequence_after(i32::MAX, 1), 0);
        assert_eq!(sequence_after(i32::MAX - 1, 3), 1);
    }
}
