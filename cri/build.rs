//! Generates the CRI v1 gRPC server and client from the vendored `api.proto`.
//!
//! Debian 12's protoc (3.21) predates the `debug_redact` field option that
//! cri-api uses on auth fields, so the build compiles a copy with that option
//! stripped; the vendored file itself stays verbatim.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("proto");
    std::fs::create_dir_all(&out)?;
    let source = std::fs::read_to_string("proto/api.proto")?;
    let stripped = source
        .replace(" [debug_redact = true]", "")
        .replace("[debug_redact = true]", "");
    std::fs::write(out.join("api.proto"), stripped)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&[out.join("api.proto")], &[out])?;
    Ok(())
}
