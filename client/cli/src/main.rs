//! `weir`: the command line for a weir broker (kcat/rpk habits).
//!
//! ```text
//! weir topic create NAME --partitions N [--partitioner hash|range|round-robin] [--split-keys a,m,t]
//! weir topic list | describe NAME | delete NAME
//! weir produce TOPIC [--key-separator SEP] [--partition P] [--acks leader|durable]
//! weir consume TOPIC [--from-beginning | --offset N | --from-time RFC3339] [--partition P]
//!                    [--count N] [-f|--follow] [--format raw|json|'TEMPLATE'] [--group G]
//! weir group list | describe G
//! weir group reset G --to earliest|latest|offset:N|time:RFC3339 [--topic T] [--force]
//! weir tail TOPIC
//! weir cluster
//! weir health [--metrics HOST:PORT] [--live]
//! weir user create NAME | list | delete NAME
//! weir acl add --principal User:NAME --operation OP (--topic T | --group G | --cluster) [--prefix] [--deny]
//! weir acl list [filters] | remove [filters | --all]
//! ```
//!
//! A broker that requires authentication gets the token from `--token`, else `WEIR_TOKEN`.
//!
//! The broker address comes from `--broker HOST:PORT`, else `WEIR_BROKER`, else
//! `127.0.0.1:7070` (`weir health` asks the node's metrics listener instead: `--metrics`, else
//! `WEIR_METRICS`, else `127.0.0.1:7072`). Records go to stdout; everything else (errors,
//! summaries, progress, logs with `RUST_LOG`) to stderr. Exit status: 0 success, 1 failure (the message says what to do),
//! 2 bad usage, 130 interrupted by Ctrl-C.

mod cluster;
mod consume;
mod format;
mod group;
mod health;
mod produce;
mod security;
mod time;
mod topic;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weir_client::{Client, ClientError, DEFAULT_BROKER, ErrorCode};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Produce to, consume from and administer a weir broker"
)]
struct Cli {
    /// The broker's gRPC address
    #[arg(
        long,
        global = true,
        env = "WEIR_BROKER",
        default_value = DEFAULT_BROKER,
        value_name = "HOST:PORT"
    )]
    broker: String,

    /// The user's token (from `weir user create`), for brokers that require authentication
    #[arg(
        long,
        global = true,
        env = "WEIR_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// TLS: the CA certificate(s) (PEM) to trust; setting it connects with TLS
    #[arg(long, global = true, env = "WEIR_TLS_CA", value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// Mutual TLS: this client's certificate chain (PEM), with --tls-key
    #[arg(
        long,
        global = true,
        env = "WEIR_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<std::path::PathBuf>,
    /// Mutual TLS: this client's private key (PEM), with --tls-cert
    #[arg(
        long,
        global = true,
        env = "WEIR_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// How every command connects (set once from the global flags, before any command runs).
static CONNECT_OPTIONS: std::sync::OnceLock<weir_client::ConnectOptions> =
    std::sync::OnceLock::new();

