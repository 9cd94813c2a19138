//! Decoding: validating a batch and iterating its records as `Bytes` slices of the input.

use std::ops::Range;

use bytes::Bytes;

use super::BatchError;
use super::header::{BatchHeader, COMPRESSION_MASK, HEADER_LEN};
use super::varint::{decode_zigzag32, decode_zigzag64};

/// A record header: a key (UTF-8 by convention) and an optional value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// One decoded record. `key`, `value` and header bytes are slices of the batch, not copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// A batch whose every length, count and checksum has been checked against its bytes.
#[derive(Debug, Clone)]
pub struct RecordBatch {
    bytes: Bytes,
    header: BatchHeader,
}

impl RecordBatch {
    /// Validates `bytes` as exactly one batch (see the module invariants) and keeps it.
    pub fn parse(bytes: Bytes) -> Result<Self, BatchError> {
        let header = Self::validate(&bytes)?;
        Ok(RecordBatch { bytes, header })
    }

    /// Full validation of one batch without keeping it: header, exact length, magic, CRC,
    /// attributes, and the structure of every record. Returns the parsed header.
    ///
    /// This is what the broker runs on a produce before anything is written.
    pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        let header = BatchHeader::parse(buf)?;
        let declared = i64::from(header.batch_length);
        if header.total_len() != Some(buf.len()) {
            return Err(BatchError::LengthMismatch {
                declared,
                actual: buf.len().saturating_sub(12),
            });
        }
        header.check_crc(buf)?;
        if header.attributes & !COMPRESSION_MASK != 0 || header.attributes & COMPRESSION_MASK != 0 {
            return Err(BatchError::UnsupportedAttributes(header.attributes));
        }
        if header.record_count < 1 {
            return Err(BatchError::BadRecordCount(header.record_count));
        }
        // Offsets are i64 on the wire (Kafka's range): the last one must not pass i64::MAX.
        if header.base_offset > i64::MAX as u64 - header.record_count as u64 {
            return Err(BatchError::Inconsistent(
                "base offset + record count overflows i64",
            ));
        }
        if header.last_offset_delta != header.record_count - 1 {
            return Err(BatchError::Inconsistent(
                "last_offset_delta is not record_count - 1",
            ));
        }
        let mut pos = HEADER_LEN;
        let mut max_timestamp = i64::MIN;
        for index in 0..header.record_count as usize {
            let (end, timestamp_delta, offset_delta) = check_record(buf, pos)
                .map_err(|reason| BatchError::MalformedRecord { index, reason })?;
            if offset_delta as usize != index {
                return Err(BatchError::MalformedRecord {
                    index,
                    reason: "offset delta out of sequence",
                });
            }
            max_timestamp = max_timestamp.max(header.base_timestamp.wrapping_add(timestamp_delta));
            pos = end;
        }
        if pos != buf.len() {
            return Err(BatchError::TrailingBytes(buf.len() - pos));
        }
        if max_timestamp != header.max_timestamp {
            return Err(BatchError::Inconsistent(
                "max_timestamp is not the largest record timestamp",
            ));
        }
        Ok(header)
    }

    /// The key of each record of a batch `validate` accepted, in offset order (record `i` has
    /// offset `base_offset + i`), borrowed from `buf`. Stops early on malformed bytes, which a
    /// validated batch does not have.
    pub fn keys_of(buf: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
        let count = BatchHeader::parse(buf).map_or(0, |h| h.record_count.max(0) as usize);
        let mut pos = HEADER_LEN;
        (0..count).map_while(move |_| {
            let spans = parse_record(buf, pos).ok()?;
            pos = spans.end;
            Some(spans.key.map(|k| &buf[k]))
        })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn base_offset(&self) -> u64 {
        self.header.base_offset
    }

    pub fn last_offset(&self) -> u64 {
        self.header.last_offset()
    }

    pub fn record_count(&self) -> usize {
        self.header.record_count as usize
    }

    /// The batch exactly as stored and sent.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The records, in offset order.
    pub fn records(&self) -> Records<'_> {
        Records {
            batch: self,
            pos: HEADER_LEN,
            index: 0,
        }
    }

    /// The records as views borrowed from the batch's bytes, in offset order: no allocation
    /// and no reference count per record (what a consumer that handles whole batches reads).
    pub fn record_views(&self) -> RecordViews<'_> {
        RecordViews {
            batch: self,
            pos: HEADER_LEN,
            index: 0,
        }
    }
}

