//! `weir-broker`: starts a broker. With no arguments, a single-node broker on 127.0.0.1:7070
//! with its data in `./weir-data`.
//!
//! Configuration precedence: flags > `WEIR_*` environment variables > `--config` TOML file >
//! built-in defaults. On start it prints one line to stdout, `weir-broker ready grpc=ADDR ...`,
//! which scripts and tests wait for; logs go to stderr (`RUST_LOG`, default `info`).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use weir_broker::security::authn::Authentication;

use anyhow::Context;
use clap::Parser;
use tracing::{error, info, warn};

/// How long a starting node waits for the cluster metadata before it reports ready anyway.
const METADATA_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
use weir_broker::config::{BrokerConfig, Role};
use weir_broker::server::Broker;
use weir_broker::topics::FlushKind;

mod verify;

/// A Kafka-style append-only log broker.
#[derive(Debug, Parser)]
#[command(name = "weir-broker", version, about)]
struct Args {
    /// TOML config file (keys as the flags below, with '_' for '-').
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    /// What this node runs: combined (a broker with its own controller: a single-node
    /// cluster), controller, or broker (of the cluster whose controller is --controller)
    /// [default: combined].
    #[arg(long, env = "WEIR_ROLE")]
    role: Option<Role>,
    /// This node's id, unique in the cluster [default: 0].
    #[arg(long, env = "WEIR_NODE_ID")]
    node_id: Option<u32>,
    /// The controller's gRPC address HOST:PORT (with --role broker).
    #[arg(long, env = "WEIR_CONTROLLER")]
    controller: Option<String>,
    /// The gRPC address as clients and other nodes should dial it [default: the bound address].
    #[arg(long, env = "WEIR_ADVERTISED")]
    advertised: Option<String>,
    /// A second gRPC listen address for clients outside this node's network (a container's
    /// published port); they are told every broker's external addresses [default: none].
    #[arg(long, env = "WEIR_EXTERNAL_LISTEN")]
    external_listen: Option<SocketAddr>,
    /// The external listener's address as outside clients dial it [default: its bound address].
    #[arg(long, env = "WEIR_EXTERNAL_ADVERTISED")]
    external_advertised: Option<String>,
    /// The data port's address as outside clients dial it [default: --data-advertised].
    #[arg(long, env = "WEIR_EXTERNAL_DATA_ADVERTISED")]
    external_data_advertised: Option<String>,
    /// Milliseconds without a heartbeat before the controller marks a broker down
    /// [default: 6000].
    #[arg(long, env = "WEIR_BROKER_LEASE_MS")]
    broker_lease_ms: Option<u64>,
    /// Milliseconds a follower may lag its leader's log end before it leaves the in-sync set
    /// [default: 10000].
    #[arg(long, env = "WEIR_REPLICA_LAG_TIME_MAX_MS")]
    replica_lag_time_max_ms: Option<u64>,
    /// Data directory [default: ./weir-data].
    #[arg(long, env = "WEIR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:7070]; port 0 picks a free port.
    #[arg(long, env = "WEIR_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data-port listen address (fetches over sendfile) [default: 127.0.0.1:7071].
    #[arg(long, env = "WEIR_DATA_LISTEN")]
    data_listen: Option<SocketAddr>,
    /// Metrics listener (Prometheus /metrics, /healthz, /readyz), HOST:PORT or `off`
    /// [default: 127.0.0.1:7072]; port 0 picks a free port.
    #[arg(long, env = "WEIR_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// The data port's address as clients should dial it [default: the bound address].
    #[arg(long, env = "WEIR_DATA_ADVERTISED")]
    data_advertised: Option<String>,
    /// Largest accepted gRPC message, bytes [default: 16 MiB].
    #[arg(long, env = "WEIR_MAX_REQUEST_BYTES")]
    max_request_bytes: Option<u64>,
    /// Produce bytes in memory per connection before reading from it pauses [default: 64 MiB].
    #[arg(long, env = "WEIR_MAX_IN_FLIGHT_BYTES_PER_CONNECTION")]
    max_in_flight_bytes_per_connection: Option<u64>,
    /// Produce bytes in memory broker-wide [default: 512 MiB].
    #[arg(long, env = "WEIR_MAX_IN_FLIGHT_BYTES")]
    max_in_flight_bytes: Option<u64>,
    /// Milliseconds a shutdown waits for in-flight requests [default: 10000].
    #[arg(long, env = "WEIR_SHUTDOWN_TIMEOUT_MS")]
    shutdown_timeout_ms: Option<u64>,
    /// Milliseconds a stopping broker waits for its leaderships of replicated partitions to
    /// move to in-sync followers (controlled shutdown); 0 skips it [default: 10000].
    #[arg(long, env = "WEIR_CONTROLLED_SHUTDOWN_TIMEOUT_MS")]
    controlled_shutdown_timeout_ms: Option<u64>,
    /// How often the controller moves each replicated partition's leadership back to its
    /// preferred (first) replica once that one is in sync, ms; 0 turns it off [default: 30000].
    #[arg(long, env = "WEIR_LEADER_REBALANCE_INTERVAL_MS")]
    leader_rebalance_interval_ms: Option<u64>,
    /// How often retention deletes expired segments, ms [default: 30000].
    #[arg(long, env = "WEIR_RETENTION_CHECK_INTERVAL_MS")]
    retention_check_interval_ms: Option<u64>,
    /// How often recovery points and producer-state snapshots are written, ms [default: 10000].
    #[arg(long, env = "WEIR_CHECKPOINT_INTERVAL_MS")]
    checkpoint_interval_ms: Option<u64>,
    /// Rate of the background scrub that CRC-checks sealed segments, bytes per second; 0 turns
    /// it off [default: 16 MiB/s].
    #[arg(long, env = "WEIR_SCRUB_BYTES_PER_SEC")]
    scrub_bytes_per_sec: Option<u64>,
    /// A new scrub pass starts at most this often, ms [default: 86400000, a day].
    #[arg(long, env = "WEIR_SCRUB_PASS_INTERVAL_MS")]
    scrub_pass_interval_ms: Option<u64>,
    /// Default segment size of new topics, bytes [default: 1 GiB].
    #[arg(long, env = "WEIR_SEGMENT_BYTES")]
    segment_bytes: Option<u64>,
    /// Default retention by age of new topics, ms [default: keep forever].
    #[arg(long, env = "WEIR_RETENTION_MS")]
    retention_ms: Option<u64>,
    /// Default retention by size of new topics, bytes per partition [default: no limit].
    #[arg(long, env = "WEIR_RETENTION_BYTES")]
    retention_bytes: Option<u64>,
    /// Default flush policy of new topics [default: interval].
    #[arg(long, env = "WEIR_FLUSH", value_parser = parse_flush)]
    flush: Option<FlushKind>,
    /// Flush interval of the `interval` policy, ms [default: 1000].
    #[arg(long, env = "WEIR_FLUSH_INTERVAL_MS")]
    flush_interval_ms: Option<u64>,
    /// Default largest batch of new topics, bytes [default: 8 MiB].
    #[arg(long, env = "WEIR_MAX_BATCH_BYTES")]
    max_batch_bytes: Option<u32>,
    /// TLS: the server certificate chain (PEM). Setting it turns TLS on for every listener
    /// (see --tls-listeners).
    #[arg(long, env = "WEIR_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,
    /// TLS: the server's private key (PEM).
    #[arg(long, env = "WEIR_TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,
    /// Mutual TLS: require client certificates issued by these CAs (PEM).
    #[arg(long, env = "WEIR_TLS_CLIENT_CA_FILE")]
    tls_client_ca_file: Option<PathBuf>,
    /// Which field of a verified client certificate is its principal: cn, san-dns, san-uri
    /// [default: cn].
    #[arg(long, env = "WEIR_TLS_PRINCIPAL_FROM")]
    tls_principal_from: Option<weir_broker::security::tls::PrincipalFrom>,
    /// The listeners that use TLS, comma-separated: grpc, external, data [default: all].
    #[arg(long, env = "WEIR_TLS_LISTENERS", value_delimiter = ',')]
    tls_listeners: Option<Vec<weir_broker::security::tls::TlsListener>>,
    /// A TLS handshake not done within this closes the connection, ms [default: 10000].
    #[arg(long, env = "WEIR_TLS_HANDSHAKE_TIMEOUT_MS")]
    tls_handshake_timeout_ms: Option<u64>,
    /// How often the certificate files are checked for changes, ms; 0: only on SIGHUP
    /// [default: 5000].
    #[arg(long, env = "WEIR_TLS_RELOAD_INTERVAL_MS")]
    tls_reload_interval_ms: Option<u64>,
    /// The CAs (PEM) trusted on this node's links to other nodes (controller, leaders' data
    /// ports); setting it makes those links TLS, with --tls-cert-file/--tls-key-file as the
    /// client certificate.
    #[arg(long, env = "WEIR_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// Check every batch (CRC included) of the data directory, read-only, report damage by
    /// partition and offset, and exit: 0 when clean, 1 when damaged. Run it with the broker
    /// stopped.
    #[arg(long)]
    verify: bool,
    /// What every listener requires of clients: none, token, mtls, token-or-mtls [default:
    /// none] (`security.authentication`; per listener in the file).
    #[arg(long, env = "WEIR_AUTHENTICATION")]
    authentication: Option<Authentication>,
    /// What the data port requires, when it differs (`security.data_authentication`).
    #[arg(long, env = "WEIR_DATA_AUTHENTICATION")]
    data_authentication: Option<Authentication>,
    /// What the external listener requires, when it differs
    /// (`security.external_authentication`).
    #[arg(long, env = "WEIR_EXTERNAL_AUTHENTICATION")]
    external_authentication: Option<Authentication>,
    /// Enforce ACLs (deny by default) [default: false] (`security.authorization`).
    #[arg(long, env = "WEIR_AUTHORIZATION")]
    authorization: Option<bool>,
    /// Users allowed everything, comma-separated (`security.super_users`).
    #[arg(long, env = "WEIR_SUPER_USERS", value_delimiter = ',')]
    super_users: Option<Vec<String>>,
    /// The token this node presents to the controller and to leaders it replicates from
    /// (`security.broker_token`; its user must be a super user).
    #[arg(long, env = "WEIR_BROKER_TOKEN", hide_env_values = true)]
    broker_token: Option<String>,
    /// Create this user on start if it does not exist and print its token once on stderr
    /// (`security.bootstrap_user`; the controller only).
    #[arg(long, env = "WEIR_BOOTSTRAP_USER")]
    bootstrap_user: Option<String>,
    /// Create the user of this token with it on start if that user does not exist
    /// (`security.bootstrap_token`; the controller only).
    #[arg(long, env = "WEIR_BOOTSTRAP_TOKEN", hide_env_values = true)]
    bootstrap_token: Option<String>,
}

