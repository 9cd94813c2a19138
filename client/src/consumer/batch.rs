//! [`ConsumerBatch`]: a fetched record batch as the consumer hands it out whole
//! ([`RecordStream::next_batch`](super::RecordStream::next_batch)), for readers that go through
//! records without building a [`ConsumerRecord`] for each.
//!
//! Invariants: the batch was validated (length, CRC, every record's structure) before it was
//! made; it yields exactly the records in `[first_offset, next_offset)`, the consumer's window
//! (a fetched batch may start below the consumer's position or run past its stop offset), as
//! views borrowed from the fetched bytes: no copy, no allocation, no reference count per record.

use std::sync::Arc;

use weir_proto::batch::{RecordBatch, RecordView};

use super::record::ConsumerRecord;

/// A validated batch of one partition, trimmed to the records the consumer reads.
#[derive(Debug, Clone)]
pub struct ConsumerBatch {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    batch: RecordBatch,
    from: u64,
    to: u64,
}

impl ConsumerBatch {
    /// `batch`'s records in `[from, to)`; `from < to`, both within the batch.
    pub(crate) fn new(
        topic: Arc<str>,
        partition: u32,
        batch: RecordBatch,
        from: u64,
        to: u64,
    ) -> Self {
        debug_assert!(batch.base_offset() <= from && from < to && to <= batch.last_offset() + 1);
        ConsumerBatch {
            topic,
            partition,
            batch,
            from,
            to,
        }
    }

    /// The records, in offset order, borrowed from the fetched bytes.
    pub fn records(&self) -> impl Iterator<Item = RecordView<'_>> {
        let (from, to) = (self.from, self.to);
        self.batch
            .record_views()
            .skip_while(move |r| r.offset < from)
            .take_while(move |r| r.offset < to)
    }

    /// The offset of its first record.
    pub fn first_offset(&self) -> u64 {
        self.from
    }

    /// The offset after its last record: the partition's position once it is read.
    pub fn next_offset(&self) -> u64 {
        self.to
    }

    /// How many records it yields.
    pub fn len(&self) -> usize {
        (self.to - self.from) as usize
    }

    /// Never true: a batch is handed out only with records in it.
    pub fn is_empty(&self) -> bool {
        self.to == self.from
    }

    /// The whole stored batch, exactly as the broker sent it (it may hold records outside
    /// `[first_offset, next_offset)`).
    pub fn stored_bytes(&self) -> &[u8] {
        self.batch.as_bytes()
    }

    /// The records from `from` on (for the rest of a batch partly read record by record).
    pub(crate) fn starting_at(mut self, from: u64) -> Self {
        debug_assert!(self.from <= from && from < self.to);
        self.from = from;
        self
    }

    /// Its records as [`ConsumerRecord`]s (keys, values and headers are slices of the fetched
    /// buffer).
    pub(crate) fn to_records(&self) -> Vec<ConsumerRecord> {
        let (from, to) = (self.from, self.to);
        let mut out = Vec::with_capacity(self.len());
        out.extend(
            self.batch
                .records()
                .skip_while(|r| r.offset < from)
                .take_while(|r| r.offset < to)
                .map(|record| ConsumerRecord {
                    topic: Arc::clone(&self.topic),
                    partition: self.partition,
                    offset: record.offset,
                    timestamp: record.timestamp,
                    key: record.key,
                    value: record.value,
                    headers: record.headers,
                }),
        );
        out
    }
}
