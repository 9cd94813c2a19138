//! Encoding a batch: what the producer does before anything reaches the network.

use bytes::Bytes;

use super::BatchError;
use super::header::{
    BatchHeader, HEADER_LEN, LENGTH_FIELD_END, MAGIC, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
    NO_SEQUENCE,
};
use super::varint::{encode_zigzag32, encode_zigzag64, zigzag64_len};

/// One record to append, borrowed from the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordInput<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// Milliseconds since the Unix epoch (CreateTime).
    pub timestamp: i64,
    /// Header keys are UTF-8 by convention (not checked); values may be null.
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
}

/// Builds one batch. Records get offset deltas `0, 1, 2, ...` in push order; the broker assigns
/// the base offset when it stores the batch.
///
/// ```
/// use weir_proto::batch::{BatchBuilder, RecordBatch, RecordInput};
/// let mut builder = BatchBuilder::new();
/// builder.push(RecordInput { key: Some(b"k"), value: Some(b"v"), timestamp: 1_700_000_000_000, headers: &[] })?;
/// let batch = RecordBatch::parse(builder.build()?)?;
/// assert_eq!(batch.records().next().unwrap().value.as_deref(), Some(&b"v"[..]));
/// # Ok::<(), weir_proto::batch::BatchError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    record_count: i32,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn len_field(len: Option<usize>) -> Result<i32, &'static str> {
    match len {
        None => Ok(-1),
        Some(n) => i32::try_from(n).map_err(|_| "key, value or header longer than 2 GiB"),
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::with_capacity(4096)
    }

    /// `capacity`: the expected encoded size, to avoid regrowing the buffer.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(HEADER_LEN));
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            record_count: 0,
            base_timestamp: None,
            max_timestamp: i64::MIN,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
        }
    }

    /// Marks the batch as coming from an idempotent producer.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Records pushed so far.
    pub fn record_count(&self) -> usize {
        self.record_count as usize
    }

    /// Encoded size of the batch so far, header included.
    pub fn size_in_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes `record` would add to the batch: lets a producer decide whether it still fits.
    pub fn encoded_len(&self, record: &RecordInput<'_>) -> usize {
        let ts_delta = record
            .timestamp
            .wrapping_sub(self.base_timestamp.unwrap_or(record.timestamp));
        let body = body_len(record, ts_delta, self.record_count);
        zigzag64_len(body as i64) + body
    }

    /// Appends one record.
    pub fn push(&mut self, record: RecordInput<'_>) -> Result<(), BatchError> {
        let index = self.record_count as usize;
        let malformed = |reason| BatchError::MalformedRecord { index, reason };
        if self.record_count == i32::MAX {
            return Err(malformed("a batch holds at most i32::MAX records"));
        }
        let base = *self.base_timestamp.get_or_insert(record.timestamp);
        let ts_delta = record.timestamp.wrapping_sub(base);
        let body = body_len(&record, ts_delta, self.record_count);
        let body_i32 = i32::try_from(body).map_err(|_| malformed("record longer than 2 GiB"))?;
        let key_len = len_field(record.key.map(<[u8]>::len)).map_err(malformed)?;
        let value_len = len_field(record.value.map(<[u8]>::len)).map_err(malformed)?;
        let header_count =
            i32::try_from(record.headers.len()).map_err(|_| malformed("too many headers"))?;

        let out = &mut self.buf;
        out.reserve(body + 5);
        encode_zigzag32(body_i32, out);
        out.push(0); // record attributes: reserved
        encode_zigzag64(ts_delta, out);
        encode_zigzag32(self.record_count, out);
        encode_zigzag32(key_len, out);
        out.extend_from_slice(record.key.unwrap_or_default());
        encode_zigzag32(value_len, out);
        out.extend_from_slice(record.value.unwrap_or_default());
        encode_zigzag32(header_count, out);
        for (key, value) in record.headers {
            encode_zigzag32(len_field(Some(key.len())).map_err(malformed)?, out);
            out.extend_from_slice(key);
            encode_zigzag32(len_field(value.map(<[u8]>::len)).map_err(malformed)?, out);
            out.extend_from_slice(value.unwrap_or_default());
        }
        self.record_count += 1;
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        Ok(())
    }

    /// Finishes the batch: writes the header and the CRC. Base offset is 0 until the broker
    /// stamps it.
    pub fn build(self) -> Result<Bytes, BatchError> {
        let mut batch = self.build_unsealed()?;
        crate::batch::seal(&mut batch)?;
        Ok(Bytes::from(batch))
    }

    /// Finishes the batch without its CRC (0), for a caller that still writes CRC-covered
    /// fields (the producer's identity and sequence at its first send) and then
    /// [`seal`](crate::batch::seal)s it: one pass over the records instead of two.
    pub fn build_unsealed(mut self) -> Result<Vec<u8>, BatchError> {
        if self.record_count == 0 {
            return Err(BatchError::BadRecordCount(0));
        }
        let batch_length = i32::try_from(self.buf.len() - LENGTH_FIELD_END)
            .map_err(|_| BatchError::Inconsistent("batch longer than 2 GiB"))?;
        let header = BatchHeader {
            base_offset: 0,
            batch_length,
            magic: MAGIC,
            crc: 0,
            attributes: 0,
            last_offset_delta: self.record_count - 1,
            base_timestamp: self.base_timestamp.unwrap_or(0),
            max_timestamp: self.max_timestamp,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            record_count: self.record_count,
        };
        header.write_to(&mut self.buf);
        Ok(self.buf)
    }
}

