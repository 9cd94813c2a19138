//! Model-based test of the partition log: random sequences of appends, reads, reads by time,
//! rolls, retention, truncation, clean reopen and crash reopen (drop without close), checked
//! after every step against an in-memory model of what the log must hold.
//!
//! `PROPTEST_CASES=1000 cargo test -p weir-storage --test storage_model` runs a longer search.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use weir_storage::{LogConfig, LogDir, PartitionLog, StorageError};

#[derive(Debug, Clone)]
enum Op {
    Append {
        count: usize,
        value_len: usize,
        ts_jump: i64,
        durable: bool,
    },
    Read {
        pick: Index,
        max_bytes: usize,
    },
    ReadByTime {
        target: i64,
    },
    Roll,
    Retention {
        keep_bytes: u64,
    },
    Truncate {
        pick: Index,
    },
    CloseIdle,
    CloseReopen,
    CrashReopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (1usize..5, 0usize..700, -50i64..100, any::<bool>()).prop_map(|(count, value_len, ts_jump, durable)| Op::Append { count, value_len, ts_jump, durable: durable && value_len % 5 == 0 }),
        4 => (any::<Index>(), 1usize..6000).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        2 => (-100i64..6000).prop_map(|target| Op::ReadByTime { target }),
        1 => Just(Op::Roll),
        1 => (0u64..60_000).prop_map(|keep_bytes| Op::Retention { keep_bytes }),
        1 => any::<Index>().prop_map(|pick| Op::Truncate { pick }),
        1 => Just(Op::CloseIdle),
        1 => Just(Op::CloseReopen),
        1 => Just(Op::CrashReopen),
    ]
}

/// What the log must hold: batches (base offset, records as (id, timestamp)).
#[derive(Default)]
struct Model {
    batches: Vec<(u64, Vec<(u64, i64)>)>,
    log_start: u64,
    high_watermark: u64,
}

impl Model {
    fn records_from(&self, offset: u64) -> Vec<(u64, u64, i64)> {
        self.batches
            .iter()
            .flat_map(|(base, recs)| {
                recs.iter()
                    .enumerate()
                    .map(move |(i, (id, ts))| (base + i as u64, *id, *ts))
            })
            .filter(|r| r.0 >= offset)
            .collect()
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 12 << 10,
        max_batch_bytes: 4 << 10,
        index_interval_bytes: 128,
        ..small_config()
    }
}

fn check_read(log: &PartitionLog, model: &Model, offset: u64, max_bytes: usize) {
    let r = log.read(offset, max_bytes).unwrap();
    assert_eq!(r.high_watermark, model.high_watermark);
    assert_eq!(r.log_start_offset, model.log_start);
    if offset == model.high_watermark {
        assert!(r.chunks.is_empty());
        return;
    }
    let got = records_of(&r);
    let first_batch = model
        .batches
        .iter()
        .find(|(base, recs)| *base <= offset && offset < base + recs.len() as u64)
        .unwrap();
    assert_eq!(
        got.first().map(|g| g.0),
        Some(first_batch.0),
        "read starts at the batch holding the offset"
    );
    let want = model.records_from(first_batch.0);
    assert_eq!(
        &got[..],
        &want[..got.len()],
        "read returns the model's records in order"
    );
    let batches = r
        .chunks
        .iter()
        .map(|c| weir_proto::batch::split_batches(c.bytes.clone()).count())
        .sum::<usize>();
    assert!(
        r.total_bytes() <= max_bytes || batches == 1,
        "over max_bytes only for a single batch"
    );
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let t = tp("model", 0);
    let mut logs = Some(open(dir.path(), config()));
    let mut log = logs
        .as_ref()
        .unwrap()
        .create_partition(t.clone(), None)
        .unwrap();
    let mut model = Model::default();
    let (mut next_id, mut ts) = (0u64, 1000i64);
    for op in ops {
        match op {
            Op::Append {
                count,
                value_len,
                ts_jump,
                durable,
            } => {
                ts += ts_jump;
                let b = batch(next_id, count, value_len, ts);
                let info = if durable {
                    log.append_durable(&b)
                } else {
                    log.append(&b)
                }
                .unwrap();
                assert_eq!(info.base_offset, model.high_watermark);
                if durable {
                    assert!(log.recovery_point() > info.last_offset);
                }
                model.batches.push((
                    info.base_offset,
                    (0..count)
                        .map(|i| (next_id + i as u64, ts + i as i64))
                        .collect(),
                ));
                model.high_watermark += count as u64;
                next_id += count as u64;
            }
            Op::Read { pick, max_bytes } => {
                let offset = model.log_start
                    + pick.index((model.high_watermark - model.log_start + 1) as usize) as u64;
                check_read(&log, &model, offset, max_bytes);
                if offset > 0 && offset < model.log_start {
                    assert!(matches!(
                        log.read(offset - 1, 10),
                        Err(StorageError::OffsetOutOfRange { .. })
                    ));
                }
            }
            Op::ReadByTime { target } => {
                let want = model
                    .records_from(model.log_start)
                    .iter()
                    .find(|r| r.2 >= target)
                    .map(|r| r.0);
                assert_eq!(
                    log.offset_for_time(target).unwrap(),
                    want,
                    "offset_for_time({target})"
                );
            }
            Op::Roll => log.roll().unwrap(),
            Op::Retention { keep_bytes } => {
                log.set_config(LogConfig {
                    retention_bytes: Some(keep_bytes),
                    ..config()
                })
                .unwrap();
                log.apply_retention(weir_storage::fs::now_ms()).unwrap();
                log.set_config(config()).unwrap();
                let start = log.log_start_offset();
                assert!(start >= model.log_start && start <= model.high_watermark);
                assert!(
                    start == model.high_watermark || model.batches.iter().any(|(b, _)| *b == start),
                    "log start {start} on a batch boundary"
                );
                model.batches.retain(|(b, _)| *b >= start);
                model.log_start = start;
            }
            Op::Truncate { pick } => {
                if model.high_watermark == model.log_start {
                    continue;
                }
                let offset = model.log_start
                    + pick.index((model.high_watermark - model.log_start) as usize) as u64;
                let holding = model
                    .batches
                    .iter()
                    .position(|(b, recs)| *b <= offset && offset < b + recs.len() as u64)
                    .unwrap();
                let cut = model.batches[holding].0;
                assert_eq!(log.truncate_to(offset).unwrap(), cut);
                model.batches.truncate(holding);
                model.high_watermark = cut;
            }
            Op::CloseIdle => {
                log.close_idle(i64::MAX);
                assert_eq!(log.open_segment_count(), 0);
            }
            Op::CloseReopen | Op::CrashReopen => {
                drop(log);
                let current = logs.take().unwrap();
                if matches!(op, Op::CloseReopen) {
                    current.close().unwrap();
                } else {
                    drop(current);
                }
                let (reopened, report) =
                    LogDir::open(dir.path(), quiet_dir_config(config())).unwrap();
                assert_eq!(report.clean, matches!(op, Op::CloseReopen));
                assert!(
                    report.truncations.is_empty(),
                    "nothing written was lost: {:?}",
                    report.truncations
                );
                log = reopened.partition(&t).unwrap();
                logs = Some(reopened);
            }
        }
        assert_eq!(log.high_watermark(), model.high_watermark);
        assert_eq!(log.log_start_offset(), model.log_start);
    }
    assert_eq!(
        read_all(&log, model.log_start, 3000),
        model.records_from(model.log_start)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn partition_log_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops);
    }
}
