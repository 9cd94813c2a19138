//! The network face of the broker: the gRPC service over [`Topics`], its limits, and a
//! graceful shutdown.
//!
//! - [`service`]: the `weir.v1.Weir` service (request checks, wire translation).
//! - [`produce`] and [`fetch`]: the two data paths; [`data_port`]: fetches over sendfile on a
//!   second port.
//! - [`limits`]: in-flight byte budgets per connection and broker-wide; [`request_limit`]:
//!   the size limit of one request message, refused with a weir reason; [`rpc_timing`]: the
//!   latency of every unary call.
//! - [`cluster`]: this node's copy of the controller's metadata; [`listener`]: which
//!   addresses a client on each listener is told about.
//! - [`health`] and [`reflection`]: the standard gRPC health checking protocol and server
//!   reflection, served beside `weir.v1.Weir` on every gRPC listener.
//! - [`scrape`]: the metrics listener (`--metrics-listen`): Prometheus metrics, `/healthz`,
//!   `/readyz`.
//!
//! Internal errors (storage, topics) reach the wire only through [`crate::wire::errors`], the
//! one mapping from them to the wire's reasons; handlers add only refusals that need what the
//! request was about (NOT_LEADER naming the owner, a partition closed under a request).
//!
//! Shutdown order (SIGTERM/SIGINT): a broker that leads replicated partitions first hands those
//! leaderships to in-sync followers ([`controlled_shutdown`]), still serving everything; then
//! stop accepting connections and new requests; let in-flight
//! appends finish and answer (durable ones after their sync); end follow fetches with
//! SHUTTING_DOWN; then close the logs cleanly (sync, checkpoint, clean-shutdown marker). An
//! acknowledged batch is therefore always in the closed log.

pub mod cluster;
pub mod controlled_shutdown;
pub mod controller_service;
pub mod counted;
pub mod data_port;
pub mod data_port_produce;
pub mod fetch;
pub mod health;
pub mod limits;
pub mod listener;
pub mod produce;
pub mod reflection;
pub mod request_limit;
pub mod rpc_timing;
pub mod scrape;
pub mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::Connected;
use tonic::transport::server::TcpIncoming;
use tracing::{debug, info, warn};
use weir_proto::v1::weir_server::WeirServer;

use crate::config::{BrokerConfig, ConfigError, Role};
use crate::controller::link::{ControllerLink, RemoteController};
use crate::controller::{Controller, ControllerConfig};
use crate::metrics::Metrics;
use crate::metrics::Recovery;
use crate::producer_ids::ProducerIds;
use crate::replica::{ReplicaConfig, ReplicaManager};
use crate::security::tls::{ClientTls, MaybeTls, ServerTls, TlsError, TlsListener};
use crate::topics::{Partition, TopicError, Topics};
use cluster::{BrokerAddresses, ClusterView, SyncRole};
use controller_service::ControllerService;
use counted::Counted;
use futures::StreamExt;
use health::NodeHealth;
use limits::InFlightLimits;
use listener::Listener;
use request_limit::RequestLimit;
use rpc_timing::RpcTiming;
use service::WeirService;
use weir_proto::v1::Error;
use weir_proto::v1::controller_server::ControllerServer;

/// How often the controller expires broker leases and silent group members.
const CONTROLLER_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// Concurrent HTTP/2 streams (calls) one connection may have open.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// TLS handshakes one gRPC listener runs at once (each bounded by the handshake timeout); past
/// it, accepting waits for one to end.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// What every request handler shares.
pub struct BrokerState {
    pub topics: Arc<Topics>,
    /// This node's copy of the cluster metadata.
    pub cluster: Arc<ClusterView>,
    /// Where metadata changes and group calls go.
    pub controller: ControllerLink,
    pub producer_ids: ProducerIds,
    pub limits: InFlightLimits,
    /// The data port's address as clients should dial it (advertised in DescribeTopic).
    pub data_address: String,
    /// The largest gRPC message accepted (a topic's max_batch_bytes must fit in it).
    pub max_request_bytes: u64,
    /// What the gRPC health service reports.
    pub health: NodeHealth,
    /// The replicated partitions held here and this broker's role for each.
    pub replicas: Arc<ReplicaManager>,
    /// The handles the data paths update (see [`crate::metrics`]).
    pub metrics: Metrics,
    /// What this start's open of the data dir found.
    pub recovery: Recovery,
    /// Authentication and authorization (see [`crate::security::guard`]).
    pub security: Arc<crate::security::guard::Guard>,
    shutdown: watch::Sender<bool>,
}

