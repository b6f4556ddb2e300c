//! Compiles `proto/inference.proto` (the Open Inference Protocol's gRPC
//! service) into tonic's server and client with protox: pure Rust, so no
//! `protoc` is needed on the building machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/inference.proto";
    println!("cargo:rerun-if-changed={proto}");
    let files = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(files)?;
    Ok(())
}