/// One record of a validated batch, borrowed from it ([`RecordBatch::record_views`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    buf: &'a [u8],
    headers: (usize, usize),
    header_count: i32,
}

impl<'a> RecordView<'a> {
    /// Its headers as (key, value) pairs, in the order they were added.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + use<'a> {
        let buf = self.buf;
        let mut pairs = Vec::new();
        // A validated batch's headers parse; a broken invariant yields none rather than panic.
        let _ = parse_headers(
            buf,
            self.headers.0..self.headers.1,
            self.header_count,
            |key, value| pairs.push((key, value)),
        );
        pairs
            .into_iter()
            .map(move |(key, value)| (&buf[key], value.map(|v| &buf[v])))
    }

    /// How many headers it has.
    pub fn header_count(&self) -> usize {
        self.header_count.max(0) as usize
    }
}

/// Iterator over a validated batch's records as borrowed views.
pub struct RecordViews<'a> {
    batch: &'a RecordBatch,
    pos: usize,
    index: usize,
}

impl<'a> Iterator for RecordViews<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<RecordView<'a>> {
        if self.index >= self.batch.record_count() {
            return None;
        }
        let buf: &'a [u8] = &self.batch.bytes;
        // Validated at construction (see `Records::next`).
        let spans = parse_record(buf, self.pos).ok()?;
        let header = &self.batch.header;
        let view = RecordView {
            offset: header.base_offset + self.index as u64,
            timestamp: header.base_timestamp.wrapping_add(spans.timestamp_delta),
            key: spans.key.map(|r| &buf[r]),
            value: spans.value.map(|r| &buf[r]),
            buf,
            headers: (spans.headers.start, spans.headers.end),
            header_count: spans.header_count,
        };
        self.pos = spans.end;
        self.index += 1;
        Some(view)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.batch.record_count() - self.index;
        (left, Some(left))
    }
}

/// Iterator over a validated batch's records.
pub struct Records<'a> {
    batch: &'a RecordBatch,
    pos: usize,
    index: usize,
}

impl Iterator for Records<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.index >= self.batch.record_count() {
            return None;
        }
        let bytes = &self.batch.bytes;
        // The batch was validated when it was constructed, so this cannot fail; stopping early
        // keeps even a broken invariant from becoming a panic.
        let spans = parse_record(bytes, self.pos).ok()?;
        let mut headers = Vec::with_capacity(spans.header_count as usize);
        parse_headers(
            bytes,
            spans.headers.clone(),
            spans.header_count,
            |key, value| {
                headers.push(Header {
                    key: bytes.slice(key),
                    value: value.map(|v| bytes.slice(v)),
                })
            },
        )
        .ok()?;
        let header = &self.batch.header;
        let record = Record {
            offset: header.base_offset + self.index as u64,
            timestamp: header.base_timestamp.wrapping_add(spans.timestamp_delta),
            key: spans.key.map(|r| bytes.slice(r)),
            value: spans.value.map(|r| bytes.slice(r)),
            headers,
        };
        self.pos = spans.end;
        self.index += 1;
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.batch.record_count() - self.index;
        (left, Some(left))
    }
}

/// Splits concatenated batches (a fetch response, a segment slice) and validates each. Stops
/// after the first error.
pub fn split_batches(bytes: Bytes) -> impl Iterator<Item = Result<RecordBatch, BatchError>> {
    let mut rest = bytes;
    let mut failed = false;
    std::iter::from_fn(move || {
        if rest.is_empty() || failed {
            return None;
        }
        let result = BatchHeader::parse(&rest).and_then(|header| {
            let total = header.total_len().filter(|&n| n <= rest.len()).ok_or(
                BatchError::LengthMismatch {
                    declared: i64::from(header.batch_length),
                    actual: rest.len().saturating_sub(12),
                },
            )?;
            RecordBatch::parse(rest.split_to(total))
        });
        failed = result.is_err();
        Some(result)
    })
}

/// Where one record's parts are, as ranges into the batch buffer.
struct RecordSpans {
    timestamp_delta: i64,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    headers: Range<usize>,
    header_count: i32,
    end: usize,
}

/// A cursor that reads varints and byte strings from `buf[pos..limit]`, refusing to pass limit.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    limit: usize,
}

