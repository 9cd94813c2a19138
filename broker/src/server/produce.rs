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
use crate::topics::Partition;
use crate::wire::errors::{
    in_partition, internal, invalid_request, shutting_down, storage_error, to_status,
};
use weir_storage::{
    AppendConditions, AppendInfo, FlushPolicy, PartitionLog, StorageError, SyncTicket,
};

fn response(correlation_id: u64, info: AppendInfo) -> ProduceResponse {
    ProduceResponse {
        correlation_id,
        base_offset: info.base_offset,
        last_offset: info.last_offset,
        error: None,
        duplicate: info.duplicate,
    }
}

fn error_response(correlation_id: u64, error: Error) -> ProduceResponse {
    ProduceResponse {
        correlation_id,
        base_offset: 0,
        last_offset: 0,
        error: Some(error),
        duplicate: false,
    }
}

/// The checks that need no disk: a known partition, a known acks value, and a size under the
/// request limit. Returns the partition and whether the answer waits for a sync (acks=durable,
/// or a topic whose flush policy is `always`).
fn admit(state: &BrokerState, req: &ProduceRequest) -> Result<(Arc<Partition>, bool), Error> {
    let acks = Acks::try_from(req.acks)
        .map_err(|_| invalid_request(format!("unknown acks value {}", req.acks)))?;
    let partition = state.partition(&req.topic, req.partition)?;
    // Refused here too, not only by the engine, so an oversized batch never waits for (or
    // holds) in-flight budget.
    let config = partition.log.config();
    if req.batch.len() > config.max_batch_bytes as usize {
        return Err(storage_error(&StorageError::BatchTooLarge {
            size: req.batch.len(),
            max: config.max_batch_bytes,
        }));
    }
    let sync = acks == Acks::Durable || config.flush == FlushPolicy::Always;
    Ok((partition, sync))
}

fn conditions(req: &ProduceRequest) -> AppendConditions {
    AppendConditions {
        expected_offset: req.expected_offset,
        expected_keys: req
            .expected_keys
            .iter()
            .map(|k| (k.key.to_vec(), k.offset))
            .collect(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| storage_error(&e)),
        Err(e) => Err(internal(format!("storage task failed: {e}"))),
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
    let (partition, sync) = admit(state, &req)?;
    let in_flight = state.limits.acquire(peer, req.batch.len()).await;
    let log = Arc::clone(&partition.log);
    let (batch, conditions) = (req.batch.clone(), conditions(&req));
    let (topic, index) = (req.topic, req.partition);
    // The append and the wait for its sync fail differently: a wait that fails (the partition
    // closed, the sync failed) comes after the batch was written.
    let appended =
        blocking(move || log.append_for_sync(&batch, conditions).map(|r| (r, log))).await;
    // Followers see the batch now, as with ProduceStream, not after its sync.
    partition.notify_appended();
    let result = match appended {
        Err(e) => Err(in_partition(&topic, index, e)),
        Ok(((info, ticket), log)) if sync => {
            wait_synced(log, ticket, &topic, index).await.map(|()| info)
        }
        Ok(((info, _), _)) => Ok(info),
    };
    drop(in_flight);
    result.map(|info| response(req.correlation_id, info))
}

/// ProduceStream: reads requests until the client closes its side, the broker shuts down, or
/// the transport fails; answers each on `responses`. Waits for every accepted request's answer
/// before returning.
///
/// In-flight budget: a request's bytes are counted from when it is read until its append (and,
/// for acks=durable, its sync) is done; the answer is sent after the bytes are released, so a
/// client that stops reading its answers blocks only its own stream, never other producers.
pub async fn produce_stream(
    state: Arc<BrokerState>,
    peer: Option<SocketAddr>,
    mut requests: impl Stream<Item = Result<ProduceRequest, Status>> + Unpin,
    responses: mpsc::Sender<Result<ProduceResponse, Status>>,
) {
    let mut shutdown = state.shutdown_signal();
    let mut durable_waits = JoinSet::new();
    // Why the request stream ended early, sent as the stream's status once every accepted
    // request has its answer.
    let mut ended_by = None;
    loop {
        // Reap finished waits so the set does not grow on a long-lived, busy stream.
        while durable_waits.try_join_next().is_some() {}
        let req = tokio::select! {
            biased;
            () = super::stopped(&mut shutdown) => break,
            next = requests.next() => match next {
                Some(Ok(req)) => req,
                Some(Err(status)) => {
                    // A request over the size limit (BATCH_TOO_LARGE, from RequestLimit) or
                    // that tonic could not decode: tell the client why its stream ends
                    // instead of ending it silently.
                    ended_by = Some(status);
                    break;
                }
                None => break,
            },
        };
        let id = req.correlation_id;
        let (partition, sync) = match admit(&state, &req) {
            Ok(admitted) => admitted,
            Err(e) => {
                let _ = responses.send(Ok(error_response(id, e))).await;
                continue;
            }
        };
        let in_flight = tokio::select! {
            in_flight = state.limits.acquire(peer, req.batch.len()) => in_flight,
            () = super::stopped(&mut shutdown) => {
                // Not appended: the client may safely send it again.
                let _ = responses.send(Ok(error_response(id, shutting_down()))).await;
                break;
            }
        };
        let log = Arc::clone(&partition.log);
        let (batch, conditions) = (req.batch.clone(), conditions(&req));
        let appended = blocking(move || {
            let (info, ticket) = log.append_for_sync(&batch, conditions)?;
            Ok((info, sync.then_some(ticket)))
        })
        .await;
        partition.notify_appended();
        let (topic, index) = (req.topic, req.partition);
        match appended {
            Err(e) => {
                drop(in_flight);
                let e = in_partition(&topic, index, e);
                let _ = responses.send(Ok(error_response(id, e))).await;
            }
            Ok((info, None)) => {
                drop(in_flight);
                let _ = responses.send(Ok(response(id, info))).await;
            }
            Ok((info, Some(ticket))) => {
                let responses = responses.clone();
                let log = Arc::clone(&partition.log);
                durable_waits.spawn(async move {
                    let synced = wait_synced(log, ticket, &topic, index).await;
                    drop(in_flight);
                    let answer = match synced {
                        Ok(()) => response(id, info),
                        Err(e) => error_response(id, e),
                    };
                    let _ = responses.send(Ok(answer)).await;
                });
            }
        }
    }
    // Every accepted batch gets its answer before the stream ends.
    while durable_waits.join_next().await.is_some() {}
    if let Some(status) = ended_by {
        let _ = responses.send(Err(status)).await;
    } else if state.is_shutting_down() {
        let _ = responses.send(Err(to_status(shutting_down()))).await;
    }
}

/// Waits for the sync of an appended batch. Every failure here comes after the append, so a
/// partition closed meanwhile (shutdown past its timeout, or the topic deleted) is NOT_DURABLE:
/// the batch may well be on disk, and the retriable SHUTTING_DOWN that `Closed` means for a
/// refused append would make the client send it twice.
async fn wait_synced(
    log: Arc<PartitionLog>,
    ticket: SyncTicket,
    topic: &str,
    partition: u32,
) -> Result<(), Error> {
    match blocking(move || Ok(log.wait_durable(ticket))).await? {
        Ok(()) => Ok(()),
        Err(StorageError::Closed) => Err(status::error(
            ErrorCode::NotDurable,
            format!(
                "{topic}-{partition}: the partition closed before this batch's sync was confirmed; \
                 it was appended and may be on disk, so sending it again may duplicate it"
            ),
        )),
        Err(e) => Err(in_partition(topic, partition, storage_error(&e))),
    }
}
