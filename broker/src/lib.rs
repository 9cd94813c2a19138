//! weir-broker: the broker.
//!
//! The storage engine is the crate `weir-storage` (`broker/storage/`): memory-mapped segments,
//! indexes, group commit, recovery. It knows files and bytes, not networks, and its dependency
//! tree proves it. The modules here build on it:
//!
//! - [`topics`]: topics over the storage engine (metadata persisted in the data dir), and the
//!   named kinds that describe a topic (partitioner, placement, flush).
//! - [`group_strategy`]: the named strategies (assignors) a consumer group runs with.
//! - [`wire`]: every translation between the broker's types and the wire's (`weir.v1`),
//!   errors included.
//! - [`controller`]: the cluster's metadata (brokers, placement, consumer groups, committed
//!   offsets), embedded in a single-node broker or run alone.
//! - [`replica`]: replication on a broker: its role (leader or follower) for each replicated
//!   partition, the followers' fetch loops, the leader's high watermark, acks and ISR proposals.
//! - [`metrics`]: the metric handles the data paths update (the listener that serves them is
//!   the server's).
//! - [`server`]: the gRPC service, its limits and graceful shutdown, and the node's view of
//!   the cluster.
//! - [`layout`]: the names in a data directory, and its storage-engine dirs.
//! - [`producer_ids`]: ids for idempotent producers, unique per data dir.
//! - [`security`]: who a connection's peer is (TLS, principals) and what it may do (ACLs).
//! - [`config`]: the broker's configuration (defaults, TOML file, environment, flags).
//!
//! The `weir-broker` binary (`src/bin/weir-broker/`) wires them together, and checks a data
//! directory with `--verify`.
//!
//! Layering, bottom up (a module imports only from the ones before it): `weir-storage`;
//! [`layout`], [`topics`], [`group_strategy`] and [`metrics`]; [`wire`]; [`controller`];
//! [`replica`]; [`security`]; [`server`]. Nothing
//! imports upwards: the controller never reaches into the server, and the wire translation never
//! into the controller or the server (so either can be replaced without the other).

pub mod config;
pub mod controller;
pub mod group_strategy;
pub mod layout;
pub mod metrics;
pub mod producer_ids;
pub mod replica;
pub mod security;
pub mod server;
pub mod topics;
pub mod wire;
