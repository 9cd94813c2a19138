//! gRPC server reflection on every gRPC listener, so `grpcurl` and other tools can list, describe
//! and call weir's services without the .proto.
//!
//! Both protocol versions are served: `grpc.reflection.v1` and `grpc.reflection.v1alpha` (what
//! older tools still ask for); they answer the same. They serve `weir.proto` as build.rs
//! encoded it (with its comments, so `grpcurl describe` shows the contract's documentation),
//! the health protocol's and their own descriptors. The services they list are the ones the
//! listener serves: `weir.v1.Controller` only on the internal listener of a node that runs the
//! controller.

use tonic_reflection::server::Builder;
use weir_proto::v1::{controller_server, weir_server};

/// A reflection builder for a listener, `controller` when it serves `weir.v1.Controller`.
pub fn builder(controller: bool) -> Builder<'static> {
    let mut builder = Builder::configure()
        .register_encoded_file_descriptor_set(weir_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // Both versions' descriptors in both services (the builder would add only its own),
        // so each can describe every service it lists.
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .with_service_name(weir_server::SERVICE_NAME)
        .with_service_name(tonic_health::pb::health_server::SERVICE_NAME)
        .with_service_name(tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME)
        .with_service_name(tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME);
    if controller {
        builder = builder.with_service_name(controller_server::SERVICE_NAME);
    }
    builder
}
