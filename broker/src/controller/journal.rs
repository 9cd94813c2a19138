//! The controller's journal: its events in an append-only log on the storage engine (one
//! partition, `__metadata-0`, under `<data>/controller/log`), plus a periodic snapshot of the
//! whole state (`<data>/controller/snapshot.json`) so a restart replays only the tail.
//!
//! Invariants:
//! - An event is applied to the in-memory state only after it is durable in the log
//!   ([`Journal::append`] syncs), so a state anyone has seen survives a crash.
//! - A snapshot covers exactly the events below its `through` offset and is written atomically
//!   before the log segments it covers are deleted; recovery is therefore the snapshot (if any)
//!   plus every event from `through` on. A log whose start is past the snapshot's `through`
//!   (events lost in between) is refused as corrupt rather than silently skipped.
//! - Every record is one JSON-encoded [`Event`] in the record's value; the events of one
//!   [`Journal::append`] are one batch, so a crash keeps all of them or none.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::info;
use weir_proto::batch::{BatchBuilder, RecordInput, split_batches};

use super::state::{ControllerState, Event};
use crate::layout;
use weir_storage::fs::{SyncMode, atomic_write, now_ms};
use weir_storage::{
    FlushPolicy, LogConfig, LogDir, LogDirConfig, PartitionLog, StorageError, TopicPartition,
};

const TOPIC: &str = "__metadata";
const SNAPSHOT_FORMAT: u32 = 1;
/// Events between snapshots (each snapshot lets the covered segments go).
const SNAPSHOT_EVERY: u64 = 2_000;
/// Small segments, so a snapshot frees the log it covers soon.
const SEGMENT_BYTES: u64 = 4 << 20;
const READ_CHUNK: usize = 1 << 20;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    /// The log offset after the last event the state includes.
    through: u64,
    state: ControllerState,
}

/// The journal, open.
pub struct Journal {
    dir: PathBuf,
    log_dir: Option<LogDir>,
    log: Arc<PartitionLog>,
    events_since_snapshot: u64,
}

impl Journal {
    /// Opens (creating) the journal under `dir` and recovers the state: the snapshot, then the
    /// events after it.
    pub fn open(dir: &Path) -> Result<(Journal, ControllerState), StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::io("creating the controller directory", dir, e))?;
        let config = LogDirConfig {
            default_log: LogConfig {
                segment_bytes: SEGMENT_BYTES,
                max_batch_bytes: SEGMENT_BYTES as u32,
                preallocate_min_bytes: 64 << 10,
                preallocate_max_bytes: SEGMENT_BYTES,
                // Every append is synced by `append`; nothing to do in the background.
                flush: FlushPolicy::Never,
                ..LogConfig::default()
            },
            checkpoint_interval: Duration::from_secs(10),
            ..LogDirConfig::default()
        };
        let (log_dir, _) = LogDir::open(dir.join(layout::CONTROLLER_LOG_DIR), config)?;
        let tp = TopicPartition::validated(TOPIC, 0)?;
        let log = match log_dir.partition(&tp) {
            Some(log) => log,
            None => log_dir.create_partition(tp, None)?,
        };
        let snapshot_path = dir.join(layout::CONTROLLER_SNAPSHOT_FILE);
        let (mut state, through) = match std::fs::read(&snapshot_path) {
            Ok(bytes) => {
                let snapshot: Snapshot =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(&snapshot_path, e))?;
                if snapshot.format != SNAPSHOT_FORMAT {
                    return Err(corrupt(
                        &snapshot_path,
                        format!("snapshot format {} is not supported", snapshot.format),
                    ));
                }
                let mut state = snapshot.state;
                // A snapshot from before replication: its topics get their partition states.
                state.upgrade();
                (state, snapshot.through)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (ControllerState::default(), 0),
            Err(e) => {
                return Err(StorageError::io(
                    "reading the controller snapshot",
                    &snapshot_path,
                    e,
                ));
            }
        };
        if log.log_start_offset() > through {
            return Err(corrupt(
                log.dir(),
                format!(
                    "the metadata log starts at {} but the snapshot covers only up to {through}: events are missing",
                    log.log_start_offset()
                ),
            ));
        }
        if log.high_watermark() < through {
            return Err(corrupt(
                log.dir(),
                format!(
                    "the snapshot covers up to {through} but the metadata log ends at {}",
                    log.high_watermark()
                ),
            ));
        }
        let replayed = replay(&log, through, &mut state)?;
        info!(
            snapshot_through = through,
            replayed,
            brokers = state.brokers.len(),
            topics = state.topics.len(),
            groups = state.offsets.len(),
            "controller state recovered"
        );
        let journal = Journal {
            dir: dir.to_owned(),
            log_dir: Some(log_dir),
            log,
            events_since_snapshot: replayed,
        };
        Ok((journal, state))
    }

    /// Appends `events` durably (one batch: all or none), then applies them to `state`.
    pub fn append(
        &mut self,
        state: &mut ControllerState,
        events: Vec<Event>,
    ) -> Result<(), StorageError> {
        if events.is_empty() {
            return Ok(());
        }
        let encoded: Vec<Vec<u8>> = events
            .iter()
            .map(|e| serde_json::to_vec(e).map_err(|e| corrupt(self.log.dir(), e)))
            .collect::<Result<_, _>>()?;
        let mut builder = BatchBuilder::new();
        let timestamp = now_ms();
        for value in &encoded {
            builder
                .push(RecordInput {
                    key: None,
                    value: Some(value),
                    timestamp,
                    headers: &[],
                })
                .map_err(StorageError::InvalidBatch)?;
        }
        let batch = builder.build().map_err(StorageError::InvalidBatch)?;
        self.log.append_durable(&batch)?;
        self.events_since_snapshot += events.len() as u64;
        for event in events {
            state.apply(event);
        }
        if self.events_since_snapshot >= SNAPSHOT_EVERY
            && let Err(e) = self.snapshot(state)
        {
            // The log still has every event: only recovery gets slower.
            tracing::warn!(error = %e, "writing the controller snapshot failed; will retry");
        }
        Ok(())
    }

    /// Writes the state as a snapshot and deletes the log segments it covers.
    pub fn snapshot(&mut self, state: &ControllerState) -> Result<(), StorageError> {
        let through = self.log.high_watermark();
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT,
            through,
            state: state.clone(),
        };
        let path = self.dir.join(layout::CONTROLLER_SNAPSHOT_FILE);
        let bytes = serde_json::to_vec(&snapshot).map_err(|e| corrupt(&path, e))?;
        atomic_write(&path, &bytes, SyncMode::Now)?;
        self.events_since_snapshot = 0;
        self.log.roll()?;
        let deleted = self.log.delete_segments_before(through)?;
        tracing::debug!(through, deleted, "controller snapshot written");
        Ok(())
    }

    /// A snapshot (so the next start replays nothing), then a clean close of the log.
    pub fn close(&mut self, state: &ControllerState) -> Result<(), StorageError> {
        if self.events_since_snapshot > 0 {
            self.snapshot(state)?;
        }
        match self.log_dir.take() {
            Some(log_dir) => log_dir.close(),
            None => Ok(()),
        }
    }
}

