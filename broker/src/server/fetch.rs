//! The fetch loop shared by both read transports: gRPC `Fetch` ([`grpc_fetch`]) and the
//! sendfile data port (`data_port`). A [`FetchSession`] yields [`FetchEvent`]s; each transport
//! only decides how to put them on its wire.
//!
//! Each chunk is a [`ReadChunk`]: whole batches from one segment, as the segment's file range
//! (for sendfile) and the same bytes as a zero-copy slice of its map (for gRPC, which copies
//! once into its encode buffer). Reads never go past the high watermark, so a chunk never
//! holds a torn or unpublished batch.
//!
//! Waiting is a notification, not a poll: the session subscribes to the partition's signal
//! *before* reading, so an append that lands between an empty read and the wait still wakes it.
//!
//! Two readers ([`Reader`]): a consumer reads below the partition's high watermark (on a
//! replicated partition, only what the in-sync replicas hold) and waits for it to move; a
//! follower replicating the partition reads up to the log end and waits for appends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tonic::Status;
use weir_proto::v1::{ErrorCode, FetchRequest, FetchResponse};

use super::BrokerState;
use crate::topics::Partition;
use crate::wire::errors::{in_partition, shutting_down, storage_error, to_status};
use weir_storage::{PartitionLog, ReadChunk, StorageError};

/// The default and the cap of a fetch's `max_bytes`.
pub const DEFAULT_FETCH_BYTES: u32 = 1 << 20;
pub const MAX_FETCH_BYTES: u32 = 16 << 20;

/// What a fetch asks for, whatever the transport.
#[derive(Debug, Clone, Copy)]
pub struct FetchParams {
    pub offset: u64,
    pub max_bytes: u32,
    pub max_wait_ms: u32,
    pub follow: bool,
}

/// Which wire a fetch is served on (for its metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    DataPort,
}

/// Who reads, and so how far (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    Consumer,
    Replica,
}

/// Where a fetch stands, as every response of either transport reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    /// The partition's next offset and first kept offset (for a chunk: as of its read).
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// Where the fetch continues: the offset after the last batch sent.
    pub next_offset: u64,
}

/// One step of a fetch.
pub enum FetchEvent {
    /// Whole batches to send; `marks.next_offset` is the offset after the chunk.
    Chunk { chunk: ReadChunk, marks: Marks },
    /// Nothing new (an empty answer at the high watermark, or a follow keep-alive).
    Idle(Marks),
    /// A non-follow fetch has sent everything up to the high watermark it started with.
    End(Marks),
    /// The fetch cannot go on (retention passed it, the partition closed, the broker stops).
    Failed(weir_proto::v1::Error),
}

/// Checks a fetch's start before any response is sent: the partition exists (the caller looked
/// it up) and the offset is inside `[log start, log end]`. (A consumer between the high
/// watermark and the log end of a replicated partition waits for the high watermark, as in
/// Kafka: a new leader's high watermark may lag the one its predecessor had announced.)
pub fn check_start(log: &PartitionLog, offset: u64) -> Result<(), StorageError> {
    let (start, end) = (log.log_start_offset(), log.high_watermark());
    if offset < start || offset > end {
        return Err(StorageError::OffsetOutOfRange {
            offset,
            log_start: start,
            high_watermark: end,
        });
    }
    Ok(())
}

/// The state of one fetch: where it is, what it waits on.
pub struct FetchSession {
    partition: Arc<Partition>,
    log: Arc<PartitionLog>,
    reader: Reader,
    /// The mark this reader reads below: the high watermark or the log end.
    moved: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    max_bytes: usize,
    max_wait: Duration,
    follow: bool,
    /// Without follow, the session ends at the high watermark it started with.
    end: Option<u64>,
    offset: u64,
    waited: bool,
    /// Whether a chunk was handed out: a non-follow session that starts at its end still
    /// reads (and may wait max_wait) once before it ends.
    sent_any: bool,
    pending: std::vec::IntoIter<ReadChunk>,
    pending_marks: (u64, u64),
    finished: bool,
    /// A consumer's fetch: when it began and its latency histogram, until the first event is
    /// observed (`weir_request_duration_seconds{rpc="fetch"}`: the time to the first answer).
    first_answer: Option<(std::time::Instant, crate::metrics::Timer)>,
    /// Counts the session on the open-streams gauge of its transport while it lives.
    _open: crate::metrics::Open,
}

