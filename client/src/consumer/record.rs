//! [`ConsumerRecord`] and the decoding of fetched bytes into records.
//!
//! Invariants of [`decode`]: every batch is validated (length, CRC, record structure) by the
//! proto crate's decoder before any of its records is returned; records below the consumer's
//! position (a batch may start before it) and at or past the stop offset are dropped; records
//! are returned in offset order and the returned position is one past the last record
//! returned. Keys, values and headers are `Bytes` slices of the fetched buffer: no copies.

use std::sync::Arc;

use bytes::Bytes;
use weir_proto::batch::{Header, split_batches};

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
    pub records: Vec<ConsumerRecord>,
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
    batches: Bytes,
    position: u64,
    stop: Option<u64>,
) -> Decoded {
    let mut records = Vec::new();
    let mut next = position;
    let mut corrupt = None;
    let mut reached_stop = stop.is_some_and(|stop| next >= stop);
    'batches: for batch in split_batches(batches) {
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
        records.reserve(batch.record_count());
        for record in batch.records() {
            if record.offset < next {
                continue;
            }
            if stop.is_some_and(|stop| record.offset >= stop) {
                reached_stop = true;
                break 'batches;
            }
            next = record.offset + 1;
            records.push(ConsumerRecord {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: record.offset,
                timestamp: record.timestamp,
                key: record.key,
                value: record.value,
                headers: record.headers,
            });
        }
        reached_stop = stop.is_some_and(|stop| next >= stop);
    }
    Decoded {
        records,
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

    fn values(decoded: &Decoded) -> Vec<(u64, &[u8])> {
        decoded
            .records
            .iter()
            .map(|r| (r.offset, r.value.as_deref().unwrap()))
            .collect()
    }

    fn tp() -> TopicPartition {
        TopicPartition::new("t", 1)
    }

    #[test]
    fn records_below_the_position_are_skipped() {
        let bytes = fetched(&[batch(10, &["a", "b", "c"]), batch(13, &["d"])]);
        let decoded = decode(&tp(), bytes, 11, None);
        assert_eq!(
            values(&decoded),
            vec![(11, &b"b"[..]), (12, b"c"), (13, b"d")]
        );
        assert_eq!(decoded.next, 14);
        assert!(decoded.corrupt.is_none());
        let record = &decoded.records[0];
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
        assert_eq!(values(&decoded), vec![(0, &b"a"[..]), (1, b"b")]);
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
        assert!(decoded.records.is_empty());
        assert!(decoded.corrupt.is_some());
    }

    #[test]
    fn values_are_slices_of_the_fetched_buffer() {
        let bytes = fetched(&[batch(0, &["hello"])]);
        let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
        let decoded = decode(&tp(), bytes.clone(), 0, None);
        let value = decoded.records[0].value.as_ref().unwrap();
        assert!(range.contains(&(value.as_ptr() as usize)), "zero-copy");
    }
}