fn parse_flush(s: &str) -> Result<FlushKind, String> {
    match s {
        "interval" => Ok(FlushKind::Interval),
        "never" => Ok(FlushKind::Never),
        "always" => Ok(FlushKind::Always),
        _ => Err(format!("{s:?} is not one of interval, never, always")),
    }
}

impl Args {
    fn into_config(self) -> anyhow::Result<BrokerConfig> {
        let mut c = match &self.config {
            Some(path) => BrokerConfig::from_file(path)?,
            None => BrokerConfig::default(),
        };
        macro_rules! set {
            ($($field:ident).+ = $value:expr) => {
                if let Some(v) = $value {
                    c.$($field).+ = v;
                }
            };
        }
        set!(role = self.role);
        set!(node_id = self.node_id);
        set!(controller = self.controller.map(Some));
        set!(advertised = self.advertised.map(Some));
        set!(external_listen = self.external_listen.map(Some));
        set!(external_advertised = self.external_advertised.map(Some));
        set!(external_data_advertised = self.external_data_advertised.map(Some));
        set!(broker_lease_ms = self.broker_lease_ms);
        set!(replica_lag_time_max_ms = self.replica_lag_time_max_ms);
        set!(data_dir = self.data_dir);
        set!(listen = self.listen);
        set!(data_listen = self.data_listen);
        set!(metrics_listen = self.metrics_listen);
        set!(data_advertised = self.data_advertised.map(Some));
        set!(max_request_bytes = self.max_request_bytes);
        set!(max_in_flight_bytes_per_connection = self.max_in_flight_bytes_per_connection);
        set!(max_in_flight_bytes = self.max_in_flight_bytes);
        set!(shutdown_timeout_ms = self.shutdown_timeout_ms);
        set!(controlled_shutdown_timeout_ms = self.controlled_shutdown_timeout_ms);
        set!(leader_rebalance_interval_ms = self.leader_rebalance_interval_ms);
        set!(retention_check_interval_ms = self.retention_check_interval_ms);
        set!(checkpoint_interval_ms = self.checkpoint_interval_ms);
        set!(scrub_bytes_per_sec = self.scrub_bytes_per_sec);
        set!(scrub_pass_interval_ms = self.scrub_pass_interval_ms);
        set!(topic_defaults.segment_bytes = self.segment_bytes);
        set!(topic_defaults.retention_ms = self.retention_ms.map(Some));
        set!(topic_defaults.retention_bytes = self.retention_bytes.map(Some));
        set!(topic_defaults.flush = self.flush);
        set!(topic_defaults.flush_interval_ms = self.flush_interval_ms);
        set!(topic_defaults.max_batch_bytes = self.max_batch_bytes);
        set!(security.authentication = self.authentication);
        set!(security.data_authentication = self.data_authentication.map(Some));
        set!(security.external_authentication = self.external_authentication.map(Some));
        set!(security.authorization = self.authorization);
        set!(security.super_users = self.super_users);
        set!(security.broker_token = self.broker_token.map(Some));
        set!(security.bootstrap_user = self.bootstrap_user.map(Some));
        set!(security.bootstrap_token = self.bootstrap_token.map(Some));
        set!(tls.cert_file = self.tls_cert_file.map(Some));
        set!(tls.key_file = self.tls_key_file.map(Some));
        set!(tls.client_ca_file = self.tls_client_ca_file.map(Some));
        set!(tls.principal_from = self.tls_principal_from);
        set!(tls.listeners = self.tls_listeners.map(Some));
        set!(tls.handshake_timeout_ms = self.tls_handshake_timeout_ms);
        set!(tls.reload_interval_ms = self.tls_reload_interval_ms);
        set!(tls.ca_file = self.tls_ca_file.map(Some));
        Ok(c)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("weir-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let verify = args.verify;
    let config = args.into_config()?;
    if verify {
        return verify::run(&config.data_dir);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir-broker")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let broker = Broker::start(config.clone()).await?;
        let addr = broker.local_addr();
        let data = broker.data_addr();
        // Ready once registered (or after a while without a controller: the partitions held
        // here are served meanwhile).
        if !broker.wait_for_metadata(METADATA_WAIT).await {
            warn!(controller = ?config.controller, "no answer from the controller yet; serving the partitions held here and retrying");
        }
        let role = match config.role {
            Role::Combined => "combined",
            Role::Controller => "controller",
            Role::Broker => "broker",
        };
        info!(grpc = %addr, data = %data, data_dir = %config.data_dir.display(), role, node_id = config.node_id, "weir-broker ready");
        // The one stdout line: what scripts and tests wait for.
        let external = broker
            .external_addr()
            .map(|a| format!(" external-grpc={a}"))
            .unwrap_or_default();
        let metrics = broker
            .metrics_addr()
            .map(|a| format!(" metrics={a}"))
            .unwrap_or_default();
        println!(
            "weir-broker ready grpc={addr} data={data} data-dir={} role={role} node-id={}{external}{metrics}",
            config.data_dir.display(),
            config.node_id
        );
        broker.run(shutdown_signal()).await?;
        info!("weir-broker stopped");
        Ok(())
    })
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
}