impl Cursor<'_> {
    #[inline(always)]
    fn varint32(&mut self, what: &'static str) -> Result<i32, &'static str> {
        let (v, n) = decode_zigzag32(&self.buf[self.pos..self.limit]).ok_or(what)?;
        self.pos += n;
        Ok(v)
    }

    #[inline(always)]
    fn varint64(&mut self, what: &'static str) -> Result<i64, &'static str> {
        let (v, n) = decode_zigzag64(&self.buf[self.pos..self.limit]).ok_or(what)?;
        self.pos += n;
        Ok(v)
    }

    /// A length-prefixed byte string; length -1 is null.
    #[inline(always)]
    fn nullable_bytes(&mut self, what: &'static str) -> Result<Option<Range<usize>>, &'static str> {
        let len = self.varint32(what)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| what)?;
        if len > self.limit - self.pos {
            return Err(what);
        }
        let range = self.pos..self.pos + len;
        self.pos += len;
        Ok(Some(range))
    }
}

#[inline]
fn parse_record(buf: &[u8], start: usize) -> Result<RecordSpans, &'static str> {
    let mut outer = Cursor {
        buf,
        pos: start,
        limit: buf.len(),
    };
    let len = outer.varint32("record length is not a valid varint")?;
    let len = usize::try_from(len).map_err(|_| "negative record length")?;
    if len > buf.len() - outer.pos {
        return Err("record length runs past the end of the batch");
    }
    let end = outer.pos + len;
    let mut c = Cursor {
        buf,
        pos: outer.pos,
        limit: end,
    };
    if c.pos >= end {
        return Err("record too short for its attributes byte");
    }
    if buf[c.pos] != 0 {
        return Err("record attributes are reserved and must be 0");
    }
    c.pos += 1;
    let timestamp_delta = c.varint64("bad timestamp delta")?;
    // The offset delta's value is checked by `validate` (through check_record); here it is
    // only stepped over.
    c.varint32("bad offset delta")?;
    let key = c.nullable_bytes("bad key length")?;
    let value = c.nullable_bytes("bad value length")?;
    let header_count = c.varint32("bad header count")?;
    if header_count < 0 {
        return Err("negative header count");
    }
    let headers = c.pos..end;
    let consumed = parse_headers(buf, headers.clone(), header_count, |_, _| {})?;
    if consumed != end {
        return Err("record length does not match its contents");
    }
    Ok(RecordSpans {
        timestamp_delta,
        key,
        value,
        headers,
        header_count,
        end,
    })
}

/// Reads a zigzag varint that fits an i32 from `buf[*pos..limit]`, advancing `*pos`.
#[inline(always)]
fn varint32_at(buf: &[u8], pos: &mut usize, limit: usize) -> Option<i32> {
    let (v, n) = decode_zigzag32(buf.get(*pos..limit)?)?;
    *pos += n;
    Some(v)
}

/// Skips a length-prefixed byte string (length -1 is null) in `buf[*pos..limit]`.
#[inline(always)]
fn skip_bytes_at(buf: &[u8], pos: &mut usize, limit: usize, nullable: bool) -> Option<()> {
    let len = varint32_at(buf, pos, limit)?;
    if len == -1 && nullable {
        return Some(());
    }
    let len = usize::try_from(len).ok()?;
    if len > limit - *pos {
        return None;
    }
    *pos += len;
    Some(())
}

/// The structure check `validate` runs on every record of every produced batch: the same
/// rules as [`parse_record`], without building the spans, because it is the hot path of
/// produce. Returns (end, timestamp delta, offset delta). The test
/// `check_record_agrees_with_parse_record` holds the two to the same verdicts.
#[inline]
fn check_record(buf: &[u8], start: usize) -> Result<(usize, i64, i32), &'static str> {
    let mut pos = start;
    let len = varint32_at(buf, &mut pos, buf.len()).ok_or("record length is not a valid varint")?;
    let len = usize::try_from(len).map_err(|_| "negative record length")?;
    if len > buf.len() - pos {
        return Err("record length runs past the end of the batch");
    }
    let end = pos + len;
    match buf[pos..end].first() {
        None => return Err("record too short for its attributes byte"),
        Some(0) => pos += 1,
        Some(_) => return Err("record attributes are reserved and must be 0"),
    }
    let (timestamp_delta, n) = decode_zigzag64(&buf[pos..end]).ok_or("bad timestamp delta")?;
    pos += n;
    let offset_delta = varint32_at(buf, &mut pos, end).ok_or("bad offset delta")?;
    skip_bytes_at(buf, &mut pos, end, true).ok_or("bad key length")?;
    skip_bytes_at(buf, &mut pos, end, true).ok_or("bad value length")?;
    let header_count = varint32_at(buf, &mut pos, end).ok_or("bad header count")?;
    if header_count < 0 {
        return Err("negative header count");
    }
    for _ in 0..header_count {
        skip_bytes_at(buf, &mut pos, end, false).ok_or("bad header key length")?;
        skip_bytes_at(buf, &mut pos, end, true).ok_or("bad header value length")?;
    }
    if pos != end {
        return Err("record length does not match its contents");
    }
    Ok((end, timestamp_delta, offset_delta))
}

