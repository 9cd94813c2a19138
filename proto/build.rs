//! Generates the gRPC service (package weir.v1) from proto/weir/v1/weir.proto, with the `grpc`
//! feature only: without it the crate is the batch codec alone (the storage engine's build) and
//! needs neither protox nor tonic.
//!
//! The .proto is parsed by protox (pure Rust), so the build needs no system `protoc`.
//! Neither prost-build nor tonic-prost-build tells cargo to rerun when a .proto changes, so
//! the rerun-if-changed lines below are what keep an edited .proto from being silently ignored.
//!
//! It also writes the parsed descriptors, encoded as a `google.protobuf.FileDescriptorSet`, to
//! `$OUT_DIR/weir_v1_descriptor.bin`: the broker's server reflection serves them, so `grpcurl`
//! and the like can call weir without the .proto. protox keeps the source comments in them, so
//! `grpcurl describe` shows the contract's documentation too.

const PROTO: &str = "weir/v1/weir.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "grpc")]
    generate()?;
    Ok(())
}

#[cfg(feature = "grpc")]
fn generate() -> Result<(), Box<dyn std::error::Error>> {
    use protox::prost::Message as _;

    let descriptors = protox::compile([PROTO], ["."])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("weir_v1_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // `bytes` fields decode as `bytes::Bytes`: a fetched batch is a slice of the receive
        // buffer, not a copy.
        .bytes(".")
        // Errors travel in every Result of the broker; the rare owner they name is boxed to
        // keep the error small.
        .boxed(".weir.v1.Error.leader")
        .compile_fds(descriptors)?;
    Ok(())
}
