//! Snapshots of a partition's derived state (idempotent-producer states and key index), so a
//! restart rebuilds them by scanning only the log written after the snapshot, not all of it.
//!
//! File: `{partition dir}/derived-state.snapshot`, written atomically (tmp, rename), at clean
//! close and on the data dir's checkpoint interval when the state changed. Layout, big-endian:
//!
//! | field | size | meaning |
//! |---|---|---|
//! | magic | 4 | `WDS2` |
//! | crc | 4 | CRC-32 of everything after this field |
//! | through | 8 | the state covers every batch below this offset (a batch boundary) |
//! | last batch | 12 | base offset (u64) and CRC (u32) of the batch that ends at `through` (zeros when `through` is the log start) |
//! | producers | ... | count (u32), then per producer: id (i64), epoch (i16), batches (u8), then per batch: first and last sequence (i32 each), first and last offset (u64 each) |
//! | has keys | 1 | 1 if a key index follows |
//! | keys | ... | count (u32), then per key: length (u32), bytes, last offset (u64) |
//!
//! Invariants: a snapshot is only used if its CRC matches, `through` lies within the log (`log
//! start <= through <= high watermark`), the batch ending at `through` in the log is the one the
//! snapshot names (same base offset and CRC: a log that lost its tail in a power failure and
//! grew again past `through` is caught), and it has a key index exactly when the partition wants
//! one; anything else is ignored and the state is rebuilt from the log start. A truncation
//! deletes the snapshot before it cuts anything. Snapshots are not written after a failed sync.

use super::key_index::KeyIndex;
use super::producer_state::ProducerStates;

pub const FILE_NAME: &str = "derived-state.snapshot";
const MAGIC: &[u8; 4] = b"WDS2";

/// A decoded snapshot.
pub struct Snapshot {
    pub through: u64,
    /// (base offset, CRC) of the batch ending at `through`, if any batch is below it.
    pub last_batch: Option<(u64, u32)>,
    pub producers: ProducerStates,
    pub keys: Option<KeyIndex>,
}

/// Encodes a snapshot of state covering the log below `through`.
pub fn encode(
    through: u64,
    last_batch: Option<(u64, u32)>,
    producers: &ProducerStates,
    keys: Option<&KeyIndex>,
) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&through.to_be_bytes());
    match last_batch {
        Some((base, crc)) => {
            body.push(1);
            body.extend_from_slice(&base.to_be_bytes());
            body.extend_from_slice(&crc.to_be_bytes());
        }
        None => body.push(0),
    }
    producers.write_to(&mut body);
    match keys {
        Some(keys) => {
            body.push(1);
            keys.write_to(&mut body);
        }
        None => body.push(0),
    }
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes a snapshot; `None` for anything malformed (the caller then scans from the start).
pub fn decode(bytes: &[u8]) -> Option<Snapshot> {
    if bytes.get(..4)? != MAGIC {
        return None;
    }
    let crc = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
    let mut body = bytes.get(8..)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let through = u64::from_be_bytes(take_array(&mut body)?);
    let last_batch = match take(&mut body, 1)?[0] {
        0 => None,
        1 => Some((
            u64::from_be_bytes(take_array(&mut body)?),
            u32::from_be_bytes(take_array(&mut body)?),
        )),
        _ => return None,
    };
    let producers = ProducerStates::read_from(&mut body)?;
    let keys = match take(&mut body, 1)?[0] {
        0 => None,
        1 => Some(KeyIndex::read_from(&mut body)?),
        _ => return None,
    };
    body.is_empty().then_some(Snapshot {
        through,
        last_batch,
        producers,
        keys,
    })
}

/// Splits `n` bytes off the front of `buf`.
pub(super) fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Some(head)
}

pub(super) fn take_array<const N: usize>(buf: &mut &[u8]) -> Option<[u8; N]> {
    take(buf, N)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_proto::batch::{BatchBuilder, BatchHeader, RecordInput};

    #[test]
    fn a_snapshot_round_trips_and_damage_is_refused() {
        let mut producers = ProducerStates::default();
        let mut header = BatchHeader::parse(&{
            let mut b = BatchBuilder::new().producer(9, 2, 0);
            b.push(RecordInput {
                key: Some(b"acct"),
                value: Some(b"v"),
                ..Default::default()
            })
            .unwrap();
            b.build().unwrap()
        })
        .unwrap();
        header.base_offset = 40;
        producers.observe(&header);
        let mut keys = KeyIndex::default();
        let mut b = BatchBuilder::new();
        b.push(RecordInput {
            key: Some(b"acct"),
            ..Default::default()
        })
        .unwrap();
        keys.observe_batch(&b.build().unwrap(), 40);

        let bytes = encode(41, Some((40, 0xabcd)), &producers, Some(&keys));
        let snapshot = decode(&bytes).expect("round trip");
        assert_eq!(snapshot.through, 41);
        assert_eq!(snapshot.last_batch, Some((40, 0xabcd)));
        assert_eq!(snapshot.producers.len(), 1);
        assert_eq!(snapshot.keys.expect("keys").last_offset(b"acct"), Some(40));
        // The decoded producer state recognizes the batch as a duplicate.
        assert!(matches!(
            snapshot.producers.check(&header).unwrap(),
            super::super::producer_state::SequenceCheck::Duplicate {
                base_offset: 40,
                ..
            }
        ));
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert!(
                decode(&damaged).is_none(),
                "a flip at byte {i} went unnoticed"
            );
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
    }
}
