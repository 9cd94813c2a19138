//! Bounded runs, on stable, of weir-proto's fuzz targets (`fuzz/fuzz_targets/`, which run the
//! same checks unbounded under cargo-fuzz): the batch validator and record iteration (what the
//! broker runs on a produce, what a consumer runs on a fetch), and the data-port frames in both
//! directions. Each target runs over its committed seed corpus and cuts of it, over arbitrary
//! bytes, and over mutated seeds; every case must not panic, must finish, and must allocate
//! within its declared bound (see `support/fuzz_harness.rs`).
//!
//! `PROPTEST_CASES=100000 cargo test -p weir-proto --test fuzz_parsers` searches longer.
//! `WEIR_REGENERATE_CORPUS=1 cargo test -p weir-proto --test fuzz_parsers corpus` rewrites the
//! seeds from the generators below.

#[macro_use]
#[path = "support/fuzz_harness.rs"]
mod fuzz_harness;

use weir_proto::batch::{BatchBuilder, RecordInput, stamp_base_offset};
use weir_proto::data_port::{FetchFrame, FrameKind, ResponseHeader};
use weir_proto::fuzz_checks::TARGETS;

fuzz_target_tests!(TARGETS; batch, fetch_request, fetch_response);

type Seeds = Vec<(String, Vec<u8>)>;

struct Rec<'a> {
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    timestamp: i64,
    headers: &'a [(&'a [u8], Option<&'a [u8]>)],
}

