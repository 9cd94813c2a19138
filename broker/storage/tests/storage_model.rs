//! Model-based test of the partition log: random sequences of appends, reads, reads by time,
//! rolls, retention (bounded by a retention limit, a replicated partition's high watermark, or
//! not), truncation, clean reopen and crash reopen (drop without close), checked
//! after every step against an in-memory model of what the log must hold.
//!
//! The model also holds what `segments-format.md` says a partition derives from its log (the
//! idempotent producers' epochs and last 5 batches, and, with `key_index`, each key's last
//! offset), when it is built (at the first idempotent or key-conditional append after an open
//! or a truncation) and from what (the `derived-state.snapshot` written at a clean close, if it
//! still lies within the log, plus the log after it; else the log from its start). Against it
//! run idempotent producers (next batches, exact retries that must be answered as duplicates
//! with the original offsets, out-of-order and re-shaped sequences and stale epochs that must
//! be refused, new epochs), and appends conditional on the next offset and on keys' last
//! offsets (right, wrong, must be new; and refused on a partition without a key index). Every
//! refused append must change nothing.
//!
//! The model also holds the epoch history (`leader-epoch`): epochs assigned at the log end, at
//! the latest start, anywhere in the log and past its end, newer, the same and older; cut by
//! truncation, collapsed by retention, fitted to the log by every reopen; and `reset_to`, which
//! leaves an empty log at any offset, below, inside or past the log.
//!
//! `PROPTEST_CASES=1000 cargo test -p weir-storage --test storage_model` runs a longer search.

mod common;

use std::collections::{BTreeMap, VecDeque};

use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use weir_proto::batch::{BatchBuilder, RecordInput, sequence_after};
use weir_storage::producer_state::RECENT_BATCHES;
use weir_storage::{AppendConditions, LogConfig, LogDir, PartitionLog, StorageError};

/// Producers the test runs at once (each may re-initialize with a new id).
const PRODUCERS: usize = 2;
/// The keys of keyed records: few, so keys repeat and conditions on them bite.
const KEYS: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];

