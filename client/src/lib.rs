//! weir-client: the library services use to talk to weir.
//!
//! Today it carries what a producer needs before any network exists: the record batch encoder
//! and decoder ([`batch`], re-exported from `weir-proto`), so a batch built here is stored by the
//! broker byte for byte. `Producer`, `Consumer` and `Admin` over gRPC, and the `weir` CLI, come
//! with the broker service.

pub use weir_proto::batch;
pub use weir_proto::topic;
