//! Request ids (AIP-155) on the contact writes: CreateContact, UpdateContact,
//! DeleteContact and UpsertContact. A retry with the same id gets the first answer
//! and writes nothing again, also when it runs concurrently with the first; the same
//! id with another request is INVALID_ARGUMENT.

use kraiter_contacts::api::pb;
use serde_json::json;
use tonic::Code;

use crate::conformance;
use crate::support::{
    Backend, Client, TestApp, assert_status, json_of, props, spawn_app, timeline,
};

fn request_id() -> String {
    format!("req-{}", ulid::Ulid::new())
}

fn create_request(request_id: &str, email: &str) -> pb::CreateContactRequest {
    pb::CreateContactRequest {
        email: email.to_owned(),
        properties: Some(props(json!({"plan": "free"}))),
        request_id: request_id.to_owned(),
    }
}

async fn entries(client: &mut Client, id: &str) -> usize {
    let request = pb::ListContactTimelineRequest {
        id: id.to_owned(),
        ..Default::default()
    };
    let pages = timeline(client, request).await;
    pages.iter().map(|page| page.entries.len()).sum()
}

async fn contacts(app: &TestApp) -> usize {
    let mut client = app.client();
    let pages = crate::support::pages(&mut client, pb::ListContactsRequest::default()).await;
    pages.iter().map(|page| page.contacts.len()).sum()
}

async fn a_retried_create_returns_the_contact_not_already_exists(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let id = request_id();
    let request = create_request(&id, "retry@example.com");
    let first = client
        .create_contact(request.clone())
        .await
        .expect("create")
        .into_inner();
    // Changed since: the retry still answers with what the first attempt returned.
    client
        .update_contact(pb::UpdateContactRequest {
            id: first.id.clone(),
            properties: Some(props(json!({"plan": "pro"}))),
            ..Default::default()
        })
        .await
        .expect("update");
    let retried = client
        .create_contact(request)
        .await
        .expect("the retry succeeds")
        .into_inner();
    assert_eq!(retried, first, "the first answer, byte for byte");
    assert_eq!(contacts(&app).await, 1);
    assert_eq!(entries(&mut client, &first.id).await, 2, "created, updated");

    // Without a request id, the same create is a conflict, as before.
    let plain = client
        .create_contact(create_request("", "retry@example.com"))
        .await;
    assert_status(
        plain,
        Code::AlreadyExists,
        "CONFLICT",
        "create without an id",
    );
}

async fn concurrent_retries_of_each_write_land_once(backend: Backend) {
    let app = spawn_app(backend).await;
    // Creates.
    let id = request_id();
    let request = create_request(&id, "concurrent@example.com");
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (mut client, request) = (app.client(), request.clone());
        tasks.push(tokio::spawn(
            async move { client.create_contact(request).await },
        ));
    }
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let contact = task.await.expect("task").expect("every retry succeeds");
        ids.insert(contact.into_inner().id);
    }
    assert_eq!(ids.len(), 1, "one contact for every retry");
    let contact_id = ids.into_iter().next().expect("an id");

    // Upserts (a counter shows a second application).
    let upsert = pb::UpsertContactRequest {
        email: "concurrent@example.com".into(),
        properties: Some(props(json!({"seen": 1}))),
        request_id: request_id(),
    };
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (mut client, request) = (app.client(), upsert.clone());
        tasks.push(tokio::spawn(
            async move { client.upsert_contact(request).await },
        ));
    }
    let mut etags = std::collections::BTreeSet::new();
    for task in tasks {
        let response = task.await.expect("task").expect("upsert").into_inner();
        assert!(!response.created);
        etags.insert(response.contact.expect("contact").etag);
    }
    assert_eq!(etags.len(), 1, "one answer for every retry: {etags:?}");

    // Updates.
    let update = pb::UpdateContactRequest {
        id: contact_id.clone(),
        properties: Some(props(json!({"plan": "pro"}))),
        request_id: request_id(),
        ..Default::default()
    };
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (mut client, request) = (app.client(), update.clone());
        tasks.push(tokio::spawn(
            async move { client.update_contact(request).await },
        ));
    }
    for task in tasks {
        task.await.expect("task").expect("update");
    }
    let mut client = app.client();
    assert_eq!(
        entries(&mut client, &contact_id).await,
        3,
        "created, updated by the upsert, updated: each once"
    );
    assert_eq!(contacts(&app).await, 1);
}

