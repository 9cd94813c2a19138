//! A follower's side of replication in the storage engine: `append_replica` (the leader's
//! batches byte for byte at the same offsets, producer states and key index learned from them,
//! a batch at the wrong offset refused with nothing written) and `read_bounded` (nothing past
//! the committed high watermark is served, and no batch is split), and `reset_to` (a follower
//! that fell below its leader's log start starts over, empty, at that offset).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use weir_proto::batch::{BatchBuilder, RecordInput, split_batches};
use weir_storage::{AppendConditions, LogConfig, PartitionLog, ReadResult, StorageError};

fn keyed_config() -> LogConfig {
    LogConfig {
        key_index: true,
        ..small_config()
    }
}

/// A batch from idempotent producer `id` (epoch 0) with sequences from `seq`, keys `key{n}`.
fn from_producer(id: i64, seq: i32, count: usize, key: u64) -> Bytes {
    let mut b = BatchBuilder::new().producer(id, 0, seq);
    for i in 0..count {
        let k = format!("key{}", key + i as u64);
        let v = format!("{}:{id}/{seq}", key + i as u64);
        b.push(RecordInput {
            key: Some(k.as_bytes()),
            value: Some(v.as_bytes()),
            timestamp: 1000,
            headers: &[],
        })
        .unwrap();
    }
    b.build().unwrap()
}

/// Every batch of the log, as the bytes a fetch from `from` returns, one batch per item.
fn batches_from(log: &PartitionLog, from: u64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = from;
    while at < log.high_watermark() {
        let r = log.read(at, 1000).unwrap();
        for chunk in &r.chunks {
            for b in split_batches(chunk.bytes.clone()) {
                out.push(b.unwrap().into_bytes());
            }
        }
        at = r.next_offset().unwrap();
    }
    out
}

/// The partition directory's `.log` files, by name.
fn log_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_replica_built_from_the_leaders_batches_is_byte_identical_and_knows_its_producers() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), keyed_config());
    let leader = logs.create_partition(tp("lead", 0), None).unwrap();
    let follower = logs.create_partition(tp("follow", 0), None).unwrap();

    // Plain and idempotent batches, enough to roll several segments.
    let mut seq = 0;
    let mut retry = None;
    for i in 0..120u64 {
        if i % 3 == 0 {
            let b = from_producer(7, seq, 2, i);
            leader.append(&b).unwrap();
            retry = Some(b);
            seq += 2;
        } else {
            leader
                .append(&batch(i * 10, 1 + (i % 4) as usize, 120, 0))
                .unwrap();
        }
    }
    assert!(
        leader.segment_count() > 2,
        "rolls: {}",
        leader.segment_count()
    );

    // The follower's derived state is built before replication (a refused key-conditional
    // append builds it), so the replicated batches update it as they land.
    let unknown_key = AppendConditions {
        expected_offset: None,
        expected_keys: vec![(b"nope".to_vec(), Some(5))],
    };
    assert!(matches!(
        follower.append_for_sync(&batch(0, 1, 10, 0), unknown_key),
        Err(StorageError::KeyConflict { .. })
    ));
    assert_eq!(follower.high_watermark(), 0);

    let mut last_ticket = None;
    for b in batches_from(&leader, 0) {
        let at = follower.high_watermark();
        let (info, ticket) = follower.append_replica(&b).unwrap();
        assert_eq!(info.base_offset, at, "the leader's offsets");
        assert!(!info.duplicate);
        last_ticket = Some(ticket);
    }
    follower.wait_durable(last_ticket.unwrap()).unwrap();
    assert_eq!(follower.high_watermark(), leader.high_watermark());
    assert_eq!(follower.recovery_point(), follower.high_watermark());
    leader.flush().unwrap();
    follower.flush().unwrap();
    // Segment by segment the same files (same config, so the same rolls): the same bytes,
    // preallocated tails aside.
    let (l, f) = (log_files(leader.dir()), log_files(follower.dir()));
    assert_eq!(l.keys().collect::<Vec<_>>(), f.keys().collect::<Vec<_>>());
    for (name, bytes) in &l {
        let trim = |b: &[u8]| b.iter().rposition(|&x| x != 0).map_or(0, |p| p + 1);
        let (lb, fb) = (&bytes[..trim(bytes)], &f[name][..trim(&f[name])]);
        assert!(lb == fb, "segment {name} differs");
    }
    assert_eq!(
        leader.read(0, 1 << 20).unwrap().to_vec(),
        follower.read(0, 1 << 20).unwrap().to_vec()
    );

    // After a failover, the follower recognizes the producer's retry of its last batch...
    let retried = follower.append(&retry.unwrap()).unwrap();
    assert!(
        retried.duplicate,
        "a retry on the new leader is a duplicate"
    );
    assert_eq!(
        follower.high_watermark(),
        leader.high_watermark(),
        "nothing written"
    );
    // ...expects the next sequence (so a gap is refused)...
    assert!(matches!(
        follower.append(&from_producer(7, seq + 5, 1, 0)),
        Err(StorageError::OutOfOrderSequence { expected, .. }) if expected == seq
    ));
    follower.append(&from_producer(7, seq, 1, 999)).unwrap();
    // ...and checks key conditions against the replicated log: key0 was written at offset 0.
    let cond = |expected| AppendConditions {
        expected_offset: None,
        expected_keys: vec![(b"key0".to_vec(), expected)],
    };
    assert!(matches!(
        follower.append_for_sync(&batch(5000, 1, 10, 0), cond(Some(3))),
        Err(StorageError::KeyConflict {
            actual: Some(0),
            ..
        })
    ));
    follower
        .append_for_sync(&batch(5000, 1, 10, 0), cond(Some(0)))
        .unwrap();
}

