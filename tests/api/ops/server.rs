//! Health, reflection, the CLI's key commands, and the embedded first start.

use std::process::Command;

use kraiter_contacts::api::pb;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::conformance;
use crate::support::{Backend, spawn_app};

async fn health_reports_serving_without_a_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut health = HealthClient::new(app.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "kraiter.contacts.v1.ContactsService".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    // Watch instead of polling: the first SERVING arrives once the database answered.
    loop {
        let update = watch.next().await.expect("an update").expect("ok");
        if update.status == ServingStatus::Serving as i32 {
            break;
        }
    }
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("check")
        .into_inner();
    assert_eq!(status.status, ServingStatus::Serving as i32);
}

async fn reflection_lists_and_describes_the_services_without_a_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut reflection = ServerReflectionClient::new(app.channel.clone());
    let requests = tokio_stream::iter(vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "kraiter.contacts.v1.ContactsService".into(),
            )),
        },
    ]);
    let mut responses = reflection
        .server_reflection_info(requests)
        .await
        .expect("reflection")
        .into_inner();
    let listed = responses.next().await.expect("list response").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("unexpected {listed:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "kraiter.contacts.v1.ContactsService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    let described = responses.next().await.expect("file response").expect("ok");
    let Some(MessageResponse::FileDescriptorResponse(files)) = described.message_response else {
        panic!("unexpected {described:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

async fn compressed_calls_work(backend: Backend) {
    use tonic::codec::CompressionEncoding;
    let app = spawn_app(backend).await;
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client = app
            .client()
            .send_compressed(encoding)
            .accept_compressed(encoding);
        let email = format!("zip-{encoding:?}@example.com").to_lowercase();
        let contact = client
            .create_contact(pb::CreateContactRequest {
                email: email.clone(),
                properties: None,
                ..Default::default()
            })
            .await
            .expect("compressed create")
            .into_inner();
        assert_eq!(contact.email, email);
    }
}

conformance!(
    health_reports_serving_without_a_key,
    reflection_lists_and_describes_the_services_without_a_key,
    compressed_calls_work,
);

fn cli(database_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kraiter-contacts"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env_remove("RUST_LOG")
        .output()
        .expect("run kraiter-contacts")
}

#[test]
fn keys_create_prints_the_key_alone_and_list_and_revoke_manage_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/cli.db", dir.path().display());
    let created = cli(&url, &["keys", "create", "--tenant", "acme"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let stdout = String::from_utf8(created.stdout).expect("utf-8");
    let key = stdout.trim_end();
    assert!(
        key.starts_with("kr_") && !key.contains(char::is_whitespace),
        "stdout is the key alone: {stdout:?}"
    );
    let listed = cli(&url, &["keys", "list", "--tenant", "acme"]);
    let listing = String::from_utf8(listed.stdout).expect("utf-8");
    assert!(!listing.contains(key), "list never shows secrets");
    let key_id = listing
        .lines()
        .find(|line| line.contains("acme") && line.contains("active"))
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("an active key in {listing}"));
    let revoked = cli(&url, &["keys", "revoke", key_id]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let listing = String::from_utf8(cli(&url, &["keys", "list"]).stdout).expect("utf-8");
    assert!(listing.contains("revoked"), "{listing}");
    let again = cli(&url, &["keys", "revoke", key_id]);
    assert!(!again.status.success(), "revoking twice fails");
    let bad = cli(&url, &["keys", "create", "--tenant", "Not Valid"]);
    assert!(!bad.status.success(), "invalid tenant names are refused");
}
