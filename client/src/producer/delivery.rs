//! [`DeliveryFuture`]: one record's acknowledgement, resolved when its batch's is.
//!
//! A batch has one outcome cell ([`BatchOutcome`]) shared by all its records; each record's
//! future holds the cell and its index in the batch, so resolving a batch of 10,000 records is
//! one store and one wake per waiting task, not 10,000 sends. The sender task is the only
//! writer; if the batch is dropped undecided (the producer's task was dropped with its
//! runtime), every waiting record fails with [`ClientError::Closed`].
//!
//! A record costs one reference count here, not an allocation: `send` is called once per
//! record, and a boxed future per record (freed on another thread than the one that made it)
//! was a tenth of a 100-byte-record producer's time, most of it contention in the allocator.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use super::RecordMetadata;
use crate::ClientError;

/// The cell a batch's outcome is written to once: the base offset or the error.
#[derive(Debug, Default)]
struct OutcomeCell {
    decided: OnceLock<Result<u64, ClientError>>,
    /// Tasks waiting for the decision. Registered under this lock only while undecided, and
    /// taken under it after deciding, so no waiter is registered after the wake-up and missed.
    waiters: Mutex<Vec<Waker>>,
}

impl OutcomeCell {
    /// Registers `waker` unless the outcome is decided (the caller reads it again after).
    fn register(&self, waker: &Waker) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if self.decided.get().is_some() {
            return;
        }
        // A task polling again, or polling several of its records, needs one wake-up.
        if !waiters.last().is_some_and(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
        }
    }
}

/// The writing half of a batch's outcome, held by the batch. The first decision stands;
/// dropping it undecided decides [`ClientError::Closed`].
#[derive(Debug, Default)]
pub(crate) struct BatchOutcome {
    cell: Arc<OutcomeCell>,
}

impl BatchOutcome {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides the batch and wakes every record waiting for it.
    pub fn decide(&self, outcome: Result<u64, ClientError>) {
        if self.cell.decided.set(outcome).is_err() {
            return; // already decided: a batch is settled once
        }
        let waiters =
            std::mem::take(&mut *self.cell.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in waiters {
            waker.wake();
        }
    }

    /// The future of the record at `index` in the batch.
    pub fn delivery(
        &self,
        topic: Arc<str>,
        partition: u32,
        index: u32,
        timestamp: i64,
    ) -> DeliveryFuture {
        DeliveryFuture {
            cell: Arc::clone(&self.cell),
            topic,
            partition,
            index,
            timestamp,
        }
    }
}

impl Drop for BatchOutcome {
    fn drop(&mut self) {
        self.decide(Err(ClientError::Closed));
    }
}

/// Resolves to where the record was stored once the broker acknowledges its batch, or to the
/// error that failed it (after retries). Dropping it does not cancel the record.
#[must_use = "a dropped DeliveryFuture does not cancel the record, but its outcome is lost"]
pub struct DeliveryFuture {
    cell: Arc<OutcomeCell>,
    topic: Arc<str>,
    partition: u32,
    index: u32,
    timestamp: i64,
}

#[cfg(test)]
impl DeliveryFuture {
    pub(crate) fn partition(&self) -> u32 {
        self.partition
    }

    pub(crate) fn index(&self) -> u32 {
        self.index
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let decided = match this.cell.decided.get() {
            Some(decided) => decided,
            None => {
                this.cell.register(cx.waker());
                match this.cell.decided.get() {
                    Some(decided) => decided,
                    None => return Poll::Pending,
                }
            }
        };
        Poll::Ready(match decided {
            Ok(base_offset) => Ok(RecordMetadata {
                topic: this.topic.clone(),
                partition: this.partition,
                offset: base_offset + u64::from(this.index),
                timestamp: this.timestamp,
            }),
            Err(error) => Err(error.clone()),
        })
    }
}

impl fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryFuture")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("decided", &self.cell.decided.get().is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_resolve_with_their_offsets() {
        let outcome = BatchOutcome::new();
        let first = outcome.delivery("t".into(), 2, 0, 10);
        let third = outcome.delivery("t".into(), 2, 2, 30);
        outcome.decide(Ok(100));
        assert_eq!(first.await.unwrap().offset, 100);
        let third = third.await.unwrap();
        assert_eq!(
            (third.partition, third.offset, third.timestamp),
            (2, 102, 30)
        );
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_record() {
        let outcome = BatchOutcome::new();
        let record = outcome.delivery("t".into(), 0, 5, 0);
        outcome.decide(Err(ClientError::Closed));
        drop(outcome);
        assert!(matches!(record.await, Err(ClientError::Closed)));
    }

    #[tokio::test]
    async fn an_abandoned_batch_reads_as_closed() {
        let outcome = BatchOutcome::new();
        let record = outcome.delivery("t".into(), 0, 0, 0);
        drop(outcome);
        assert!(matches!(record.await, Err(ClientError::Closed)));
    }
}