#[derive(Debug, Clone)]
enum Op {
    Append {
        count: usize,
        value_len: usize,
        ts_jump: i64,
        durable: bool,
    },
    /// An append through `append_for_sync`: from an idempotent producer or not, with keys from
    /// [`KEYS`], and optionally conditional; `repeat` times in a row (each a new batch built
    /// the same way, so one producer's run of batches can outgrow the broker's window).
    Produce {
        repeat: usize,
        producer: Option<ProducerOp>,
        keys: Vec<Option<Index>>,
        expected_offset: Option<Cond>,
        expected_keys: Vec<(Index, Cond)>,
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
    /// Size retention keeping `keep_bytes`, bounded by a retention limit (a replicated
    /// partition's high watermark) that `limit` picks in `[log start, log end]`, if any; then
    /// again without the limit (the high watermark caught up).
    Retention {
        keep_bytes: u64,
        limit: Option<Index>,
    },
    Truncate {
        pick: Index,
    },
    CloseIdle,
    CloseReopen,
    CrashReopen,
    /// `assign_epoch` with the latest epoch plus `step` (-1: an older one, 0: the latest) at
    /// the start `at` picks.
    AssignEpoch {
        step: i64,
        at: EpochAt,
    },
    /// `reset_to` an offset `pick` chooses in `[0, high watermark + 50]`: below the log start,
    /// inside the log, at or past its end.
    ResetTo {
        pick: Index,
    },
}

/// Where an assigned epoch starts.
#[derive(Debug, Clone)]
enum EpochAt {
    /// The log end (a new leader, or a follower before a newer epoch's first batch).
    End,
    /// The latest entry's start (the repeat no-op, or the replacement of an empty epoch).
    LatestStart,
    /// Anywhere in `[log start, log end]`.
    Pick(Index),
    /// One past the log end: refused.
    PastEnd,
}

/// What an idempotent producer sends. The model decides the broker's answer; these only choose
/// the batch.
#[derive(Debug, Clone)]
enum ProducerOp {
    /// The next batch of its sequence, in its epoch.
    Next { producer: usize },
    /// An exact resend of one of its last appended batches (the further back, the likelier it
    /// has left the broker's window of 5).
    Retry { producer: usize, back: Index },
    /// A batch starting where one of its appended batches started, with one more record.
    Reshaped { producer: usize, back: Index },
    /// The next batch, but `skip` sequence numbers ahead (1 or more) or one behind (`skip` 0).
    Gap { producer: usize, skip: i32 },
    /// A new epoch, starting at sequence 0 (`at_zero`) or not.
    NewEpoch { producer: usize, at_zero: bool },
    /// The next batch in the epoch before its current one (-1 when that is 0).
    StaleEpoch { producer: usize },
}

/// How a condition is chosen: as the model says it holds, or off by something.
#[derive(Debug, Clone, Copy)]
enum Cond {
    Right,
    Wrong(u64),
    /// For keys: "must be new" (no record with the key yet), right or wrong as it happens. For
    /// the next offset, the same as `Right`.
    New,
}

fn cond() -> impl Strategy<Value = Cond> {
    prop_oneof![2 => Just(Cond::Right), 1 => (1u64..4).prop_map(Cond::Wrong), 1 => Just(Cond::New)]
}

fn producer_op() -> impl Strategy<Value = ProducerOp> {
    // Mostly the first producer, so that one producer's run of batches outgrows the broker's
    // window of 5 and its retries fall out of it.
    let p = || prop_oneof![3 => Just(0usize), 1 => 1..PRODUCERS];
    prop_oneof![
        8 => p().prop_map(|producer| ProducerOp::Next { producer }),
        4 => (p(), any::<Index>()).prop_map(|(producer, back)| ProducerOp::Retry { producer, back }),
        1 => (p(), any::<Index>()).prop_map(|(producer, back)| ProducerOp::Reshaped { producer, back }),
        1 => (p(), 0i32..3).prop_map(|(producer, skip)| ProducerOp::Gap { producer, skip }),
        2 => (p(), prop::bool::weighted(0.8)).prop_map(|(producer, at_zero)| ProducerOp::NewEpoch { producer, at_zero }),
        2 => p().prop_map(|producer| ProducerOp::StaleEpoch { producer }),
    ]
}

fn produce() -> impl Strategy<Value = Op> {
    (
        prop::option::weighted(0.7, producer_op()),
        prop::collection::vec(prop::option::weighted(0.8, any::<Index>()), 1..4),
        prop::option::weighted(0.3, cond()),
        prop_oneof![
            3 => Just(vec![]),
            2 => prop::collection::vec((any::<Index>(), cond()), 1..3),
        ],
        prop::bool::weighted(0.2),
        prop_oneof![3 => Just(1usize), 2 => 2usize..8],
    )
        .prop_map(
            |(producer, keys, expected_offset, expected_keys, durable, repeat)| Op::Produce {
                repeat,
                producer,
                keys,
                expected_offset,
                expected_keys,
                durable,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..5, 0usize..700, -50i64..100, any::<bool>()).prop_map(|(count, value_len, ts_jump, durable)| Op::Append { count, value_len, ts_jump, durable: durable && value_len % 5 == 0 }),
        10 => produce(),
        4 => (any::<Index>(), 1usize..6000).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        2 => (-100i64..6000).prop_map(|target| Op::ReadByTime { target }),
        1 => Just(Op::Roll),
        2 => (0u64..30_000, prop::option::weighted(0.6, any::<Index>())).prop_map(|(keep_bytes, limit)| Op::Retention { keep_bytes, limit }),
        1 => any::<Index>().prop_map(|pick| Op::Truncate { pick }),
        1 => Just(Op::CloseIdle),
        1 => Just(Op::CloseReopen),
        1 => Just(Op::CrashReopen),
        3 => (-1i64..3, prop_oneof![
            4 => Just(EpochAt::End),
            1 => Just(EpochAt::LatestStart),
            2 => any::<Index>().prop_map(EpochAt::Pick),
            1 => Just(EpochAt::PastEnd),
        ]).prop_map(|(step, at)| Op::AssignEpoch { step, at }),
        1 => any::<Index>().prop_map(|pick| Op::ResetTo { pick }),
    ]
}

/// A batch as the model keeps it: where it is, its records as (id, timestamp), their keys, and
/// its producer fields as (id, epoch, first sequence).
#[derive(Debug, Clone)]
struct Stored {
    base: u64,
    records: Vec<(u64, i64)>,
    keys: Vec<Option<Vec<u8>>>,
    producer: Option<(i64, i16, i32)>,
}

impl Stored {
    fn next_offset(&self) -> u64 {
        self.base + self.records.len() as u64
    }
}

/// A batch the broker remembers for a producer: first and last sequence, first and last offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    first_seq: i32,
    last_seq: i32,
    base: u64,
    last: u64,
}

