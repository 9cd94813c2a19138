//! [`ConsumerRecord`] and the decoding of fetched bytes into batches of records.
//!
//! Invariants of [`decode`]: every batch is validated (length, CRC, record structure) by the
//! proto crate's decoder before any of its records is handed out; records below the consumer's
//! position (a batch may start before it) and at or past the stop offset are left out (each
//! [`ConsumerBatch`] is trimmed to its window); batches are returned in offset order and the
//! returned position is one past the last record returned. Records are built from a batch only
//! when read one by one; keys, values and headers are then `Bytes` slices of the fetched
//! buffer: no copies.

use std::sync::Arc;

use bytes::Bytes;
use weir_proto::batch::{Header, split_batches};

use super::batch::ConsumerBatch;
use crate::{ClientError, TopicPartition};

/// One record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch, as the producer set it.
    pub timestamp: i64,
    /// The key, if it has one.
    pub key: Option<Bytes>,
    /// The value, if it has one.
    pub value: Option<Bytes>,
    /// Its headers, in the order they were added.
    pub headers: Vec<Header>,
}

/// What one fetch response decoded to.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// Each with at least one record.
    pub batches: Vec<ConsumerBatch>,
    /// The offset after the last record returned (the position, if nothing was returned).
    pub next: u64,
    /// A batch that failed validation: records before it are returned, nothing from it or after.
    pub corrupt: Option<ClientError>,
    /// The stop offset was reached.
    pub reached_stop: bool,
}

/// Decodes concatenated batches fetched from `tp`, keeping records in `[position, stop)`.
pub(crate) fn decode(
    tp: &TopicPartition,
    fetched: Bytes,
    position: u64,
    stop: Option<u64>,
) -> Decoded {
    let mut batches = Vec::new();
    let mut next = position;
    let mut corrupt = None;
    let mut reached_stop = stop.is_some_and(|stop| next >= stop);
    for batch in split_batches(fetched) {
        if reached_stop {
            break;
        }
        let batch = match batch {
            Ok(batch) => batch,
            Err(source) => {
                corrupt = Some(ClientError::CorruptBatch {
                    topic: tp.topic.to_string(),
                    partition: tp.partition,
                    offset: next,
                    source,
                });
                break;
            }
        };
        if batch.last_offset() < next {
            continue;
        }
        let from = next.max(batch.base_offset());
        let end = batch.last_offset() + 1;
        let to = stop.map_or(end, |stop| end.min(stop));
        if to <= from {
            reached_stop = true;
            break;
        }
        next = to;
        batches.push(ConsumerBatch::new(
            tp.topic.clone(),
            tp.partition,
            batch,
            from,
            to,
        ));
        reached_stop = stop.is_some_and(|stop| next >= stop);
    }
    Decoded {
        batches,
        next,
        corrupt,
        reached_stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_proto::batch::{BatchBuilder, RecordInput, stamp_base_offset};

    fn batch(base: u64, values: &[&str]) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for value in values {
            builder
                .push(RecordInput {
                    key: Some(b"k"),
                    value: Some(value.as_bytes()),
                    timestamp: 1_700_000_000_000,
                    headers: &[(b"h", Some(b"v"))],
                })
                .unwrap();
        }
        let mut bytes = builder.build().unwrap().to_vec();
        stamp_base_offset(&mut bytes, base);
        bytes
    }

    fn fetched(batches: &[Vec<u8>]) -> Bytes {
        Bytes::from(batches.concat())
    }

    fn records(decoded: &Decoded) -> Vec<ConsumerRecord> {
        decoded
            .batches
            .iter()
            .flat_map(|b| b.to_records())
            .collect()
    }

    fn values(decoded: &Decoded) -> Vec<(u64, Vec<u8>)> {
        records(decoded)
            .iter()
            .map(|r| (r.offset, r.value.as_deref().unwrap().to_vec()))
            .collect()
    }

    fn v(offset: u64, value: &str) -> (u64, Vec<u8>) {
        (offset, value.as_bytes().to_vec())
    }

    fn tp() -> TopicPartition {
        TopicPartition::new("t", 1)
    }

    #[test]
    fn records_below_the_position_are_skipped() {
        let bytes = fetched(&[batch(10, &["a", "b", "c"]), batch(13, &["d"])]);
        let decoded = decode(&tp(), bytes, 11, None);
        assert_eq!(values(&decoded), vec![v(11, "b"), v(12, "c"), v(13, "d")]);
        assert_eq!(decoded.next, 14);
        assert!(decoded.corrupt.is_none());
        // The batch views agree with the records, trimmed the same way.
        let first = &decoded.batches[0];
        assert_eq!(
            (first.first_offset(), first.next_offset(), first.len()),
            (11, 13, 2)
        );
        let viewed: Vec<_> = first
            .records()
            .map(|r| (r.offset, r.value.unwrap().to_vec()))
            .collect();
        assert_eq!(viewed, vec![v(11, "b"), v(12, "c")]);
        let view = first.records().next().unwrap();
        assert_eq!(view.key, Some(&b"k"[..]));
        assert_eq!(
            view.headers().collect::<Vec<_>>(),
            vec![(&b"h"[..], Some(&b"v"[..]))]
        );
        let records = records(&decoded);
        let record = &records[0];
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(record.headers[0].value.as_deref(), Some(&b"v"[..]));
        assert_eq!((&*record.topic, record.partition), ("t", 1));
    }

    #[test]
    fn decoding_stops_at_the_stop_offset() {
        let bytes = fetched(&[batch(0, &["a", "b"]), batch(2, &["c", "d"])]);
        let decoded = decode(&tp(), bytes.clone(), 0, Some(3));
        assert_eq!(values(&decoded).len(), 3);
        assert_eq!(decoded.next, 3);
        assert!(decoded.reached_stop);
        let decoded = decode(&tp(), bytes, 0, Some(2));
        assert_eq!(decoded.next, 2);
        assert!(decoded.reached_stop);
    }

    #[test]
    fn a_corrupt_batch_is_an_error_never_data() {
        let good = batch(0, &["a", "b"]);
        let mut bad = batch(2, &["c", "d"]);
        let last = bad.len() - 1;
        bad[last] ^= 0x40; // flip a bit in the last record: the CRC no longer matches
        let decoded = decode(&tp(), fetched(&[good, bad, batch(4, &["e"])]), 0, None);
        assert_eq!(values(&decoded), vec![v(0, "a"), v(1, "b")]);
        assert_eq!(decoded.next, 2);
        let error = decoded.corrupt.expect("corruption reported");
        assert!(
            matches!(error, ClientError::CorruptBatch { offset: 2, .. }),
            "{error}"
        );
    }

    #[test]
    fn a_truncated_response_is_corrupt() {
        let whole = batch(0, &["a", "b"]);
        let cut = Bytes::from(whole[..whole.len() - 3].to_vec());
        let decoded = decode(&tp(), cut, 0, None);
        assert!(decoded.batches.is_empty());
        assert!(decoded.corrupt.is_some());
    }

    #[test]
    fn values_are_slices_of_the_fetched_buffer() {
        let bytes = fetched(&[batch(0, &["hello"])]);
        let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
        let decoded = decode(&tp(), bytes.clone(), 0, None);
        let records = records(&decoded);
        let value = records[0].value.as_ref().unwrap();
        assert!(range.contains(&(value.as_ptr() as usize)), "zero-copy");
    }
}
