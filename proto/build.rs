//! Generates the gRPC service (package weir.v1) from proto/weir/v1/weir.proto.
//!
//! The .proto is parsed by protox (pure Rust), so the build needs no system `protoc`.
//! Neither prost-build nor tonic-prost-build tells cargo to rerun when a .proto changes, so
//! the rerun-if-changed lines below are what keep an edited .proto from being silently ignored.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "weir/v1/weir.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=build.rs");
    let descriptors = protox::compile([PROTO], ["."])?;
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
