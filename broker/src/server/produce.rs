//! The produce path: find the partition, admit the bytes, append, answer.
//!
//! The batch is validated by the storage engine (header, CRC, every record's structure, size)
//! before a byte is written; a refused batch changes nothing. Appends run on the blocking pool
//! (they may fallocate, roll a segment or wait for a sync) so a slow disk never stalls the
//! runtime's threads.
//!
//! On a replicated partition only the leader admits a produce, and `acks=all`/`acks=durable`
//! answers wait, after the append, for the in-sync replicas ([`crate::replica::leader`]): the
//! high watermark, or the durable watermark, must pass the batch.
//!
//! Ordering: a produce stream's requests are appended one after another in arrival order, so
//! batches sent on one stream to one partition land in the order they were sent. With
//! acks=durable or acks=all only the wait (for the sync, for the replicas) runs concurrently
//! (that is what lets group commit share one fdatasync among many batches of one stream).

use crate::security::acl::{Operation, Resource};
use crate::security::guard::Credentials;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::Status;
use weir_proto::status;
use weir_proto::v1::{Acks, Error, ErrorCode, ProduceRequest, ProduceResponse};

use super::BrokerState;
use crate::replica::Replica;
use crate::replica::leader::{self, AckLevel, ProduceRefusal};
use crate::topics::{Partition, TopicError};
use crate::wire::errors::{
    in_partition, internal, invalid_request, shutting_down, storage_error, to_status,
};
use weir_replication::LeaderEpoch;
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

/// A produce that passed the checks that need no disk.
struct Admitted {
    partition: Arc<Partition>,
    acks: Acks,
    /// The answer waits for a local sync (acks=durable, or a topic whose flush policy is
    /// `always`).
    sync: bool,
    /// On a replicated partition: its replica and the leader epoch the produce was admitted in.
    replicated: Option<(Arc<Replica>, LeaderEpoch)>,
}

/// The checks that need no disk: a known partition led here, a known acks value, a size under
/// the request limit, and on a replicated partition enough in-sync replicas and a valid lease.
fn admit(
    state: &BrokerState,
    credentials: &Credentials,
    req: &ProduceRequest,
) -> Result<Admitted, Error> {
    // First: a request its principal may not make (or whose token was revoked since its
    // stream or connection opened) is refused before anything else is looked at.
    state.security.check(
        &state.cluster.current(),
        credentials,
        Operation::Write,
        Resource::Topic(&req.topic),
    )?;
    let acks = Acks::try_from(req.acks)
        .map_err(|_| invalid_request(format!("unknown acks value {}", req.acks)))?;
    let led = state.leader_partition(&req.topic, req.partition)?;
    let partition = led.partition;
    // Refused here too, not only by the engine, so an oversized batch never waits for (or
    // holds) in-flight budget.
    let config = partition.log.config();
    if req.batch.len() > config.max_batch_bytes as usize {
        return Err(storage_error(&StorageError::BatchTooLarge {
            size: req.batch.len(),
            max: config.max_batch_bytes,
        }));
    }
    let replicated = match led.replica {
        None => None,
        Some(replica) => {
            let needs_isr = acks != Acks::Leader;
            match leader::admit_produce(&replica, needs_isr, state.cluster.lease_valid()) {
                Ok(epoch) => Some((replica, epoch)),
                Err(ProduceRefusal::NotLeading) => {
                    let not_local = TopicError::NotLocal {
                        topic: req.topic.clone(),
                        partition: req.partition,
                    };
                    return Err(state.cluster.not_here(&req.topic, req.partition, not_local));
                }
                Err(ProduceRefusal::Refused(e)) => return Err(e),
            }
        }
    };
    let sync = acks == Acks::Durable || config.flush == FlushPolicy::Always;
    Ok(Admitted {
        partition,
        acks,
        sync,
        replicated,
    })
}

/// After an append attempt: an acks=durable batch asks the followers to sync, fetches wake,
/// and a leader's high watermark may move at once.
fn after_append(
    state: &BrokerState,
    admitted: &Admitted,
    appended: Option<&AppendInfo>,
    batch_len: usize,
) {
    if let Some(info) = appended
        && !info.duplicate
    {
        admitted
            .partition
            .traffic
            .produced(batch_len, info.last_offset + 1 - info.base_offset);
    }
    if let (Some((replica, _)), Some(info)) = (&admitted.replicated, appended)
        && admitted.acks == Acks::Durable
    {
        leader::want_sync(replica, info.last_offset + 1);
    }
    admitted.partition.notify_appended();
    if let Some((replica, _)) = &admitted.replicated {
        leader::on_leader_append(replica, &state.replicas);
    }
}

