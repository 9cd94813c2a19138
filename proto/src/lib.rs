//! weir's wire formats.
//!
//! Everything that crosses a process boundary is defined here, so the client and the broker
//! share one definition and neither depends on the other:
//!
//! - [`batch`]: the record batch, the unit of produce, storage and fetch. The stored format is
//!   the wire format: the broker validates a batch, stamps its base offset and copies the bytes
//!   into a segment unchanged. `segments-format.md` at the repository root is the byte-exact spec.
//!
//! The gRPC service (package `weir.v1`) will live here too.

pub mod batch;
pub mod topic;
