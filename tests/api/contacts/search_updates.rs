//! Search after writes: a search finds a contact by what it holds now, never by what
//! it held, and once, through every write path (updates of properties and email,
//! imports, upserts), on both backends. (They also guard any index that keeps old
//! values around, as the search rows measured in BENCHMARKS.md, "Search rows", do.)

use kraiter_contacts::api::pb;
use serde_json::json;

use crate::conformance;
use crate::support::imports::{batch, import, row};
use crate::support::{Backend, Client, create, pages, props, spawn_app};

/// The ids a full search stream delivers, each as often as it came.
async fn found(client: &mut Client, term: &str) -> Vec<String> {
    let request = pb::ListContactsRequest {
        search: term.to_owned(),
        limit: 5,
        ..Default::default()
    };
    pages(client, request)
        .await
        .into_iter()
        .flat_map(|page| page.contacts)
        .map(|contact| contact.id)
        .collect()
}

async fn counted(client: &mut Client, term: &str) -> i64 {
    client
        .count_contacts(pb::CountContactsRequest {
            search: term.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("count {term}: {status:?}"))
        .into_inner()
        .count
}

/// `term` finds exactly `ids` (in id order, once each), and counts as many.
async fn assert_finds(client: &mut Client, term: &str, ids: &[&str]) {
    let mut expected: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    expected.sort();
    assert_eq!(found(client, term).await, expected, "search {term:?}");
    assert_eq!(
        counted(client, term).await,
        expected.len() as i64,
        "count of {term:?}"
    );
}

async fn update(client: &mut Client, id: &str, email: Option<&str>, properties: serde_json::Value) {
    client
        .update_contact(pb::UpdateContactRequest {
            id: id.to_owned(),
            email: email.map(str::to_owned),
            properties: Some(props(properties)),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("update {id}: {status:?}"));
}

async fn search_finds_a_contact_by_what_it_holds_now(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let alice = create(
        &mut client,
        "alice@oldmail.example.com",
        json!({"city": "Oldtown", "plan": "Basicplan"}),
    )
    .await;
    let bob = create(
        &mut client,
        "bob@example.com",
        json!({"city": "Newvillage"}),
    )
    .await;
    update(
        &mut client,
        &alice.id,
        Some("alice@freshmail.example.com"),
        json!({"city": "Newville", "plan": null}),
    )
    .await;
    assert_finds(&mut client, "oldtown", &[]).await;
    assert_finds(&mut client, "basicplan", &[]).await;
    assert_finds(&mut client, "oldmail", &[]).await;
    assert_finds(&mut client, "newville", &[&alice.id]).await;
    assert_finds(&mut client, "newvill", &[&alice.id, &bob.id]).await;
    assert_finds(&mut client, "freshmail", &[&alice.id]).await;
    assert_finds(&mut client, "alice@", &[&alice.id]).await;
}

async fn a_value_that_comes_back_is_found_again_and_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let carol = create(
        &mut client,
        "carol@example.com",
        json!({"tier": "Goldtier"}),
    )
    .await;
    update(&mut client, &carol.id, None, json!({"tier": "Silvertier"})).await;
    update(&mut client, &carol.id, None, json!({"tier": "Goldtier"})).await;
    assert_finds(&mut client, "goldtier", &[&carol.id]).await;
    assert_finds(&mut client, "silvertier", &[]).await;
    // All three of her values held `tier`; she is one contact.
    assert_finds(&mut client, "tier", &[&carol.id]).await;
}

async fn a_contact_updated_often_is_found_by_its_last_values_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let dave = create(&mut client, "dave@example.com", json!({"step": "stepnone"})).await;
    let erin = create(&mut client, "erin@example.com", json!({"step": "stepkept"})).await;
    for i in 0..20 {
        update(
            &mut client,
            &dave.id,
            None,
            json!({"step": format!("step{i:02}x"), (format!("k{i}")): format!("key{i:02}y")}),
        )
        .await;
    }
    assert_finds(&mut client, "step19x", &[&dave.id]).await;
    assert_finds(&mut client, "step05x", &[]).await;
    assert_finds(&mut client, "stepnone", &[]).await;
    // Keys are only ever added: all twenty values are his now.
    assert_finds(&mut client, "key00y", &[&dave.id]).await;
    assert_finds(&mut client, "key19y", &[&dave.id]).await;
    assert_finds(&mut client, "step", &[&dave.id, &erin.id]).await;
    assert_finds(&mut client, "stepkept", &[&erin.id]).await;
}

async fn imports_and_upserts_change_what_search_finds(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let frank = create(&mut client, "frank@example.com", json!({"team": "Redteam"})).await;
    let grace = create(&mut client, "grace@example.com", json!({"team": "Redteam"})).await;
    import(
        &mut client,
        vec![batch(
            pb::ImportMode::Upsert,
            vec![
                row("frank@example.com", json!({"team": "Blueteam"})),
                row("henry@example.com", json!({"team": "Blueteam"})),
            ],
        )],
    )
    .await
    .expect("import");
    let henry = client
        .get_contact_by_email(pb::GetContactByEmailRequest {
            email: "henry@example.com".into(),
        })
        .await
        .expect("henry was imported")
        .into_inner()
        .contact
        .expect("a contact");
    client
        .upsert_contact(pb::UpsertContactRequest {
            email: "grace@example.com".into(),
            properties: Some(props(json!({"team": "Greenteam"}))),
            ..Default::default()
        })
        .await
        .expect("upsert");
    assert_finds(&mut client, "redteam", &[]).await;
    assert_finds(&mut client, "blueteam", &[&frank.id, &henry.id]).await;
    assert_finds(&mut client, "greenteam", &[&grace.id]).await;
}

conformance!(
    search_finds_a_contact_by_what_it_holds_now,
    a_value_that_comes_back_is_found_again_and_once,
    a_contact_updated_often_is_found_by_its_last_values_only,
    imports_and_upserts_change_what_search_finds,
);