/// Waits for what the produce's acks promise, once the batch is appended: the local sync,
/// then on a replicated partition the in-sync replicas (acks=all: in their logs; acks=durable:
/// synced by them).
async fn acknowledge(
    state: &BrokerState,
    admitted: &Admitted,
    info: &AppendInfo,
    ticket: Option<SyncTicket>,
    topic: &str,
    partition: u32,
) -> Result<(), Error> {
    if let Some(ticket) = ticket {
        let started = Instant::now();
        let synced = wait_synced(
            Arc::clone(&admitted.partition.log),
            ticket,
            topic,
            partition,
        )
        .await;
        state.metrics.produce.sync.observe_since(started);
        synced?;
    }
    let Some((replica, epoch)) = &admitted.replicated else {
        return Ok(());
    };
    let level = match admitted.acks {
        Acks::Leader => return Ok(()),
        Acks::All => AckLevel::Replicated,
        Acks::Durable => {
            // The leader's own sync moved its part of the durable watermark.
            leader::recompute(replica, &state.replicas);
            AckLevel::Durable
        }
    };
    let started = Instant::now();
    let replicated = leader::wait_acknowledgeable(
        replica,
        &state.replicas,
        *epoch,
        info.last_offset + 1,
        level,
    )
    .await;
    state.metrics.produce.replication.observe_since(started);
    replicated
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
    credentials: &Credentials,
    peer: Option<SocketAddr>,
    req: ProduceRequest,
) -> Result<ProduceResponse, Error> {
    if state.is_shutting_down() {
        return Err(shutting_down());
    }
    let admitted = admit(state, credentials, &req)?;
    let in_flight = state.limits.acquire(peer, req.batch.len()).await;
    let log = Arc::clone(&admitted.partition.log);
    let (batch, conditions) = (req.batch.clone(), conditions(&req));
    let (topic, index) = (req.topic, req.partition);
    let batch_len = batch.len();
    let started = Instant::now();
    // The append and the wait for its sync fail differently: a wait that fails (the partition
    // closed, the sync failed) comes after the batch was written.
    let appended = blocking(move || log.append_for_sync(&batch, conditions)).await;
    state.metrics.produce.append.observe_since(started);
    // Followers see the batch now, as with ProduceStream, not after its sync.
    after_append(
        state,
        &admitted,
        appended.as_ref().ok().map(|(info, _)| info),
        batch_len,
    );
    let result = match appended {
        Err(e) => Err(in_partition(&topic, index, e)),
        Ok((info, ticket)) => {
            let ticket = admitted.sync.then_some(ticket);
            acknowledge(state, &admitted, &info, ticket, &topic, index)
                .await
                .map(|()| info)
        }
    };
    drop(in_flight);
    state.metrics.produce.request.observe_since(started);
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
    credentials: Credentials,
    peer: Option<SocketAddr>,
    mut requests: impl Stream<Item = Result<ProduceRequest, Status>> + Unpin,
    responses: mpsc::Sender<Result<ProduceResponse, Status>>,
) {
    let _open = crate::metrics::Open::new(&state.metrics.produce_streams);
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
        let admitted = match admit(&state, &credentials, &req) {
            Ok(admitted) => Arc::new(admitted),
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
        let log = Arc::clone(&admitted.partition.log);
        let (batch, conditions) = (req.batch.clone(), conditions(&req));
        let batch_len = batch.len();
        let sync = admitted.sync;
        let started = Instant::now();
        let appended = blocking(move || {
            let (info, ticket) = log.append_for_sync(&batch, conditions)?;
            Ok((info, sync.then_some(ticket)))
        })
        .await;
        state.metrics.produce.append.observe_since(started);
        after_append(
            &state,
            &admitted,
            appended.as_ref().ok().map(|(info, _)| info),
            batch_len,
        );
        let (topic, index) = (req.topic, req.partition);
        let waits = |admitted: &Admitted| {
            admitted.sync || (admitted.replicated.is_some() && admitted.acks != Acks::Leader)
        };
        match appended {
            Err(e) => {
                drop(in_flight);
                state.metrics.produce.request.observe_since(started);
                let e = in_partition(&topic, index, e);
                let _ = responses.send(Ok(error_response(id, e))).await;
            }
            Ok((info, _)) if !waits(&admitted) => {
                drop(in_flight);
                state.metrics.produce.request.observe_since(started);
                let _ = responses.send(Ok(response(id, info))).await;
            }
            Ok((info, ticket)) => {
                let responses = responses.clone();
                let state = Arc::clone(&state);
                durable_waits.spawn(async move {
                    let acknowledged =
                        acknowledge(&state, &admitted, &info, ticket, &topic, index).await;
                    drop(in_flight);
                    state.metrics.produce.request.observe_since(started);
                    let answer = match acknowledged {
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
