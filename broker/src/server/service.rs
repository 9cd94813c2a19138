//! The `weir.v1.Weir` gRPC service: request checking and translation between the wire messages
//! and [`Topics`](crate::topics::Topics). The produce and fetch paths live in their own files.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Request, Response, Status, Streaming};
use weir_proto::v1::weir_server::Weir;
use weir_proto::v1::{
    CreateTopicRequest, DeleteTopicRequest, DeleteTopicResponse, DescribeTopicRequest,
    FetchRequest, FetchResponse, InitProducerRequest, InitProducerResponse, ListOffsetsRequest,
    ListOffsetsResponse, ListTopicsRequest, ListTopicsResponse, OffsetSpec, PartitionDescription,
    PartitionOffset, ProduceRequest, ProduceResponse, TopicConfig, TopicDescription, flush_policy,
};

use super::BrokerState;
use super::errors::{internal, invalid_request, shutting_down, to_status};
use super::{fetch, produce};
use crate::topics::{FlushKind, NewTopic, PartitionerKind, Topic, TopicSettings};

/// Responses a stream can have queued before the handler waits for the client to read.
const STREAM_QUEUE: usize = 4;

/// The service handle tonic clones per connection.
#[derive(Clone)]
pub struct WeirService {
    pub(super) state: Arc<BrokerState>,
}

