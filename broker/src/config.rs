//! The broker's configuration: built-in defaults, overridden by a TOML file (`--config`),
//! overridden by `WEIR_*` environment variables, overridden by flags.
//!
//! The defaults start a single-node broker on 127.0.0.1 with its data in `./weir-data`, so
//! `weir-broker` alone is a working broker. Every key of the file has a flag and a variable of
//! the same name: `max_request_bytes` is `--max-request-bytes` and `WEIR_MAX_REQUEST_BYTES`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::topics::{FlushKind, TopicSettings};
use weir_storage::{LogConfig, LogDirConfig};

/// What a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A broker with its own embedded controller: a single-node cluster (the default).
    Combined,
    /// Only the controller (it still answers metadata and group calls, and holds no partitions).
    Controller,
    /// A broker of a cluster whose controller is at `controller`.
    Broker,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "combined" => Ok(Role::Combined),
            "controller" => Ok(Role::Controller),
            "broker" => Ok(Role::Broker),
            _ => Err(format!("{s:?} is not one of combined, controller, broker")),
        }
    }
}

/// Node ids are below this (they are the top bits of producer ids).
pub const MAX_NODE_ID: u32 = 1 << 22;

/// Everything the broker process is configured with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// `combined` (broker + embedded controller, the single-node default), `controller` or
    /// `broker`.
    pub role: Role,
    /// This node's id, unique in the cluster.
    pub node_id: u32,
    /// The controller's gRPC address (`HOST:PORT`), for `role = "broker"`.
    pub controller: Option<String>,
    /// The gRPC address as clients and other nodes should dial it, when it differs from
    /// `listen` (a container's published port, a host name). Default: the bound address.
    pub advertised: Option<String>,
    /// A second gRPC address, for clients outside the node's network (a container's published
    /// port): requests arriving here are answered with every broker's external addresses.
    pub external_listen: Option<SocketAddr>,
    /// The external listener's address as outside clients dial it. Default: its bound address.
    pub external_advertised: Option<String>,
    /// The data port's address as outside clients dial it (the data port itself is shared by
    /// both listeners). Default: the internal `data_advertised`.
    pub external_data_advertised: Option<String>,
    /// A broker not heard from by the controller for this long is marked down (its
    /// partitions report unavailable).
    pub broker_lease_ms: u64,
    /// A follower that has not caught up with its leader's log end for this long leaves the
    /// partition's in-sync set (Kafka's `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// Where logs and topic metadata live.
    pub data_dir: PathBuf,
    /// The gRPC address.
    pub listen: SocketAddr,
    /// The data port's address (fetches served with sendfile).
    pub data_listen: SocketAddr,
    /// The metrics listener's address (Prometheus `/metrics`, `/healthz`, `/readyz`), or `off`.
    pub metrics_listen: String,
    /// The data port's address as clients should dial it, when it differs from `data_listen`
    /// (a container's published port, a host name). Default: the bound address.
    pub data_advertised: Option<String>,
    /// The largest gRPC message the broker accepts (a produce request holds one batch, so this
    /// must exceed the topics' max_batch_bytes plus a few bytes of framing).
    pub max_request_bytes: u64,
    /// Produce bytes one connection may have in memory before the broker stops reading from it.
    pub max_in_flight_bytes_per_connection: u64,
    /// Produce bytes all connections together may have in memory.
    pub max_in_flight_bytes: u64,
    /// How long a shutdown waits for in-flight requests before closing the logs anyway.
    pub shutdown_timeout_ms: u64,
    /// How long a stopping broker waits for the controller to move its leaderships of
    /// replicated partitions to in-sync followers (controlled shutdown) before it stops anyway
    /// (0: it does not ask).
    pub controlled_shutdown_timeout_ms: u64,
    /// How often the controller moves leaderships back to preferred replicas that are in sync
    /// (0: never). Only the controller reads it.
    pub leader_rebalance_interval_ms: u64,
    /// How often retention deletes expired segments.
    pub retention_check_interval_ms: u64,
    /// How often recovery points and derived-state snapshots (producer states, key indexes)
    /// are written: what a restart after a crash must rescan.
    pub checkpoint_interval_ms: u64,
    /// The background scrub CRC-checks sealed segments at most this fast, bytes per second
    /// (0: off). Damage it finds is logged, and reads stop before it.
    pub scrub_bytes_per_sec: u64,
    /// A new scrub pass starts at most this often, ms (default 24 h).
    pub scrub_pass_interval_ms: u64,
    /// Settings of topics created without their own.
    pub topic_defaults: TopicDefaults,
    /// Authentication per listener, authorization, super users, the broker token.
    pub security: crate::security::config::SecurityConfig,
    /// TLS on the listeners and the links to other nodes (`[tls]`; see
    /// [`crate::security::tls`]).
    pub tls: crate::security::tls::TlsConfig,
}

