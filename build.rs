//! Compiles the protos with protox (pure Rust, so no system `protoc`), generates
//! the tonic code, and writes the descriptor set that the binary embeds for
//! reflection and `warden descriptor-set`.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &["warden/v1/auth.proto", "warden/v1/user_admin.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");

    // Imports included (google/api, google/protobuf) so that a gateway such
    // as Envoy can use the set on its own; source info keeps the comments for
    // `grpcurl describe`.
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("warden_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
