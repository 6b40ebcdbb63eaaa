//! Generates the echo server's ContactsService from the contract, as the service's
//! build.rs generates its own: the unary contact calls answer with messages whose
//! `properties` are already encoded (`src/echo.rs`, like the service's `api::wire`),
//! every other message is the library's generated `pb` type. The echo baseline then
//! runs the same generated server code, with the same encoding cost, as the service.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    // SAFETY of intent: build scripts run single-threaded, and prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=../proto");

    let mut server = tonic_prost_build::configure()
        .build_client(false)
        .extern_path(".kraiter.contacts.v1", "::kraiter_contacts::api::pb")
        .extern_path(".google.rpc", "::tonic_types::pb");
    // The messages the service's build.rs maps to `api::wire` (which is not public).
    for message in [
        "Contact",
        "GetContactByEmailResponse",
        "ListContactsResponse",
        "UpsertContactResponse",
        "BatchGetContactsResponse",
    ] {
        server = server.extern_path(
            format!(".kraiter.contacts.v1.{message}"),
            format!("crate::echo::{message}"),
        );
    }
    server.compile_protos(
        &[PathBuf::from(
            "../proto/kraiter/contacts/v1/contacts_service.proto",
        )],
        &[PathBuf::from("../proto"), include],
    )?;
    Ok(())
}