/// Defaults for new topics (each can be chosen per topic at creation).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicDefaults {
    pub segment_bytes: u64,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub flush: FlushKind,
    pub flush_interval_ms: u64,
    pub max_batch_bytes: u32,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        let s = TopicSettings::from_log_config(&LogConfig::default());
        TopicDefaults {
            segment_bytes: s.segment_bytes,
            retention_ms: s.retention_ms,
            retention_bytes: s.retention_bytes,
            flush: s.flush,
            flush_interval_ms: s.flush_interval_ms,
            max_batch_bytes: s.max_batch_bytes,
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            role: Role::Combined,
            node_id: 0,
            controller: None,
            advertised: None,
            external_listen: None,
            external_advertised: None,
            external_data_advertised: None,
            broker_lease_ms: 6_000,
            replica_lag_time_max_ms: 10_000,
            data_dir: PathBuf::from("./weir-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_listen: SocketAddr::from(([127, 0, 0, 1], 7071)),
            metrics_listen: "127.0.0.1:7072".into(),
            data_advertised: None,
            max_request_bytes: 16 << 20,
            max_in_flight_bytes_per_connection: 64 << 20,
            max_in_flight_bytes: 512 << 20,
            shutdown_timeout_ms: 10_000,
            controlled_shutdown_timeout_ms: 10_000,
            leader_rebalance_interval_ms: 30_000,
            retention_check_interval_ms: 30_000,
            checkpoint_interval_ms: 10_000,
            scrub_bytes_per_sec: LogDirConfig::default().scrub_bytes_per_sec,
            scrub_pass_interval_ms: LogDirConfig::default().scrub_pass_interval.as_millis() as u64,
            topic_defaults: TopicDefaults::default(),
            security: Default::default(),
            tls: crate::security::tls::TlsConfig::default(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl BrokerConfig {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            detail: e.to_string(),
        })
    }

    /// The storage engine's settings for this configuration, checked.
    pub fn log_dir_config(&self) -> Result<LogDirConfig, ConfigError> {
        let d = &self.topic_defaults;
        let settings = TopicSettings {
            retention_bytes: d.retention_bytes,
            retention_ms: d.retention_ms,
            segment_bytes: d.segment_bytes,
            flush: d.flush,
            flush_interval_ms: d.flush_interval_ms,
            max_batch_bytes: d.max_batch_bytes,
            key_index: false,
            // Not storage settings: the log config built here does not read them.
            replication_factor: 1,
            min_insync_replicas: 1,
            unclean_leader_election: false,
        };
        let default_log = settings.log_config(&LogConfig::default());
        default_log
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if u64::from(d.max_batch_bytes) + 4096 > self.max_request_bytes {
            return Err(ConfigError::Invalid(format!(
                "max_request_bytes ({}) must exceed topic_defaults.max_batch_bytes ({}) by at least 4 KiB",
                self.max_request_bytes, d.max_batch_bytes
            )));
        }
        match (self.role, &self.controller) {
            (Role::Broker, None) => {
                return Err(ConfigError::Invalid(
                    "a broker of a cluster needs its controller's address: --controller HOST:PORT (or run --role combined)".into(),
                ));
            }
            (Role::Combined | Role::Controller, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "--controller is for --role broker; this node runs its own controller".into(),
                ));
            }
            _ => {}
        }
        if self.node_id >= MAX_NODE_ID {
            return Err(ConfigError::Invalid(format!(
                "node_id must be below {MAX_NODE_ID}"
            )));
        }
        self.metrics_addr()?;
        self.security.validate().map_err(ConfigError::Invalid)?;
        self.tls
            .check()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.broker_lease_ms < 1000 {
            return Err(ConfigError::Invalid(
                "broker_lease_ms must be at least 1000".into(),
            ));
        }
        if self.retention_check_interval_ms == 0 || self.checkpoint_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "retention_check_interval_ms and checkpoint_interval_ms must be at least 1".into(),
            ));
        }
        Ok(LogDirConfig {
            default_log,
            retention_check_interval: Duration::from_millis(self.retention_check_interval_ms),
            checkpoint_interval: Duration::from_millis(self.checkpoint_interval_ms),
            scrub_bytes_per_sec: self.scrub_bytes_per_sec,
            scrub_pass_interval: Duration::from_millis(self.scrub_pass_interval_ms),
            ..LogDirConfig::default()
        })
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// The metrics listener's address, `None` when `metrics_listen` is `off`.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let value = self.metrics_listen.trim();
        if value.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        value.parse().map(Some).map_err(|e| {
            ConfigError::Invalid(format!(
                "metrics_listen {value:?} is not an address (HOST:PORT) or `off`: {e}"
            ))
        })
    }

    /// The controller's preferred-leader interval, `None` when off.
    pub fn leader_rebalance_interval(&self) -> Option<Duration> {
        (self.leader_rebalance_interval_ms > 0)
            .then(|| Duration::from_millis(self.leader_rebalance_interval_ms))
    }

    pub fn controlled_shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.controlled_shutdown_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_only_what_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\n[topic_defaults]\nflush = \"always\"\n",
        )
        .unwrap();
        let config = BrokerConfig::from_file(&path).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.topic_defaults.flush, FlushKind::Always);
        assert_eq!(config.data_dir, BrokerConfig::default().data_dir);
        assert!(config.log_dir_config().is_ok());
    }

    #[test]
    fn unknown_keys_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, "lisen = \"0.0.0.0:9000\"\n").unwrap();
        let err = BrokerConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("weir.toml") && err.contains("lisen"), "{err}");
    }

    #[test]
    fn the_tls_table_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(
            &path,
            "[tls]\ncert_file = \"b.pem\"\nkey_file = \"b.key\"\nprincipal_from = \"san-uri\"\nlisteners = [\"grpc\", \"data\"]\n",
        )
        .unwrap();
        let config = BrokerConfig::from_file(&path).unwrap();
        assert_eq!(
            config.tls.principal_from,
            crate::security::tls::PrincipalFrom::SanUri
        );
        assert!(
            !config
                .tls
                .applies_to(crate::security::tls::TlsListener::External)
        );
        assert!(config.log_dir_config().is_ok());
        std::fs::write(&path, "[tls]\ncert_file = \"b.pem\"\n").unwrap();
        let half = BrokerConfig::from_file(&path).unwrap();
        assert!(
            half.log_dir_config().is_err(),
            "a certificate without its key"
        );
    }

    #[test]
    fn a_request_limit_below_the_batch_limit_is_refused() {
        let config = BrokerConfig {
            max_request_bytes: 1 << 20,
            ..BrokerConfig::default()
        };
        assert!(config.log_dir_config().is_err());
    }
}