/// What the partition derives from its log (the spec's "producer fields" and "key index").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Derived {
    producers: BTreeMap<i64, (i16, VecDeque<Span>)>,
    keys: BTreeMap<Vec<u8>, u64>,
}

/// The broker's verdict on a batch's producer fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Append,
    Duplicate { base: u64, last: u64 },
    Fenced { current: i16 },
    OutOfOrder { expected: i32 },
}

impl Derived {
    /// A batch now in the log, in offset order.
    fn observe(&mut self, b: &Stored) {
        for (i, key) in b.keys.iter().enumerate() {
            if let Some(key) = key {
                self.keys.insert(key.clone(), b.base + i as u64);
            }
        }
        let Some((id, epoch, first_seq)) = b.producer else {
            return;
        };
        let count = b.records.len() as i64;
        let entry = self
            .producers
            .entry(id)
            .or_insert_with(|| (epoch, VecDeque::new()));
        if entry.0 != epoch {
            *entry = (epoch, VecDeque::new());
        }
        if entry.1.len() == RECENT_BATCHES {
            entry.1.pop_front();
        }
        entry.1.push_back(Span {
            first_seq,
            last_seq: sequence_after(first_seq, count - 1),
            base: b.base,
            last: b.base + count as u64 - 1,
        });
    }

    /// The spec's rules: a batch starts at 0 for a new id or a newer epoch, or right after the
    /// previous batch; one equal to a remembered batch is a duplicate; an older epoch is fenced;
    /// anything else is out of order.
    fn verdict(&self, id: i64, epoch: i16, seq: i32, count: usize) -> Verdict {
        if epoch < 0 {
            return Verdict::OutOfOrder { expected: 0 };
        }
        let expected = match self.producers.get(&id) {
            None => 0,
            Some((current, _)) if epoch < *current => return Verdict::Fenced { current: *current },
            Some((current, _)) if epoch > *current => 0,
            Some((_, recent)) => {
                let last = sequence_after(seq, count as i64 - 1);
                if let Some(s) = recent
                    .iter()
                    .find(|s| s.first_seq == seq && s.last_seq == last)
                {
                    return Verdict::Duplicate {
                        base: s.base,
                        last: s.last,
                    };
                }
                recent.back().map_or(0, |s| sequence_after(s.last_seq, 1))
            }
        };
        if seq == expected {
            Verdict::Append
        } else {
            Verdict::OutOfOrder { expected }
        }
    }
}

/// What the log must hold, and what it derives from it.
#[derive(Default)]
struct Model {
    batches: Vec<Stored>,
    log_start: u64,
    high_watermark: u64,
    key_index: bool,
    /// The partition's derived state: `None` until built after an open or a truncation.
    derived: Option<Derived>,
    /// Whether the derived state changed since it was built or last snapshotted.
    dirty: bool,
    /// `derived-state.snapshot` on disk: the state of the log below `through`.
    snapshot: Option<(u64, Derived)>,
    /// Offsets scanned by rebuilds since the log was opened (what
    /// `derived_state_scanned_offsets` counts): a usable snapshot keeps this to the log after it.
    scanned: u64,
    /// The epoch history (`leader-epoch`, segments-format.md section 7) as (epoch, start).
    epochs: Vec<(u32, u64)>,
}

impl Model {
    fn records_from(&self, offset: u64) -> Vec<(u64, u64, i64)> {
        self.batches
            .iter()
            .flat_map(|b| {
                b.records
                    .iter()
                    .enumerate()
                    .map(move |(i, (id, ts))| (b.base + i as u64, *id, *ts))
            })
            .filter(|r| r.0 >= offset)
            .collect()
    }

    /// Builds the derived state if it is not built: from the snapshot when it lies within the
    /// log (the batch ending at its `through` is still the one it names: batches never change
    /// in place, and a truncation deletes the snapshot), else from the log start.
    fn ensure_derived(&mut self) {
        if self.derived.is_some() {
            return;
        }
        let (mut state, from) = match &self.snapshot {
            Some((through, state)) if (self.log_start..=self.high_watermark).contains(through) => {
                (state.clone(), *through)
            }
            _ => (Derived::default(), self.log_start),
        };
        for b in self.batches.iter().filter(|b| b.base >= from) {
            state.observe(b);
        }
        self.scanned += self.high_watermark - from;
        self.dirty = from != self.high_watermark;
        self.derived = Some(state);
    }