/// Applies every event from `from` to the end of the log; returns how many.
fn replay(log: &PartitionLog, from: u64, state: &mut ControllerState) -> Result<u64, StorageError> {
    let mut offset = from;
    let mut applied = 0;
    while offset < log.high_watermark() {
        let read = log.read(offset, READ_CHUNK)?;
        let Some(next) = read.next_offset() else {
            break;
        };
        // Each chunk is a zero-copy slice of a segment's map.
        for chunk in read.chunks {
            for batch in split_batches(chunk.bytes) {
                let batch = batch.map_err(StorageError::InvalidBatch)?;
                for record in batch.records().filter(|r| r.offset >= offset) {
                    let value = record.value.unwrap_or_default();
                    let event: Event =
                        serde_json::from_slice(&value).map_err(|e| corrupt(log.dir(), e))?;
                    state.apply(event);
                    applied += 1;
                }
            }
        }
        offset = next;
    }
    Ok(applied)
}

fn corrupt(path: &Path, detail: impl ToString) -> StorageError {
    StorageError::Corrupt {
        what: "controller metadata",
        path: path.to_owned(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::state::BrokerRecord;

    fn broker(id: u32) -> Event {
        Event::BrokerRegistered(BrokerRecord {
            id,
            address: format!("b{id}:7070"),
            data_address: format!("b{id}:7071"),
            external_address: format!("localhost:1{id}070"),
            external_data_address: format!("localhost:1{id}071"),
        })
    }

    #[test]
    fn state_survives_a_reopen_with_and_without_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, mut state) = Journal::open(dir.path()).unwrap();
        journal
            .append(&mut state, vec![broker(1), broker(2)])
            .unwrap();
        let expected = state.clone();
        // No close: the reopen replays the log.
        drop(journal);
        let (mut journal, mut state) = Journal::open(dir.path()).unwrap();
        assert_eq!(state, expected);
        journal.snapshot(&state).unwrap();
        journal.append(&mut state, vec![broker(3)]).unwrap();
        let expected = state.clone();
        drop(journal);
        let (mut journal, state) = Journal::open(dir.path()).unwrap();
        assert_eq!(state, expected);
        journal.close(&state).unwrap();
        let (_, state) = Journal::open(dir.path()).unwrap();
        assert_eq!(state.brokers.len(), 3);
    }

    #[test]
    fn snapshots_free_the_log_they_cover() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, mut state) = Journal::open(dir.path()).unwrap();
        for i in 0..10 {
            journal.append(&mut state, vec![broker(i % 7)]).unwrap();
        }
        journal.snapshot(&state).unwrap();
        journal.append(&mut state, vec![broker(8)]).unwrap();
        assert_eq!(
            journal.log.log_start_offset(),
            10,
            "covered segments were deleted"
        );
        drop(journal);
        let (_, reopened) = Journal::open(dir.path()).unwrap();
        assert_eq!(reopened, state);
    }
}
