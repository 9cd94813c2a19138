//! The produce path: find the partition, admit the bytes, append, answer.
//!
//! The batch is validated by the storage engine (header, CRC, every record's structure, size)
//! before a byte is written; a refused batch changes nothing. Appends run on the blocking pool
//! (they may fallocate, roll a segment or wait for a sync) so a slow disk never stalls the
//! runtime's threads.
//!
//! Ordering: a produce stream's requests are appended one after another in arrival order, so
//! batches sent on one stream to one partition land in the order they were sent. With
//! acks=durable only the wait for the sync runs concurrently (that is what lets group commit
//! share one fdatasync among many batches of one stream).

use std::net::SocketAddr;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::Status;
use weir_proto::status;
use weir_proto::v1::{Acks, Error, ErrorCode, ProduceRequest, ProduceResponse};

use super::BrokerState;
use super::errors::{invalid_request, storage_error, wire_error};
use crate::storage::{AppendInfo, StorageError};
use crate::topics::Partition;

fn response(correlation_id: u64, info: AppendInfo) -> ProduceResponse {
    ProduceResponse {
        correlation_id,
        base_offset: info.base_offset,
        last_offset: info.last_offset,
        error: None,
    }
}

fn error_response(correlation_id: u64, error: Error) -> ProduceResponse {
    ProduceResponse {
        correlation_id,
        base_offset: 0,
        last_offset: 0,
        error: Some(error),
    }
}

/// The checks that need no disk: a known partition, a known acks value, and a size under the
/// request limit.
fn admit(state: &BrokerState, req: &ProduceRequest) -> Result<(Arc<Partition>, Acks), Error> {
    let acks = Acks::try_from(req.acks)
        .map_err(|_| invalid_request(format!("unknown acks value {}", req.acks)))?;
    let partition = state
        .topics
        .partition(&req.topic, req.partition)
        .map_err(|e| wire_error(&e))?;
    let max = partition.log.config().max_batch_bytes;
    if req.batch.len() > max as usize {
        return Err(storage_error(&StorageError::BatchTooLarge {
            size: req.batch.len(),
            max,
        }));
    }
    Ok((partition, acks))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| storage_error(&e)),
        Err(e) => Err(status::error(
            ErrorCode::Internal,
            format!("append task failed: {e}"),
        )),
    }
}

/// Unary Produce.
pub async fn produce(
    state: &BrokerState,
    peer: Option<SocketAddr>,
    req: ProduceRequest,
) -> Result<ProduceResponse, Error> {
    if state.is_shutting_down() {
        return Err(shutting_down());
    }
    let (partition, acks) = admit(state, &req)?;
    let _in_flight = state.limits.acquire(peer, req.batch.len()).await;
    let log = Arc::clone(&partition.log);
    let batch = req.batch;
    let result = blocking(move || match acks {
        Acks::Leader => log.append(&batch),
        Acks::Durable => log.append_durable(&batch),
    })
    .await;
    partition.notify_appended();
    result.map(|info| response(req.correlation_id, info))
}

fn shutting_down() -> Error {
    status::error(
        ErrorCode::ShuttingDown,
        "the broker is shutting down; retry once it is back",
    )
}

/// ProduceStream: reads requests until the client closes its side, the broker shuts down, or
/// the transport fails; answers each on `responses`. Waits for every accepted request's answer
/// before returning.
pub async fn produce_stream(
    state: Arc<BrokerState>,
    peer: Option<SocketAddr>,
    mut requests: impl Stream<Item = Result<ProduceRequest, Status>> + Unpin,
    responses: mpsc::Sender<Result<ProduceResponse, Status>>,
) {
    let mut shutdown = state.shutdown_signal();
    let mut durable_waits = JoinSet::new();
    loop {
        let req = tokio::select! {
            biased;
            () = super::stopped(&mut shutdown) => break,
            next = requests.next() => match next {
                Some(Ok(req)) => req,
                // The client went away or sent garbage; nothing more to read.
                Some(Err(_)) | None => break,
            },
            // Reap finished waits so the set does not grow on a long-lived stream.
            Some(_) = durable_waits.join_next(), if !durable_waits.is_empty() => continue,
        };
        let id = req.correlation_id;
        let (partition, acks) = match admit(&state, &req) {
            Ok(admitted) => admitted,
            Err(e) => {
                let _ = responses.send(Ok(error_response(id, e))).await;
                continue;
            }
        };
        let in_flight = state.limits.acquire(peer, req.batch.len()).await;
        let log = Arc::clone(&partition.log);
        let batch = req.batch;
        let appended = match acks {
            Acks::Leader => blocking(move || log.append(&batch).map(|info| (info, None))).await,
            Acks::Durable => {
                blocking(move || log.append_for_sync(&batch).map(|(i, t)| (i, Some(t)))).await
            }
        };
        partition.notify_appended();
        match appended {
            Err(e) => {
                let _ = responses.send(Ok(error_response(id, e))).await;
            }
            Ok((info, None)) => {
                let _ = responses.send(Ok(response(id, info))).await;
            }
            Ok((info, Some(ticket))) => {
                let responses = responses.clone();
                let log = Arc::clone(&partition.log);
                durable_waits.spawn(async move {
                    let synced = blocking(move || log.wait_durable(ticket)).await;
                    let answer = match synced {
                        Ok(()) => response(id, info),
                        Err(e) => error_response(id, e),
                    };
                    let _ = responses.send(Ok(answer)).await;
                    drop(in_flight);
                });
            }
        }
    }
    // Every accepted batch gets its answer before the stream ends.
    while durable_waits.join_next().await.is_some() {}
    if state.is_shutting_down() {
        let _ = responses
            .send(Err(super::errors::to_status(shutting_down())))
            .await;
    }
}
