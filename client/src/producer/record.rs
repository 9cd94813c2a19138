//! [`ProducerRecord`]: one record to send, and [`RecordMetadata`]: where it was stored.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use weir_proto::batch::{Header, RecordInput};

/// One record to send: topic, optional explicit partition, key, value, headers and timestamp.
///
/// ```
/// use weir_client::ProducerRecord;
/// let record = ProducerRecord::new("orders")
///     .key("user-42")
///     .value(r#"{"total": 12}"#)
///     .header("content-type", "application/json");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: Option<u32>,
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    pub(crate) headers: Vec<Header>,
    pub(crate) timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record for `topic` with no key, no value and no headers, timestamped when sent.
    ///
    /// A producer sending many records to one topic can hold its name as an `Arc<str>` and
    /// pass clones of it: the record then costs no allocation for its topic.
    pub fn new(topic: impl Into<Arc<str>>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// The key: picks the partition under the topic's partitioner.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The value.
    pub fn value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Sends to this partition, whatever the partitioner says.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header (keys are UTF-8 by convention; a key may repeat).
    pub fn header(mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }

    /// The record's timestamp in milliseconds since the Unix epoch (default: when it is sent).
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    /// The topic.
    pub fn topic_name(&self) -> &str {
        &self.topic
    }

    /// An upper bound of the record's encoded size in a batch: its bytes plus the largest
    /// varints the encoding can use. What the record costs in the producer's buffer.
    pub(crate) fn encoded_size_bound(&self) -> usize {
        const VARINT32: usize = 5;
        const VARINT64: usize = 10;
        let field = |bytes: Option<&Bytes>| VARINT32 + bytes.map_or(0, Bytes::len);
        let headers: usize = self
            .headers
            .iter()
            .map(|h| field(Some(&h.key)) + field(h.value.as_ref()))
            .sum();
        // length, attributes, timestamp delta, offset delta, key, value, header count, headers
        VARINT32
            + 1
            + VARINT64
            + VARINT32
            + field(self.key.as_ref())
            + field(self.value.as_ref())
            + VARINT32
            + headers
    }

    /// Runs `f` with the record borrowed as the batch encoder's input.
    pub(crate) fn with_input<T>(&self, timestamp: i64, f: impl FnOnce(RecordInput<'_>) -> T) -> T {
        let headers: Vec<(&[u8], Option<&[u8]>)> = self
            .headers
            .iter()
            .map(|h| (h.key.as_ref(), h.value.as_deref()))
            .collect();
        f(RecordInput {
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            timestamp,
            headers: &headers,
        })
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition it went to.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// Its timestamp (milliseconds since the Unix epoch), as sent.
    pub timestamp: i64,
}

/// Now, in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_proto::batch::BatchBuilder;

    #[test]
    fn the_size_bound_holds() {
        let records = [
            ProducerRecord::new("t"),
            ProducerRecord::new("t").value("v"),
            ProducerRecord::new("t")
                .key(vec![7u8; 300])
                .value(vec![1u8; 70_000])
                .header("h", "x")
                .header("h2", vec![0u8; 200]),
        ];
        for record in records {
            let mut builder = BatchBuilder::new();
            // A far-off first timestamp makes the second record's delta as long as it gets.
            record.with_input(i64::MIN / 2, |input| builder.push(input).unwrap());
            let needed = record.with_input(i64::MAX / 2, |input| builder.encoded_len(&input));
            assert!(needed <= record.encoded_size_bound(), "{needed} > bound");
        }
    }
}
