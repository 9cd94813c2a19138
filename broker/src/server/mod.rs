//! The network face of the broker: the gRPC service over [`Topics`], its limits, and a
//! graceful shutdown.
//!
//! - [`service`]: the `weir.v1.Weir` service (request checks, wire translation).
//! - [`produce`] and [`fetch`]: the two data paths; [`data_port`]: fetches over sendfile on a
//!   second port.
//! - [`limits`]: in-flight byte budgets per connection and broker-wide.
//! - [`errors`]: the single mapping from internal errors to the wire's reasons.
//!
//! Shutdown order (SIGTERM/SIGINT): stop accepting connections and new requests; let in-flight
//! appends finish and answer (durable ones after their sync); end follow fetches with
//! SHUTTING_DOWN; then close the logs cleanly (sync, checkpoint, clean-shutdown marker). An
//! acknowledged batch is therefore always in the closed log.

pub mod data_port;
pub mod errors;
pub mod fetch;
pub mod limits;
pub mod produce;
pub mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};
use weir_proto::v1::weir_server::WeirServer;

use crate::config::{BrokerConfig, ConfigError};
use crate::producer_ids::ProducerIds;
use crate::topics::{TopicError, Topics};
use limits::InFlightLimits;
use service::WeirService;

/// Concurrent HTTP/2 streams (calls) one connection may have open.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// What every request handler shares.
pub struct BrokerState {
    pub topics: Topics,
    pub producer_ids: ProducerIds,
    pub limits: InFlightLimits,
    /// The data port's address as clients should dial it (advertised in DescribeTopic).
    pub data_address: String,
    /// The largest gRPC message accepted (a topic's max_batch_bytes must fit in it).
    pub max_request_bytes: u64,
    shutdown: watch::Sender<bool>,
}

impl BrokerState {
    /// A receiver that turns true when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

/// Completes once shutdown has begun. (Takes the watch guard and drops it at once: a guard
/// held across an await would make the handler's future not `Send`.)
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

/// Why the broker could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("opening the data dir: {0}")]
    Topics(#[from] TopicError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let bind_error = |source| ServerError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// A broker with its data dir open and its port bound, not yet serving.
pub struct Broker {
    state: Arc<BrokerState>,
    listener: TcpListener,
    local_addr: SocketAddr,
    data_listener: TcpListener,
    data_addr: SocketAddr,
    config: BrokerConfig,
}

impl Broker {
    /// Opens the data dir (recovering it if needed) and binds the gRPC address.
    pub async fn start(config: BrokerConfig) -> Result<Broker, ServerError> {
        let log_config = config.log_dir_config()?;
        let data_dir = config.data_dir.clone();
        let (topics, report) =
            tokio::task::spawn_blocking(move || Topics::open(&data_dir, log_config))
                .await
                .map_err(|e| {
                    ServerError::Internal(format!("opening the data dir panicked: {e}"))
                })??;
        info!(
            data_dir = %config.data_dir.display(),
            clean = report.clean,
            partitions = report.partitions,
            truncated = report.truncations.len(),
            took_ms = report.elapsed.as_millis() as u64,
            "opened data dir"
        );
        let producer_ids = ProducerIds::open(&config.data_dir)
            .map_err(|e| ServerError::Topics(TopicError::Storage(e)))?;
        let (listener, local_addr) = bind(config.listen).await?;
        let (data_listener, data_addr) = bind(config.data_listen).await?;
        let data_address = config
            .data_advertised
            .clone()
            .unwrap_or_else(|| data_addr.to_string());
        let (shutdown, _) = watch::channel(false);
        let state = Arc::new(BrokerState {
            topics,
            producer_ids,
            limits: InFlightLimits::new(
                config.max_in_flight_bytes_per_connection,
                config.max_in_flight_bytes,
            ),
            data_address,
            max_request_bytes: config.max_request_bytes,
            shutdown,
        });
        Ok(Broker {
            state,
            listener,
            local_addr,
            data_listener,
            data_addr,
            config,
        })
    }

    /// The bound gRPC address (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound data-port address.
    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    /// Serves until `stop` completes, then shuts down gracefully (see the module docs).
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), ServerError> {
        let service = WeirServer::new(WeirService {
            state: Arc::clone(&self.state),
        })
        .max_decoding_message_size(self.config.max_request_bytes as usize)
        // A fetch response holds up to MAX_FETCH_BYTES, or one batch larger than that (at most
        // a topic's max_batch_bytes, which fits in max_request_bytes).
        .max_encoding_message_size(
            (u64::from(fetch::MAX_FETCH_BYTES).max(self.config.max_request_bytes) + (1 << 20))
                as usize,
        );
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let data_port = tokio::spawn(data_port::serve(
            self.data_listener,
            Arc::clone(&self.state),
        ));
        let (stop_serving, serving_stopped) = oneshot::channel::<()>();
        // Windows and frames sized for bulk batches: tonic's defaults cost ~40% throughput here.
        let serve = tonic::transport::Server::builder()
            .initial_stream_window_size(16 << 20)
            .initial_connection_window_size(32 << 20)
            .max_frame_size(1 << 20)
            // Each stream may hold one encoded fetch response (up to 16 MiB) that its client
            // has not read yet: bound the streams per connection.
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = serving_stopped.await;
            });
        tokio::pin!(serve);
        let result = tokio::select! {
            result = &mut serve => result,
            () = stop => {
                info!("shutting down: no new requests; finishing in-flight ones");
                self.state.begin_shutdown();
                let _ = stop_serving.send(());
                match tokio::time::timeout(self.config.shutdown_timeout(), &mut serve).await {
                    Ok(result) => result,
                    Err(_) => {
                        warn!(timeout_ms = self.config.shutdown_timeout_ms, "in-flight requests did not finish in time; closing anyway");
                        Ok(())
                    }
                }
            }
        };
        self.state.begin_shutdown();
        // Data-port connections end on the shutdown signal; bounded like the gRPC side.
        if tokio::time::timeout(self.config.shutdown_timeout(), data_port)
            .await
            .is_err()
        {
            warn!("data-port connections did not end in time; closing anyway");
        }
        let state = Arc::clone(&self.state);
        match tokio::task::spawn_blocking(move || state.topics.close()).await {
            Ok(Ok(())) => info!("closed the logs cleanly"),
            Ok(Err(e)) => {
                warn!(error = %e, "closing the logs failed; the next start recovers them");
                return Err(e.into());
            }
            Err(e) => {
                warn!(error = %e, "closing the logs panicked; the next start recovers them");
                return Err(ServerError::Internal(format!(
                    "closing the logs panicked: {e}"
                )));
            }
        }
        Ok(result?)
    }
}