impl FetchSession {
    pub fn new(
        state: &BrokerState,
        partition: &Arc<Partition>,
        params: FetchParams,
        reader: Reader,
        transport: Transport,
    ) -> Self {
        let metrics = &state.metrics;
        let (timer, streams) = match transport {
            Transport::Grpc => (&metrics.fetch_grpc, &metrics.fetch_streams_grpc),
            Transport::DataPort => (&metrics.fetch_data_port, &metrics.fetch_streams_data_port),
        };
        let first_answer =
            (reader == Reader::Consumer).then(|| (std::time::Instant::now(), timer.clone()));
        // Subscribe before the first read (see the module docs).
        let moved = match reader {
            Reader::Consumer => partition.subscribe_committed(),
            Reader::Replica => partition.subscribe(),
        };
        let log = Arc::clone(&partition.log);
        FetchSession {
            end: (!params.follow).then(|| limit(partition, reader)),
            partition: Arc::clone(partition),
            log,
            reader,
            moved,
            shutdown: state.shutdown_signal(),
            max_bytes: match params.max_bytes {
                0 => DEFAULT_FETCH_BYTES,
                n => n.min(MAX_FETCH_BYTES),
            } as usize,
            max_wait: Duration::from_millis(u64::from(params.max_wait_ms)),
            follow: params.follow,
            offset: params.offset,
            waited: false,
            sent_any: false,
            pending: Vec::new().into_iter(),
            pending_marks: (0, 0),
            finished: false,
            first_answer,
            _open: crate::metrics::Open::new(streams),
        }
    }

    /// The broker's shutdown signal, for transports that wait on their client too.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// The next event; `None` after `End` or `Failed`. Cancel-safe only between events.
    pub async fn next(&mut self) -> Option<FetchEvent> {
        let event = self.next_event().await;
        if let Some((started, timer)) = self.first_answer.take() {
            timer.observe_since(started);
        }
        event
    }

    async fn next_event(&mut self) -> Option<FetchEvent> {
        if self.finished {
            return None;
        }
        loop {
            if let Some(chunk) = self.pending.next() {
                self.offset = chunk.next_offset;
                self.sent_any = true;
                self.partition.traffic.fetched(
                    chunk.bytes.len(),
                    chunk.next_offset.saturating_sub(chunk.first_offset),
                    self.reader == Reader::Replica,
                );
                let (high_watermark, log_start_offset) = self.pending_marks;
                let marks = Marks {
                    high_watermark,
                    log_start_offset,
                    next_offset: chunk.next_offset,
                };
                return Some(FetchEvent::Chunk { chunk, marks });
            }
            if let Some(end) = self.end
                && self.offset >= end
                && self.sent_any
            {
                return Some(self.finish_with_end());
            }
            // Off the runtime threads: a read takes the partition lock (which an append holds
            // while it copies or rolls a segment) and may open and map an idle segment.
            let (log, offset, max_bytes) = (Arc::clone(&self.log), self.offset, self.max_bytes);
            let until = limit(&self.partition, self.reader);
            let read = match tokio::task::spawn_blocking(move || {
                log.read_bounded(offset, max_bytes, until)
            })
            .await
            {
                Ok(Ok(read)) => read,
                Ok(Err(e)) => return Some(self.fail_with(&e)),
                Err(e) => {
                    return Some(self.fail(crate::wire::errors::internal(format!(
                        "read task failed: {e}"
                    ))));
                }
            };
            if !read.chunks.is_empty() {
                self.pending_marks = (self.partition.high_watermark(), read.log_start_offset);
                self.pending = read.chunks.into_iter();
                continue;
            }
            // At the high watermark.
            if !self.follow && (self.waited || self.max_wait.is_zero()) {
                return Some(self.finish_with_end());
            }
            self.waited = true;
            let follow = self.follow;
            let max_wait = self.max_wait;
            let keepalive = async {
                if follow && max_wait.is_zero() {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(max_wait).await
                }
            };
            tokio::select! {
                // Appends, and the deletion of the topic (whose read then fails), wake us.
                _ = self.moved.changed() => {}
                () = super::stopped(&mut self.shutdown) => {
                    return Some(self.fail(shutting_down()));
                }
                () = keepalive => if follow {
                    return Some(FetchEvent::Idle(self.marks()));
                },
            }
        }
    }

