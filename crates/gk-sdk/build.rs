//! Generates the protobuf and gRPC code for `proto/goatkit/plugin/v1` at build time.
//!
//! `protox` is a pure-Rust protobuf compiler, so a fresh machine needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "proto")]
    generate()?;
    Ok(())
}

#[cfg(feature = "proto")]
fn generate() -> Result<(), Box<dyn std::error::Error>> {
    use std::path::PathBuf;

    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let files = [
        proto_root.join("goatkit/plugin/v1/plugin.proto"),
        proto_root.join("goatkit/plugin/v1/host.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let descriptors = protox::compile(&files, [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("goatkit_plugin_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
