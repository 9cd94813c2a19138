//! Every translation between the broker's own types and the wire's (`weir.v1`), in one place
//! for the gRPC service, the data port and the controller.
//!
//! - [`topics`]: partitioner and placement names; topic metadata to and from
//!   `TopicDescription`.
//! - [`config`]: topic settings to and from `TopicConfig`.
//! - [`groups`]: assignor names.
//! - [`errors`]: internal errors (storage, topics) to wire `Error`s and tonic `Status`es.
//!
//! Layering: this module depends only on the types it translates ([`crate::topics`],
//! [`crate::group_strategy`], the storage engine's errors) and on `weir-proto`; never on the
//! controller or the server, which both build on it. The topic translations are re-exported
//! here (`wire::describe_topic`); errors are named by their module (`wire::errors::internal`),
//! since their names alone say little.

pub mod config;
pub mod errors;
pub mod groups;
pub mod topics;

pub use config::{settings_from_wire, settings_to_wire};
pub use groups::{assignor_from_wire, assignor_to_wire};
pub use topics::{
    describe_topic, leader_or_first, meta_from_description, partition_state_from_wire,
    partition_state_to_wire, partitioner_from_wire, partitioner_to_wire, placement_from_wire,
    placement_to_wire,
};
