//! [`Client`]: a connection to a weir cluster through one bootstrap broker, shared by every
//! admin call, producer and consumer made from it.
//!
//! Invariants: a client holds one bootstrap connection and one [`Cluster`] picture; every
//! admin, producer and consumer made from it shares both (so a client's connections to a
//! broker are one, whoever uses them). Connections themselves are made by
//! [`crate::connection`].

use std::sync::Arc;

use crate::ClientError;
use crate::admin::Admin;
use crate::cluster::Cluster;
use crate::connection::{self, ConnectOptions};
use crate::consumer::{Consumer, ConsumerConfig, GroupConfig, GroupConsumer};
use crate::producer::{Producer, ProducerConfig};

/// The broker's default gRPC address (what `weir-broker` listens on when not told otherwise).
pub const DEFAULT_BROKER: &str = "127.0.0.1:7070";

/// A connection to one broker. Cheap to clone; clones share the connection.
///
/// Create the [`Admin`], [`Producer`]s and [`Consumer`]s you need from it. Producers and
/// consumers spawn Tokio tasks, so they must be created inside a Tokio runtime.
#[derive(Debug, Clone)]
pub struct Client {
    addr: Arc<str>,
    /// Holds the bootstrap connection too.
    cluster: Arc<Cluster>,
}

impl Client {
    /// Connects to the broker at `addr` (`HOST:PORT` or `http://HOST:PORT`) with default
    /// [`ConnectOptions`]. Fails with [`ClientError::Connect`] if no connection is made within
    /// the connect timeout (5 s).
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with(addr, ConnectOptions::default()).await
    }

    /// Connects to the broker at `addr` with `options`.
    pub async fn connect_with(addr: &str, options: ConnectOptions) -> Result<Client, ClientError> {
        let grpc = connection::connect(addr, &options).await?;
        let host = connection::host_of(addr);
        let cluster = Arc::new(Cluster::new(grpc, addr, host, options));
        Ok(Client {
            addr: addr.into(),
            cluster,
        })
    }

    /// The address this client was connected with.
    pub fn address(&self) -> &str {
        &self.addr
    }

    /// Topic administration and offset look-ups.
    pub fn admin(&self) -> Admin {
        Admin::new(self.cluster.clone())
    }

    /// A new producer with its own buffer and background task. Fails only for an invalid
    /// `config` (see [`ProducerConfig`]). Must be called inside a Tokio runtime.
    pub fn producer(&self, config: ProducerConfig) -> Result<Producer, ClientError> {
        Producer::new(self.cluster.clone(), config)
    }

    /// A new consumer with nothing assigned yet.
    pub fn consumer(&self, config: ConsumerConfig) -> Consumer {
        Consumer::new(self.cluster.clone(), config)
    }

    /// Joins a consumer group (see [`GroupConsumer::join`]).
    pub async fn group_consumer(&self, config: GroupConfig) -> Result<GroupConsumer, ClientError> {
        GroupConsumer::join(self, config).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn an_unreachable_broker_is_a_connect_error() {
        // Port 1 on loopback: nothing listens there, so the connection is refused at once.
        let err = Client::connect_with(
            "127.0.0.1:1",
            ConnectOptions {
                connect_timeout: Duration::from_secs(2),
                ..ConnectOptions::default()
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
        assert!(err.is_retriable());
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
