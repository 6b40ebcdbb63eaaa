//! Response compression follows `--response-compression`: by default only a client
//! that compressed its own request gets a compressed answer, not one that merely
//! accepts compression (grpc-js accepts gzip on every call, unasked).

use kraiter_contacts::api::pb;
use kraiter_contacts::api::pb::contacts_service_client::ContactsServiceClient;
use kraiter_contacts::config::ResponseCompression;
use tonic::codec::CompressionEncoding;

use crate::support::{Backend, TestApp, create, spawn_app_with};

/// The `grpc-encoding` of the answer to a GetContact by a client that accepts gzip
/// and, with `compress`, gzips its request.
async fn answer_encoding(app: &TestApp, id: &str, compress: bool) -> Option<String> {
    let mut client = ContactsServiceClient::new(app.channel.clone())
        .accept_compressed(CompressionEncoding::Gzip);
    if compress {
        client = client.send_compressed(CompressionEncoding::Gzip);
    }
    let mut request = tonic::Request::new(pb::GetContactRequest { id: id.to_owned() });
    let value = format!("Bearer {}", app.key).parse().expect("metadata");
    request.metadata_mut().insert("authorization", value);
    let response = client.get_contact(request).await.expect("get");
    assert_eq!(response.get_ref().id, id, "the answer decodes either way");
    response
        .metadata()
        .get("grpc-encoding")
        .map(|value| value.to_str().expect("ascii").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_compressed_as_the_policy_says() {
    let cases = [
        (ResponseCompression::WhenCompressed, [None, Some("gzip")]),
        (ResponseCompression::Always, [Some("gzip"), Some("gzip")]),
        (ResponseCompression::Never, [None, None]),
    ];
    for (policy, [accepting, compressing]) in cases {
        let app = spawn_app_with(Backend::Sqlite, |args| {
            args.limits.response_compression = policy;
        })
        .await;
        let mut client = app.client();
        let big = serde_json::json!({"notes": "compressible ".repeat(500)});
        let id = create(&mut client, "zip@example.com", big).await.id;
        assert_eq!(
            answer_encoding(&app, &id, false).await.as_deref(),
            accepting,
            "{policy:?}: a client that only accepts gzip"
        );
        assert_eq!(
            answer_encoding(&app, &id, true).await.as_deref(),
            compressing,
            "{policy:?}: a client that gzips its request"
        );
    }
}