impl BrokerState {
    /// A receiver that turns true when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// A partition held here, whatever this broker's role for it (a follower's replica fetch
    /// reaches its leader through this), or the error that says where it is (NOT_LEADER
    /// naming its owner) or that it does not exist.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, Error> {
        self.topics
            .partition(topic, partition)
            .map_err(|e| self.cluster.not_here(topic, partition, e))
    }

    /// A partition this broker serves clients from: held here and led here, with its replica
    /// when it is replicated. A follower's copy answers NOT_LEADER naming the leader
    /// (PARTITION_UNAVAILABLE while there is none), and so does a partition this broker is still
    /// taking the lead of. The replica's role is the one authority (it follows the controller's
    /// picture); an unreplicated partition is served wherever it is held.
    pub fn leader_partition(&self, topic: &str, partition: u32) -> Result<Led, Error> {
        let not_here = |e| self.cluster.not_here(topic, partition, e);
        let held_topic = self.topics.get(topic).map_err(not_here)?;
        let held = Arc::clone(held_topic.partition(partition).map_err(not_here)?);
        let replica = self.replicas.get(topic, partition);
        let served = match &replica {
            Some(replica) => replica.leading().is_some(),
            // Without a role: a single copy is served (its high watermark is its log end). A
            // copy that may be one of several replicas without its role yet (just started,
            // before the controller's picture; or just created as a new replica) is not: it may
            // hold a suffix no other replica has, or another replica may lead it (see
            // `Topics::open`).
            None => !held.is_replicated(),
        };
        if !served {
            return Err(not_here(TopicError::NotLocal {
                topic: topic.to_owned(),
                partition,
            }));
        }
        Ok(Led {
            partition: held,
            replica,
        })
    }

    /// A partition consumers may read now: [`Self::leader_partition`], and on a replicated
    /// partition a leader of the epoch the consumer quotes (`consumer_epoch`, KIP-320; `None`:
    /// no check) whose high watermark is final ([`crate::replica::leader::check_reads`]).
    pub fn readable_partition(
        &self,
        topic: &str,
        partition: u32,
        consumer_epoch: Option<u32>,
    ) -> Result<Arc<Partition>, Error> {
        let led = self.leader_partition(topic, partition)?;
        if let Some(replica) = &led.replica {
            crate::replica::leader::check_reads(replica, consumer_epoch)?;
        }
        Ok(led.partition)
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn begin_shutdown(&self) {
        self.health.set_stopping();
        self.shutdown.send_replace(true);
    }
}