/// Walks `count` headers in `buf[range]`, calling `each(key, value)`; returns where they end.
#[inline]
fn parse_headers(
    buf: &[u8],
    range: Range<usize>,
    count: i32,
    mut each: impl FnMut(Range<usize>, Option<Range<usize>>),
) -> Result<usize, &'static str> {
    let mut c = Cursor {
        buf,
        pos: range.start,
        limit: range.end,
    };
    for _ in 0..count {
        let key = c
            .nullable_bytes("bad header key length")?
            .ok_or("null header key")?;
        let value = c.nullable_bytes("bad header value length")?;
        each(key, value);
    }
    Ok(c.pos)
}

#[cfg(test)]
mod tests {
    use super::super::{BatchBuilder, RecordInput, stamp_base_offset};
    use super::*;
    use proptest::prelude::*;

    type OwnedRecord = (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        i64,
        Vec<(Vec<u8>, Option<Vec<u8>>)>,
    );

    fn build(records: &[OwnedRecord]) -> Bytes {
        let mut b = BatchBuilder::new();
        for (k, v, ts, hs) in records {
            let hs: Vec<(&[u8], Option<&[u8]>)> =
                hs.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
            b.push(RecordInput {
                key: k.as_deref(),
                value: v.as_deref(),
                timestamp: *ts,
                headers: &hs,
            })
            .unwrap();
        }
        b.build().unwrap()
    }

