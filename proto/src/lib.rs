//! weir's wire formats.
//!
//! Everything that crosses a process boundary is defined here, so the client and the broker
//! share one definition and neither depends on the other:
//!
//! - [`batch`]: the record batch, the unit of produce, storage and fetch. The stored format is
//!   the wire format: the broker validates a batch, stamps its base offset and copies the bytes
//!   into a segment unchanged. `segments-format.md` at the repository root is the byte-exact spec.
//!
//! - [`data_port`]: the frames of the sendfile data port (fetch requests, response headers).
//! - [`topic`]: topic names and the one `TopicPartition` type of the workspace.
//! - With the `grpc` feature only (the storage engine builds without it, so no network crate
//!   is in its tree):
//!   - [`status`]: how a weir error travels in a gRPC status (the `weir-reason` metadata entry
//!     and the status details), for both sides.
//!   - [`v1`]: the gRPC service (package `weir.v1`), generated from `proto/weir/v1/weir.proto`,
//!     and its encoded descriptors ([`v1::FILE_DESCRIPTOR_SET`], for server reflection).

pub mod batch;
pub mod data_port;
/// Property checks of the parsers for the fuzz targets in `fuzz/` and the bounded runs in
/// `tests/fuzz_parsers.rs`; not an API.
#[doc(hidden)]
pub mod fuzz_checks;
#[cfg(feature = "grpc")]
pub mod status;
pub mod topic;

/// The gRPC service and messages of package `weir.v1`, generated from `proto/weir/v1/weir.proto`
/// (the contract for clients in any language; its comments document every field).
#[cfg(feature = "grpc")]
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("weir.v1");

    /// `proto/weir/v1/weir.proto` as an encoded `google.protobuf.FileDescriptorSet` (with its
    /// comments), written by build.rs: what the broker's server reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/weir_v1_descriptor.bin"));
}
