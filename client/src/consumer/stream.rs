//! [`RecordStream`]: the merged stream of a consumer's partitions.
//!
//! Each partition's fetch task sends its records through one bounded channel (the bound is
//! the consumer's prefetch, so a slow reader stops the fetching), which keeps every partition's
//! records in order while partitions interleave. A partition's position advances as its records
//! are *yielded*, not when they are fetched, so the consumer's positions are always "the next
//! record not yet read". Dropping the stream stops the fetch tasks.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::batch::ConsumerBatch;
use super::fetcher::Fetched;
use super::record::ConsumerRecord;
use crate::ClientError;

/// The records of every assigned partition, merged; each partition's in offset order. Made by
/// [`Consumer::stream`](super::Consumer::stream).
///
/// An `Err` item ends its partition (the others go on): a corrupt batch, a deleted topic, an
/// offset out of range; without follow, also a partition whose owner is down. Transport
/// failures do not appear here: the stream reconnects.
/// Without follow, the stream ends once every partition has reached its high watermark;
/// with follow it ends only if every partition failed.
pub struct RecordStream {
    incoming: mpsc::Receiver<Fetched>,
    /// Batches received and not yet read, oldest first, with their partition's position.
    pending: VecDeque<(Arc<AtomicU64>, ConsumerBatch)>,
    /// The records of the batch being read one by one (`next`), built when it was started.
    current: std::vec::IntoIter<ConsumerRecord>,
    current_position: Option<Arc<AtomicU64>>,
    /// That batch, for [`next_batch`](Self::next_batch) to hand out the rest of.
    current_batch: Option<ConsumerBatch>,
    /// Dropping the set aborts the fetch tasks.
    _tasks: JoinSet<()>,
}

impl RecordStream {
    pub(crate) fn new(incoming: mpsc::Receiver<Fetched>, tasks: JoinSet<()>) -> Self {
        RecordStream {
            incoming,
            pending: VecDeque::new(),
            current: Vec::new().into_iter(),
            current_position: None,
            current_batch: None,
            _tasks: tasks,
        }
    }

    /// True if records are already fetched and waiting, so the next item comes without waiting
    /// for the network. Lets a reader write output in large pieces while a backlog drains and
    /// flush as soon as it has caught up.
    pub fn has_buffered(&self) -> bool {
        self.current.len() > 0 || !self.pending.is_empty() || !self.incoming.is_empty()
    }

    /// A stream that yields `error` and ends.
    pub(crate) fn failed(error: ClientError) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(Fetched::Failed(error));
        RecordStream::new(rx, JoinSet::new())
    }

    /// The next batch of one partition, whole: its records are borrowed views of the fetched
    /// bytes ([`ConsumerBatch::records`]), with no per-record allocation, for readers that go
    /// through many records. The partition's position moves past the batch when it is handed
    /// out. Mixes with reading record by record: after some records of a batch were read with
    /// `next`, this hands out the rest of it. `None` when the stream has ended; errors as for
    /// the stream's items.
    pub async fn next_batch(&mut self) -> Option<Result<ConsumerBatch, ClientError>> {
        std::future::poll_fn(|cx| self.poll_next_batch(cx)).await
    }

    fn poll_next_batch(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<ConsumerBatch, ClientError>>> {
        if let Some(batch) = self.current_batch.take() {
            let rest = self.current.as_slice().first().map(|r| r.offset);
            self.current = Vec::new().into_iter();
            let position = self.current_position.take();
            if let (Some(from), Some(position)) = (rest, position) {
                let rest = batch.starting_at(from);
                position.store(rest.next_offset(), Ordering::Release);
                return Poll::Ready(Some(Ok(rest)));
            }
        }
        loop {
            if let Some((position, batch)) = self.pending.pop_front() {
                position.store(batch.next_offset(), Ordering::Release);
                return Poll::Ready(Some(Ok(batch)));
            }
            match ready!(self.poll_incoming(cx)) {
                Some(error) => return Poll::Ready(Some(Err(error))),
                None if self.pending.is_empty() => return Poll::Ready(None),
                None => {}
            }
        }
    }

    /// Receives the next message: batches go to `pending` (`Ready(None)` with some queued, or
    /// at the end of the stream with none), a failure is returned.
    fn poll_incoming(&mut self, cx: &mut Context<'_>) -> Poll<Option<ClientError>> {
        match ready!(self.incoming.poll_recv(cx)) {
            Some(Fetched::Batches { position, batches }) => {
                self.pending
                    .extend(batches.into_iter().map(|b| (Arc::clone(&position), b)));
                Poll::Ready(None)
            }
            Some(Fetched::Failed(error)) => Poll::Ready(Some(error)),
            None => Poll::Ready(None),
        }
    }
}

