//! Test support shared by the integration tests of every crate.
//!
//! - [`dirs`]: temporary data directories and a small tmpfs to fill (no network; the storage
//!   engine's tests use only this, with default features off).
//! - [`process`] (feature `broker`, on by default): the real `weir-broker` as a child process on
//!   ephemeral loopback ports, its ready line, raw gRPC clients, and polling helpers.
//! - [`proxy`]: a fault-injecting TCP proxy to cut, black-hole and heal the link between two
//!   processes (std only, no root, no network namespaces).

pub mod dirs;
#[cfg(feature = "broker")]
pub mod process;
pub mod proxy;

pub use dirs::{Tmpfs, temp_data_dir};
#[cfg(feature = "broker")]
pub use process::*;
pub use proxy::{LinkMode, LinkProxy};