/// A partition led here ([`BrokerState::leader_partition`]).
pub struct Led {
    pub partition: Arc<Partition>,
    /// Its replica, when it is replicated.
    pub replica: Option<Arc<crate::replica::Replica>>,
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
    #[error("cannot listen on {addr} ({listener}): {source}")]
    Bind {
        addr: SocketAddr,
        /// Which listener: the flag that set the address.
        listener: &'static str,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("server reflection cannot read the compiled-in descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("opening the controller's metadata: {0}")]
    Controller(weir_storage::StorageError),
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

async fn bind(
    addr: SocketAddr,
    listener: &'static str,
) -> Result<(TcpListener, SocketAddr), ServerError> {
    let bind_error = |source| ServerError::Bind {
        addr,
        listener,
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// The bootstrap credential (`security.bootstrap_user`, `security.bootstrap_token`; see
/// [`crate::security::config`]).
async fn bootstrap(
    controller: &Arc<Controller>,
    security: &crate::security::config::SecurityConfig,
) -> Result<(), ServerError> {
    let refused = |e: Error| ServerError::Internal(e.message);
    if let Some(token) = &security.bootstrap_token
        && !token.is_empty()
        && controller.bootstrap_token(token).await.map_err(refused)?
    {
        info!("bootstrap user created from the bootstrap token");
    }
    if let Some(name) = &security.bootstrap_user
        && !name.is_empty()
        && let Some(token) = controller.bootstrap_user(name).await.map_err(refused)?
    {
        info!(user = %name, "bootstrap user created; its token is printed once on stderr");
        eprintln!("weir: bootstrap user {name:?} created; its token (shown only now): {token}");
    }
    Ok(())
}

/// A broker with its data dir open and its port bound, not yet serving.
pub struct Broker {
    state: Arc<BrokerState>,
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The second gRPC listener, for clients outside the node's network (see [`listener`]).
    external_listener: Option<(TcpListener, SocketAddr)>,
    data_listener: TcpListener,
    data_addr: SocketAddr,
    /// The metrics listener, unless turned off.
    metrics_listener: Option<(TcpListener, SocketAddr)>,
    config: BrokerConfig,
    local_controller: Option<Arc<Controller>>,
    sync: tokio::task::JoinHandle<()>,
    /// The listeners' TLS, when `tls.cert_file` is set.
    tls: Option<Arc<ServerTls>>,
}

impl Broker {
    /// A gRPC server on `listener` answering as `kind`, serving until shutdown begins: the
    /// weir service, the controller's where given, health checking and reflection.
    fn grpc_server(
        state: &Arc<BrokerState>,
        config: &BrokerConfig,
        listener: TcpListener,
        kind: Listener,
        controller_service: Option<ControllerServer<ControllerService>>,
        tls: Option<Arc<ServerTls>>,
    ) -> Result<impl Future<Output = Result<(), tonic::transport::Error>> + use<>, ServerError>
    {
        let reflection = reflection::builder(controller_service.is_some());
        let reflection_v1 = reflection.build_v1()?;
        let reflection = reflection::builder(controller_service.is_some());
        let reflection_v1alpha = reflection.build_v1alpha()?;
        let service = WeirServer::new(WeirService {
            state: Arc::clone(state),
            listener: kind,
        })
        // The backstop only: RequestLimit (below) refuses an oversized message first, with
        // BATCH_TOO_LARGE instead of tonic's OUT_OF_RANGE.
        .max_decoding_message_size(config.max_request_bytes as usize)
        // A fetch response holds up to MAX_FETCH_BYTES, or one batch larger than that (at most
        // a topic's max_batch_bytes, which fits in max_request_bytes).
        .max_encoding_message_size(
            (u64::from(fetch::MAX_FETCH_BYTES).max(config.max_request_bytes) + (1 << 20)) as usize,
        );
        let service = RequestLimit::new(service, config.max_request_bytes);
        let service = RpcTiming::new(service, &state.metrics);
        let connections = state.metrics.grpc_connections.clone();
        let accepted = TcpIncoming::from(listener).with_nodelay(Some(true));
        type Incoming = std::pin::Pin<
            Box<dyn futures::Stream<Item = std::io::Result<MaybeTls<Counted>>> + Send>,
        >;
        let incoming: Incoming = match tls {
            None => Box::pin(accepted.map(move |accepted| {
                accepted.map(|stream| MaybeTls::Plain(Counted::new(stream, &connections)))
            })),
            // Each handshake on its own task (bounded by the handshake timeout), so a slow or
            // stalled one never holds the accept loop; a failed one is dropped.
            Some(tls) => Box::pin(
                accepted
                    .map(move |accepted| {
                        let (tls, connections) = (Arc::clone(&tls), connections.clone());
                        tokio::spawn(async move {
                            let stream = Counted::new(accepted?, &connections);
                            let peer = stream.connect_info().remote_addr;
                            match tls.accept(stream).await {
                                Ok(stream) => Ok(Some(stream)),
                                Err(e) => {
                                    debug!(?peer, error = %e, "gRPC: TLS handshake failed");
                                    Ok(None)
                                }
                            }
                        })
                    })
                    .buffer_unordered(MAX_PENDING_HANDSHAKES)
                    .filter_map(|joined| async move {
                        match joined {
                            Ok(Ok(Some(stream))) => Some(Ok(stream)),
                            Ok(Ok(None)) | Err(_) => None,
                            Ok(Err(e)) => Some(Err(e)),
                        }
                    }),
            ),
        };
        let mut shutdown = state.shutdown_signal();
        // Windows and frames sized for bulk batches: tonic's defaults cost ~40% throughput here.
        Ok(tonic::transport::Server::builder()
            .initial_stream_window_size(16 << 20)
            .initial_connection_window_size(32 << 20)
            .max_frame_size(1 << 20)
            // Each stream may hold one encoded fetch response (up to 16 MiB) that its client
            // has not read yet: bound the streams per connection.
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .add_service(service)
            .add_optional_service(controller_service)
            .add_service(state.health.service())
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, async move {
                stopped(&mut shutdown).await;
            }))
    }

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
        let tls = match &config.tls.cert_file {
            Some(_) => Some(ServerTls::new(&config.tls)?),
            None => None,
        };
        // The links to other nodes (controller, leaders' data ports): TLS with tls.ca_file.
        let link_tls = crate::security::tls::load_client_config(&config.tls)?
            .map(|config| ClientTls { config });
        let producer_ids = ProducerIds::open(&config.data_dir, config.node_id)
            .map_err(|e| ServerError::Topics(TopicError::Storage(e)))?;
        let (listener, local_addr) = bind(config.listen, "--listen").await?;
        let (data_listener, data_addr) = bind(config.data_listen, "--data-listen").await?;
        let external_listener = match config.external_listen {
            Some(addr) => Some(bind(addr, "--external-listen").await?),
            None => None,
        };
        let metrics_listener = match config.metrics_addr()? {
            Some(addr) => Some(bind(addr, "--metrics-listen").await?),
            None => None,
        };
        let data_address = config
            .data_advertised
            .clone()
            .unwrap_or_else(|| data_addr.to_string());
        let addresses = BrokerAddresses {
            address: config
                .advertised
                .clone()
                .unwrap_or_else(|| local_addr.to_string()),
            data_address: data_address.clone(),
            external_address: match (&config.external_advertised, &external_listener) {
                (Some(advertised), _) => advertised.clone(),
                (None, Some((_, bound))) => bound.to_string(),
                (None, None) => String::new(),
            },
            // Without its own advertised address, the external data port is the internal one:
            // the data port never hands out addresses, so one listener serves both.
            external_data_address: config.external_data_advertised.clone().unwrap_or_default(),
        };
        let local_controller = match config.role {
            Role::Combined | Role::Controller => {
                let dir = config.data_dir.join(crate::layout::CONTROLLER_DIR);
                let controller_config = ControllerConfig {
                    broker_lease: std::time::Duration::from_millis(config.broker_lease_ms),
                    topic_defaults: config.log_dir_config()?.default_log,
                    max_request_bytes: config.max_request_bytes,
                    leader_rebalance_interval: config.leader_rebalance_interval(),
                };
                let controller =
                    tokio::task::spawn_blocking(move || Controller::open(&dir, controller_config))
                        .await
                        .map_err(|e| {
                            ServerError::Internal(format!("opening the controller panicked: {e}"))
                        })?
                        .map_err(ServerError::Controller)?;
                bootstrap(&controller, &config.security).await?;
                Some(controller)
            }
            Role::Broker => None,
        };
        let link = match (&local_controller, &config.controller) {
            (Some(c), _) => ControllerLink::Local(Arc::clone(c)),
            (None, Some(addr)) => ControllerLink::Remote(Box::new(
                RemoteController::new(addr, config.security.broker_token.clone(), link_tls.clone())
                    .map_err(ConfigError::Invalid)?,
            )),
            (None, None) => {
                return Err(ConfigError::Invalid("a broker needs --controller".into()).into());
            }
        };
        let topics = Arc::new(topics);
        let cluster = Arc::new(ClusterView::new(config.node_id));
        let metrics = Metrics::new(metrics_listener.is_some());
        let replicas = ReplicaManager::new(
            config.node_id,
            ReplicaConfig {
                lag_time_max: std::time::Duration::from_millis(config.replica_lag_time_max_ms),
                token: config.security.broker_token.clone(),
                tls: link_tls,
                ..ReplicaConfig::default()
            },
            link.clone(),
            metrics.replication.clone(),
        );
        let (shutdown, _) = watch::channel(false);
        let role = match config.role {
            Role::Controller => SyncRole::Observer,
            Role::Combined | Role::Broker => SyncRole::Broker {
                addresses,
                topics: Arc::clone(&topics),
                replicas: Arc::clone(&replicas),
                // A start that recovered unclosed logs may have lost their unsynced tails: the
                // controller keeps it out of the ISRs until it caught up (rule 7).
                clean_start: report.clean,
            },
        };
        let sync = tokio::spawn(cluster::run_sync(
            Arc::clone(&cluster),
            link.clone(),
            role,
            shutdown.subscribe(),
        ));
        let state = Arc::new(BrokerState {
            topics,
            cluster,
            controller: link,
            producer_ids,
            limits: InFlightLimits::new(
                config.max_in_flight_bytes_per_connection,
                config.max_in_flight_bytes,
            ),
            data_address,
            max_request_bytes: config.max_request_bytes,
            health: NodeHealth::default(),
            replicas,
            metrics,
            recovery: Recovery {
                clean: report.clean,
                seconds: report.elapsed.as_secs_f64(),
                truncated_bytes: report.truncations.iter().map(|t| t.cut_bytes).sum(),
                truncated_partitions: report.truncations.len() as u64,
            },
            security: Arc::new(crate::security::guard::Guard::new(config.security.clone())),
            shutdown,
        });
        Ok(Broker {
            state,
            listener,
            local_addr,
            external_listener,
            data_listener,
            data_addr,
            metrics_listener,
            config,
            local_controller,
            sync,
            tls,
        })
    }

    /// Waits until this node has the cluster metadata (a broker: it is registered), up to
    /// `timeout`; false if it is still waiting (a controller that is not up yet).
    pub async fn wait_for_metadata(&self, timeout: std::time::Duration) -> bool {
        self.state.cluster.wait_for_first(timeout).await
    }

    /// The bound gRPC address (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound external gRPC address, if the node has an external listener.
    pub fn external_addr(&self) -> Option<SocketAddr> {
        self.external_listener.as_ref().map(|(_, addr)| *addr)
    }

    /// The bound data-port address.
    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    /// The bound metrics-listener address, unless it is off.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, addr)| *addr)
    }

    /// The TLS of `listener`, if it uses TLS.
    fn tls_for(&self, listener: TlsListener) -> Option<Arc<ServerTls>> {
        self.tls
            .as_ref()
            .filter(|_| self.config.tls.applies_to(listener))
            .cloned()
    }

    /// Serves until `stop` completes, then shuts down gracefully (see the module docs).
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), ServerError> {
        let controller_service = self.local_controller.as_ref().map(|c| {
            ControllerServer::new(ControllerService {
                controller: Arc::clone(c),
                state: Arc::clone(&self.state),
            })
        });
        let (grpc_tls, external_tls, data_tls, metrics_tls) = (
            self.tls_for(TlsListener::Grpc),
            self.tls_for(TlsListener::External),
            self.tls_for(TlsListener::Data),
            self.tls_for(TlsListener::Metrics),
        );
        // Built first: nothing is running yet if one cannot be.
        let internal = Broker::grpc_server(
            &self.state,
            &self.config,
            self.listener,
            Listener::Internal,
            controller_service,
            grpc_tls,
        )?;
        // Brokers reach the controller on the internal listener only.
        let external = self
            .external_listener
            .map(|(listener, _)| {
                Broker::grpc_server(
                    &self.state,
                    &self.config,
                    listener,
                    Listener::External,
                    None,
                    external_tls.clone(),
                )
            })
            .transpose()?;
        let ticker = self.local_controller.as_ref().map(|c| {
            let controller = Arc::clone(c);
            let mut stop = self.state.shutdown_signal();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(CONTROLLER_TICK);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = interval.tick() => controller.tick().await,
                        () = stopped(&mut stop) => return,
                    }
                }
            })
        });
        let isr_checks = tokio::spawn(crate::replica::leader::maintain(
            Arc::clone(&self.state.replicas),
            self.state.shutdown_signal(),
        ));
        if data_tls.is_some() {
            if crate::security::tls::ktls_available() {
                info!(
                    "data port over TLS: kTLS is available but not used; encrypting in user space"
                );
            } else {
                info!("data port over TLS: kTLS unavailable, encrypting in user space");
            }
        }
        if let Some(tls) = &self.tls {
            tls.spawn_reloader(self.state.shutdown_signal());
        }
        let data_port = tokio::spawn(data_port::serve(
            self.data_listener,
            Arc::clone(&self.state),
            data_tls,
        ));
        // Answers until the logs are closed (see `scrape`): stopped last, below.
        let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics = match self.metrics_listener {
            None => None,
            Some((listener, local)) => {
                let state = Arc::clone(&self.state);
                let is_controller = self.local_controller.is_some();
                let stopped = async move {
                    let _ = metrics_stopped.await;
                };
                Some(match metrics_tls {
                    None => tokio::spawn(scrape::serve(listener, state, is_controller, stopped)),
                    Some(tls) => {
                        let listener =
                            crate::security::tls::TlsTcpListener::new(listener, local, tls);
                        tokio::spawn(scrape::serve(listener, state, is_controller, stopped))
                    }
                })
            }
        };
        // Both servers are built; they read their listeners from the first poll below.
        self.state.health.set_serving();
        // Either server ending (shutdown, or an error) ends the other: shutdown begins and it
        // drains its in-flight requests; the first error is the one reported.
        let state = Arc::clone(&self.state);
        let serve = async move {
            let Some(external) = external else {
                return internal.await;
            };
            tokio::pin!(internal, external);
            tokio::select! {
                first = &mut internal => {
                    state.begin_shutdown();
                    first.and(external.await)
                }
                first = &mut external => {
                    state.begin_shutdown();
                    first.and(internal.await)
                }
            }
        };
        tokio::pin!(serve);
        let hands_over = self.config.role != Role::Controller;
        let handover_timeout = self.config.controlled_shutdown_timeout();
        let result = tokio::select! {
            result = &mut serve => result,
            () = stop => {
                // Still serving (the servers are polled meanwhile): followers keep fetching
                // from here until they lead, in-flight produces finish.
                let handover = async {
                    if hands_over {
                        controlled_shutdown::hand_over(&self.state, handover_timeout).await;
                    }
                };
                let ended = tokio::select! {
                    result = &mut serve => Some(result),
                    () = handover => None,
                };
                match ended {
                    // A server ended during the handover (it failed): nothing left to drain.
                    Some(result) => result,
                    None => {
                        info!("shutting down: no new requests; finishing in-flight ones");
                        // Both gRPC servers stop accepting on this signal and drain.
                        self.state.begin_shutdown();
                        match tokio::time::timeout(self.config.shutdown_timeout(), &mut serve).await {
                            Ok(result) => result,
                            Err(_) => {
                                warn!(timeout_ms = self.config.shutdown_timeout_ms, "in-flight requests did not finish in time; closing anyway");
                                Ok(())
                            }
                        }
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
        let _ = self.sync.await;
        let _ = isr_checks.await;
        self.state.replicas.stop();
        if let Some(ticker) = ticker {
            let _ = ticker.await;
        }
        if let Some(controller) = self.local_controller.clone() {
            match tokio::task::spawn_blocking(move || controller.close()).await {
                Ok(Ok(())) => info!("closed the controller's metadata cleanly"),
                Ok(Err(e)) => {
                    warn!(error = %e, "closing the controller's metadata failed; the next start replays its log")
                }
                Err(e) => warn!(error = %e, "closing the controller panicked"),
            }
        }
        let state = Arc::clone(&self.state);
        let closed = tokio::task::spawn_blocking(move || state.topics.close()).await;
        let _ = stop_metrics.send(());
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        match closed {
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
