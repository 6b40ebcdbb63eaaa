//! Typed filters (issue 16): every operator on every type of field, nesting, nulls and
//! missing keys, type mismatches, counts equal to lists, tenants. Each case states
//! the contacts it expects, and the domain's reference semantics must agree.

use std::collections::BTreeSet;

use kraiter_contacts::api::pb::{self, ContactOrder, FilterOperator as Op};
use serde_json::json;

use super::filter_calls::{
    all, among, any, at, bare, cond, count, emails, list, reference, suppress, unsubscribe,
};
use crate::conformance;
use crate::support::{Backend, Client, create, spawn_app};

/// Six contacts whose properties cover each type, nesting, a nested null (a top-level
/// null is not stored), a missing key and
/// a value of the "wrong" type; `bob` is suppressed and `frank` unsubscribed.
async fn seed(client: &mut Client, activity: &mut crate::support::Activity) -> Vec<pb::Contact> {
    let rows = [
        (
            "alice@example.com",
            json!({"plan": "pro", "seats": 5, "score": 1.5, "active": true, "tags": ["a"],
                   "address": {"city": "Paris", "zip": "75001"}, "meta": {"gone": null}}),
        ),
        (
            "bob@example.com",
            json!({"plan": "free", "seats": 1, "active": false, "address": {"city": "berlin"}}),
        ),
        (
            "carol@example.org",
            json!({"plan": "Pro", "seats": "5", "nick": "CaRoL"}),
        ),
        ("dave@example.net", json!({})),
        ("Eve@Example.com", json!({"plan": 5, "address": "Paris"})),
        (
            "frank@example.com",
            json!({"plan": "pro", "seats": 12, "score": 10, "active": true}),
        ),
    ];
    let mut contacts = Vec::new();
    for (email, properties) in rows {
        contacts.push(create(client, email, properties).await);
    }
    suppress(activity, &contacts[1].id).await;
    unsubscribe(activity, &contacts[5].id).await;
    contacts
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names
        .iter()
        .map(|name| {
            let domain = match *name {
                "carol" => "example.org",
                "dave" => "example.net",
                _ => "example.com",
            };
            format!("{name}@{domain}")
        })
        .collect()
}

