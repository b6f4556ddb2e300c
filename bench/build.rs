//! The online scenario's gRPC client: the Open Inference Protocol's
//! service, compiled from the appliance's `proto/inference.proto` (the one
//! copy of the interface) with protox, so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../appliance/proto/inference.proto";
    println!("cargo:rerun-if-changed={proto}");
    let files = protox::compile([proto], ["../appliance/proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(files)?;
    Ok(())
}
