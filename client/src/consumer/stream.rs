//! [`RecordStream`]: the merged stream of a consumer's partitions.
//!
//! Each partition's fetch task sends its records through one bounded channel (the bound is
//! the consumer's prefetch, so a slow reader stops the fetching), which keeps every partition's
//! records in order while partitions interleave. A partition's position advances as its records
//! are *yielded*, not when they are fetched, so the consumer's positions are always "the next
//! record not yet read". Dropping the stream stops the fetch tasks.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

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
    current: std::vec::IntoIter<ConsumerRecord>,
    current_position: Option<Arc<AtomicU64>>,
    /// Dropping the set aborts the fetch tasks.
    _tasks: JoinSet<()>,
}

impl RecordStream {
    pub(crate) fn new(incoming: mpsc::Receiver<Fetched>, tasks: JoinSet<()>) -> Self {
        RecordStream {
            incoming,
            current: Vec::new().into_iter(),
            current_position: None,
            _tasks: tasks,
        }
    }

    /// True if records are already fetched and waiting, so the next item comes without waiting
    /// for the network. Lets a reader write output in large pieces while a backlog drains and
    /// flush as soon as it has caught up.
    pub fn has_buffered(&self) -> bool {
        self.current.len() > 0 || !self.incoming.is_empty()
    }

    /// A stream that yields `error` and ends.
    pub(crate) fn failed(error: ClientError) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(Fetched::Failed(error));
        RecordStream::new(rx, JoinSet::new())
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
            match ready!(this.incoming.poll_recv(cx)) {
                Some(Fetched::Records { position, records }) => {
                    this.current = records.into_iter();
                    this.current_position = Some(position);
                }
                Some(Fetched::Failed(error)) => return Poll::Ready(Some(Err(error))),
                None => return Poll::Ready(None),
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

    fn record(partition: u32, offset: u64) -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition,
            offset,
            timestamp: 0,
            key: None,
            value: None,
            headers: vec![],
        }
    }

    #[tokio::test]
    async fn positions_advance_as_records_are_yielded() {
        let (tx, rx) = mpsc::channel(4);
        let position = Arc::new(AtomicU64::new(5));
        tx.send(Fetched::Records {
            position: position.clone(),
            records: vec![record(0, 5), record(0, 6)],
        })
        .await
        .unwrap();
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
    async fn a_failed_stream_yields_its_error_and_ends() {
        let mut stream = RecordStream::failed(ClientError::Closed);
        assert!(matches!(
            stream.next().await,
            Some(Err(ClientError::Closed))
        ));
        assert!(stream.next().await.is_none());
    }
}