fn cases(seeded: &[pb::Contact]) -> Vec<(&'static str, pb::ContactFilter, Vec<&'static str>)> {
    let created = |i: usize| seeded[i].created_at.expect("created_at");
    let far = prost_types::Timestamp {
        seconds: 4_000_000_000,
        nanos: 0,
    };
    vec![
        (
            "string equals is exact",
            cond("properties.plan", Op::Equals, json!("pro")),
            vec!["alice", "frank"],
        ),
        (
            "string equals keeps case",
            cond("properties.plan", Op::Equals, json!("Pro")),
            vec!["carol"],
        ),
        (
            "number equals matches only numbers",
            cond("properties.plan", Op::Equals, json!(5)),
            vec!["eve"],
        ),
        (
            "integer equals a float",
            cond("properties.seats", Op::Equals, json!(5.0)),
            vec!["alice"],
        ),
        (
            "not equals skips missing and mismatched",
            cond("properties.plan", Op::NotEquals, json!("pro")),
            vec!["bob", "carol"],
        ),
        (
            "greater than on numbers",
            cond("properties.seats", Op::GreaterThan, json!(4)),
            vec!["alice", "frank"],
        ),
        (
            "greater or equal",
            cond("properties.seats", Op::GreaterThanOrEqual, json!(12)),
            vec!["frank"],
        ),
        (
            "less than",
            cond("properties.seats", Op::LessThan, json!(5)),
            vec!["bob"],
        ),
        (
            "less or equal on a float",
            cond("properties.score", Op::LessThanOrEqual, json!(1.5)),
            vec!["alice"],
        ),
        (
            "strings order by code point",
            cond("properties.plan", Op::LessThan, json!("pro")),
            vec!["bob", "carol"],
        ),
        (
            "string at or after",
            cond("properties.plan", Op::GreaterThanOrEqual, json!("pro")),
            vec!["alice", "frank"],
        ),
        (
            "boolean equals",
            cond("properties.active", Op::Equals, json!(true)),
            vec!["alice", "frank"],
        ),
        (
            "boolean not equals",
            cond("properties.active", Op::NotEquals, json!(true)),
            vec!["bob"],
        ),
        (
            "null equals only null",
            cond("properties.meta.gone", Op::Equals, json!(null)),
            vec!["alice"],
        ),
        (
            "exists includes null",
            bare("properties.meta.gone", Op::Exists),
            vec!["alice"],
        ),
        (
            "not exists",
            bare("properties.plan", Op::NotExists),
            vec!["dave"],
        ),
        (
            "nested equals",
            cond("properties.address.city", Op::Equals, json!("Paris")),
            vec!["alice"],
        ),
        (
            "nested exists needs an object",
            bare("properties.address.city", Op::Exists),
            vec!["alice", "bob"],
        ),
        (
            "nested not exists",
            bare("properties.address.city", Op::NotExists),
            vec!["carol", "dave", "eve", "frank"],
        ),
        (
            "contains ignores ASCII case",
            cond("properties.address.city", Op::Contains, json!("ARI")),
            vec!["alice"],
        ),
        (
            "starts with ignores case",
            cond("properties.address.city", Op::StartsWith, json!("BER")),
            vec!["bob"],
        ),
        (
            "contains on mixed case",
            cond("properties.nick", Op::Contains, json!("carol")),
            vec!["carol"],
        ),
        (
            "contains skips numbers",
            cond("properties.seats", Op::Contains, json!("5")),
            vec!["carol"],
        ),
        (
            "in mixes types",
            among("properties.plan", vec![json!("free"), json!(5)]),
            vec!["bob", "eve"],
        ),
        (
            "in with one value",
            among("properties.plan", vec![json!("pro")]),
            vec!["alice", "frank"],
        ),
        (
            "an array is no scalar",
            cond("properties.tags", Op::Equals, json!("a")),
            vec![],
        ),
        (
            "a path through a string",
            cond("properties.address.city", Op::Equals, json!("Paris")),
            vec!["alice"],
        ),
        (
            "a deep missing path",
            bare("properties.a.b.c", Op::Exists),
            vec![],
        ),
        (
            "email equals ignores case",
            cond("email", Op::Equals, json!("ALICE@example.com")),
            vec!["alice"],
        ),
        (
            "email not equals",
            cond("email", Op::NotEquals, json!("alice@example.com")),
            vec!["bob", "carol", "dave", "eve", "frank"],
        ),
        (
            "email contains",
            cond("email", Op::Contains, json!("EXAMPLE.COM")),
            vec!["alice", "bob", "eve", "frank"],
        ),
        (
            "email starts with",
            cond("email", Op::StartsWith, json!("EVE")),
            vec!["eve"],
        ),
        (
            "email in",
            among(
                "email",
                vec![json!("bob@example.com"), json!("DAVE@example.net")],
            ),
            vec!["bob", "dave"],
        ),
        (
            "email before",
            cond("email", Op::LessThan, json!("c")),
            vec!["alice", "bob"],
        ),
        (
            "email after",
            cond("email", Op::GreaterThan, json!("e")),
            vec!["eve", "frank"],
        ),
        (
            "created after",
            at("created_at", Op::GreaterThan, created(2)),
            vec!["dave", "eve", "frank"],
        ),
        (
            "created at or before",
            at("created_at", Op::LessThanOrEqual, created(2)),
            vec!["alice", "bob", "carol"],
        ),
        (
            "created at",
            at("created_at", Op::Equals, created(3)),
            vec!["dave"],
        ),
        (
            "created not at",
            at("created_at", Op::NotEquals, created(3)),
            vec!["alice", "bob", "carol", "eve", "frank"],
        ),
        (
            "updated before the far future",
            at("updated_at", Op::LessThan, far),
            vec!["alice", "bob", "carol", "dave", "eve", "frank"],
        ),
        (
            "updated at or after the far future",
            at("updated_at", Op::GreaterThanOrEqual, far),
            vec![],
        ),
        (
            "suppressed",
            cond("suppressed", Op::Equals, json!(true)),
            vec!["bob"],
        ),
        (
            "not suppressed",
            cond("suppressed", Op::NotEquals, json!(true)),
            vec!["alice", "carol", "dave", "eve", "frank"],
        ),
        (
            "unsubscribed",
            cond("unsubscribed", Op::Equals, json!(true)),
            vec!["frank"],
        ),
        (
            "any of two alls",
            any(vec![
                all(vec![
                    cond("properties.plan", Op::Equals, json!("pro")),
                    cond("properties.seats", Op::GreaterThan, json!(10)),
                ]),
                cond("email", Op::StartsWith, json!("bob")),
            ]),
            vec!["bob", "frank"],
        ),
        (
            "all with an any and a not exists",
            all(vec![
                any(vec![
                    cond("properties.plan", Op::Equals, json!("pro")),
                    cond("properties.plan", Op::Equals, json!("free")),
                ]),
                bare("properties.score", Op::NotExists),
            ]),
            vec!["bob"],
        ),
        (
            "a missing key inside an any",
            any(vec![
                cond("properties.plan", Op::NotEquals, json!("pro")),
                bare("properties.plan", Op::NotExists),
            ]),
            vec!["bob", "carol", "dave"],
        ),
    ]
}

