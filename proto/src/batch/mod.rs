//! The record batch: encoding, zero-copy decoding and validation.
//!
//! A batch is a fixed 57-byte header followed by `record_count` records (see
//! `segments-format.md`, "Record batch"). The producer encodes it with [`BatchBuilder`] and
//! computes the CRC; the broker validates it with [`RecordBatch::validate`], assigns the base
//! offset with [`stamp_base_offset`] and stores the bytes unchanged; consumers parse it in place
//! with [`RecordBatch::parse`] and iterate [`Record`]s that are `Bytes` slices of the input.
//!
//! Invariants this module enforces (every parser checks them against the buffer it has; no
//! length read from input is trusted before it is checked):
//! - The CRC covers bytes `[17, end)`: everything after the CRC field and nothing the broker
//!   assigns. Stamping the base offset (bytes `[0, 8)`) never invalidates it.
//! - `batch_length` equals the number of bytes after the length field, exactly.
//! - A valid batch holds `record_count >= 1` records whose offset deltas are `0..record_count`,
//!   `last_offset_delta == record_count - 1`, and whose largest timestamp equals
//!   `max_timestamp`; the records end exactly at the end of the batch.

mod builder;
mod error;
mod header;
mod record;
mod varint;

pub use builder::{BatchBuilder, RecordInput};
pub use error::BatchError;
pub use header::{
    BatchHeader, COMPRESSION_MASK, CRC_COVERAGE_START, HEADER_LEN, LENGTH_FIELD_END, MAGIC,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, seal, sequence_after, stamp_base_offset,
    stamp_producer, write_producer,
};
pub use record::{Header, Record, RecordBatch, RecordView, RecordViews, Records, split_batches};
