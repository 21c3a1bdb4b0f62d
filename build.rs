//! Compiles every `.proto` file under `proto/` into Rust types and tonic services, with protox, so the
//! build needs no system `protoc`. The encoded descriptor set is written to OUT_DIR for gRPC reflection.

use std::{env, fs, path::PathBuf};

fn proto_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            proto_files(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut files = Vec::new();
    proto_files("proto".as_ref(), &mut files)?;
    // A stable order keeps the generated code and the descriptor set reproducible.
    files.sort();

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;
    let descriptors = compiler.file_descriptor_set();

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    let mut prost_config = prost_build::Config::new();
    // `prost::Name` gives every message its full name, which `Any::pack` and `Any::unpack` need.
    prost_config.enable_type_names();
    tonic_prost_build::configure()
        // Generating the well-known types here (instead of using prost-types) lets `bytes` reach
        // `google.protobuf.Any.value`, so event bodies move between NATS and gRPC without a copy.
        .compile_well_known_types(true)
        .bytes(".")
        // Prost with smaller first buffers per call (see `Codec` in src/lib.rs).
        .codec_path("crate::Codec")
        .compile_fds_with_config(descriptors, prost_config)?;
    Ok(())
}