async fn a_retried_update_answers_as_the_first_even_after_later_writes(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let contact = client
        .create_contact(create_request("", "later@example.com"))
        .await
        .expect("create")
        .into_inner();
    let update = pb::UpdateContactRequest {
        id: contact.id.clone(),
        properties: Some(props(json!({"plan": "pro"}))),
        request_id: request_id(),
        ..Default::default()
    };
    let first = client
        .update_contact(update.clone())
        .await
        .expect("update")
        .into_inner();
    client
        .update_contact(pb::UpdateContactRequest {
            id: contact.id.clone(),
            properties: Some(props(json!({"plan": "team"}))),
            ..Default::default()
        })
        .await
        .expect("a later update");
    let retried = client
        .update_contact(update)
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retried, first, "the first answer");
    let now = client
        .get_contact(pb::GetContactRequest {
            id: contact.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        json_of(&now),
        json!({"plan": "team"}),
        "the retry wrote nothing"
    );
}

async fn a_request_id_reused_for_another_request_is_invalid_argument(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let id = request_id();
    let contact = client
        .create_contact(create_request(&id, "reuse@example.com"))
        .await
        .expect("create")
        .into_inner();
    let other_create = client
        .create_contact(create_request(&id, "other@example.com"))
        .await;
    let other_update = client
        .update_contact(pb::UpdateContactRequest {
            id: contact.id.clone(),
            request_id: id.clone(),
            ..Default::default()
        })
        .await;
    let other_delete = client
        .delete_contact(pb::DeleteContactRequest {
            id: contact.id.clone(),
            request_id: id.clone(),
            ..Default::default()
        })
        .await;
    let other_upsert = client
        .upsert_contact(pb::UpsertContactRequest {
            email: "reuse@example.com".into(),
            request_id: id.clone(),
            ..Default::default()
        })
        .await;
    for (what, result) in [
        ("create", other_create.map(drop)),
        ("update", other_update.map(drop)),
        ("delete", other_delete.map(drop)),
        ("upsert", other_upsert.map(drop)),
    ] {
        let status = assert_status(result, Code::InvalidArgument, "VALIDATION_ERROR", what);
        assert!(
            status.message().contains("request_id"),
            "{what}: {status:?}"
        );
    }
    assert_eq!(contacts(&app).await, 1, "nothing was written");
}

async fn a_retried_delete_answers_as_the_first_and_a_late_create_retry_recreates_nobody(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let create = create_request(&request_id(), "erase@example.com");
    let contact = client
        .create_contact(create.clone())
        .await
        .expect("create")
        .into_inner();
    let delete = pb::DeleteContactRequest {
        id: contact.id.clone(),
        request_id: request_id(),
        ..Default::default()
    };
    let first = client
        .delete_contact(delete.clone())
        .await
        .expect("delete")
        .into_inner();
    let retried = client
        .delete_contact(delete)
        .await
        .expect("a retried delete succeeds as the first did")
        .into_inner();
    assert_eq!(retried, first);
    let plain = client
        .delete_contact(pb::DeleteContactRequest {
            id: contact.id.clone(),
            ..Default::default()
        })
        .await;
    assert_status(plain, Code::NotFound, "NOT_FOUND", "a new delete");
    // The create's request id went with the contact; its retry is refused.
    let late = client.create_contact(create).await;
    assert_status(
        late,
        Code::NotFound,
        "NOT_FOUND",
        "create retried after erasure",
    );
    assert_eq!(contacts(&app).await, 0, "nobody was created again");
}

conformance!(
    a_retried_create_returns_the_contact_not_already_exists,
    concurrent_retries_of_each_write_land_once,
    a_retried_update_answers_as_the_first_even_after_later_writes,
    a_request_id_reused_for_another_request_is_invalid_argument,
    a_retried_delete_answers_as_the_first_and_a_late_create_retry_recreates_nobody,
);
