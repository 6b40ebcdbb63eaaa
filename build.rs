//! Compiles the contract in `proto/` with a vendored `protoc`, so a build needs no
//! protobuf toolchain on the machine, and emits the descriptor set served by reflection.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use tonic_prost_build::Config;

fn main() -> anyhow::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    // Both passes get the vendored protoc through their config, not the `PROTOC`
    // variable (setting it is `unsafe` since edition 2024).
    let config = || {
        let mut config = Config::new();
        config.protoc_executable(&protoc);
        config
    };

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    embed_migrations(&out_dir)?;
    let protos: Vec<PathBuf> = std::fs::read_dir("proto/kraiter/contacts/v1")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    println!("cargo:rerun-if-changed=proto");

    let includes = [PathBuf::from("proto"), include];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("kraiter_contacts_descriptor.bin"))
        .extern_path(".google.rpc", "::tonic_types::pb")
        .compile_with_config(config(), &protos, &includes)?;

    // The ContactsService server once more, answering with the server's own encoding of
    // the messages that carry a Contact (`src/api/wire.rs`: properties pre-encoded), and
    // the generated messages for the rest. Same wire format; clients are unaffected.
    // (The first pass still emits `pb::contacts_service_server`, since tonic-prost-build
    // builds servers per run, not per service; nothing serves it.)
    let server_dir = out_dir.join("server");
    std::fs::create_dir_all(&server_dir)?;
    let mut server = tonic_prost_build::configure()
        .build_client(false)
        .out_dir(&server_dir)
        .extern_path(".kraiter.contacts.v1", "crate::api::pb")
        .extern_path(".google.rpc", "::tonic_types::pb");
    for message in [
        "Contact",
        "GetContactByEmailResponse",
        "ListContactsResponse",
        "UpsertContactResponse",
        "BatchGetContactsResponse",
        "ContactChange",
    ] {
        server = server.extern_path(
            format!(".kraiter.contacts.v1.{message}"),
            format!("crate::api::wire::{message}"),
        );
    }
    server.compile_with_config(
        config(),
        &[PathBuf::from(
            "proto/kraiter/contacts/v1/contacts_service.proto",
        )],
        &includes,
    )?;
    Ok(())
}

/// Lists `migrations/<backend>/NNNN_description.sql` into `OUT_DIR/migrations.rs`, so
/// every file there is embedded and run (`src/store/migrations.rs`) and none can be
/// forgotten. sqlx's own `migrate!` would do the same, at the price of its macros
/// feature, which builds both database drivers once more for the compiler.
fn embed_migrations(out_dir: &std::path::Path) -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=migrations");
    let mut code = String::new();
    for (name, dir) in [
        ("POSTGRES", "migrations/postgres"),
        ("SQLITE", "migrations/sqlite"),
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.retain(|path| path.extension().is_some_and(|ext| ext == "sql"));
        files.sort();
        code.push_str(&format!("pub const {name}: &[Script] = &[\n"));
        for path in files {
            let stem = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .ok_or_else(|| anyhow::anyhow!("migration file name is not UTF-8"))?;
            let (version, description) = stem
                .split_once('_')
                .ok_or_else(|| anyhow::anyhow!("`{stem}` is not NNNN_description.sql"))?;
            let version: i64 = version.parse()?;
            let description = description.replace('_', " ");
            let path = std::fs::canonicalize(&path)?;
            code.push_str(&format!(
                "    ({version}, {description:?}, include_str!({:?})),\n",
                path.display().to_string()
            ));
        }
        code.push_str("];\n");
    }
    std::fs::write(out_dir.join("migrations.rs"), code)?;
    Ok(())
}
