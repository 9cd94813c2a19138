//! Property checks for weir-proto's parsers of untrusted bytes, one per fuzz target.
//!
//! Shared by the cargo-fuzz targets in `fuzz/fuzz_targets/` (which call [`check_batch`] and its
//! siblings on whatever libFuzzer generates) and by the bounded runs on stable in
//! `proto/tests/fuzz_parsers.rs` (a seed corpus, arbitrary bytes, and mutations of the seeds).
//! Not an API: hidden from the docs, and free to change with the parsers.
//!
//! Every target has two halves:
//! - `parse`: the parser exactly as production runs it on bytes from the network or the disk.
//!   The test harness measures what it allocates and holds it to the target's `max_alloc`,
//!   which is bounded by the input's length, never by a length or count field inside it (a
//!   length field saying 4 GiB must not make a parser reserve 4 GiB).
//! - `check`: `parse` plus the properties its results must have; it panics (which is how
//!   libFuzzer and proptest see a failure) when one does not hold.
//!
//! The storage engine's targets live in `weir_storage::fuzz_checks` and use the same
//! [`Target`] type.

use bytes::Bytes;

use crate::batch::{
    BatchBuilder, BatchHeader, CRC_COVERAGE_START, HEADER_LEN, LENGTH_FIELD_END, RecordBatch,
    RecordInput, split_batches, stamp_base_offset,
};
use crate::data_port::{
    FetchFrame, FrameError, FrameKind, MAX_REQUEST_LEN, RESPONSE_HEADER_LEN, ResponseHeader,
};
use crate::topic::validate_topic_name;

/// One fuzz target: a parser, its allocation bound and its properties.
#[derive(Clone, Copy)]
pub struct Target {
    /// The fuzz target's name: `fuzz/fuzz_targets/{name}.rs`, seeds in `fuzz/corpus/{name}/`.
    pub name: &'static str,
    /// The parser as production runs it (see the module docs).
    pub parse: fn(&[u8]),
    /// The most `parse` may allocate (peak bytes live at once) on an input of `n` bytes.
    pub max_alloc: fn(usize) -> usize,
    /// `parse` and the properties of its results; panics when one fails.
    pub check: fn(&[u8]),
    /// Recomputes the checksums of a mutated input (and, where the input is one record, its
    /// length field), so mutations reach the checks behind the length and CRC checks.
    pub fix_checksums: fn(&mut [u8]),
    /// (position, width in bytes) of fixed big-endian length and count fields in a seed, which
    /// mutations set to huge or negative values.
    pub length_fields: &'static [(usize, usize)],
    /// Tokens of the format (separators, signs, numbers just past a type's range) that
    /// mutations insert or write over the input: what a libFuzzer dictionary would hold.
    pub tokens: &'static [&'static [u8]],
}

/// weir-proto's targets.
pub const TARGETS: &[Target] = &[
    Target {
        name: "batch",
        parse: parse_batch,
        max_alloc: batch_max_alloc,
        check: check_batch,
        fix_checksums: fix_batch,
        // batch_length, last_offset_delta, record_count.
        length_fields: &[(8, 4), (19, 4), (53, 4)],
        tokens: &[],
    },
    Target {
        name: "fetch_request",
        parse: parse_fetch_request,
        max_alloc: fetch_request_max_alloc,
        check: check_fetch_request,
        fix_checksums: no_checksums,
        // The length prefix and topic_len.
        length_fields: &[(0, 4), (6, 2)],
        // Topic bytes that are not UTF-8, or not a valid name.
        tokens: &[b"\xff", b"\xc3\x28", b"..", b"/"],
    },
    Target {
        name: "fetch_response",
        parse: parse_fetch_response,
        max_alloc: fetch_response_max_alloc,
        check: check_fetch_response,
        fix_checksums: fix_response_crcs,
        // The first frame's length, and its first batch's batch_length and record_count.
        length_fields: &[(4, 4), (32 + 8, 4), (32 + 53, 4)],
        tokens: &[],
    },
];