fn peer<T>(request: &Request<T>) -> Option<std::net::SocketAddr> {
    request
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Weir for WeirService {
    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let peer = peer(&request);
        produce::produce(&self.state, peer, request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn init_producer(
        &self,
        _request: Request<InitProducerRequest>,
    ) -> Result<Response<InitProducerResponse>, Status> {
        let state = Arc::clone(&self.state);
        let producer_id = tokio::task::spawn_blocking(move || state.producer_ids.allocate())
            .await
            .map_err(|e| to_status(internal(format!("producer id task failed: {e}"))))??;
        Ok(Response::new(InitProducerResponse {
            producer_id,
            producer_epoch: 0,
        }))
    }

    type ProduceStreamStream = BoxStream<ProduceResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let peer = peer(&request);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let state = Arc::clone(&self.state);
        tokio::spawn(produce::produce_stream(
            state,
            peer,
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type FetchStream = BoxStream<FetchResponse>;

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let req = request.into_inner();
        if self.state.is_shutting_down() {
            return Err(to_status(shutting_down()));
        }
        let partition = self.state.topics.partition(&req.topic, req.partition)?;
        fetch::check_start(&partition.log, req.offset)?;
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(fetch::grpc_fetch(
            Arc::clone(&self.state),
            partition,
            req,
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let req = request.into_inner();
        let spec = OffsetSpec::try_from(req.spec)
            .map_err(|_| to_status(invalid_request(format!("unknown offset spec {}", req.spec))))?;
        let topic = self.state.topics.get(&req.topic)?;
        let wanted: Vec<u32> = if req.partitions.is_empty() {
            (0..topic.meta.partitions).collect()
        } else {
            req.partitions
        };
        let mut logs = Vec::with_capacity(wanted.len());
        for p in wanted {
            logs.push((p, Arc::clone(&topic.partition(p)?.log)));
        }
        // Off the runtime threads: a time lookup takes partition locks and may open segments.
        let offsets = tokio::task::spawn_blocking(move || {
            logs.into_iter()
                .map(|(partition, log)| {
                    let offset = match spec {
                        OffsetSpec::Earliest => log.log_start_offset(),
                        OffsetSpec::Latest => log.high_watermark(),
                        OffsetSpec::Timestamp => log
                            .offset_for_time(req.timestamp_ms)?
                            .unwrap_or_else(|| log.high_watermark()),
                    };
                    Ok(PartitionOffset { partition, offset })
                })
                .collect::<Result<Vec<_>, crate::storage::StorageError>>()
        })
        .await
        .map_err(|e| to_status(internal(format!("offset lookup failed: {e}"))))??;
        Ok(Response::new(ListOffsetsResponse { offsets }))
    }

    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<TopicDescription>, Status> {
        let req = request.into_inner();
        let partitioner = match weir_proto::v1::Partitioner::try_from(req.partitioner) {
            Ok(weir_proto::v1::Partitioner::Hash) => PartitionerKind::Hash,
            Ok(weir_proto::v1::Partitioner::Range) => PartitionerKind::Range,
            Ok(weir_proto::v1::Partitioner::RoundRobin) => PartitionerKind::RoundRobin,
            Err(_) => {
                return Err(to_status(invalid_request(format!(
                    "unknown partitioner {}",
                    req.partitioner
                ))));
            }
        };
        let settings = settings_from_wire(
            self.state.topics.default_settings(),
            req.config.unwrap_or_default(),
        )
        .map_err(|e| to_status(invalid_request(e)))?;
        // A batch the topic accepts must fit in one gRPC request, or producers could never send it.
        if u64::from(settings.max_batch_bytes) + 4096 > self.state.max_request_bytes {
            return Err(to_status(invalid_request(format!(
                "max_batch_bytes {} does not fit in this broker's max_request_bytes {} (with 4 KiB to spare)",
                settings.max_batch_bytes, self.state.max_request_bytes
            ))));
        }
        let new = NewTopic {
            name: req.name,
            partitions: req.partitions,
            partitioner,
            split_keys: req.split_keys.into_iter().map(|k| k.to_vec()).collect(),
            settings,
        };
        let topics = Arc::clone(&self.state);
        // Creating partitions touches the disk (directories, fsyncs): off the runtime threads.
        let topic = tokio::task::spawn_blocking(move || topics.topics.create(new))
            .await
            .map_err(|e| to_status(internal(format!("create task failed: {e}"))))??;
        Ok(Response::new(describe(
            &topic,
            true,
            &self.state.data_address,
        )))
    }

    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        let name = request.into_inner().name;
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || state.topics.delete(&name))
            .await
            .map_err(|e| to_status(internal(format!("delete task failed: {e}"))))??;
        Ok(Response::new(DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        _request: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        let topics = self
            .state
            .topics
            .list()
            .iter()
            .map(|t| describe(t, false, &self.state.data_address))
            .collect();
        Ok(Response::new(ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<DescribeTopicRequest>,
    ) -> Result<Response<TopicDescription>, Status> {
        let topic = self.state.topics.get(&request.into_inner().name)?;
        Ok(Response::new(describe(
            &topic,
            true,
            &self.state.data_address,
        )))
    }
}

/// A topic as the wire describes it; `with_partitions` adds per-partition offsets and sizes.
fn describe(topic: &Topic, with_partitions: bool, data_address: &str) -> TopicDescription {
    let meta = &topic.meta;
    let partitions = if with_partitions {
        topic
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| PartitionDescription {
                partition: i as u32,
                log_start_offset: p.log.log_start_offset(),
                high_watermark: p.log.high_watermark(),
                size_bytes: p.log.size_bytes(),
                data_address: data_address.to_owned(),
            })
            .collect()
    } else {
        Vec::new()
    };
    TopicDescription {
        name: meta.name.clone(),
        partition_count: meta.partitions,
        partitioner: match meta.partitioner {
            PartitionerKind::Hash => weir_proto::v1::Partitioner::Hash,
            PartitionerKind::Range => weir_proto::v1::Partitioner::Range,
            PartitionerKind::RoundRobin => weir_proto::v1::Partitioner::RoundRobin,
        } as i32,
        split_keys: meta.split_keys.iter().cloned().map(Bytes::from).collect(),
        config: Some(settings_to_wire(&meta.settings)),
        partitions,
        created_ms: meta.created_ms,
    }
}

fn settings_to_wire(s: &TopicSettings) -> TopicConfig {
    let kind = match s.flush {
        FlushKind::Interval => flush_policy::Kind::FlushInterval,
        FlushKind::Never => flush_policy::Kind::FlushNever,
        FlushKind::Always => flush_policy::Kind::FlushAlways,
    };
    TopicConfig {
        retention_bytes: s.retention_bytes,
        retention_ms: s.retention_ms,
        segment_bytes: Some(s.segment_bytes),
        flush: Some(weir_proto::v1::FlushPolicy {
            kind: kind as i32,
            interval_ms: s.flush_interval_ms,
        }),
        max_batch_bytes: Some(s.max_batch_bytes),
        key_index: Some(s.key_index),
    }
}

/// The broker's defaults with the request's choices laid over them.
fn settings_from_wire(defaults: TopicSettings, c: TopicConfig) -> Result<TopicSettings, String> {
    let mut s = defaults;
    if c.retention_bytes.is_some() {
        s.retention_bytes = c.retention_bytes;
    }
    if c.retention_ms.is_some() {
        s.retention_ms = c.retention_ms;
    }
    if let Some(n) = c.segment_bytes {
        s.segment_bytes = n;
    }
    if let Some(n) = c.max_batch_bytes {
        s.max_batch_bytes = n;
    }
    if let Some(on) = c.key_index {
        s.key_index = on;
    }
    if let Some(flush) = c.flush {
        s.flush = match flush_policy::Kind::try_from(flush.kind) {
            Ok(flush_policy::Kind::FlushInterval) => FlushKind::Interval,
            Ok(flush_policy::Kind::FlushNever) => FlushKind::Never,
            Ok(flush_policy::Kind::FlushAlways) => FlushKind::Always,
            Err(_) => return Err(format!("unknown flush policy {}", flush.kind)),
        };
        if s.flush == FlushKind::Interval {
            s.flush_interval_ms = match flush.interval_ms {
                0 => Duration::from_secs(1).as_millis() as u64,
                ms => ms,
            };
        }
    }
    Ok(s)
}