/// Length of a record's body (everything after its length varint).
fn body_len(record: &RecordInput<'_>, ts_delta: i64, offset_delta: i32) -> usize {
    let field = |len: Option<usize>| match len {
        None => zigzag64_len(-1),
        Some(n) => zigzag64_len(n as i64) + n,
    };
    let headers: usize = record
        .headers
        .iter()
        .map(|(k, v)| field(Some(k.len())) + field(v.map(<[u8]>::len)))
        .sum();
    1 + zigzag64_len(ts_delta)
        + zigzag64_len(i64::from(offset_delta))
        + field(record.key.map(<[u8]>::len))
        + field(record.value.map(<[u8]>::len))
        + zigzag64_len(record.headers.len() as i64)
        + headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{RecordBatch, seal, stamp_producer, write_producer};

    fn builder() -> BatchBuilder {
        let mut b = BatchBuilder::new();
        for i in 0..3u8 {
            b.push(RecordInput {
                key: Some(&[i]),
                value: Some(b"value"),
                timestamp: 1_700_000_000_000 + i64::from(i),
                headers: &[],
            })
            .unwrap();
        }
        b
    }

    #[test]
    fn an_unsealed_batch_is_valid_only_once_sealed_and_then_equals_a_built_one() {
        let mut unsealed = builder().build_unsealed().unwrap();
        assert!(
            BatchHeader::parse(&unsealed)
                .unwrap()
                .check_crc(&unsealed)
                .is_err()
        );
        seal(&mut unsealed).unwrap();
        assert_eq!(unsealed, builder().build().unwrap().to_vec());
        // Stamping at the first send, then one seal, is what stamp_producer does in two passes.
        let mut once = builder().build_unsealed().unwrap();
        write_producer(&mut once, 42, 1, 7).unwrap();
        seal(&mut once).unwrap();
        let mut twice = builder().build().unwrap().to_vec();
        stamp_producer(&mut twice, 42, 1, 7).unwrap();
        assert_eq!(once, twice);
        let parsed = RecordBatch::parse(Bytes::from(once)).unwrap();
        assert_eq!(parsed.header().producer_id, 42);
        assert_eq!(parsed.header().base_sequence, 7);
    }
}
