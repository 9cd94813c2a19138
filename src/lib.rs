//! weir: a Kafka-style append-only log broker.
//!
//! This root crate re-exports the client library ([`weir_client`]) so services depend on one
//! crate; it also owns the workspace's benchmarks (`benches/`) and examples (`examples/`).

pub use weir_client::*;