    /// A batch appended at the high watermark.
    fn push(&mut self, b: Stored) {
        if let Some(d) = &mut self.derived {
            d.observe(&b);
            self.dirty = true;
        }
        self.high_watermark = b.next_offset();
        self.batches.push(b);
    }

    /// A clean close: the snapshot is rewritten if the derived state changed since the last.
    fn close(&mut self) {
        if let Some(d) = &self.derived
            && self.dirty
        {
            self.snapshot = Some((self.high_watermark, d.clone()));
        }
        self.reopened();
    }

    fn reopened(&mut self) {
        self.derived = None;
        self.dirty = false;
        self.scanned = 0;
        // An open drops the epochs that own no record (at or past the log end); retention
        // already collapsed those below the log start.
        let end = self.high_watermark;
        self.epochs.retain(|&(_, start)| start < end);
    }

    /// Retention (or an assignment below the log start): the entries wholly below the log start
    /// collapse into the last one starting at or below it, which then starts at the log start.
    fn collapse_epochs(&mut self) {
        let start = self.log_start;
        if let Some(last_below) = self.epochs.iter().rposition(|&(_, s)| s <= start) {
            self.epochs.drain(..last_below);
            self.epochs[0].1 = start;
        }
    }

    /// What `assign_epoch(epoch, start)` must answer: the spec's rules, in their order.
    fn assign_epoch(&mut self, epoch: u32, start: u64) -> Result<(), &'static str> {
        if start > self.high_watermark {
            return Err("past the log end");
        }
        if let Some(&(latest, latest_start)) = self.epochs.last() {
            if (latest, latest_start) == (epoch, start) {
                return Ok(());
            }
            if epoch <= latest {
                return Err("not newer");
            }
            if start < latest_start {
                return Err("before the latest start");
            }
            if start == latest_start {
                self.epochs.pop();
            }
        }
        self.epochs.push((epoch, start));
        self.collapse_epochs();
        Ok(())
    }
}

/// One of a client's appended batches, kept for retries: its bytes, first sequence, and its
/// records as (id, timestamp).
#[derive(Clone)]
struct Sent {
    bytes: Vec<u8>,
    seq: i32,
    records: Vec<(u64, i64)>,
}

/// What an idempotent producer knows: its id, epoch, next sequence, and its last appended
/// batches.
struct Client {
    id: i64,
    epoch: i16,
    next_seq: i32,
    sent: VecDeque<Sent>,
}

/// Batches a client keeps for retries: more than the broker's window, so some retries fall
/// out of it.
const CLIENT_HISTORY: usize = RECENT_BATCHES + 2;

impl Client {
    fn new(id: i64) -> Self {
        Client {
            id,
            epoch: 0,
            next_seq: 0,
            sent: VecDeque::new(),
        }
    }
}

fn config(key_index: bool) -> LogConfig {
    LogConfig {
        segment_bytes: 12 << 10,
        max_batch_bytes: 4 << 10,
        index_interval_bytes: 128,
        key_index,
        ..small_config()
    }
}

