//! ImportContacts streams as the tests drive them: rows and batches, an import read
//! to its end or fed one batch at a time, its outcomes, and a wait for its end.

use kraiter_contacts::api::pb;
use serde_json::Value;
use tonic::Status;

use super::wait::{PATIENCE, eventually};
use super::{Client, TestApp, props};

pub fn row(email: &str, properties: Value) -> pb::ImportRow {
    pb::ImportRow {
        email: email.to_owned(),
        properties: Some(props(properties)),
    }
}

pub fn batch(mode: pb::ImportMode, rows: Vec<pb::ImportRow>) -> pb::ImportContactsRequest {
    pb::ImportContactsRequest {
        rows,
        mode: mode as i32,
    }
}

/// Sends `batches` on one import and reads every response.
pub async fn import(
    client: &mut Client,
    batches: Vec<pb::ImportContactsRequest>,
) -> Result<Vec<pb::ImportContactsResponse>, Status> {
    let mut responses = client
        .import_contacts(tokio_stream::iter(batches))
        .await?
        .into_inner();
    let mut all = Vec::new();
    while let Some(response) = responses.message().await? {
        all.push(response);
    }
    Ok(all)
}

/// An import whose batches the test sends one at a time (`capacity` may wait unread),
/// and its response stream.
pub async fn open_import(
    client: &mut Client,
    capacity: usize,
) -> (
    tokio::sync::mpsc::Sender<pb::ImportContactsRequest>,
    tonic::Streaming<pb::ImportContactsResponse>,
) {
    let (requests, received) = tokio::sync::mpsc::channel(capacity);
    let responses = client
        .import_contacts(tokio_stream::wrappers::ReceiverStream::new(received))
        .await
        .expect("the import starts")
        .into_inner();
    (requests, responses)
}

pub fn outcomes(responses: &[pb::ImportContactsResponse]) -> Vec<pb::ImportOutcome> {
    responses
        .iter()
        .flat_map(|r| &r.results)
        .map(|r| pb::ImportOutcome::try_from(r.outcome).expect("a known outcome"))
        .collect()
}

/// Waits until the app's import has ended: its tenant's one stream is free again.
/// The probe that finds it free is read to its end, which gives its own place back
/// before the end arrives, so the caller's next stream finds the place free too.
pub async fn import_ended(app: &TestApp) {
    let other = app.client();
    eventually(
        PATIENCE,
        "the import ends when its client goes away",
        || {
            let mut other = other.clone();
            async move {
                let request = pb::ListContactsRequest {
                    limit: 1,
                    max_pages: 1,
                    ..Default::default()
                };
                let mut probe = other.list_contacts(request).await.ok()?.into_inner();
                while probe.message().await.expect("the probe's pages").is_some() {}
                Some(())
            }
        },
    )
    .await;
}