#[test]
fn a_replica_batch_away_from_the_log_end_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let leader = logs.create_partition(tp("lead", 0), None).unwrap();
    let follower = logs.create_partition(tp("follow", 0), None).unwrap();
    for i in 0..3 {
        leader.append(&batch(i * 2, 2, 10, 0)).unwrap();
    }
    let batches = batches_from(&leader, 0);
    follower.append_replica(&batches[0]).unwrap();
    let before = log_files(follower.dir());
    // Skipping a batch (a gap) and repeating one (an overlap) are both refused.
    for (b, actual) in [(&batches[2], 4), (&batches[0], 0)] {
        match follower.append_replica(b) {
            Err(StorageError::ReplicaOffsetMismatch {
                partition,
                expected,
                actual: got,
            }) => {
                assert_eq!((expected, got), (2, actual));
                assert_eq!(partition, "follow-0");
            }
            other => panic!("expected ReplicaOffsetMismatch, got {other:?}"),
        }
    }
    assert_eq!(follower.high_watermark(), 2);
    assert_eq!(log_files(follower.dir()), before, "no byte written");
    // A damaged batch is refused as `append` refuses it.
    let mut damaged = batches[1].to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    assert!(matches!(
        follower.append_replica(&damaged),
        Err(StorageError::InvalidBatch(_))
    ));
    follower.append_replica(&batches[1]).unwrap();
    follower.append_replica(&batches[2]).unwrap();
    assert_eq!(follower.high_watermark(), 6);
}

/// A producer whose batch the old leader refused as out of order cannot reach a follower: but
/// whatever the leader did commit, the follower takes, even where its own producer state would
/// have refused it (here: a sequence gap after a producer-state loss on the leader).
#[test]
fn a_replica_never_refuses_what_the_leader_committed() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let follower = logs.create_partition(tp("follow", 0), None).unwrap();
    follower.append(&from_producer(3, 0, 1, 0)).unwrap();
    // Sequence 10 would be out of order for `append`...
    let mut gap = from_producer(3, 10, 1, 0).to_vec();
    assert!(matches!(
        follower.append(&gap),
        Err(StorageError::OutOfOrderSequence { .. })
    ));
    // ...but stamped by the leader at the follower's log end, it is appended.
    weir_proto::batch::stamp_base_offset(&mut gap, 1);
    let (info, _) = follower.append_replica(&gap).unwrap();
    assert_eq!((info.base_offset, info.duplicate), (1, false));
    // And the producer state follows it: its retry is a duplicate now.
    assert!(
        follower
            .append(&from_producer(3, 10, 1, 0))
            .unwrap()
            .duplicate
    );
}

/// (base offset, next offset) of every batch in a read.
fn spans(r: &ReadResult) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for chunk in &r.chunks {
        let mut at = chunk.first_offset;
        for b in split_batches(chunk.bytes.clone()) {
            let b = b.expect("whole batches");
            assert_eq!(b.base_offset(), at, "batches in a chunk are contiguous");
            at = b.last_offset() + 1;
            out.push((b.base_offset(), at));
        }
        assert_eq!(at, chunk.next_offset);
    }
    out
}