/// Slack for the few fixed-size allocations a parser makes whatever its input (error strings).
pub const ALLOC_SLACK: usize = 4 << 10;

fn no_checksums(_: &mut [u8]) {}

/// Recomputes the CRC of every batch laid end to end in `buf` (as far as their length fields
/// can be followed), so a mutated length or count is seen by the checks behind the CRC.
pub fn fix_batch_crcs(buf: &mut [u8]) {
    let mut pos = 0;
    while buf.len() - pos >= HEADER_LEN {
        let declared =
            i32::from_be_bytes([buf[pos + 8], buf[pos + 9], buf[pos + 10], buf[pos + 11]]);
        let total = usize::try_from(i64::from(declared) + LENGTH_FIELD_END as i64)
            .ok()
            .filter(|&n| n >= HEADER_LEN)
            .map_or(buf.len() - pos, |n| n.min(buf.len() - pos));
        let crc = crc32fast::hash(&buf[pos + CRC_COVERAGE_START..pos + total]);
        buf[pos + 13..pos + 17].copy_from_slice(&crc.to_be_bytes());
        pos += total;
    }
}

/// Sets a single batch's length field to its actual length and recomputes its CRC.
pub fn fix_batch(buf: &mut [u8]) {
    if buf.len() >= HEADER_LEN {
        let len = i32::try_from(buf.len() - LENGTH_FIELD_END).unwrap_or(i32::MAX);
        buf[8..12].copy_from_slice(&len.to_be_bytes());
    }
    fix_batch_crcs(buf);
}

// ---------------------------------------------------------------------------------------------
// batch: what the broker runs on a produced batch (`RecordBatch::validate`) and what a consumer
// runs on fetched bytes (`split_batches`, record iteration, `keys_of`).

/// The batch parsers as production runs them: validation, then the consumer's path over the
/// same bytes.
pub fn parse_batch(bytes: &[u8]) {
    let _ = RecordBatch::validate(bytes);
    for batch in split_batches(Bytes::copy_from_slice(bytes)).flatten() {
        for record in batch.records() {
            std::hint::black_box(record);
        }
    }
    std::hint::black_box(RecordBatch::keys_of(bytes).count());
}

/// `validate` allocates nothing; the consumer path holds one copy of the input and one record's
/// headers (64 bytes per header, and a header takes at least 2 bytes of input) at a time.
pub fn batch_max_alloc(len: usize) -> usize {
    len + 32 * len + ALLOC_SLACK
}

/// Properties of the batch parsers:
/// - `validate`, `parse` and `split_batches` agree on whether the bytes are one valid batch;
/// - a valid batch yields exactly `record_count` records at dense offsets whose largest
///   timestamp is `max_timestamp`, and `keys_of` lists their keys;
/// - re-encoding its records with `BatchBuilder` gives a valid batch with the same records, and
///   the same bytes when the input was canonically encoded (shortest varints, base timestamp =
///   the first record's);
/// - restamping the base offset keeps it valid; a flipped bit past the base offset is refused;
/// - `split_batches` yields valid batches that tile a prefix of the input, then at most one error.
pub fn check_batch(bytes: &[u8]) {
    parse_batch(bytes);
    // Header accessors are total on whatever parses (they are used before validation).
    if let Ok(h) = BatchHeader::parse(bytes) {
        std::hint::black_box((h.total_len(), h.last_offset(), h.next_offset()));
        if let Some(total) = h.total_len() {
            assert!(total >= HEADER_LEN, "total_len below the header length");
        }
    }
    let validated = RecordBatch::validate(bytes);
    let parsed = RecordBatch::parse(Bytes::copy_from_slice(bytes));
    match (&validated, &parsed) {
        (Ok(h), Ok(b)) => assert_eq!(h, b.header(), "validate and parse disagree on the header"),
        (Err(a), Err(b)) => assert_eq!(a, b, "validate and parse refuse for different reasons"),
        _ => panic!(
            "validate ({:?}) and parse ({:?}) disagree",
            validated.as_ref().err(),
            parsed.as_ref().err()
        ),
    }
    check_split(bytes, validated.is_ok());
    if let Ok(batch) = parsed {
        check_valid_batch(bytes, &batch);
    }
}

