//! Etags (AIP-154): `Contact.etag` changes on every write of the contact, ingestion's
//! suppression and unsubscription included; UpdateContact and DeleteContact with a
//! stale etag are ABORTED (`ETAG_MISMATCH`) and change nothing.

use kraiter_contacts::api::pb;
use pb::record_send_request::Recipient;
use pb::track_event_request::Subject;
use serde_json::json;
use tonic::Code;

use crate::conformance;
use crate::support::{Backend, Client, assert_status, create, json_of, props, spawn_app};

async fn get(client: &mut Client, id: &str) -> pb::Contact {
    client
        .get_contact(pb::GetContactRequest { id: id.to_owned() })
        .await
        .expect("get")
        .into_inner()
}

fn set(id: &str, etag: &str, value: serde_json::Value) -> pb::UpdateContactRequest {
    pb::UpdateContactRequest {
        id: id.to_owned(),
        properties: Some(props(value)),
        etag: etag.to_owned(),
        ..Default::default()
    }
}

async fn the_etag_changes_on_every_write_and_only_then(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let created = create(&mut client, "etag@example.com", json!({})).await;
    assert!(!created.etag.is_empty(), "a new contact has an etag");
    assert_eq!(get(&mut client, &created.id).await.etag, created.etag);

    let mut seen = vec![created.etag.clone()];
    let updated = client
        .update_contact(set(&created.id, "", json!({"a": 1})))
        .await
        .expect("update")
        .into_inner();
    seen.push(updated.etag.clone());
    let unchanged = client
        .update_contact(set(&created.id, "", json!({"a": 1})))
        .await
        .expect("an update that changes nothing")
        .into_inner();
    assert_eq!(unchanged.etag, updated.etag, "no write, same etag");

    // Suppression by a bounce, through ActivityService.
    let send = activity
        .record_send(pb::RecordSendRequest {
            recipient: Some(Recipient::ContactId(created.id.clone())),
            template_id: "t".into(),
            source: pb::SendSource::Transactional as i32,
            ..Default::default()
        })
        .await
        .expect("send")
        .into_inner();
    for status in [pb::SendStatus::Sent, pb::SendStatus::Bounced] {
        activity
            .update_send_status(pb::UpdateSendStatusRequest {
                send_id: send.id.clone(),
                status: status as i32,
                ..Default::default()
            })
            .await
            .expect("status");
    }
    let suppressed = get(&mut client, &created.id).await;
    assert!(suppressed.suppressed);
    seen.push(suppressed.etag.clone());

    // Unsubscription by an event.
    activity
        .track_event(pb::TrackEventRequest {
            subject: Some(Subject::ContactId(created.id.clone())),
            name: "email.unsubscribed".into(),
            ..Default::default()
        })
        .await
        .expect("unsubscribe");
    let unsubscribed = get(&mut client, &created.id).await;
    assert!(unsubscribed.unsubscribed);
    seen.push(unsubscribed.etag.clone());

    let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "every write, a new etag: {seen:?}"
    );

    // The etag of the suppression is stale for an update now.
    let stale = client
        .update_contact(set(&created.id, &suppressed.etag, json!({"b": 2})))
        .await;
    assert_status(
        stale,
        Code::Aborted,
        "ETAG_MISMATCH",
        "etag before unsubscribe",
    );
}

async fn a_stale_etag_is_aborted_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let v1 = create(&mut client, "stale@example.com", json!({"v": 1})).await;
    let v2 = client
        .update_contact(set(&v1.id, &v1.etag, json!({"v": 2})))
        .await
        .expect("the current etag is accepted")
        .into_inner();
    let stale_update = client
        .update_contact(set(&v1.id, &v1.etag, json!({"v": 3})))
        .await;
    assert_status(stale_update, Code::Aborted, "ETAG_MISMATCH", "stale update");
    let stale_delete = client
        .delete_contact(pb::DeleteContactRequest {
            id: v1.id.clone(),
            etag: v1.etag.clone(),
            ..Default::default()
        })
        .await;
    assert_status(stale_delete, Code::Aborted, "ETAG_MISMATCH", "stale delete");
    let now = get(&mut client, &v1.id).await;
    assert_eq!(now, v2, "neither changed the contact");

    client
        .delete_contact(pb::DeleteContactRequest {
            id: v1.id.clone(),
            etag: v2.etag.clone(),
            ..Default::default()
        })
        .await
        .expect("the current etag deletes");
    let gone = client
        .get_contact(pb::GetContactRequest { id: v1.id.clone() })
        .await;
    assert_status(gone, Code::NotFound, "NOT_FOUND", "after the delete");
}

async fn of_concurrent_updates_with_one_etag_exactly_one_wins(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    for round in 0..3 {
        let contact = create(&mut client, &format!("race{round}@example.com"), json!({})).await;
        let mut tasks = Vec::new();
        for i in 0..10 {
            let mut client = app.client();
            let request = set(&contact.id, &contact.etag, json!({ "winner": i }));
            tasks.push(tokio::spawn(
                async move { client.update_contact(request).await },
            ));
        }
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.expect("task") {
                Ok(response) => winners.push(response.into_inner()),
                Err(status) => {
                    assert_status(
                        Err::<(), _>(status),
                        Code::Aborted,
                        "ETAG_MISMATCH",
                        "a loser",
                    );
                }
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: one update wins");
        let now = get(&mut client, &contact.id).await;
        assert_eq!(
            now, winners[0],
            "round {round}: the winner's write is stored"
        );
        assert_eq!(json_of(&now).as_object().map(|o| o.len()), Some(1));
    }
}

async fn an_etag_this_service_never_returned_is_invalid_argument(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let contact = create(&mut client, "garbage@example.com", json!({})).await;
    for etag in ["W/\"1\"", "1", "r-1", "r", "r1x"] {
        let update = client
            .update_contact(set(&contact.id, etag, json!({"a": 1})))
            .await;
        let status = assert_status(update, Code::InvalidArgument, "VALIDATION_ERROR", etag);
        assert!(status.message().contains("etag"), "{etag}: {status:?}");
        let delete = client
            .delete_contact(pb::DeleteContactRequest {
                id: contact.id.clone(),
                etag: etag.to_owned(),
                ..Default::default()
            })
            .await;
        assert_status(delete, Code::InvalidArgument, "VALIDATION_ERROR", etag);
    }
    assert_eq!(get(&mut client, &contact.id).await, contact, "unchanged");
}

async fn a_retried_conditional_update_replays_instead_of_aborting(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let contact = create(&mut client, "replay@example.com", json!({})).await;
    let mut request = set(&contact.id, &contact.etag, json!({"a": 1}));
    request.request_id = format!("req-{}", ulid::Ulid::new());
    let first = client
        .update_contact(request.clone())
        .await
        .expect("first")
        .into_inner();
    // The etag in the request is stale now, but the retry is the same request.
    let retried = client
        .update_contact(request)
        .await
        .expect("the retry gets the first answer, not ABORTED")
        .into_inner();
    assert_eq!(retried, first);
}

conformance!(
    the_etag_changes_on_every_write_and_only_then,
    a_stale_etag_is_aborted_and_changes_nothing,
    of_concurrent_updates_with_one_etag_exactly_one_wins,
    an_etag_this_service_never_returned_is_invalid_argument,
    a_retried_conditional_update_replays_instead_of_aborting,
);
