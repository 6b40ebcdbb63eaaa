//! Compiles the contract in `proto/` with a vendored `protoc`, so a build needs no
//! protobuf toolchain on the machine, and emits the descriptor set served by reflection.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    // SAFETY of intent: build scripts run single-threaded, and prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos: Vec<PathBuf> = std::fs::read_dir("proto/kraiter/contacts/v1")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    println!("cargo:rerun-if-changed=proto");

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("kraiter_contacts_descriptor.bin"))
        .compile_protos(&protos, &[PathBuf::from("proto"), include])?;
    Ok(())
}