impl Cli {
    /// The connection options the global flags ask for.
    fn connect_options(&self) -> Result<weir_client::ConnectOptions, ClientError> {
        let tls = match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (None, None, None) => None,
            (None, _, _) => {
                return Err(ClientError::InvalidArgument(
                    "--tls-cert/--tls-key need --tls-ca (the CA that issued the broker's certificate)".into(),
                ));
            }
            (Some(ca), Some(cert), Some(key)) => Some(weir_client::ClientTls::from_files(
                ca,
                Some((cert.as_path(), key.as_path())),
            )?),
            (Some(ca), _, _) => Some(weir_client::ClientTls::from_files(ca, None)?),
        };
        Ok(weir_client::ConnectOptions {
            tls,
            token: self.token.clone(),
            ..weir_client::ConnectOptions::default()
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create, list, describe and delete topics
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce one record per line of standard input
    Produce(produce::ProduceArgs),
    /// Print a topic's records (from the beginning, to the end of the data unless -f)
    Consume(consume::ConsumeArgs),
    /// List, describe and reset consumer groups
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Print records as they are produced, from the end of every partition (like tail -f)
    Tail(consume::TailArgs),
    /// Show the cluster's brokers, their addresses and whether they are up
    Cluster,
    /// Ask a node's metrics listener whether it is ready (GET /readyz): exit 0 if so
    Health(health::HealthArgs),
    /// Create, list and delete users (each has a token)
    #[command(subcommand)]
    User(security::UserCommand),
    /// Add, list and remove ACL entries
    #[command(subcommand)]
    Acl(security::AclCommand),
}

/// The exit status of a command stopped by Ctrl-C: 128 + SIGINT, as shells report it.
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("weir: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let broker = cli.broker.clone();
    match cli.connect_options() {
        Ok(options) => {
            let _ = CONNECT_OPTIONS.set(options);
        }
        Err(error) => {
            eprintln!("weir: {error}");
            return ExitCode::FAILURE;
        }
    }
    let result = runtime.block_on(run(cli));
    // Background work (a stdin reader, fetch tasks) must not hold the exit up.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("weir: {}", explain(&error, &broker));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Topic(command) => topic::run(&cli.broker, command).await,
        Command::Produce(args) => produce::run(&cli.broker, args).await,
        Command::Consume(args) => consume::run(&cli.broker, args).await,
        Command::Group(command) => group::run(&cli.broker, command).await,
        Command::Tail(args) => consume::tail(&cli.broker, args).await,
        Command::Cluster => cluster::run(&cli.broker).await,
        Command::Health(args) => health::run(args),
        Command::User(command) => security::user(&cli.broker, command).await,
        Command::Acl(command) => security::acl(&cli.broker, command).await,
    }
}

/// Logs go to stderr, warnings and errors only unless `RUST_LOG` says otherwise.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// Connects to the broker with this run's `--token` and TLS options (errors are explained by
/// [`explain`]).
async fn connect(broker: &str) -> Result<Client, ClientError> {
    let options = CONNECT_OPTIONS.get().cloned().unwrap_or_default();
    Client::connect_with(broker, options).await
}

/// Describes `topic`, refusing with a message that says what to do if it does not exist or has
/// no partition `partition` (checked before any input is read or any fetch starts).
async fn describe_topic(
    client: &Client,
    topic: &str,
    partition: Option<u32>,
) -> anyhow::Result<weir_client::TopicDescription> {
    let described = client
        .admin()
        .describe_topic(topic)
        .await
        .map_err(|e| topic_error(e, topic))?;
    if let Some(p) = partition
        && p >= described.partition_count
    {
        anyhow::bail!(
            "topic {} has partitions 0..{}; there is no partition {p}",
            described.name,
            described.partition_count
        );
    }
    Ok(described)
}

/// The error of a call about `topic`, with an unknown topic spelled out.
fn topic_error(error: ClientError, topic: &str) -> anyhow::Error {
    if error.code() == Some(ErrorCode::UnknownTopic) {
        anyhow::anyhow!(
            "topic {topic:?} does not exist; see `weir topic list`, or create it with \
             `weir topic create {topic} --partitions N`"
        )
    } else {
        error.into()
    }
}

/// The message for a failed command: the error and its causes, plus what to do when the
/// broker could not be reached.
fn explain(error: &anyhow::Error, broker: &str) -> String {
    let message = format!("{error:#}");
    let client_error = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<ClientError>());
    match client_error {
        Some(e) if e.code() == Some(ErrorCode::Unauthenticated) => format!(
            "{message}\nThe broker requires a valid token: pass --token TOKEN or set WEIR_TOKEN \
             (an administrator creates one with `weir user create NAME`)."
        ),
        Some(e) if e.code() == Some(ErrorCode::PermissionDenied) => format!(
            "{message}\nAsk an administrator for the ACL (`weir acl add ...`), or use another \
             user's token."
        ),
        Some(ClientError::Connect { .. } | ClientError::InvalidAddress { .. }) => {
            format!("{message} Set --broker or WEIR_BROKER to use another address.")
        }
        Some(ClientError::Transport {
            code: tonic::Code::Unavailable,
            ..
        }) => format!(
            "{message}; lost the connection to the broker at {broker}: is weir-broker running? \
             Set --broker or WEIR_BROKER to use another address."
        ),
        _ => message,
    }
}

/// `1.5 MiB`-style sizes for people.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unreachable_brokers_get_a_hint() {
        let error = anyhow::Error::from(ClientError::Connect {
            addr: "127.0.0.1:7070".into(),
            reason: "connection refused".into(),
        });
        let message = explain(&error, "127.0.0.1:7070");
        assert!(
            message.starts_with("cannot reach broker at 127.0.0.1:7070"),
            "{message}"
        );
        assert!(message.contains("is weir-broker running"), "{message}");
        assert!(message.contains("Set --broker or WEIR_BROKER"), "{message}");
    }

    #[test]
    fn unknown_topics_are_named() {
        let status = weir_proto::status::to_status(&weir_proto::status::error(
            ErrorCode::UnknownTopic,
            "unknown topic orders",
        ));
        let message = format!("{:#}", topic_error(ClientError::from(status), "orders"));
        assert!(message.contains("\"orders\" does not exist"), "{message}");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