impl Stream for RecordStream {
    type Item = Result<ConsumerRecord, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(record) = this.current.next() {
                if let Some(position) = &this.current_position {
                    position.store(record.offset + 1, Ordering::Release);
                }
                return Poll::Ready(Some(Ok(record)));
            }
            this.current_batch = None;
            if let Some((position, batch)) = this.pending.pop_front() {
                this.current = batch.to_records().into_iter();
                this.current_position = Some(position);
                this.current_batch = Some(batch);
                continue;
            }
            match ready!(this.poll_incoming(cx)) {
                Some(error) => return Poll::Ready(Some(Err(error))),
                None if this.pending.is_empty() => return Poll::Ready(None),
                None => {}
            }
        }
    }
}

impl std::fmt::Debug for RecordStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStream")
            .field("buffered", &self.current.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// A validated batch of `count` records starting at `base`, as the fetch task sends it.
    fn fetched(base: u64, count: usize, position: &Arc<AtomicU64>) -> Fetched {
        let mut builder = weir_proto::batch::BatchBuilder::new();
        for i in 0..count {
            builder
                .push(weir_proto::batch::RecordInput {
                    key: None,
                    value: Some(format!("v{}", base + i as u64).as_bytes()),
                    timestamp: 0,
                    headers: &[],
                })
                .unwrap();
        }
        let mut bytes = builder.build().unwrap().to_vec();
        weir_proto::batch::stamp_base_offset(&mut bytes, base);
        let tp = crate::TopicPartition::new("t", 0);
        let decoded = super::super::record::decode(&tp, bytes.into(), base, None);
        Fetched::Batches {
            position: Arc::clone(position),
            batches: decoded.batches,
        }
    }

    #[tokio::test]
    async fn positions_advance_as_records_are_yielded() {
        let (tx, rx) = mpsc::channel(4);
        let position = Arc::new(AtomicU64::new(5));
        tx.send(fetched(5, 2, &position)).await.unwrap();
        tx.send(Fetched::Failed(ClientError::Closed)).await.unwrap();
        drop(tx);
        let mut stream = RecordStream::new(rx, JoinSet::new());
        assert_eq!(stream.next().await.unwrap().unwrap().offset, 5);
        assert_eq!(position.load(Ordering::Acquire), 6);
        assert_eq!(stream.next().await.unwrap().unwrap().offset, 6);
        assert_eq!(position.load(Ordering::Acquire), 7);
        assert!(stream.next().await.unwrap().is_err());
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn batches_hand_out_what_records_have_not_and_move_the_position_past_them() {
        let (tx, rx) = mpsc::channel(4);
        let position = Arc::new(AtomicU64::new(0));
        tx.send(fetched(0, 3, &position)).await.unwrap();
        tx.send(fetched(3, 2, &position)).await.unwrap();
        drop(tx);
        let mut stream = RecordStream::new(rx, JoinSet::new());
        assert_eq!(stream.next().await.unwrap().unwrap().offset, 0);
        // The rest of the first batch, then the second, whole.
        let rest = stream.next_batch().await.unwrap().unwrap();
        let offsets: Vec<u64> = rest.records().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![1, 2]);
        assert_eq!(rest.records().next().unwrap().value, Some(&b"v1"[..]));
        assert_eq!(position.load(Ordering::Acquire), 3);
        let second = stream.next_batch().await.unwrap().unwrap();
        assert_eq!((second.first_offset(), second.next_offset()), (3, 5));
        assert_eq!(position.load(Ordering::Acquire), 5);
        assert!(stream.next_batch().await.is_none());
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_failed_stream_yields_its_error_and_ends() {
        let mut stream = RecordStream::failed(ClientError::Closed);
        assert!(matches!(
            stream.next().await,
            Some(Err(ClientError::Closed))
        ));
        assert!(stream.next().await.is_none());
    }
}
