//! [`DeliveryFuture`]: one record's acknowledgement, resolved when its batch's is.
//!
//! A batch has one outcome cell (a `watch` channel) shared by all its records; each record's
//! future holds a receiver and its index in the batch, so resolving a batch of 10,000 records is
//! one store, not 10,000 sends. The sender task is the only writer; if it goes away without
//! writing (the producer's task was dropped with its runtime), every waiting record fails with
//! [`ClientError::Closed`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::watch;

use super::RecordMetadata;
use crate::ClientError;

/// A batch's outcome: `None` while undecided, then the base offset or the error.
pub(crate) type BatchOutcome = Option<Result<u64, ClientError>>;

/// Resolves to where the record was stored once the broker acknowledges its batch, or to the
/// error that failed it (after retries). Dropping it does not cancel the record.
#[must_use = "a dropped DeliveryFuture does not cancel the record, but its outcome is lost"]
pub struct DeliveryFuture {
    inner: Pin<Box<dyn Future<Output = Result<RecordMetadata, ClientError>> + Send>>,
}

impl DeliveryFuture {
    pub(crate) fn new(
        mut outcome: watch::Receiver<BatchOutcome>,
        topic: Arc<str>,
        partition: u32,
        index: u32,
        timestamp: i64,
    ) -> Self {
        let inner = Box::pin(async move {
            let decided = outcome
                .wait_for(Option::is_some)
                .await
                .map_err(|_| ClientError::Closed)?;
            match &*decided {
                Some(Ok(base_offset)) => Ok(RecordMetadata {
                    topic,
                    partition,
                    offset: base_offset + u64::from(index),
                    timestamp,
                }),
                Some(Err(error)) => Err(error.clone()),
                None => Err(ClientError::Closed),
            }
        });
        DeliveryFuture { inner }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_resolve_with_their_offsets() {
        let (tx, rx) = watch::channel(None);
        let first = DeliveryFuture::new(rx.clone(), "t".into(), 2, 0, 10);
        let third = DeliveryFuture::new(rx, "t".into(), 2, 2, 30);
        tx.send_replace(Some(Ok(100)));
        assert_eq!(first.await.unwrap().offset, 100);
        let third = third.await.unwrap();
        assert_eq!(
            (third.partition, third.offset, third.timestamp),
            (2, 102, 30)
        );
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_record() {
        let (tx, rx) = watch::channel(None);
        let record = DeliveryFuture::new(rx, "t".into(), 0, 5, 0);
        tx.send_replace(Some(Err(ClientError::Closed)));
        drop(tx);
        assert!(matches!(record.await, Err(ClientError::Closed)));
    }

    #[tokio::test]
    async fn an_abandoned_batch_reads_as_closed() {
        let (tx, rx) = watch::channel(None);
        let record = DeliveryFuture::new(rx, "t".into(), 0, 0, 0);
        drop(tx);
        assert!(matches!(record.await, Err(ClientError::Closed)));
    }
}