/// A batch of records with ids `first_id..`, timestamps `ts..`, the given keys, and producer
/// fields if given.
fn keyed_batch(
    first_id: u64,
    ts: i64,
    keys: &[Option<Vec<u8>>],
    producer: Option<(i64, i16, i32)>,
) -> Vec<u8> {
    let mut b = match producer {
        Some((id, epoch, seq)) => BatchBuilder::new().producer(id, epoch, seq),
        None => BatchBuilder::new(),
    };
    for (i, key) in keys.iter().enumerate() {
        let value = format!("{}:", first_id + i as u64);
        b.push(RecordInput {
            key: key.as_deref(),
            value: Some(value.as_bytes()),
            timestamp: ts + i as i64,
            headers: &[],
        })
        .unwrap();
    }
    b.build().unwrap().to_vec()
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
        .find(|b| b.base <= offset && offset < b.next_offset())
        .unwrap();
    assert_eq!(
        got.first().map(|g| g.0),
        Some(first_batch.base),
        "read starts at the batch holding the offset"
    );
    let want = model.records_from(first_batch.base);
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

/// The test's state besides the log and the model: record ids, timestamps, producers.
struct Driver {
    next_id: u64,
    ts: i64,
    clients: Vec<Client>,
    next_producer_id: i64,
}

impl Driver {
    /// A producer whose own next batch was refused (fenced, or out of sequence because the
    /// broker forgot it) starts over with a new id, as a real client does.
    fn refused_next(&mut self, slot: Option<usize>, op: &Option<ProducerOp>) {
        if let Some(slot) = slot
            && honest(op)
        {
            self.clients[slot] = Client::new(self.next_producer_id);
            self.next_producer_id += 1;
        }
    }
}

/// One `Op::Produce`: builds the batch and conditions, predicts the answer from the model,
/// appends, and checks the answer (and that a refusal changed nothing).
#[allow(clippy::too_many_arguments)]
fn run_produce(
    log: &PartitionLog,
    model: &mut Model,
    d: &mut Driver,
    producer: &Option<ProducerOp>,
    keys: &[Option<Index>],
    expected_offset: &Option<Cond>,
    expected_keys: &[(Index, Cond)],
    durable: bool,
) {
    let keys: Vec<Option<Vec<u8>>> = keys
        .iter()
        .map(|k| k.as_ref().map(|k| KEYS[k.index(KEYS.len())].to_vec()))
        .collect();
    // The batch: fresh records, or a client's earlier batch resent as it was.
    let fresh = |count: usize| -> Vec<(u64, i64)> {
        (0..count)
            .map(|i| (d.next_id + i as u64, d.ts + i as i64))
            .collect()
    };
    let mut slot = None;
    let mut is_retry = false;
    let (bytes, fields, records) = match producer {
        None => (
            keyed_batch(d.next_id, d.ts, &keys, None),
            None,
            fresh(keys.len()),
        ),
        Some(op) => {
            let (p, back) = match op {
                ProducerOp::Next { producer }
                | ProducerOp::Gap { producer, .. }
                | ProducerOp::NewEpoch { producer, .. }
                | ProducerOp::StaleEpoch { producer } => (producer, None),
                ProducerOp::Retry { producer, back } | ProducerOp::Reshaped { producer, back } => {
                    (producer, Some(back))
                }
            };
            let s = *p;
            slot = Some(s);
            let c = &d.clients[s];
            let sent = back
                .filter(|_| !c.sent.is_empty())
                .map(|b| c.sent[c.sent.len() - 1 - b.index(c.sent.len())].clone());
            let (epoch, seq) = match op {
                ProducerOp::Gap { skip: 0, .. } => (c.epoch, c.next_seq.wrapping_sub(1).max(0)),
                ProducerOp::Gap { skip, .. } => {
                    (c.epoch, sequence_after(c.next_seq, i64::from(*skip)))
                }
                ProducerOp::NewEpoch { at_zero, .. } => (c.epoch + 1, i32::from(!*at_zero)),
                ProducerOp::StaleEpoch { .. } => (c.epoch - 1, c.next_seq),
                _ => (c.epoch, c.next_seq),
            };
            match (op, sent) {
                (ProducerOp::Retry { .. }, Some(sent)) => {
                    is_retry = true;
                    (sent.bytes, Some((c.id, c.epoch, sent.seq)), sent.records)
                }
                (ProducerOp::Reshaped { .. }, Some(sent)) => {
                    let keys = vec![None; sent.records.len() + 1];
                    let fields = (c.id, c.epoch, sent.seq);
                    let bytes = keyed_batch(d.next_id, d.ts, &keys, Some(fields));
                    (bytes, Some(fields), fresh(keys.len()))
                }
                _ => {
                    let fields = (c.id, epoch, seq);
                    let bytes = keyed_batch(d.next_id, d.ts, &keys, Some(fields));
                    (bytes, Some(fields), fresh(keys.len()))
                }
            }
        }
    };
    let count = records.len();
    let batch_keys: Vec<Option<Vec<u8>>> = weir_proto::batch::RecordBatch::keys_of(&bytes)
        .map(|k| k.map(<[u8]>::to_vec))
        .collect();

    // The model's answer, in the order the log decides: a key condition on a partition without
    // a key index is refused first; idempotent and key-conditional appends then need the derived
    // state; the sequence check comes before the conditions (so the retry of an appended
    // conditional batch gets its offsets, not a conflict with itself).
    let needs_keys = !expected_keys.is_empty();
    let refused_config = needs_keys && !model.key_index;
    if !refused_config && (fields.is_some() || needs_keys) {
        model.ensure_derived();
    }
    let known_keys = model
        .derived
        .as_ref()
        .map(|d| d.keys.clone())
        .unwrap_or_default();
    let hw = model.high_watermark;
    let conditions = AppendConditions {
        expected_offset: expected_offset.map(|c| match c {
            Cond::Right | Cond::New => hw,
            Cond::Wrong(delta) => hw.checked_sub(delta).unwrap_or(hw + delta),
        }),
        expected_keys: expected_keys
            .iter()
            .map(|(k, c)| {
                let key = KEYS[k.index(KEYS.len())].to_vec();
                let actual = known_keys.get(&key).copied();
                let expected = match c {
                    Cond::Right => actual,
                    Cond::New => None,
                    Cond::Wrong(delta) => Some(actual.map_or(*delta, |a| a + delta)),
                };
                (key, expected)
            })
            .collect(),
    };
    let verdict = match (&model.derived, fields) {
        (Some(state), Some((id, epoch, seq))) if !refused_config => {
            state.verdict(id, epoch, seq, count)
        }
        _ => Verdict::Append,
    };

    let log_state = |log: &PartitionLog| {
        let read = log.read(model.log_start, 1 << 20).unwrap();
        (log.high_watermark(), read.to_vec())
    };
    let before = log_state(log);
    let result = log.append_for_sync(&bytes, conditions.clone());
    // A refusal must be the one the model predicts, and must change nothing.
    let refused = |what: &str, want: &dyn Fn(&StorageError) -> bool| {
        match &result {
            Ok((info, _)) => panic!("{what}: appended {info:?}"),
            Err(e) => assert!(want(e), "{what}: refused with {e:?}"),
        }
        assert!(
            log_state(log) == before,
            "{what}: a refused append changed the log"
        );
    };
    let conflict = conditions
        .expected_offset
        .filter(|&e| e != hw)
        .map(|expected| StorageError::OffsetConflict {
            expected,
            actual: hw,
        })
        .or_else(|| {
            conditions.expected_keys.iter().find_map(|(key, expected)| {
                let actual = known_keys.get(key).copied();
                (actual != *expected).then(|| StorageError::KeyConflict {
                    key: String::from_utf8_lossy(key).into_owned(),
                    expected: *expected,
                    actual,
                })
            })
        });
    let appended = if refused_config {
        refused("a key condition without a key index", &|e| {
            matches!(e, StorageError::InvalidConfig(_))
        });
        false
    } else {
        match verdict {
            Verdict::Fenced { current } => {
                refused(
                    "a stale epoch",
                    &|e| matches!(e, StorageError::ProducerFenced { current: c, .. } if *c == current),
                );
                d.refused_next(slot, producer);
                false
            }
            Verdict::OutOfOrder { expected } => {
                refused(
                    "an out-of-order sequence",
                    &|e| matches!(e, StorageError::OutOfOrderSequence { expected: x, .. } if *x == expected),
                );
                d.refused_next(slot, producer);
                false
            }
            Verdict::Duplicate { base, last } => {
                let (info, ticket) = result.unwrap_or_else(|e| panic!("a retry was refused: {e}"));
                assert!(
                    info.duplicate,
                    "a retry of a remembered batch was appended again"
                );
                assert_eq!(
                    (info.base_offset, info.last_offset),
                    (base, last),
                    "a duplicate is answered with the original's offsets"
                );
                if durable {
                    log.wait_durable(ticket).unwrap();
                }
                false
            }
            Verdict::Append if conflict.is_some() => {
                let want = conflict.map(|c| c.to_string());
                refused("a condition that does not hold", &|e| {
                    Some(e.to_string()) == want
                });
                false
            }
            Verdict::Append => {
                let (info, ticket) = result.unwrap_or_else(|e| panic!("append refused: {e}"));
                assert!(!info.duplicate, "a new batch answered as a duplicate");
                assert_eq!(
                    (info.base_offset, info.last_offset),
                    (hw, hw + count as u64 - 1)
                );
                if durable {
                    log.wait_durable(ticket).unwrap();
                    assert!(log.recovery_point() > info.last_offset);
                }
                true
            }
        }
    };
    if !appended {
        return;
    }
    model.push(Stored {
        base: hw,
        records: records.clone(),
        keys: batch_keys,
        producer: fields,
    });
    if !is_retry {
        d.next_id += count as u64;
        d.ts += count as i64;
    }
    // What the client learns from an appended batch it meant to send (retries and deliberate
    // mistakes that happened to be appended teach it nothing).
    if let (Some(s), Some((_, epoch, seq))) = (slot, fields)
        && honest(producer)
    {
        let c = &mut d.clients[s];
        if epoch != c.epoch {
            c.epoch = epoch;
            c.sent.clear();
        }
        c.next_seq = sequence_after(seq, count as i64);
        if c.sent.len() == CLIENT_HISTORY {
            c.sent.pop_front();
        }
        c.sent.push_back(Sent {
            bytes,
            seq,
            records,
        });
    }
}

/// The batches a well-behaved producer sends: its next batch, or the first of a new epoch.
fn honest(op: &Option<ProducerOp>) -> bool {
    matches!(
        op,
        Some(ProducerOp::Next { .. } | ProducerOp::NewEpoch { at_zero: true, .. })
    )
}

fn run(key_index: bool, ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let t = tp("model", 0);
    let mut logs = Some(open(dir.path(), config(key_index)));
    let mut log = logs
        .as_ref()
        .unwrap()
        .create_partition(t.clone(), None)
        .unwrap();
    let mut model = Model {
        key_index,
        ..Model::default()
    };
    let mut d = Driver {
        next_id: 0,
        ts: 1000,
        clients: (0..PRODUCERS as i64)
            .map(|i| Client::new(100 + i))
            .collect(),
        next_producer_id: 100 + PRODUCERS as i64,
    };
    for op in ops {
        match op.clone() {
            Op::Append {
                count,
                value_len,
                ts_jump,
                durable,
            } => {
                d.ts += ts_jump;
                let b = batch(d.next_id, count, value_len, d.ts);
                let info = if durable {
                    log.append_durable(&b)
                } else {
                    log.append(&b)
                }
                .unwrap();
                assert_eq!(info.base_offset, model.high_watermark);
                assert!(!info.duplicate);
                if durable {
                    assert!(log.recovery_point() > info.last_offset);
                }
                model.push(Stored {
                    base: info.base_offset,
                    records: (0..count)
                        .map(|i| (d.next_id + i as u64, d.ts + i as i64))
                        .collect(),
                    keys: (0..count)
                        .map(|i| Some(format!("k{}", d.next_id + i as u64).into_bytes()))
                        .collect(),
                    producer: None,
                });
                d.next_id += count as u64;
            }
            Op::Produce {
                repeat,
                producer,
                keys,
                expected_offset,
                expected_keys,
                durable,
            } => {
                for _ in 0..repeat {
                    run_produce(
                        &log,
                        &mut model,
                        &mut d,
                        &producer,
                        &keys,
                        &expected_offset,
                        &expected_keys,
                        durable,
                    );
                }
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
            Op::Retention { keep_bytes, limit } => {
                log.set_config(LogConfig {
                    retention_bytes: Some(keep_bytes),
                    ..config(key_index)
                })
                .unwrap();
                let now = weir_storage::fs::now_ms();
                if let Some(pick) = limit {
                    // Where a segment may end: a sealed segment's base, or the active one's.
                    let bases = log.sealed_segment_bases();
                    // Half the time exactly at a segment's end, where "below" must be exact.
                    let limit = match pick.index(2 * bases.len() + 2) {
                        i if i < bases.len() => bases[i],
                        _ => {
                            model.log_start
                                + pick.index((model.high_watermark - model.log_start + 1) as usize)
                                    as u64
                        }
                    };
                    log.set_retention_limit(limit);
                    log.apply_retention(now).unwrap();
                    let bounded = log.log_start_offset();
                    assert!(
                        bounded <= limit.max(model.log_start),
                        "retention moved the log start from {} to {bounded}, past the limit {limit}",
                        model.log_start
                    );
                    log.set_retention_limit(u64::MAX);
                    log.apply_retention(now).unwrap();
                    let unbounded = log.log_start_offset();
                    // Bounded, it deleted every segment the unbounded pass deletes that ends at
                    // or below the limit: it stopped at the limit, not before.
                    let skipped = bases
                        .iter()
                        .chain([&unbounded])
                        .find(|&&end| bounded < end && end <= unbounded.min(limit));
                    assert_eq!(
                        skipped, None,
                        "bounded by {limit}, retention stopped at {bounded}, short of a segment end"
                    );
                } else {
                    log.apply_retention(now).unwrap();
                }
                log.set_config(config(key_index)).unwrap();
                let start = log.log_start_offset();
                assert!(start >= model.log_start && start <= model.high_watermark);
                assert!(
                    start == model.high_watermark || model.batches.iter().any(|b| b.base == start),
                    "log start {start} on a batch boundary"
                );
                // The derived state keeps what it knew (producers and keys of deleted batches);
                // only a rebuild from the log start forgets them.
                model.batches.retain(|b| b.base >= start);
                model.log_start = start;
                model.collapse_epochs();
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
                    .position(|b| b.base <= offset && offset < b.next_offset())
                    .unwrap();
                let cut = model.batches[holding].base;
                assert_eq!(log.truncate_to(offset).unwrap(), cut);
                model.batches.truncate(holding);
                model.high_watermark = cut;
                model.epochs.retain(|&(_, start)| start < cut);
                // The snapshot may describe cut batches: deleted; the state is rebuilt when next
                // needed.
                model.snapshot = None;
                model.derived = None;
            }
            Op::ResetTo { pick } => {
                let offset = pick.index((model.high_watermark + 51) as usize) as u64;
                log.reset_to(offset).unwrap();
                // Nothing is left: no batch, no epoch, no snapshot, no derived state (rebuilt
                // from the empty log when next needed).
                model.batches.clear();
                model.log_start = offset;
                model.high_watermark = offset;
                model.epochs.clear();
                model.snapshot = None;
                model.derived = None;
                model.dirty = false;
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
                    model.close();
                } else {
                    drop(current);
                    model.reopened();
                }
                let (reopened, report) =
                    LogDir::open(dir.path(), quiet_dir_config(config(key_index))).unwrap();
                assert_eq!(report.clean, matches!(op, Op::CloseReopen));
                assert!(
                    report.truncations.is_empty(),
                    "nothing written was lost: {:?}",
                    report.truncations
                );
                log = reopened.partition(&t).unwrap();
                logs = Some(reopened);
            }
            Op::AssignEpoch { step, at } => {
                let (latest, latest_start) = model.epochs.last().copied().unwrap_or((0, 0));
                let Some(epoch) = latest.checked_add_signed(step as i32) else {
                    continue;
                };
                let start = match at {
                    EpochAt::End => model.high_watermark,
                    EpochAt::LatestStart => latest_start.max(model.log_start),
                    EpochAt::Pick(pick) => {
                        model.log_start
                            + pick.index((model.high_watermark - model.log_start + 1) as usize)
                                as u64
                    }
                    EpochAt::PastEnd => model.high_watermark + 1,
                };
                let before = model.epochs.clone();
                let want = model.assign_epoch(epoch, start);
                let got = log.assign_epoch(weir_replication::LeaderEpoch(epoch), start);
                match (&want, &got) {
                    (Ok(()), Ok(()))
                    | (Err("past the log end"), Err(StorageError::EpochStartPastLogEnd { .. }))
                    | (Err("not newer"), Err(StorageError::EpochNotNewer { .. }))
                    | (
                        Err("before the latest start"),
                        Err(StorageError::EpochStartBeforeLatest { .. }),
                    ) => {}
                    _ => panic!("assign_epoch({epoch}, {start}): model {want:?}, log {got:?}"),
                }
                if want.is_err() {
                    assert_eq!(model.epochs, before, "a refusal changes nothing");
                }
            }
        }
        let history: Vec<(u32, u64)> = log
            .epoch_history()
            .entries()
            .iter()
            .map(|&(e, s)| (e.0, s))
            .collect();
        assert_eq!(history, model.epochs, "epoch history after {op:?}");
        assert_eq!(log.high_watermark(), model.high_watermark);
        assert_eq!(log.log_start_offset(), model.log_start);
        assert_eq!(
            log.derived_state_scanned_offsets(),
            model.scanned,
            "derived-state rebuilds scanned other offsets than the model (snapshot use)"
        );
    }
    assert_eq!(
        read_all(&log, model.log_start, 3000),
        model.records_from(model.log_start)
    );
}

proptest! {
    // 48 cases unless PROPTEST_CASES says otherwise (an explicit `cases` would override it).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn partition_log_matches_model(key_index in prop::bool::weighted(0.7), ops in proptest::collection::vec(op(), 1..80)) {
        run(key_index, ops);
    }
}