#[test]
fn read_bounded_at_or_past_the_limit_is_empty_and_past_the_log_end_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("t", 0), None).unwrap();
    for i in 0..4 {
        log.append(&batch(i * 3, 3, 10, 0)).unwrap(); // batches [0,3) [3,6) [6,9) [9,12)
    }
    assert!(log.read_bounded(6, 1 << 20, 6).unwrap().chunks.is_empty());
    assert!(log.read_bounded(7, 1 << 20, 6).unwrap().chunks.is_empty());
    // The batch holding offset 4 ends at 6 <= 7; the one at 6 straddles 7.
    assert_eq!(spans(&log.read_bounded(4, 1 << 20, 7).unwrap()), [(3, 6)]);
    assert!(log.read_bounded(6, 1 << 20, 7).unwrap().chunks.is_empty());
    assert_eq!(spans(&log.read_bounded(0, 1 << 20, 12).unwrap()).len(), 4);
    assert_eq!(
        spans(&log.read_bounded(0, 1 << 20, u64::MAX).unwrap()).len(),
        4
    );
    let r = log.read_bounded(0, 1 << 20, 9).unwrap();
    assert_eq!(r.high_watermark, 12, "still the log end");
    assert!(matches!(
        log.read_bounded(13, 1 << 20, 13),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(log.read_bounded(12, 1 << 20, 12).unwrap().chunks.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Over random batch sizes (several segments), offsets, budgets and limits: a bounded read
    /// is exactly the unbounded read's batches that end at or before the limit (a prefix: never
    /// a batch past the limit, never a split batch, nothing else missing), and it is empty only
    /// when the batch holding the offset ends past the limit.
    #[test]
    fn read_bounded_is_the_prefix_of_read_that_ends_by_the_limit(
        sizes in prop::collection::vec((1usize..6, 0usize..900), 1..60),
        probes in prop::collection::vec((0u64..1000, 0u64..1000, 1usize..20_000), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let logs = open(dir.path(), small_config());
        let log = logs.create_partition(tp("p", 0), None).unwrap();
        let mut next = 0u64;
        let mut bounds = Vec::new();
        for (count, len) in sizes {
            log.append(&batch(next, count, len, 0)).unwrap();
            bounds.push((next, next + count as u64));
            next += count as u64;
        }
        for (offset, limit, max_bytes) in probes {
            let offset = offset % (next + 1);
            let limit = limit % (next + 2);
            let bounded = log.read_bounded(offset, max_bytes, limit).unwrap();
            let got = spans(&bounded);
            let all = spans(&log.read(offset, max_bytes).unwrap());
            let expected: Vec<_> = all.iter().copied().take_while(|&(_, end)| end <= limit).collect();
            prop_assert_eq!(&got, &expected, "offset {} limit {} max_bytes {}", offset, limit, max_bytes);
            prop_assert!(got.iter().all(|&(_, end)| end <= limit));
            let holding = bounds.iter().find(|&&(b, e)| b <= offset && offset < e);
            match holding {
                Some(&(b, e)) if e <= limit => prop_assert_eq!(got.first(), Some(&(b, e))),
                _ => prop_assert!(got.is_empty()),
            }
            // Zero-copy chunks: the file range holds the same bytes.
            for chunk in &bounded.chunks {
                let mut buf = vec![0u8; chunk.bytes.len()];
                std::os::unix::fs::FileExt::read_exact_at(&*chunk.file, &mut buf, chunk.position).unwrap();
                prop_assert!(buf == chunk.bytes.as_ref());
            }
        }
    }
}

/// A follower whose next offset is below its leader's log start (retention deleted it there)
/// starts over: `reset_to` empties its log at the leader's log start, it records the leader's
/// epoch there and appends the leader's batches from it, byte for byte, and a reopen (clean or
/// not) finds exactly that log.
#[test]
fn a_reset_log_starts_over_empty_at_the_given_offset_and_survives_reopening() {
    use weir_replication::LeaderEpoch;

    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let leader = logs.create_partition(tp("lead", 0), None).unwrap();
    let follower = logs.create_partition(tp("follow", 0), None).unwrap();
    leader.assign_epoch(LeaderEpoch(1), 0).unwrap();
    follower.assign_epoch(LeaderEpoch(1), 0).unwrap();
    for i in 0..200u64 {
        leader.append(&batch(i * 2, 2, 200, 0)).unwrap();
    }
    leader.assign_epoch(LeaderEpoch(3), 400).unwrap();
    for i in 200..260u64 {
        leader.append(&batch(i * 2, 2, 200, 0)).unwrap();
    }
    // The follower had the first few batches (the last one not synced), then went away.
    let mut unsynced = None;
    for b in batches_from(&leader, 0).into_iter().take(6) {
        unsynced = Some(follower.append_replica(&b).unwrap().1);
    }
    assert_eq!(follower.high_watermark(), 12);
    // Retention on the leader: everything before a segment well past the follower's end.
    assert!(leader.segment_count() > 4, "{}", leader.segment_count());
    leader.delete_segments_before(300).unwrap();
    let start = leader.log_start_offset();
    assert!(start > 12 && start <= 300, "log start {start}");

    follower.reset_to(start).unwrap();
    assert_eq!(
        (
            follower.log_start_offset(),
            follower.high_watermark(),
            follower.recovery_point()
        ),
        (start, start, start)
    );
    assert_eq!(follower.segment_count(), 1);
    assert!(follower.epoch_history().entries().is_empty());
    assert!(follower.read(start, 1 << 20).unwrap().chunks.is_empty());
    assert!(matches!(
        follower.read(0, 1 << 20),
        Err(StorageError::OffsetOutOfRange { log_start, .. }) if log_start == start
    ));
    // An unsynced batch the reset discarded is never reported durable.
    assert!(matches!(
        follower.wait_durable(unsynced.unwrap()),
        Err(StorageError::TruncatedBeforeSync { .. })
    ));
    let files: Vec<String> = log_files(follower.dir()).into_keys().collect();
    assert_eq!(files, [format!("{start:020}.log")], "only the new segment");

    // The leader's epoch at its log start, then its batches from there.
    let covering = leader
        .epoch_history()
        .entries()
        .iter()
        .rev()
        .find(|&&(_, s)| s <= start)
        .copied()
        .unwrap();
    assert_eq!(covering, (LeaderEpoch(1), start), "retention collapsed it");
    follower.assign_epoch(covering.0, start).unwrap();
    for b in batches_from(&leader, start) {
        let base = weir_proto::batch::BatchHeader::parse(&b)
            .unwrap()
            .base_offset;
        if base == 400 {
            follower.assign_epoch(LeaderEpoch(3), 400).unwrap();
        }
        follower.append_replica(&b).unwrap();
    }
    assert_eq!(follower.epoch_history(), leader.epoch_history());
    assert_eq!(
        batches_from(&follower, start),
        batches_from(&leader, start),
        "byte for byte from the leader's log start"
    );
    follower.flush().unwrap();

    // A clean reopen (dropped without closing after it), then an unclean one: the same log.
    let expected = batches_from(&follower, start);
    logs.close().unwrap();
    drop((leader, follower));
    for round in ["clean", "unclean"] {
        let logs = open(dir.path(), small_config());
        let follower = logs.partition(&tp("follow", 0)).unwrap();
        assert_eq!(follower.log_start_offset(), start, "{round}");
        assert_eq!(batches_from(&follower, start), expected, "{round}");
        assert_eq!(follower.epoch_history().entries().len(), 2, "{round}");
        if round == "unclean" {
            logs.close().unwrap();
        }
    }
}

/// `reset_to` below the log start and at the log end: either way an empty log at that offset,
/// appendable from there, with dense offsets.
#[test]
fn a_reset_below_the_log_start_or_at_the_log_end_is_an_empty_log_there() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let logs = open(dir.path(), small_config());
    let log = logs.create_partition(tp("reset", 0), None).unwrap();
    for i in 0..150u64 {
        log.append(&batch(i, 1, 300, 0)).unwrap();
    }
    log.delete_segments_before(100).unwrap();
    let start = log.log_start_offset();
    assert!(start > 10);
    log.reset_to(7).unwrap();
    assert_eq!((log.log_start_offset(), log.high_watermark()), (7, 7));
    log.append(&batch(7, 3, 10, 0)).unwrap();
    assert_eq!(
        read_all(&log, 7, 1 << 20)
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        [7, 8, 9]
    );
    log.reset_to(10).unwrap();
    assert_eq!((log.log_start_offset(), log.high_watermark()), (10, 10));
    assert!(log.read(10, 100).unwrap().chunks.is_empty());
    log.append(&batch(10, 2, 10, 0)).unwrap();
    log.flush().unwrap();
    logs.close().unwrap();
    drop(log);
    let logs = open(dir.path(), small_config());
    let log = logs.partition(&tp("reset", 0)).unwrap();
    assert_eq!((log.log_start_offset(), log.high_watermark()), (10, 12));
    logs.close().unwrap();
}