fn check_split(bytes: &[u8], one_valid_batch: bool) {
    let mut covered = 0;
    let mut oks = 0;
    let mut failed = false;
    for result in split_batches(Bytes::copy_from_slice(bytes)) {
        assert!(!failed, "split_batches went on after an error");
        match result {
            Ok(batch) => {
                let len = batch.as_bytes().len();
                assert_eq!(
                    batch.as_bytes()[..],
                    bytes[covered..covered + len],
                    "split_batches returned bytes that are not the next part of its input"
                );
                covered += len;
                oks += 1;
            }
            Err(_) => failed = true,
        }
    }
    assert!(covered <= bytes.len());
    if one_valid_batch {
        assert!(
            oks == 1 && covered == bytes.len() && !failed,
            "split_batches does not see the one valid batch that validate accepted"
        );
    } else if !failed {
        assert_eq!(
            covered,
            bytes.len(),
            "split_batches stopped early without an error"
        );
    }
}

fn check_valid_batch(bytes: &[u8], batch: &RecordBatch) {
    let h = *batch.header();
    assert_eq!(h.total_len(), Some(bytes.len()));
    assert!(h.record_count >= 1 && h.last_offset_delta == h.record_count - 1);
    assert!(h.base_offset <= i64::MAX as u64 - h.record_count as u64);
    assert_eq!(h.attributes, 0);
    let records: Vec<_> = batch.records().collect();
    assert_eq!(
        records.len(),
        batch.record_count(),
        "a validated batch yields fewer records than it declares"
    );
    let mut max_ts = i64::MIN;
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, h.base_offset + i as u64, "offsets are not dense");
        max_ts = max_ts.max(r.timestamp);
    }
    assert_eq!(max_ts, h.max_timestamp);
    let keys: Vec<Option<&[u8]>> = RecordBatch::keys_of(bytes).collect();
    let want: Vec<Option<&[u8]>> = records.iter().map(|r| r.key.as_deref()).collect();
    assert_eq!(keys, want, "keys_of disagrees with the records");

    // Re-encode the records: the same records come back, and canonical input comes back whole.
    let mut builder = BatchBuilder::with_capacity(bytes.len()).producer(
        h.producer_id,
        h.producer_epoch,
        h.base_sequence,
    );
    for r in &records {
        let headers: Vec<(&[u8], Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|x| (&x.key[..], x.value.as_deref()))
            .collect();
        builder
            .push(RecordInput {
                key: r.key.as_deref(),
                value: r.value.as_deref(),
                timestamp: r.timestamp,
                headers: &headers,
            })
            .expect("a record that validated re-encodes");
    }
    let mut rebuilt = builder.build().expect("a valid batch re-encodes").to_vec();
    stamp_base_offset(&mut rebuilt, h.base_offset);
    let again =
        RecordBatch::parse(Bytes::from(rebuilt.clone())).expect("re-encoded batch is valid");
    assert_eq!(
        again.records().collect::<Vec<_>>(),
        records,
        "re-encoding changed the records"
    );
    // Every non-shortest varint makes the input longer than the canonical encoding, so equal
    // lengths and the builder's base timestamp mean the input was canonical.
    if rebuilt.len() == bytes.len() && records[0].timestamp == h.base_timestamp {
        assert_eq!(
            rebuilt, bytes,
            "a canonical batch does not re-encode to itself"
        );
    }

    // The broker restamps base offsets without touching the CRC.
    let mut restamped = bytes.to_vec();
    stamp_base_offset(&mut restamped, 0);
    assert!(
        RecordBatch::validate(&restamped).is_ok(),
        "restamping broke the batch"
    );
    // Any flipped bit after the base offset is refused (CRC-32 catches every single-bit error in
    // what it covers; length and magic are checked exactly). A few positions, chosen by the
    // CRC so that different inputs flip different bits.
    let bits = (bytes.len() - 8) * 8;
    for k in 0..3u32 {
        let bit = 64 + (h.crc.rotate_left(k * 11) as usize) % bits;
        let mut flipped = bytes.to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(
            RecordBatch::validate(&flipped).is_err(),
            "flipping bit {bit} went unnoticed"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// fetch_request: the data port's request, client to broker. The input is what arrives on the
// socket: a u32 length prefix, then the body.

/// What the broker does with a request: check the length prefix before reading the body, then
/// decode the body. The decoder also runs on everything after the prefix, whatever it says.
pub fn parse_fetch_request(bytes: &[u8]) {
    let Some((prefix, rest)) = split_prefix(bytes) else {
        return;
    };
    if let Ok(len) = FetchFrame::check_len(prefix)
        && let Some(body) = rest.get(..len)
    {
        let _ = FetchFrame::decode(body);
    }
    let _ = FetchFrame::decode(rest);
}

fn split_prefix(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let prefix = bytes.get(..4)?;
    Some((
        u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]),
        &bytes[4..],
    ))
}

