//! Compiles `proto/journeys/v1/*.proto` with the pure-Rust `protox` front end
//! (no system `protoc` needed), writes the encoded descriptor set for gRPC
//! reflection and generates the prost messages and tonic clients/servers.

use std::{
    error::Error,
    fs,
    path::{Path, PathBuf},
};

use prost::Message;

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let package_dir = proto_root.join("journeys/v1");
    println!("cargo:rerun-if-changed={}", proto_root.display());
    println!("cargo:rerun-if-changed={}", package_dir.display());

    let mut files = Vec::new();
    for entry in fs::read_dir(&package_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            files.push(path);
        }
    }
    // Stable order, so the descriptor set bytes do not depend on the file system.
    files.sort();

    let fds = protox::compile(&files, [&proto_root])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    fs::write(
        Path::new(&out_dir).join("journeys_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Undecodable messages are INVALID_ARGUMENT with a short message (src/codec.rs).
        .codec_path("crate::codec::Codec")
        .compile_fds(fds)?;
    Ok(())
}
