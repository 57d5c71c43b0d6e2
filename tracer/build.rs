//! Compiles the agent protocol (proto/dye/agent/v1/agent.proto) into Rust: client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/dye/agent/v1/agent.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure().compile_protos(&[proto], &["../proto"])?;
    Ok(())
}
