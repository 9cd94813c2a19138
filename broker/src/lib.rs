//! weir-broker: the broker's storage engine (and, in later work, its gRPC service, zero-copy
//! data port and controller).
//!
//! [`storage`] is self-contained: it knows files and bytes, not networks.

pub mod storage;