/// At most one topic name (bounded by the 1024-byte body limit) and an error, whatever the
/// length prefix claims.
pub fn fetch_request_max_alloc(_len: usize) -> usize {
    2 * MAX_REQUEST_LEN + ALLOC_SLACK
}

/// Properties of the request decoder:
/// - `check_len` refuses every prefix the decoder would refuse for its length alone, so the
///   broker never allocates a body it will refuse for its size;
/// - a decoded request re-encodes to exactly the bytes it came from (the encoding is canonical,
///   so two different byte strings never mean the same request);
/// - a request whose topic passes the topic rule survives a round trip through `encode`.
pub fn check_fetch_request(bytes: &[u8]) {
    parse_fetch_request(bytes);
    let Some((prefix, rest)) = split_prefix(bytes) else {
        return;
    };
    match FetchFrame::check_len(prefix) {
        Ok(len) => assert!((24..=MAX_REQUEST_LEN).contains(&len)),
        Err(FrameError::TooLong(_)) => assert!(prefix as usize > MAX_REQUEST_LEN),
        Err(FrameError::TooShort { .. }) => assert!((prefix as usize) < 24),
        Err(e) => panic!("check_len refused a length with {e:?}"),
    }
    for body in [rest.get(..prefix as usize), Some(rest)]
        .into_iter()
        .flatten()
    {
        let decoded = FetchFrame::decode(body);
        if body.len() > MAX_REQUEST_LEN || body.len() < 24 {
            assert!(decoded.is_err(), "decode accepted a body check_len refuses");
        }
        if let Ok(frame) = decoded {
            let encoded = frame.encode();
            assert_eq!(
                &encoded[4..],
                body,
                "a decoded request does not re-encode to its bytes"
            );
            assert_eq!(encoded[..4], (body.len() as u32).to_be_bytes());
            if validate_topic_name(&frame.topic).is_ok() {
                assert_eq!(FetchFrame::decode(&encoded[4..]), Ok(frame));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// fetch_response: the data port's responses, broker to client. The input is a stream of
// frames as the client reads them: 32-byte header, then `length` bytes.

/// The client's reading of a response stream: decode each header; take its payload only once
/// the payload's bytes are there (a frame longer than what arrived is a torn read, never a
/// reason to reserve the announced length); parse and validate the batches of `Data` frames,
/// decode the message of `Error` frames.
pub fn parse_fetch_response(bytes: &[u8]) {
    for frame in frames(Bytes::copy_from_slice(bytes)) {
        let Ok((header, payload)) = frame else { break };
        match header.kind {
            FrameKind::Data => {
                for batch in split_batches(payload).flatten() {
                    for record in batch.records() {
                        std::hint::black_box(record);
                    }
                }
            }
            FrameKind::End => {}
            FrameKind::Epoch | FrameKind::Diverging | FrameKind::OutOfRange => {
                let _ = std::hint::black_box(crate::data_port::EpochEntry::decode(&payload));
            }
            FrameKind::Error => {
                std::hint::black_box(String::from_utf8_lossy(&payload));
            }
        }
    }
}

/// The frames of a response stream; stops after a malformed header or at a torn frame.
fn frames(stream: Bytes) -> impl Iterator<Item = Result<(ResponseHeader, Bytes), FrameError>> {
    let mut rest = stream;
    let mut done = false;
    std::iter::from_fn(move || {
        if done || rest.len() < RESPONSE_HEADER_LEN {
            return None;
        }
        let head: [u8; RESPONSE_HEADER_LEN] = rest[..RESPONSE_HEADER_LEN].try_into().ok()?;
        let header = match ResponseHeader::decode(&head) {
            Ok(h) => h,
            Err(e) => {
                done = true;
                return Some(Err(e));
            }
        };
        let len = header.length as usize;
        if rest.len() - RESPONSE_HEADER_LEN < len {
            done = true;
            return None;
        }
        let mut frame = rest.split_to(RESPONSE_HEADER_LEN + len);
        Some(Ok((header, frame.split_off(RESPONSE_HEADER_LEN))))
    })
}

/// One copy of the stream, one record's headers at a time, and an error message decoded with
/// replacement characters (at most 3 bytes out per byte in).
pub fn fetch_response_max_alloc(len: usize) -> usize {
    len + 32 * len + 3 * len + ALLOC_SLACK
}

/// Properties of the response decoder:
/// - a decoded header re-encodes to its bytes, and decoding refuses
///   exactly the unknown frame kinds;
/// - the batches of every `Data` frame pass the batch properties (see [`check_batch`]).
pub fn check_fetch_response(bytes: &[u8]) {
    parse_fetch_response(bytes);
    for frame in frames(Bytes::copy_from_slice(bytes)) {
        let Ok((header, payload)) = frame else { break };
        assert_eq!(payload.len(), header.length as usize);
        let encoded = header.encode();
        assert_eq!(ResponseHeader::decode(&encoded), Ok(header));
        if header.kind == FrameKind::Data {
            for batch in split_batches(payload).flatten() {
                check_batch(batch.as_bytes());
            }
        }
    }
    if let Some(head) = bytes.get(..RESPONSE_HEADER_LEN) {
        let head: [u8; RESPONSE_HEADER_LEN] = head.try_into().expect("32 bytes");
        match ResponseHeader::decode(&head) {
            Ok(h) => {
                let mut again = h.encode();
                again[1] = head[1];
                assert_eq!(
                    again, head,
                    "a decoded header does not re-encode to its bytes"
                );
            }
            Err(e) => assert_eq!(e, FrameError::Kind(head[0])),
        }
    }
}

/// Recomputes the CRCs of the batches in every frame of a response stream.
pub fn fix_response_crcs(buf: &mut [u8]) {
    let mut pos = 0;
    while buf.len() - pos >= RESPONSE_HEADER_LEN {
        let len =
            u32::from_be_bytes([buf[pos + 4], buf[pos + 5], buf[pos + 6], buf[pos + 7]]) as usize;
        let start = pos + RESPONSE_HEADER_LEN;
        let end = start + len.min(buf.len() - start);
        if buf[pos] == FrameKind::Data as u8 {
            fix_batch_crcs(&mut buf[start..end]);
        }
        pos = end;
    }
}
