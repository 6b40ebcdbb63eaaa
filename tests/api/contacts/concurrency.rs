use kraiter_contacts::api::pb;
use serde_json::{Value, json};
use tonic::Code;

use crate::conformance;
use crate::support::{Backend, create, json_of, props, spawn_app};

async fn concurrent_creates_of_one_email_let_exactly_one_succeed(backend: Backend) {
    let app = spawn_app(backend).await;
    for round in 0..5 {
        let email = format!("race{round}@example.com");
        let mut tasks = Vec::new();
        for i in 0..16 {
            let mut client = app.client();
            // Mixed case: the race is on the case-folded key.
            let spelled = if i % 2 == 0 {
                email.clone()
            } else {
                email.to_uppercase()
            };
            tasks.push(tokio::spawn(async move {
                client
                    .create_contact(pb::CreateContactRequest {
                        email: spelled,
                        properties: None,
                        ..Default::default()
                    })
                    .await
            }));
        }
        let mut ok = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(_) => ok += 1,
                Err(status) => assert_eq!(status.code(), Code::AlreadyExists, "{status:?}"),
            }
        }
        assert_eq!(ok, 1, "round {round}: exactly one create wins");
    }
}

async fn concurrent_merges_of_different_keys_all_survive(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let contact = create(&mut client, "merge@example.com", json!({"base": true})).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let mut client = app.client();
        let id = contact.id.clone();
        tasks.push(tokio::spawn(async move {
            client
                .update_contact(pb::UpdateContactRequest {
                    id,
                    email: None,
                    properties: Some(props(json!({ format!("k{i}"): i }))),
                    ..Default::default()
                })
                .await
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("update succeeds");
    }
    let fetched = client
        .get_contact(pb::GetContactRequest {
            id: contact.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    let props = json_of(&fetched);
    let object = props.as_object().expect("object");
    assert_eq!(object.len(), 41, "no lost update: {props}");
    for i in 0..40 {
        assert_eq!(object.get(&format!("k{i}")), Some(&Value::from(i)));
    }
    // Every update left its timeline entry.
    let mut stream = client
        .list_contact_timeline(pb::ListContactTimelineRequest {
            id: contact.id,
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("timeline")
        .into_inner();
    let mut updates = 0;
    while let Some(page) = stream.message().await.expect("page") {
        updates += page
            .entries
            .iter()
            .filter(|e| e.r#type == "contact.updated")
            .count();
    }
    assert_eq!(updates, 40);
}

conformance!(
    concurrent_creates_of_one_email_let_exactly_one_succeed,
    concurrent_merges_of_different_keys_all_survive,
);