    /// The partition's marks now, and where this fetch stands.
    fn marks(&self) -> Marks {
        Marks {
            high_watermark: self.partition.high_watermark(),
            log_start_offset: self.log.log_start_offset(),
            next_offset: self.offset,
        }
    }

    fn finish_with_end(&mut self) -> FetchEvent {
        self.finished = true;
        FetchEvent::End(self.marks())
    }

    /// A read failure, named for the partition. `Closed` outside a shutdown means the topic
    /// was deleted under the fetch.
    fn fail_with(&mut self, e: &StorageError) -> FetchEvent {
        let tp = self.log.topic_partition();
        let error = match e {
            StorageError::Closed if !*self.shutdown.borrow() => weir_proto::status::error(
                ErrorCode::UnknownTopic,
                format!("{tp}: the topic was deleted while being fetched"),
            ),
            StorageError::Closed => shutting_down(),
            e => in_partition(&tp.topic, tp.partition, storage_error(e)),
        };
        self.fail(error)
    }

    fn fail(&mut self, error: weir_proto::v1::Error) -> FetchEvent {
        self.finished = true;
        FetchEvent::Failed(error)
    }
}

/// How far `reader` may read `partition` now.
fn limit(partition: &Partition, reader: Reader) -> u64 {
    match reader {
        Reader::Consumer => partition.high_watermark(),
        Reader::Replica => partition.log_end(),
    }
}

type Responses = mpsc::Sender<Result<FetchResponse, Status>>;

/// gRPC `Fetch`: streams a session's events as `FetchResponse`s until done, the client leaves,
/// or the broker shuts down. The partition and start offset were checked by the caller.
pub async fn grpc_fetch(
    state: Arc<BrokerState>,
    partition: Arc<Partition>,
    req: FetchRequest,
    responses: Responses,
) {
    let params = FetchParams {
        offset: req.offset,
        max_bytes: req.max_bytes,
        max_wait_ms: req.max_wait_ms,
        follow: req.follow,
    };
    let mut session = FetchSession::new(
        &state,
        &partition,
        params,
        Reader::Consumer,
        Transport::Grpc,
    );
    let mut shutdown = session.shutdown_signal();
    loop {
        let event = tokio::select! {
            event = session.next() => event,
            // The client left while we waited for data.
            () = responses.closed() => return,
        };
        let response = match event {
            None => return,
            Some(FetchEvent::Chunk { chunk, marks }) => response(chunk.bytes, marks),
            Some(FetchEvent::Idle(marks)) => response(Default::default(), marks),
            // A stream ends by ending; the last response already carried the offsets, but an
            // empty fetch has sent nothing yet and its client wants the high watermark.
            Some(FetchEvent::End(marks)) => {
                if marks.next_offset == req.offset {
                    let _ = send(
                        &responses,
                        response(Default::default(), marks),
                        &mut shutdown,
                    )
                    .await;
                }
                return;
            }
            Some(FetchEvent::Failed(error)) => {
                let _ = responses.send(Err(to_status(error))).await;
                return;
            }
        };
        if !send(&responses, response, &mut shutdown).await {
            return;
        }
    }
}

fn response(batches: bytes::Bytes, marks: Marks) -> FetchResponse {
    FetchResponse {
        batches,
        high_watermark: marks.high_watermark,
        log_start_offset: marks.log_start_offset,
        next_offset: marks.next_offset,
    }
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
            let _ = responses.try_send(Err(to_status(shutting_down())));
            false
        }
    }
}
