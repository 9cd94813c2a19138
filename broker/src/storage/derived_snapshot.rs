//! Snapshots of a partition's derived state (idempotent-producer states and key index), so a
//! restart rebuilds them by scanning only the log written after the snapshot, not all of it.
//!
//! File: `{partition dir}/derived-state.snapshot`, written atomically (tmp, rename), at clean
//! close and on the data dir's checkpoint interval when the state changed. Layout, big-endian:
//!
//! | field | size | meaning |
//! |---|---|---|
//! | magic | 4 | `WDS1` |
//! | through | 8 | the state covers every batch below this offset (a batch boundary) |
//! | crc | 4 | CRC-32 of everything after this field |
//! | producers | ... | count (u32), then per producer: id (i64), epoch (i16), batches (u8), then per batch: first and last sequence (i32 each), first and last offset (u64 each) |
//! | has keys | 1 | 1 if a key index follows |
//! | keys | ... | count (u32), then per key: length (u32), bytes, last offset (u64) |
//!
//! Invariants: a snapshot is only used if `through` lies within the log (`log start <= through
//! <= high watermark`), its CRC matches and it has a key index exactly when the partition wants
//! one; anything else is ignored and the state is rebuilt from the log start. A truncation
//! deletes the snapshot before it cuts anything, so a snapshot never describes batches that
//! are gone.

use super::key_index::KeyIndex;
use super::producer_state::ProducerStates;

pub const FILE_NAME: &str = "derived-state.snapshot";
const MAGIC: &[u8; 4] = b"WDS1";

/// Encodes a snapshot of state covering the log below `through`.
pub fn encode(through: u64, producers: &ProducerStates, keys: Option<&KeyIndex>) -> Vec<u8> {
    let mut body = Vec::new();
    producers.write_to(&mut body);
    match keys {
        Some(keys) => {
            body.push(1);
            keys.write_to(&mut body);
        }
        None => body.push(0),
    }
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&through.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes a snapshot; `None` for anything malformed (the caller then scans from the start).
pub fn decode(bytes: &[u8]) -> Option<(u64, ProducerStates, Option<KeyIndex>)> {
    if bytes.get(..4)? != MAGIC {
        return None;
    }
    let through = u64::from_be_bytes(bytes.get(4..12)?.try_into().ok()?);
    let crc = u32::from_be_bytes(bytes.get(12..16)?.try_into().ok()?);
    let mut body = bytes.get(16..)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let producers = ProducerStates::read_from(&mut body)?;
    let keys = match take(&mut body, 1)?[0] {
        0 => None,
        1 => Some(KeyIndex::read_from(&mut body)?),
        _ => return None,
    };
    body.is_empty().then_some((through, producers, keys))
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

        let bytes = encode(41, &producers, Some(&keys));
        let (through, p, k) = decode(&bytes).expect("round trip");
        assert_eq!(through, 41);
        assert_eq!(p.len(), 1);
        assert_eq!(k.expect("keys").last_offset(b"acct"), Some(40));
        // The decoded producer state recognizes the batch as a duplicate.
        assert!(matches!(
            p.check(&header).unwrap(),
            super::super::producer_state::SequenceCheck::Duplicate {
                base_offset: 40,
                ..
            }
        ));
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            if (4..12).contains(&i) {
                continue; // `through` is checked against the log by the caller
            }
            assert!(
                decode(&damaged).is_none(),
                "a flip at byte {i} went unnoticed"
            );
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
    }
}
