//! One partition's fetch task: a fetch from the partition's position (over the data port or
//! gRPC `Fetch`), decoded and handed to the consumer's [`RecordStream`](super::RecordStream) in
//! order.
//!
//! Invariants:
//! - `next` is the offset after the last record handed over; every (re)connection fetches from
//!   it, so a reconnect after a broker restart or a dropped connection neither skips nor
//!   repeats a record (a batch starting below `next` is trimmed by `decode`).
//! - Retriable failures (transport errors, `SHUTTING_DOWN`, ...) reconnect with backoff, for as
//!   long as the consumer wants the partition; anything else (a corrupt batch, an unknown topic,
//!   an offset out of range) is handed over as an error and ends this partition only. Without
//!   follow, an owner known to be down (`PARTITION_UNAVAILABLE`) is not waited for either.
//! - Without follow, the partition ends at the high watermark read when the task started.
//! - Every fetch quotes the newest leader epoch this task has read in, or the picture's if that
//!   is newer (KIP-320, `FetchRequest.current_leader_epoch`). A deposed leader that has not
//!   learned of its successor refuses it (UNKNOWN_LEADER_EPOCH), so the high watermark this
//!   task sees never goes back across a failover or handover; FENCED_LEADER_EPOCH (the picture
//!   is older than the leader) refreshes the picture and fetches again.
//! - A start that is [`Unresolved`] (assigned while the owner was down) is looked up first, and
//!   stored in the position, before anything is fetched; an unchecked start (a committed
//!   offset set while the owner was down) is checked against the log first.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::mpsc;
use weir_proto::v1::{FetchRequest, FetchResponse, ListOffsetsRequest, OffsetSpec};

use super::batch::ConsumerBatch;
use super::data_port::DataPortFetch;
use super::record::decode;
use super::{ConsumerConfig, Transport, Unresolved};
use crate::cluster::Cluster;
use crate::{ClientError, TopicPartition};

/// What a fetch task hands to the record stream.
pub(crate) enum Fetched {
    /// Validated batches of one partition, in offset order, each trimmed to the records the
    /// consumer reads, and that partition's position to advance as they are read.
    Batches {
        position: Arc<AtomicU64>,
        batches: Vec<ConsumerBatch>,
    },
    /// The partition failed and ends here.
    Failed(ClientError),
}

/// The responses of one fetch, over either wire.
enum Responses {
    Grpc(tonic::Streaming<FetchResponse>),
    DataPort(DataPortFetch),
}

impl Responses {
    async fn message(&mut self) -> Result<Option<FetchResponse>, ClientError> {
        match self {
            Responses::Grpc(stream) => stream.message().await.map_err(ClientError::from),
            Responses::DataPort(fetch) => fetch.message().await,
        }
    }
}

/// How one `Fetch` call ended.
enum CallEnd {
    /// The consumer has everything it asked for, or is gone.
    Done,
    /// The broker ended the stream without an error.
    Clean,
    Failed(ClientError),
}

pub(crate) struct PartitionFetch {
    /// Finds the partition's owner for every (re)connection.
    pub cluster: Arc<Cluster>,
    pub tp: TopicPartition,
    pub position: Arc<AtomicU64>,
    pub start: u64,
    /// `start` could not be checked against the log: outside it, start here instead.
    pub check_start: Option<Unresolved>,
    pub config: Arc<ConsumerConfig>,
    pub out: mpsc::Sender<Fetched>,
}