async fn every_operator_and_type_matches_the_expected_contacts(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let seeded = seed(&mut client, &mut activity).await;
    let stored = list(&mut client, None, ContactOrder::Unspecified, 100).await;
    for (what, filter, expected) in cases(&seeded) {
        let expected = set(&expected);
        // Pages of 2 cross page boundaries with most answers.
        let listed = list(
            &mut client,
            Some(filter.clone()),
            ContactOrder::Unspecified,
            2,
        )
        .await;
        assert_eq!(emails(&listed), expected, "{what}: list");
        let counted = count(&mut client, Some(filter.clone())).await;
        assert_eq!(counted, expected.len() as i64, "{what}: count");
        let by_reference: Vec<_> = stored
            .iter()
            .filter(|c| reference(&filter, c))
            .cloned()
            .collect();
        assert_eq!(
            emails(&by_reference),
            expected,
            "{what}: reference semantics"
        );
    }
}

async fn a_filter_is_anded_with_search_and_suppressed(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    seed(&mut client, &mut activity).await;
    let filter = cond("properties.plan", Op::Equals, json!("pro"));
    let request = pb::ListContactsRequest {
        filter: Some(filter.clone()),
        search: "frank".into(),
        ..Default::default()
    };
    let listed = super::filter_calls::try_list(&mut client, request)
        .await
        .expect("list");
    assert_eq!(emails(&listed), set(&["frank"]), "filter AND search");
    let request = pb::ListContactsRequest {
        filter: Some(cond("properties.active", Op::Equals, json!(false))),
        suppressed: Some(false),
        ..Default::default()
    };
    let listed = super::filter_calls::try_list(&mut client, request)
        .await
        .expect("list");
    assert!(listed.is_empty(), "bob is the inactive one, and suppressed");
    let counted = client
        .count_contacts(pb::CountContactsRequest {
            search: "example.com".into(),
            suppressed: Some(false),
            filter: Some(filter),
            estimate: false,
        })
        .await
        .expect("count")
        .into_inner();
    assert_eq!((counted.count, counted.exact), (2, true), "alice and frank");
}

async fn counts_cover_the_whole_tenant_and_estimates_say_so(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    seed(&mut client, &mut activity).await;
    assert_eq!(count(&mut client, None).await, 6);
    let estimate = client
        .count_contacts(pb::CountContactsRequest {
            estimate: true,
            ..Default::default()
        })
        .await
        .expect("estimate")
        .into_inner();
    match backend {
        // Statistics of a tiny, fresh table: any non-negative guess.
        Backend::Postgres => assert!(!estimate.exact && estimate.count >= 0, "{estimate:?}"),
        Backend::Sqlite => assert_eq!((estimate.count, estimate.exact), (6, true)),
    }
}

async fn filters_and_counts_see_only_the_callers_tenant(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    seed(&mut client, &mut activity).await;
    let mut other = app.other_tenant_client().await;
    create(&mut other, "zed@example.com", json!({"plan": "pro"})).await;
    let filter = cond("properties.plan", Op::Equals, json!("pro"));
    let theirs = list(&mut other, Some(filter.clone()), ContactOrder::EmailAsc, 10).await;
    assert_eq!(
        emails(&theirs),
        BTreeSet::from(["zed@example.com".to_owned()])
    );
    assert_eq!(count(&mut other, Some(filter.clone())).await, 1);
    assert_eq!(count(&mut client, Some(filter)).await, 2);
}

conformance!(
    every_operator_and_type_matches_the_expected_contacts,
    a_filter_is_anded_with_search_and_suppressed,
    counts_cover_the_whole_tenant_and_estimates_say_so,
    filters_and_counts_see_only_the_callers_tenant;
    replicated
);
