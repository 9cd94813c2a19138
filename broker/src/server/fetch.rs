//! The gRPC fetch path: stream whole batches of one partition from an offset.
//!
//! Each response carries the bytes of one [`ReadChunk`](crate::storage::ReadChunk): whole
//! batches from one segment, as a zero-copy slice of the segment's map (tonic copies them once
//! into its encode buffer; the sendfile data port is the path that copies nothing). Reads never
//! go past the high watermark, so a response never holds a torn or unpublished batch.
//!
//! Waiting is a notification, not a poll: the fetcher subscribes to the partition's append
//! signal *before* reading, so an append that lands between an empty read and the wait still
//! wakes it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tonic::Status;
use weir_proto::v1::{FetchRequest, FetchResponse};

use super::BrokerState;
use super::errors::to_status;
use crate::topics::Partition;

/// The default and the cap of `FetchRequest.max_bytes`.
pub const DEFAULT_FETCH_BYTES: u32 = 1 << 20;
pub const MAX_FETCH_BYTES: u32 = 16 << 20;

type Responses = mpsc::Sender<Result<FetchResponse, Status>>;

/// Streams `req` to `responses` until done, the client leaves, or the broker shuts down.
/// The partition and start offset were checked by the caller.
pub async fn fetch(
    state: Arc<BrokerState>,
    partition: Arc<Partition>,
    req: FetchRequest,
    responses: Responses,
) {
    let log = Arc::clone(&partition.log);
    let mut appended = partition.subscribe();
    let mut shutdown = state.shutdown_signal();
    let max_bytes = match req.max_bytes {
        0 => DEFAULT_FETCH_BYTES,
        n => n.min(MAX_FETCH_BYTES),
    } as usize;
    let max_wait = Duration::from_millis(u64::from(req.max_wait_ms));
    // Without follow, the stream ends at the high watermark it started with.
    let end = (!req.follow).then(|| log.high_watermark());
    let mut offset = req.offset;
    let mut waited = false;
    loop {
        let read = match log.read(offset, max_bytes) {
            Ok(read) => read,
            Err(e) => {
                let _ = responses.send(Err(e.into())).await;
                return;
            }
        };
        if read.chunks.is_empty() {
            // At the high watermark.
            let may_wait = req.follow || (!waited && !max_wait.is_zero());
            if !may_wait {
                let empty = FetchResponse {
                    batches: Default::default(),
                    high_watermark: read.high_watermark,
                    log_start_offset: read.log_start_offset,
                    next_offset: offset,
                };
                let _ = send(&responses, empty, &mut shutdown).await;
                return;
            }
            waited = true;
            let keepalive = async {
                if req.follow && max_wait.is_zero() {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(max_wait).await
                }
            };
            let keepalive_due = tokio::select! {
                changed = appended.changed() => {
                    if changed.is_err() {
                        // The partition is gone (topic deleted): nothing more will come.
                        return;
                    }
                    false
                }
                () = super::stopped(&mut shutdown) => {
                    let _ = responses.send(Err(shutting_down())).await;
                    return;
                }
                _ = responses.closed() => return,
                _ = keepalive => req.follow,
            };
            if keepalive_due {
                let keepalive = FetchResponse {
                    batches: Default::default(),
                    high_watermark: log.high_watermark(),
                    log_start_offset: log.log_start_offset(),
                    next_offset: offset,
                };
                if !send(&responses, keepalive, &mut shutdown).await {
                    return;
                }
            }
            continue;
        }
        for chunk in read.chunks {
            offset = chunk.next_offset;
            let response = FetchResponse {
                batches: chunk.bytes,
                high_watermark: read.high_watermark,
                log_start_offset: read.log_start_offset,
                next_offset: chunk.next_offset,
            };
            if !send(&responses, response, &mut shutdown).await {
                return;
            }
        }
        if end.is_some_and(|end| offset >= end) {
            return;
        }
    }
}

fn shutting_down() -> Status {
    to_status(weir_proto::status::error(
        weir_proto::v1::ErrorCode::ShuttingDown,
        "the broker is shutting down; fetch again from next_offset once it is back",
    ))
}

/// Sends one response, giving up if the client left or the broker is stopping. A slow client
/// holds at most the channel's few responses (slices of segment maps, not copies).
async fn send(
    responses: &Responses,
    response: FetchResponse,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        sent = responses.send(Ok(response)) => sent.is_ok(),
        () = super::stopped(shutdown) => {
            let _ = responses.try_send(Err(shutting_down()));
            false
        }
    }
}
