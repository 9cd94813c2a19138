//! The worked example in `segments-format.md` is real: the hex dump between its
//! `<!-- hexdump:begin -->` / `<!-- hexdump:end -->` markers (produced by the independent encoder
//! `proto/tests/spec_encoder.py`) decodes with this crate to exactly the documented records, and
//! `BatchBuilder` produces the same bytes. If the spec and the code drift apart, this fails.

use bytes::Bytes;
use weir_proto::batch::{
    BatchBuilder, Header, Record, RecordBatch, RecordInput, stamp_base_offset,
};

const SPEC: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../segments-format.md"
));
const BEGIN: &str = "<!-- hexdump:begin -->";
const END: &str = "<!-- hexdump:end -->";

const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

/// The bytes of the spec's hex dump: fence lines skipped, `XXXX:` offset prefixes stripped.
fn spec_hex_dump() -> Vec<u8> {
    let start = SPEC.find(BEGIN).expect("spec has the hexdump begin marker") + BEGIN.len();
    let len = SPEC[start..]
        .find(END)
        .expect("spec has the hexdump end marker after the begin marker");
    let mut bytes = Vec::new();
    for line in SPEC[start..start + len].lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("```") {
            continue;
        }
        let hex = line.split_once(':').map_or(line, |(_, rest)| rest);
        for pair in hex.split_whitespace() {
            assert_eq!(
                pair.len(),
                2,
                "not a hex byte pair: {pair:?} in line {line:?}"
            );
            let byte = u8::from_str_radix(pair, 16)
                .unwrap_or_else(|e| panic!("not a hex byte pair: {pair:?} in line {line:?}: {e}"));
            bytes.push(byte);
        }
    }
    assert!(!bytes.is_empty(), "no bytes between the hexdump markers");
    bytes
}

#[test]
fn spec_hex_dump_decodes_to_the_documented_batch() {
    let dump = spec_hex_dump();
    let total = dump.len();
    let batch = RecordBatch::parse(Bytes::from(dump)).expect("the spec's example is a valid batch");

    let h = batch.header();
    assert_eq!(h.base_offset, 42);
    assert_eq!(h.batch_length as usize, total - 12);
    assert_eq!(h.magic, 1);
    assert_eq!(h.crc, 0x0E42_DA97, "the CRC in the spec's annotation table");
    assert_eq!(h.attributes, 0);
    assert_eq!(h.last_offset_delta, 1);
    assert_eq!(h.base_timestamp, BASE_TIMESTAMP);
    assert_eq!(h.max_timestamp, BASE_TIMESTAMP + 5);
    assert_eq!(h.producer_id, -1);
    assert_eq!(h.producer_epoch, -1);
    assert_eq!(h.base_sequence, -1);
    assert_eq!(h.record_count, 2);

    let records: Vec<Record> = batch.records().collect();
    assert_eq!(records.len(), 2);

    let r0 = &records[0];
    assert_eq!(r0.offset, 42);
    assert_eq!(r0.timestamp, BASE_TIMESTAMP);
    assert_eq!(r0.key.as_deref(), Some(&b"user-1"[..]));
    assert_eq!(r0.value.as_deref(), Some(&b"hello"[..]));
    assert_eq!(
        r0.headers,
        [Header {
            key: Bytes::from_static(b"trace"),
            value: Some(Bytes::from_static(b"abc"))
        }]
    );

    let r1 = &records[1];
    assert_eq!(r1.offset, 43);
    assert_eq!(r1.timestamp, BASE_TIMESTAMP + 5);
    assert_eq!(r1.key, None);
    assert_eq!(r1.value.as_deref(), Some(&b"world"[..]));
    assert!(r1.headers.is_empty());
}

#[test]
fn batch_builder_reproduces_the_spec_hex_dump() {
    let headers: [(&[u8], Option<&[u8]>); 1] = [(&b"trace"[..], Some(&b"abc"[..]))];
    let mut builder = BatchBuilder::new();
    builder
        .push(RecordInput {
            key: Some(&b"user-1"[..]),
            value: Some(&b"hello"[..]),
            timestamp: BASE_TIMESTAMP,
            headers: &headers,
        })
        .expect("record 0 encodes");
    builder
        .push(RecordInput {
            key: None,
            value: Some(&b"world"[..]),
            timestamp: BASE_TIMESTAMP + 5,
            headers: &[],
        })
        .expect("record 1 encodes");
    let mut stored = builder.build().expect("batch builds").to_vec();
    stamp_base_offset(&mut stored, 42);

    let dump = spec_hex_dump();
    assert_eq!(
        stored.len(),
        dump.len(),
        "encoded length differs from the spec's hex dump"
    );
    if let Some(at) = stored.iter().zip(&dump).position(|(a, b)| a != b) {
        panic!(
            "BatchBuilder output differs from the spec's hex dump at byte {at} ({at:#06x}): built {:#04x}, spec {:#04x}",
            stored[at], dump[at]
        );
    }
    assert_eq!(stored, dump);
}