impl PartitionFetch {
    pub async fn run(self) {
        let mut failures = 0;
        let mut next = self.start;
        // The high watermark, when a start check has just read it.
        let mut high_watermark = None;
        if let Some(unresolved) = Unresolved::of(self.start) {
            let Some(start) = self.look_up(unresolved.wire_spec(), &mut failures).await else {
                return;
            };
            next = start;
            self.position
                .store(start, std::sync::atomic::Ordering::Release);
        } else if let Some(otherwise) = self.check_start {
            let Some(first) = self.look_up(OffsetSpec::Earliest, &mut failures).await else {
                return;
            };
            let Some(last) = self.look_up(OffsetSpec::Latest, &mut failures).await else {
                return;
            };
            high_watermark = Some(last);
            if !(first..=last).contains(&next) {
                next = match otherwise {
                    Unresolved::Earliest => first,
                    Unresolved::Latest => last,
                };
                tracing::warn!(partition = %self.tp, start = self.start, log_start = first,
                    high_watermark = last, "the start is outside the log; starting at {next}");
                self.position
                    .store(next, std::sync::atomic::Ordering::Release);
            }
        }
        let stop = if self.config.follow {
            None
        } else if high_watermark.is_some() {
            high_watermark
        } else {
            match self.look_up(OffsetSpec::Latest, &mut failures).await {
                Some(high_watermark) => Some(high_watermark),
                None => return,
            }
        };
        // A position past the end is the broker's to judge (OFFSET_OUT_OF_RANGE), so that
        // partition is fetched once even though it is past the stop offset.
        let mut ask_the_broker = stop.is_some_and(|stop| next > stop);
        let mut read_in_epoch = None;
        loop {
            if !ask_the_broker && stop.is_some_and(|stop| next >= stop) {
                return;
            }
            ask_the_broker = false;
            let fetched_from = next;
            match self
                .call(&mut next, &mut read_in_epoch, stop, &mut failures)
                .await
            {
                CallEnd::Done => return,
                // Without follow the broker ends the stream at its high watermark; fetch again
                // only if this call made progress (else the log ends below `stop`: truncated).
                CallEnd::Clean if !self.config.follow => {
                    if next == fetched_from {
                        return;
                    }
                }
                CallEnd::Clean => {
                    let error = ClientError::Transport {
                        code: tonic::Code::Unavailable,
                        message: "the broker ended a follow stream".into(),
                    };
                    failures += 1;
                    self.back_off(failures, &error).await;
                }
                CallEnd::Failed(error) if self.waits_out(&error) => {
                    failures += 1;
                    self.back_off(failures, &error).await;
                }
                CallEnd::Failed(error) => {
                    let _ = self.out.send(Fetched::Failed(error)).await;
                    return;
                }
            }
        }
    }

