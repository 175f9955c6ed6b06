//! Compiles the protos with protox (pure Rust, so no system `protoc`), generates
//! the tonic code, and writes the descriptor set that the binary embeds for
//! reflection and `warden descriptor-set`.

use std::{env, fs, path::PathBuf};

/// The warden services, and the google.rpc types of their error details, so
/// that a gateway and grpcurl can render those too.
const PROTOS: &[&str] = &[
    "warden/v1/auth.proto",
    "warden/v1/user_admin.proto",
    "warden/v1/organizations.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");

    // Imports included (google/api, google/protobuf) so that a gateway such
    // as Envoy can use the set on its own; source info keeps the comments for
    // `grpcurl describe`.
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    // Encoded by protox itself: it keeps the google.api.http options, which
    // are extensions that a round trip through prost_types would drop.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("warden_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
