//! Producer ids for idempotent producers: unique in the cluster, never handed out twice, even
//! across crashes. A producer writes to partitions on many brokers, so its id must not collide
//! with one another broker handed out: the broker's node id is the top bits
//! (`node_id << 40 | n`), and `n` is unique for the broker's data dir.
//!
//! Ids are reserved in blocks: the file `producer-ids` holds the end of the last reserved block,
//! written durably before any id of that block is handed out. After a restart allocation
//! continues from that end, so ids a crash left unused are skipped, never reused.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use weir_storage::StorageError;
use weir_storage::fs::{SyncMode, atomic_write};

/// Ids reserved per durable write.
const BLOCK: i64 = 1000;

/// Bits of the per-broker part of an id.
const NODE_SHIFT: u32 = 40;

pub struct ProducerIds {
    path: PathBuf,
    /// `node_id << NODE_SHIFT`.
    prefix: i64,
    /// (next id to hand out, end of the reserved block)
    state: Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub fn open(data_dir: &Path, node_id: u32) -> Result<Self, StorageError> {
        let path = data_dir.join(crate::layout::PRODUCER_IDS_FILE);
        let reserved_end = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .map_err(|e| StorageError::Corrupt {
                    what: "producer id reservation",
                    path: path.clone(),
                    detail: e.to_string(),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StorageError::io("reading producer ids", &path, e)),
        };
        Ok(ProducerIds {
            path,
            // Node ids are kept below 2^22 by the config, so the id stays positive.
            prefix: i64::from(node_id) << NODE_SHIFT,
            state: Mutex::new((reserved_end, reserved_end)),
        })
    }

    /// A new producer id.
    pub fn allocate(&self) -> Result<i64, StorageError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (next, end) = *state;
        if next >= end {
            let new_end = end + BLOCK;
            atomic_write(&self.path, new_end.to_string().as_bytes(), SyncMode::Now)?;
            state.1 = new_end;
        }
        state.0 = next + 1;
        Ok(self.prefix | next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::open(dir.path(), 0).unwrap();
        let first: Vec<i64> = (0..3).map(|_| ids.allocate().unwrap()).collect();
        assert_eq!(first, [0, 1, 2]);
        drop(ids);
        let ids = ProducerIds::open(dir.path(), 0).unwrap();
        let after = ids.allocate().unwrap();
        assert!(
            after > 2,
            "a reopened allocator skips the old block: {after}"
        );
    }

    #[test]
    fn brokers_hand_out_disjoint_ids() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let one = ProducerIds::open(a.path(), 1).unwrap().allocate().unwrap();
        let two = ProducerIds::open(b.path(), 2).unwrap().allocate().unwrap();
        assert_ne!(one, two);
        assert!(one > 0 && two > 0);
    }
}