    /// One `Fetch` call from `*next`, handing records over as they arrive. It quotes the newer
    /// of `*read_in_epoch` and the picture's leader epoch, and records it in `*read_in_epoch`
    /// once the leader has answered.
    async fn call(
        &self,
        next: &mut u64,
        read_in_epoch: &mut Option<u32>,
        stop: Option<u64>,
        failures: &mut u32,
    ) -> CallEnd {
        let leader = match self.leader().await {
            Ok(leader) => leader,
            Err(error) => return CallEnd::Failed(error),
        };
        let quoted_epoch = (*read_in_epoch).max(leader.leader_epoch);
        let request = FetchRequest {
            topic: self.tp.topic.to_string(),
            partition: self.tp.partition,
            offset: *next,
            max_bytes: self.config.max_bytes,
            max_wait_ms: if self.config.follow {
                u32::try_from(self.config.keep_alive.as_millis()).unwrap_or(u32::MAX)
            } else {
                0
            },
            follow: self.config.follow,
            current_leader_epoch: quoted_epoch,
        };
        let data_address = match (self.config.transport, leader.data_address) {
            (Transport::Grpc, _) => None,
            (Transport::Auto, address) => address,
            (Transport::DataPort, Some(address)) => Some(address),
            (Transport::DataPort, None) => {
                return CallEnd::Failed(ClientError::InvalidArgument(format!(
                    "broker {} advertises no data port for {}; use Transport::Auto or Grpc",
                    leader.id, self.tp
                )));
            }
        };
        let mut responses = match data_address {
            Some(addr) => {
                match DataPortFetch::open(&addr, self.cluster.token(), &request, self.cluster.tls())
                    .await
                {
                    Ok(fetch) => Responses::DataPort(fetch),
                    Err(error) => return self.failed(error),
                }
            }
            None => match leader.grpc.clone().fetch(request).await {
                Ok(response) => Responses::Grpc(response.into_inner()),
                Err(status) => return self.failed(status.into()),
            },
        };
        loop {
            let response = match responses.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return CallEnd::Clean,
                Err(error) => return self.failed(error),
            };
            *failures = 0;
            *read_in_epoch = quoted_epoch;
            let decoded = decode(&self.tp, response.batches, *next, stop);
            *next = decoded.next;
            if !decoded.batches.is_empty() {
                let batches = Fetched::Batches {
                    position: self.position.clone(),
                    batches: decoded.batches,
                };
                if self.out.send(batches).await.is_err() {
                    return CallEnd::Done;
                }
            }
            if let Some(error) = decoded.corrupt {
                let _ = self.out.send(Fetched::Failed(error)).await;
                return CallEnd::Done;
            }
            if decoded.reached_stop {
                return CallEnd::Done;
            }
        }
    }

    /// A failed call: the owner may have moved or gone, so the next one looks it up afresh.
    fn failed(&self, error: ClientError) -> CallEnd {
        if error.is_retriable() || stale_epoch(&error) {
            self.cluster.invalidate();
        }
        CallEnd::Failed(error)
    }

    /// The partition's owner. When the picture shows it down, the picture is rechecked soon
    /// (bounded for all partitions together), or the partition would wait on it forever.
    async fn leader(&self) -> Result<crate::cluster::Leader, ClientError> {
        self.cluster
            .leader(&self.tp.topic, self.tp.partition)
            .await
            .inspect_err(|_| {
                self.cluster
                    .invalidate_if_older(crate::cluster::DOWN_RECHECK)
            })
    }

    /// Whether to retry after `error` rather than end the partition with it. Without follow,
    /// an owner the picture shows down is not waited for (a broker's own "retry" answers
    /// are).
    fn waits_out(&self, error: &ClientError) -> bool {
        (error.is_retriable() || stale_epoch(error))
            && (self.config.follow
                || error.code() != Some(weir_proto::v1::ErrorCode::PartitionUnavailable)
                || !self
                    .cluster
                    .owner_known_down(&self.tp.topic, self.tp.partition))
    }

    /// The partition's log start or end, retrying what [`waits_out`](Self::waits_out); `None`
    /// once the partition has ended with an error (handed over).
    async fn look_up(&self, spec: OffsetSpec, failures: &mut u32) -> Option<u64> {
        loop {
            match self.list_offset(spec).await {
                Ok(offset) => return Some(offset),
                Err(error) if self.waits_out(&error) => {
                    *failures += 1;
                    self.back_off(*failures, &error).await;
                }
                Err(error) => {
                    let _ = self.out.send(Fetched::Failed(error)).await;
                    return None;
                }
            }
        }
    }

    /// The partition's log start or end (`spec`), from its owner.
    async fn list_offset(&self, spec: OffsetSpec) -> Result<u64, ClientError> {
        let leader = self.leader().await?;
        let listed = leader
            .grpc
            .clone()
            .list_offsets(ListOffsetsRequest {
                topic: self.tp.topic.to_string(),
                partitions: vec![self.tp.partition],
                spec: spec as i32,
                timestamp_ms: 0,
                current_leader_epoch: leader.leader_epoch,
            })
            .await
            .inspect_err(|_| self.cluster.invalidate())?
            .into_inner();
        listed
            .offsets
            .iter()
            .find(|o| o.partition == self.tp.partition)
            .map(|o| o.offset)
            .ok_or_else(|| ClientError::Transport {
                code: tonic::Code::Internal,
                message: format!("the broker's ListOffsets answer has no {}", self.tp),
            })
    }

    async fn back_off(&self, failures: u32, error: &ClientError) {
        let delay = self.config.backoff(failures);
        // One warning per outage, not one per attempt.
        if failures == 1 {
            tracing::warn!(partition = %self.tp, %error, "fetch failed; reconnecting until the broker is back");
        } else {
            tracing::debug!(partition = %self.tp, %error, ?delay, "fetch failed again; reconnecting");
        }
        tokio::time::sleep(delay).await;
    }
}

/// FENCED_LEADER_EPOCH: the leader is newer than the picture the fetch quoted; not retriable
/// as is, but after a refresh the next fetch quotes the new epoch.
fn stale_epoch(error: &ClientError) -> bool {
    error.code() == Some(weir_proto::v1::ErrorCode::FencedLeaderEpoch)
}
