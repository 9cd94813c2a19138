//! The key index of a partition (topics created with `key_index`): for each record key, the
//! offset of the last record with that key. It is what `expected_key_offset` conditions are
//! checked against ("append to account-42 only if its last event is still at 1017").
//!
//! Invariant: equal to what a scan of the partition's records from the log start would build,
//! in offset order. Like the producer states it is rebuilt from the log when first needed after
//! an open or a truncation, and kept up to date by every append after that.
//!
//! Memory: about `key length + 56` bytes per distinct key (the key's heap copy, the offset, and
//! the hash table's slot and control bytes at its usual load), so a million 16-byte keys cost
//! about 70 MiB per partition. Records without a key are not indexed.

use std::collections::HashMap;

use weir_proto::batch::RecordBatch;

#[derive(Debug, Clone, Default)]
pub struct KeyIndex {
    last: HashMap<Box<[u8]>, u64>,
}

impl KeyIndex {
    /// The offset of the last record with `key`, if any record has it.
    pub fn last_offset(&self, key: &[u8]) -> Option<u64> {
        self.last.get(key).copied()
    }

    /// Records the keys of a stored batch (validated, based at `base_offset`).
    pub fn observe_batch(&mut self, batch: &[u8], base_offset: u64) {
        for (i, key) in RecordBatch::keys_of(batch).enumerate() {
            if let Some(key) = key {
                let offset = base_offset + i as u64;
                match self.last.get_mut(key) {
                    Some(last) => *last = offset,
                    None => {
                        self.last.insert(key.into(), offset);
                    }
                }
            }
        }
    }

    /// Appends the snapshot encoding (see `derived_snapshot`).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.last.len() as u32).to_be_bytes());
        for (key, offset) in &self.last {
            out.extend_from_slice(&(key.len() as u32).to_be_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&offset.to_be_bytes());
        }
    }

    /// Reads what `write_to` wrote; `None` if malformed.
    pub fn read_from(buf: &mut &[u8]) -> Option<Self> {
        use super::derived_snapshot::{take, take_array};
        let count = u32::from_be_bytes(take_array(buf)?);
        // Bounded by the buffer, not the count: a lying count cannot reserve memory.
        let mut last = HashMap::new();
        for _ in 0..count {
            let len = u32::from_be_bytes(take_array(buf)?) as usize;
            let key: Box<[u8]> = take(buf, len)?.into();
            let offset = u64::from_be_bytes(take_array(buf)?);
            last.insert(key, offset);
        }
        Some(KeyIndex { last })
    }

    /// Distinct keys indexed.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_proto::batch::{BatchBuilder, RecordInput};

    #[test]
    fn the_last_record_of_each_key_wins() {
        let mut b = BatchBuilder::new();
        for key in [Some(&b"a"[..]), Some(b"b"), None, Some(b"a")] {
            b.push(RecordInput {
                key,
                value: Some(b"v"),
                ..Default::default()
            })
            .unwrap();
        }
        let batch = b.build().unwrap();
        let mut index = KeyIndex::default();
        index.observe_batch(&batch, 100);
        assert_eq!(index.last_offset(b"a"), Some(103));
        assert_eq!(index.last_offset(b"b"), Some(101));
        assert_eq!(index.last_offset(b"c"), None);
        assert_eq!(index.len(), 2);
    }
}
