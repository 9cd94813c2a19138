//! Idempotent producers: per partition, what each producer id has appended recently, so a
//! retried batch is recognized and answered with its original offsets instead of being written
//! twice, and a batch out of sequence or from a fenced epoch is refused.
//!
//! The rules (Kafka's):
//! - A batch from an idempotent producer carries `producer_id >= 0`, an epoch and the sequence
//!   number of its first record (`base_sequence`); its records take `base_sequence ..
//!   base_sequence + record_count`, wrapping from `i32::MAX` to 0.
//! - The first batch of a producer id (or of a newer epoch) must start at sequence 0. After that
//!   each batch must start right after the previous one's last sequence.
//! - A batch equal (same first and last sequence) to one of the last [`RECENT_BATCHES`] of its
//!   producer is a duplicate: nothing is written, the original offsets are returned.
//! - An older epoch is fenced; any other sequence is out of order. Nothing is written.
//!
//! Invariant: the state equals what observing the log's batch headers in offset order builds
//! ([`ProducerStates::observe`]), starting from the newest valid snapshot (`derived_snapshot`)
//! or the log start. Producers whose batches retention deleted stay known while the process runs
//! and in snapshots, but a rebuild from the log start forgets them: their next batch is then
//! refused as out of sequence and the client takes a new producer id (nothing is stored twice).

use std::collections::{HashMap, VecDeque};

use weir_proto::batch::{BatchHeader, sequence_after};

use super::error::{Result, StorageError};

/// Batches remembered per producer: a client with up to this many batches in flight per
/// partition can retry any of them safely.
pub const RECENT_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchSpan {
    first_seq: i32,
    last_seq: i32,
    base_offset: u64,
    last_offset: u64,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    recent: VecDeque<BatchSpan>,
}

/// The verdict on a batch before it is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not from an idempotent producer, or next in its sequence: append it.
    Append,
    /// Already in the log at these offsets: answer with them, write nothing.
    Duplicate { base_offset: u64, last_offset: u64 },
}

/// The idempotent producers of one partition.
#[derive(Debug, Clone, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

fn last_sequence(header: &BatchHeader) -> i32 {
    sequence_after(header.base_sequence, i64::from(header.record_count) - 1)
}

impl ProducerStates {
    /// Decides what to do with `header`'s batch (whose base offset is not yet assigned).
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck> {
        if header.producer_id < 0 {
            return Ok(SequenceCheck::Append);
        }
        let (id, epoch, seq) = (
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
        );
        if epoch < 0 {
            return Err(StorageError::OutOfOrderSequence {
                producer_id: id,
                expected: 0,
                got: seq,
            });
        }
        let expected = match self.producers.get(&id) {
            None => 0,
            Some(entry) if epoch < entry.epoch => {
                return Err(StorageError::ProducerFenced {
                    producer_id: id,
                    epoch,
                    current: entry.epoch,
                });
            }
            // A new epoch restarts the sequence.
            Some(entry) if epoch > entry.epoch => 0,
            Some(entry) => {
                let last = last_sequence(header);
                if let Some(original) = entry
                    .recent
                    .iter()
                    .find(|b| b.first_seq == seq && b.last_seq == last)
                {
                    return Ok(SequenceCheck::Duplicate {
                        base_offset: original.base_offset,
                        last_offset: original.last_offset,
                    });
                }
                entry
                    .recent
                    .back()
                    .map_or(0, |b| sequence_after(b.last_seq, 1))
            }
        };
        if seq == expected {
            Ok(SequenceCheck::Append)
        } else {
            Err(StorageError::OutOfOrderSequence {
                producer_id: id,
                expected,
                got: seq,
            })
        }
    }