    fn record_strategy() -> impl Strategy<Value = OwnedRecord> {
        let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40));
        (
            bytes(),
            bytes(),
            any::<i64>(),
            proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..8), bytes()),
                0..3,
            ),
        )
    }

    #[test]
    fn empty_batch_is_refused() {
        assert_eq!(
            BatchBuilder::new().build(),
            Err(BatchError::BadRecordCount(0))
        );
    }

    #[test]
    fn stamping_the_base_offset_keeps_the_crc_valid() {
        let bytes = build(&[
            (None, Some(b"a".to_vec()), 5, vec![]),
            (None, None, 7, vec![]),
        ]);
        let mut stored = bytes.to_vec();
        stamp_base_offset(&mut stored, 1234);
        let batch = RecordBatch::parse(Bytes::from(stored)).unwrap();
        let offsets: Vec<u64> = batch.records().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![1234, 1235]);
        assert_eq!(batch.header().max_timestamp, 7);
    }

    #[test]
    fn wrong_magic_is_named() {
        let mut bytes = build(&[(None, Some(b"a".to_vec()), 5, vec![])]).to_vec();
        bytes[12] = 2;
        assert_eq!(
            RecordBatch::validate(&bytes),
            Err(BatchError::UnsupportedMagic(2))
        );
    }

    #[test]
    fn a_lying_record_count_is_refused_even_with_a_fixed_crc() {
        let mut bytes = build(&[(None, Some(b"a".to_vec()), 5, vec![])]).to_vec();
        bytes[53..57].copy_from_slice(&1_000_000i32.to_be_bytes());
        bytes[19..23].copy_from_slice(&999_999i32.to_be_bytes());
        let crc = crc32fast::hash(&bytes[17..]);
        bytes[13..17].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            RecordBatch::validate(&bytes),
            Err(BatchError::MalformedRecord { index: 1, .. })
        ));
    }

    #[test]
    fn offsets_past_i64_max_are_refused() {
        let mut stored = build(&[(None, None, 0, vec![]), (None, None, 0, vec![])]).to_vec();
        stamp_base_offset(&mut stored, i64::MAX as u64);
        assert!(matches!(
            RecordBatch::validate(&stored),
            Err(BatchError::Inconsistent(_))
        ));
        stamp_base_offset(&mut stored, u64::MAX);
        assert!(RecordBatch::validate(&stored).is_err());
        stamp_base_offset(&mut stored, i64::MAX as u64 - 2);
        assert!(RecordBatch::validate(&stored).is_ok());
    }

    #[test]
    fn reserved_record_attributes_are_refused() {
        let mut bytes = build(&[(None, Some(b"a".to_vec()), 5, vec![])]).to_vec();
        bytes[HEADER_LEN + 1] = 1; // first record: length varint (1 byte), then attributes
        let crc = crc32fast::hash(&bytes[17..]);
        bytes[13..17].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            RecordBatch::validate(&bytes),
            Err(BatchError::MalformedRecord { index: 0, .. })
        ));
    }

    proptest! {
        #[test]
        fn roundtrip(records in proptest::collection::vec(record_strategy(), 1..20), base in 0u64..1 << 60) {
            let mut stored = build(&records).to_vec();
            stamp_base_offset(&mut stored, base);
            let batch = RecordBatch::parse(Bytes::from(stored)).unwrap();
            prop_assert_eq!(batch.record_count(), records.len());
            for (i, (got, want)) in batch.records().zip(&records).enumerate() {
                prop_assert_eq!(got.offset, base + i as u64);
                prop_assert_eq!(got.timestamp, want.2);
                prop_assert_eq!(got.key.as_deref(), want.0.as_deref());
                prop_assert_eq!(got.value.as_deref(), want.1.as_deref());
                let hs: Vec<(Vec<u8>, Option<Vec<u8>>)> = got.headers.iter().map(|h| (h.key.to_vec(), h.value.as_ref().map(|v| v.to_vec()))).collect();
                prop_assert_eq!(&hs, &want.3);
            }
        }

        #[test]
        fn encoded_len_predicts_growth(records in proptest::collection::vec(record_strategy(), 1..10)) {
            let mut b = BatchBuilder::new();
            for (k, v, ts, hs) in &records {
                let hs: Vec<(&[u8], Option<&[u8]>)> = hs.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
                let rec = RecordInput { key: k.as_deref(), value: v.as_deref(), timestamp: *ts, headers: &hs };
                let before = b.size_in_bytes();
                let predicted = b.encoded_len(&rec);
                b.push(rec).unwrap();
                prop_assert_eq!(b.size_in_bytes() - before, predicted);
            }
        }

        /// Every single-bit flip in the CRC-covered part, and every truncation, is refused.
        #[test]
        fn corruption_is_detected(records in proptest::collection::vec(record_strategy(), 1..5), bit in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
            let bytes = build(&records).to_vec();
            let mut flipped = bytes.clone();
            let bit = 8 * 12 + bit.index((bytes.len() - 12) * 8);
            flipped[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(RecordBatch::validate(&flipped).is_err());
            let cut = cut.index(bytes.len());
            prop_assert!(RecordBatch::validate(&bytes[..cut]).is_err());
        }

        /// The fast check used by `validate` and the parser used by iteration must agree on
        /// every input: valid batches, and valid batches with bytes overwritten.
        #[test]
        fn check_record_agrees_with_parse_record(
            records in proptest::collection::vec(record_strategy(), 1..4),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let mut bytes = build(&records).to_vec();
            for (at, value) in edits {
                let i = HEADER_LEN + at.index(bytes.len() - HEADER_LEN);
                bytes[i] = value;
            }
            let mut pos = HEADER_LEN;
            while pos < bytes.len() {
                let fast = check_record(&bytes, pos);
                let full = parse_record(&bytes, pos);
                prop_assert_eq!(fast.is_ok(), full.is_ok(), "at {}: {:?}", pos, fast);
                match (fast, full) {
                    (Ok((end, ts, _offset_delta)), Ok(spans)) => {
                        prop_assert_eq!((end, ts), (spans.end, spans.timestamp_delta));
                        pos = end;
                    }
                    _ => break,
                }
            }
        }

        #[test]
        fn keys_of_lists_every_records_key(records in proptest::collection::vec(record_strategy(), 1..6)) {
            let bytes = build(&records);
            let keys: Vec<Option<Vec<u8>>> = RecordBatch::keys_of(&bytes).map(|k| k.map(<[u8]>::to_vec)).collect();
            let want: Vec<Option<Vec<u8>>> = records.iter().map(|r| r.0.clone()).collect();
            prop_assert_eq!(keys, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = RecordBatch::validate(&bytes);
            let _ = RecordBatch::keys_of(&bytes).count();
            for b in split_batches(Bytes::from(bytes)) { let _ = b; }
        }
    }
}