fn encode(builder: BatchBuilder, records: &[Rec<'_>], base_offset: u64) -> Vec<u8> {
    let mut builder = builder;
    for r in records {
        builder
            .push(RecordInput {
                key: r.key,
                value: r.value,
                timestamp: r.timestamp,
                headers: r.headers,
            })
            .unwrap();
    }
    let mut bytes = builder.build().unwrap().to_vec();
    stamp_base_offset(&mut bytes, base_offset);
    bytes
}

/// Valid batches of several shapes: the spec's worked example, one empty record, an idempotent
/// producer's batch with keys, headers and null values, multi-byte varint lengths, and
/// timestamps whose deltas wrap.
fn batch_seeds() -> Seeds {
    let ts = 1_700_000_000_000;
    let big_key = vec![b'k'; 200];
    let big_value = vec![b'x'; 300];
    vec![
        (
            "spec-example".into(),
            encode(
                BatchBuilder::new(),
                &[
                    Rec {
                        key: Some(b"user-1"),
                        value: Some(b"hello"),
                        timestamp: ts,
                        headers: &[(b"trace", Some(b"abc"))],
                    },
                    Rec {
                        key: None,
                        value: Some(b"world"),
                        timestamp: ts + 5,
                        headers: &[],
                    },
                ],
                42,
            ),
        ),
        (
            "one-empty-record".into(),
            encode(
                BatchBuilder::new(),
                &[Rec {
                    key: None,
                    value: Some(b""),
                    timestamp: 0,
                    headers: &[],
                }],
                0,
            ),
        ),
        (
            "idempotent-keys-headers".into(),
            encode(
                BatchBuilder::new().producer(7, 2, 100),
                &[
                    Rec {
                        key: Some(b"acct-1"),
                        value: Some(b"opened"),
                        timestamp: ts,
                        headers: &[(b"type", Some(b"open")), (b"v", None)],
                    },
                    Rec {
                        key: Some(b"acct-2"),
                        value: None,
                        timestamp: ts - 3,
                        headers: &[],
                    },
                    Rec {
                        key: Some(b""),
                        value: Some(b"deposit 10"),
                        timestamp: ts + 7,
                        headers: &[(b"", Some(b""))],
                    },
                    Rec {
                        key: Some(b"acct-1"),
                        value: Some(b"closed"),
                        timestamp: ts + 1,
                        headers: &[],
                    },
                ],
                1 << 40,
            ),
        ),
        (
            "multibyte-lengths".into(),
            encode(
                BatchBuilder::new(),
                &[
                    Rec {
                        key: Some(&big_key),
                        value: Some(&big_value),
                        timestamp: ts,
                        headers: &[(b"h", Some(&big_value[..150]))],
                    },
                    Rec {
                        key: None,
                        value: Some(&big_value[..130]),
                        timestamp: ts + 100_000,
                        headers: &[],
                    },
                ],
                5,
            ),
        ),
        (
            "wrapping-timestamps".into(),
            encode(
                BatchBuilder::new(),
                &[
                    Rec {
                        key: None,
                        value: None,
                        timestamp: i64::MAX,
                        headers: &[],
                    },
                    Rec {
                        key: None,
                        value: None,
                        timestamp: i64::MIN,
                        headers: &[],
                    },
                    Rec {
                        key: None,
                        value: None,
                        timestamp: -1,
                        headers: &[],
                    },
                ],
                i64::MAX as u64 - 3,
            ),
        ),
    ]
}

/// A log's worth of batches: the batch seeds restamped at dense offsets from `base`.
fn dense_batches(base: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = base;
    for (_, mut b) in batch_seeds().into_iter().take(4) {
        stamp_base_offset(&mut b, next);
        next += u64::from(u32::from_be_bytes(b[53..57].try_into().unwrap()));
        out.extend_from_slice(&b);
    }
    out
}

fn fetch_request_seeds() -> Seeds {
    let frame = |topic: &str, partition, offset, max_bytes, max_wait_ms, follow| {
        FetchFrame {
            current_leader_epoch: None,
            topic: topic.into(),
            partition,
            offset,
            max_bytes,
            max_wait_ms,
            follow,
            replica: None,
        }
        .encode()
    };
    vec![
        (
            "follow".into(),
            frame("orders", 3, 1017, 1 << 20, 500, true),
        ),
        ("minimal".into(), frame("t", 0, 0, 0, 0, false)),
        (
            "longest-topic".into(),
            frame(
                &"a".repeat(249),
                u32::MAX,
                u64::MAX,
                u32::MAX,
                u32::MAX,
                false,
            ),
        ),
    ]
}

fn response_frame(
    kind: FrameKind,
    error_code: u16,
    payload: &[u8],
    high_watermark: u64,
    log_start_offset: u64,
    next_offset: u64,
) -> Vec<u8> {
    let header = ResponseHeader {
        kind,
        flags: 0,
        error_code,
        length: payload.len() as u32,
        high_watermark,
        log_start_offset,
        next_offset,
    };
    let mut out = header.encode().to_vec();
    out.extend_from_slice(payload);
    out
}

fn fetch_response_seeds() -> Seeds {
    let batches = dense_batches(10);
    let split = batch_seeds()[0].1.len();
    let mut fetch = response_frame(FrameKind::Data, 0, &batches[..split], 40, 0, 12);
    fetch.extend(response_frame(
        FrameKind::Data,
        0,
        &batches[split..],
        40,
        0,
        40,
    ));
    fetch.extend(response_frame(FrameKind::End, 0, &[], 40, 0, 40));
    let mut follow = response_frame(FrameKind::Data, 0, &batches, 40, 10, 40);
    follow.extend(response_frame(FrameKind::Data, 0, &[], 40, 10, 40)); // keep-alive
    vec![
        ("fetch-to-end".into(), fetch),
        ("follow-with-keepalive".into(), follow),
        (
            "error".into(),
            response_frame(
                FrameKind::Error,
                3,
                "offset 99 is out of range: the log holds offsets [0, 40)".as_bytes(),
                0,
                0,
                0,
            ),
        ),
    ]
}

fn generated_corpus() -> Vec<(&'static str, Seeds)> {
    use fuzz_harness::with_truncations;
    vec![
        (
            "batch",
            with_truncations(batch_seeds(), &[0, 12, 56, 57, 58, 80]),
        ),
        (
            "fetch_request",
            with_truncations(fetch_request_seeds(), &[3, 4, 8, 20]),
        ),
        (
            "fetch_response",
            with_truncations(fetch_response_seeds(), &[31, 32, 40, 100]),
        ),
    ]
}

/// The committed corpus is exactly what the generators make (so a format change that
/// invalidates the seeds is noticed), or is rewritten with `WEIR_REGENERATE_CORPUS=1`.
#[test]
fn committed_corpus_matches_the_generators() {
    for (target, seeds) in generated_corpus() {
        if fuzz_harness::regenerate() {
            fuzz_harness::write_corpus(target, &seeds);
        }
        let mut want = seeds;
        want.sort();
        assert!(
            fuzz_harness::load_corpus(target) == want,
            "fuzz/corpus/{target} differs from its generator; rerun with WEIR_REGENERATE_CORPUS=1"
        );
    }
}

/// The uncut seeds are valid inputs, so mutations start deep in each parser.
#[test]
fn seeds_are_valid_inputs() {
    for (_, b) in batch_seeds() {
        weir_proto::batch::RecordBatch::validate(&b).unwrap();
    }
    weir_proto::batch::split_batches(dense_batches(0).into()).for_each(|b| drop(b.unwrap()));
    for (_, r) in fetch_request_seeds() {
        FetchFrame::decode(&r[4..]).unwrap();
    }
}

#[test]
fn the_fuzz_crate_runs_these_checks() {
    fuzz_harness::fuzz_crate_declares(TARGETS, "weir_proto::fuzz_checks");
}

/// The harness can fail: a parser that reserves what a length field claims breaks its bound.
#[test]
#[should_panic(expected = "allocated")]
fn a_parser_that_trusts_a_length_field_fails_the_allocation_bound() {
    fn trusting(bytes: &[u8]) {
        if let Some(n) = bytes.get(..4) {
            let n = u32::from_be_bytes(n.try_into().unwrap()) as usize;
            std::hint::black_box(Vec::<u8>::with_capacity(n));
        }
    }
    let target = weir_proto::fuzz_checks::Target {
        name: "trusting",
        parse: trusting,
        max_alloc: |n| n + weir_proto::fuzz_checks::ALLOC_SLACK,
        check: |_| {},
        fix_checksums: |_| {},
        length_fields: &[],
        tokens: &[],
    };
    fuzz_harness::run_case(&target, vec![0x10, 0, 0, 0]); // claims 256 MiB
}