    /// Records a batch now in the log (its header with the base offset stamped). Called for
    /// every appended batch, and for every batch of the log, in offset order, when rebuilding.
    pub fn observe(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 {
            return;
        }
        let span = BatchSpan {
            first_seq: header.base_sequence,
            last_seq: last_sequence(header),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        };
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: header.producer_epoch,
                recent: VecDeque::with_capacity(RECENT_BATCHES),
            });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.recent.clear();
        }
        if entry.recent.len() == RECENT_BATCHES {
            entry.recent.pop_front();
        }
        entry.recent.push_back(span);
    }

    /// Appends the snapshot encoding (see `derived_snapshot`).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (id, entry) in &self.producers {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.push(entry.recent.len() as u8);
            for b in &entry.recent {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
    }

    /// Reads what `write_to` wrote; `None` if malformed.
    pub fn read_from(buf: &mut &[u8]) -> Option<Self> {
        use super::derived_snapshot::take_array;
        let count = u32::from_be_bytes(take_array(buf)?);
        let mut producers = HashMap::new();
        for _ in 0..count {
            let id = i64::from_be_bytes(take_array(buf)?);
            let epoch = i16::from_be_bytes(take_array(buf)?);
            let [n] = take_array::<1>(buf)?;
            if n as usize > RECENT_BATCHES {
                return None;
            }
            let mut recent = VecDeque::with_capacity(RECENT_BATCHES);
            for _ in 0..n {
                recent.push_back(BatchSpan {
                    first_seq: i32::from_be_bytes(take_array(buf)?),
                    last_seq: i32::from_be_bytes(take_array(buf)?),
                    base_offset: u64::from_be_bytes(take_array(buf)?),
                    last_offset: u64::from_be_bytes(take_array(buf)?),
                });
            }
            producers.insert(id, ProducerEntry { epoch, recent });
        }
        Some(ProducerStates { producers })
    }

    /// Producer ids known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: i64, epoch: i16, seq: i32, count: i32, base_offset: u64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 0,
            magic: 1,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    #[test]
    fn sequences_continue_duplicates_are_recognized_and_gaps_refused() {
        let mut s = ProducerStates::default();
        assert_eq!(
            s.check(&header(7, 0, 0, 3, 0)).unwrap(),
            SequenceCheck::Append
        );
        s.observe(&header(7, 0, 0, 3, 10));
        assert_eq!(
            s.check(&header(7, 0, 3, 2, 0)).unwrap(),
            SequenceCheck::Append
        );
        s.observe(&header(7, 0, 3, 2, 13));
        // A retry of the first batch: its original offsets.
        assert_eq!(
            s.check(&header(7, 0, 0, 3, 0)).unwrap(),
            SequenceCheck::Duplicate {
                base_offset: 10,
                last_offset: 12
            }
        );
        // A gap, a rewind that is not a known batch, a fresh id not starting at 0.
        assert!(matches!(
            s.check(&header(7, 0, 9, 1, 0)),
            Err(StorageError::OutOfOrderSequence {
                expected: 5,
                got: 9,
                ..
            })
        ));
        assert!(s.check(&header(7, 0, 1, 1, 0)).is_err());
        assert!(s.check(&header(8, 0, 4, 1, 0)).is_err());
        // Non-idempotent batches pass untouched.
        assert_eq!(
            s.check(&header(-1, -1, -1, 5, 0)).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn older_epochs_are_fenced_and_newer_ones_restart_at_zero() {
        let mut s = ProducerStates::default();
        s.observe(&header(1, 3, 0, 1, 0));
        assert!(matches!(
            s.check(&header(1, 2, 1, 1, 0)),
            Err(StorageError::ProducerFenced { current: 3, .. })
        ));
        assert!(s.check(&header(1, 4, 1, 1, 0)).is_err());
        assert_eq!(
            s.check(&header(1, 4, 0, 1, 0)).unwrap(),
            SequenceCheck::Append
        );
        s.observe(&header(1, 4, 0, 1, 1));
        assert!(matches!(
            s.check(&header(1, 3, 1, 1, 0)),
            Err(StorageError::ProducerFenced { .. })
        ));
    }

    #[test]
    fn only_the_last_few_batches_are_remembered_and_sequences_wrap() {
        let mut s = ProducerStates::default();
        for i in 0..(RECENT_BATCHES as i32 + 2) {
            s.observe(&header(2, 0, i, 1, i as u64));
        }
        assert!(
            s.check(&header(2, 0, 0, 1, 0)).is_err(),
            "too old to recognize"
        );
        assert!(matches!(
            s.check(&header(2, 0, RECENT_BATCHES as i32 + 1, 1, 0))
                .unwrap(),
            SequenceCheck::Duplicate { .. }
        ));
        let mut w = ProducerStates::default();
        w.observe(&header(3, 0, 0, i32::MAX, 0)); // sequences 0 ..= i32::MAX - 1
        w.observe(&header(3, 0, i32::MAX, 1, 1));
        assert_eq!(
            w.check(&header(3, 0, 0, 1, 0)).unwrap(),
            SequenceCheck::Append,
            "wraps to 0"
        );
    }
}
