//! weir-broker: the broker.
//!
//! The storage engine is the crate `weir-storage` (`broker/storage/`): memory-mapped segments,
//! indexes, group commit, recovery. It knows files and bytes, not networks, and its dependency
//! tree proves it. The modules here build on it:
//!
//! - [`topics`]: topics over the storage engine (metadata persisted in the data dir).
//! - [`server`]: the gRPC service, its limits and graceful shutdown, and the node's view of
//!   the cluster.
//! - [`controller`]: the cluster's metadata (brokers, placement, consumer groups, committed
//!   offsets), embedded in a single-node broker or run alone.
//! - [`wire`]: translation between the broker's types and the wire's.
//! - [`layout`]: the names in a data directory, and its storage-engine dirs.
//! - [`producer_ids`]: ids for idempotent producers, unique per data dir.
//! - [`config`]: the broker's configuration (defaults, TOML file, environment, flags).
//!
//! The `weir-broker` binary (`src/bin/weir-broker/`) wires them together, and checks a data
//! directory with `--verify`.

pub mod config;
pub mod controller;
pub mod layout;
pub mod producer_ids;
pub mod server;
pub mod topics;
pub mod wire;
