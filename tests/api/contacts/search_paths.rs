//! Search on SQLite takes one of two plans: a term with at most
//! `store::sqlite::SEARCH_CANDIDATES` matches in the trigram index (all tenants) is read
//! from the index, a commoner one by walking the tenant's contacts in id order. These
//! tests put the same contacts on both sides of that threshold and require the same
//! pages, cursors and filters; on PostgreSQL they are plain conformance tests.
//! Pages stay at 10 or fewer so the threshold is `SEARCH_CANDIDATES` itself.

use std::collections::BTreeSet;

use futures::StreamExt;
use kraiter_contacts::api::pb;
use kraiter_contacts::domain::{Email, NewContact, Properties, TenantId, search_text};
use kraiter_contacts::store::sqlite::SEARCH_CANDIDATES;
use serde_json::json;

use crate::conformance;
use crate::support::{Backend, Client, TestApp, pages, spawn_app, unique_tenant};

/// A contact as seeded: what a search must find it by.
#[derive(Debug, Clone)]
struct Seeded {
    id: String,
    /// What the search term must be a substring of.
    text: String,
    suppressed: bool,
}

/// A fresh tenant on `app` and a client authenticated as it.
async fn tenant(app: &TestApp) -> (TenantId, String, Client) {
    let tenant = unique_tenant();
    let (_, key) = kraiter_contacts::keys::create(app.store.as_ref(), &tenant)
        .await
        .expect("create a tenant");
    let client = app.client_with_key(Some(&key));
    (tenant, key, client)
}

/// Creates `(email, note)` contacts through the store, a few at a time: thousands of
/// creates over gRPC would dominate the test.
async fn seed(app: &TestApp, tenant: &TenantId, contacts: Vec<(String, String)>) -> Vec<Seeded> {
    futures::stream::iter(contacts)
        .map(|(email, note)| async move {
            let new = NewContact {
                email: Email::parse(&email, "email").expect("valid email"),
                properties: Properties::parse(
                    json!({ "note": note })
                        .as_object()
                        .cloned()
                        .expect("object"),
                    "properties",
                )
                .expect("valid properties"),
            };
            let access = kraiter_contacts::store::Access::tenant(tenant.clone());
            let contact =
                kraiter_contacts::app::contacts::create(app.store.as_ref(), &access, new, None)
                    .await
                    .unwrap_or_else(|err| panic!("create {email}: {err}"));
            Seeded {
                id: contact.id.as_str().to_owned(),
                text: search_text(contact.email.as_str(), &contact.properties),
                suppressed: false,
            }
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// Suppresses a contact the way production does: a bounced send.
async fn suppress(app: &TestApp, key: &str, contact: &mut Seeded) {
    let mut activity = app.activity_with_key(key);
    super::filter_calls::suppress(&mut activity, &contact.id).await;
    contact.suppressed = true;
}

/// Suppresses `matching` contacts whose text holds `term` and `others` that do not,
/// spread over the id order.
async fn suppress_some(
    app: &TestApp,
    key: &str,
    seeded: &mut [Seeded],
    term: &str,
    matching: usize,
    others: usize,
) {
    let (yes, no): (Vec<usize>, Vec<usize>) =
        (0..seeded.len()).partition(|&i| seeded[i].text.contains(term));
    for (indexes, count) in [(yes, matching), (no, others)] {
        let step = (indexes.len() / count.max(1)).max(1);
        for &i in indexes.iter().step_by(step).take(count) {
            suppress(app, key, &mut seeded[i]).await;
        }
    }
}

fn request(term: &str, suppressed: Option<bool>, limit: i32) -> pb::ListContactsRequest {
    pb::ListContactsRequest {
        search: term.to_owned(),
        suppressed,
        limit,
        ..Default::default()
    }
}

/// The ids of each page of a whole search stream.
async fn search_pages(client: &mut Client, request: pb::ListContactsRequest) -> Vec<Vec<String>> {
    pages(client, request)
        .await
        .iter()
        .map(|page| page.contacts.iter().map(|c| c.id.clone()).collect())
        .collect()
}

/// What a search must return: the matching contacts in id order, in pages of `limit`
/// (one empty page when none match).
fn expected_pages(
    seeded: &[Seeded],
    term: &str,
    suppressed: Option<bool>,
    limit: usize,
) -> Vec<Vec<String>> {
    let term = term.to_lowercase();
    let mut ids: Vec<String> = seeded
        .iter()
        .filter(|c| c.text.contains(&term) && suppressed.is_none_or(|s| c.suppressed == s))
        .map(|c| c.id.clone())
        .collect();
    ids.sort();
    let mut pages: Vec<Vec<String>> = ids.chunks(limit).map(<[String]>::to_vec).collect();
    if pages.is_empty() {
        pages.push(Vec::new());
    }
    pages
}

/// On SQLite, how many rows the trigram index holds for `term` in all tenants.
async fn index_matches(app: &TestApp, backend: Backend, term: &str) -> Option<i64> {
    use sqlx::Connection;
    if backend != Backend::Sqlite {
        return None;
    }
    let mut conn = sqlx::SqliteConnection::connect(&app.database_url)
        .await
        .expect("open the SQLite file");
    let count = sqlx::query_scalar("SELECT count(*) FROM contacts_fts WHERE contacts_fts MATCH ?1")
        .bind(format!("\"{term}\""))
        .fetch_one(&mut conn)
        .await
        .expect("count index matches");
    Some(count)
}

/// Tenant A's searches, answered once from the index (few matches anywhere) and once
/// by the walk (after tenant B adds more matches than the threshold), give the same
/// pages; a cursor taken before the switch resumes after it; B's matches never show.
async fn another_tenants_matches_change_neither_pages_nor_cursors(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant_a, key_a, mut client_a) = tenant(&app).await;
    let mut contacts = Vec::new();
    for i in 0..45 {
        let note = match i % 5 {
            0 => format!("Sparkle water {i}"),
            1 => format!("SPARKLES and more {i}"),
            // `ſ` folds to `s` in the index but is not `s`: not a match for "sparkle".
            2 => format!("ſparkle {i}"),
            _ => format!("still water {i}"),
        };
        contacts.push((format!("a{i:02}@example.com"), note));
    }
    contacts.push(("sparkle.fan@example.com".into(), "email only".into()));
    let mut seeded = seed(&app, &tenant_a, contacts).await;
    seeded.sort_by(|x, y| x.id.cmp(&y.id));
    suppress_some(&app, &key_a, &mut seeded, "sparkle", 3, 2).await;

    let searches: Vec<(&str, Option<bool>, i32)> = vec![
        ("sparkle", None, 4),
        ("sparkle", Some(true), 2),
        ("sparkle", Some(false), 3),
        ("SPARKLE", None, 10),
        ("ſpar", None, 4),
        ("water 1", None, 3),
        // Shorter than a trigram: always a walk.
        ("sp", None, 4),
        ("ſ", Some(false), 5),
    ];
    let mut before = Vec::new();
    for (term, suppressed, limit) in &searches {
        let got = search_pages(&mut client_a, request(term, *suppressed, *limit)).await;
        assert_eq!(
            got,
            expected_pages(&seeded, term, *suppressed, *limit as usize),
            "search {term:?}, suppressed {suppressed:?}, pages of {limit}, few index matches"
        );
        before.push(got);
    }
    let first_two = pages(
        &mut client_a,
        pb::ListContactsRequest {
            max_pages: 2,
            ..request("sparkle", None, 4)
        },
    )
    .await;
    let cursor = first_two[1].next_cursor.clone();
    assert!(!cursor.is_empty(), "more pages follow");

    // Tenant B: more matches than the index answers for, in every page position.
    let (tenant_b, _, mut client_b) = tenant(&app).await;
    let extra = SEARCH_CANDIDATES as usize + 20;
    let others = seed(
        &app,
        &tenant_b,
        (0..extra)
            .map(|i| (format!("b{i}@example.com"), format!("sparkle {i}")))
            .collect(),
    )
    .await;
    if let Some(count) = index_matches(&app, backend, "sparkle").await {
        assert!(
            count > i64::from(SEARCH_CANDIDATES),
            "{count} index matches: the walk must answer now"
        );
    }

    for ((term, suppressed, limit), before) in searches.iter().zip(&before) {
        let after = search_pages(&mut client_a, request(term, *suppressed, *limit)).await;
        assert_eq!(
            &after, before,
            "search {term:?}, suppressed {suppressed:?}, pages of {limit}, many index matches"
        );
    }
    let rest = search_pages(
        &mut client_a,
        pb::ListContactsRequest {
            cursor,
            ..request("sparkle", None, 4)
        },
    )
    .await;
    assert_eq!(rest, before[0][2..], "a cursor from before resumes after");

    // B sees exactly its own contacts, in id order.
    let mut b_ids: Vec<String> = others.iter().map(|c| c.id.clone()).collect();
    b_ids.sort();
    let b_pages = search_pages(&mut client_b, request("sparkle", None, 10)).await;
    let listed: Vec<String> = b_pages.concat();
    assert_eq!(listed, b_ids, "tenant B finds its own contacts only");
    // A tenant with no contacts finds nothing, whatever the index holds.
    let (_, _, mut client_c) = tenant(&app).await;
    let empty = search_pages(&mut client_c, request("sparkle", None, 10)).await;
    assert_eq!(empty, vec![Vec::<String>::new()]);
}

/// A tenant whose own contacts exceed the threshold: a common term streams every match
/// once in id order, with the suppressed filter and a resumed cursor; rarer terms and
/// 1–2 character terms in the same tenant too.
async fn a_common_term_in_one_tenant_pages_through_every_match(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant_a, key_a, mut client) = tenant(&app).await;
    let matches = SEARCH_CANDIDATES as usize + 80;
    // Others between the matches, so pages skip rows.
    let (mut contacts, mut planets) = (Vec::new(), 0);
    for i in 0..matches + 300 {
        let note = if i % 4 == 3 && planets < 300 {
            planets += 1;
            format!("Planet {i}")
        } else {
            format!("Comet {i}")
        };
        contacts.push((format!("c{i}@example.com"), note));
    }
    let mut seeded = seed(&app, &tenant_a, contacts).await;
    seeded.sort_by(|x, y| x.id.cmp(&y.id));
    let comets = seeded.iter().filter(|c| c.text.contains("comet")).count();
    assert_eq!(comets, matches);
    suppress_some(&app, &key_a, &mut seeded, "comet", 4, 2).await;
    if let Some(count) = index_matches(&app, backend, "comet").await {
        assert!(
            count > i64::from(SEARCH_CANDIDATES),
            "{count} index matches"
        );
    }

    let searches: Vec<(&str, Option<bool>, i32)> = vec![
        ("comet", None, 10),
        ("comet", Some(true), 2),
        ("comet", Some(false), 10),
        ("comet 10", None, 7),
        ("planet", Some(false), 10),
        ("c1234@", None, 10),
        // SQLite probes the index with the longest alphanumeric run (`example`, in
        // every row; `comet`, over the threshold), then with the whole term.
        ("1234@example", None, 10),
        ("comet-10", None, 10),
        ("nowhere", None, 10),
        ("c1", None, 10),
        ("9", Some(true), 3),
    ];
    for (term, suppressed, limit) in &searches {
        let got = search_pages(&mut client, request(term, *suppressed, *limit)).await;
        assert_eq!(
            got,
            expected_pages(&seeded, term, *suppressed, *limit as usize),
            "search {term:?}, suppressed {suppressed:?}, pages of {limit}"
        );
    }

    // Stopped after three pages and resumed: every match once, in order.
    let first = pages(
        &mut client,
        pb::ListContactsRequest {
            max_pages: 3,
            ..request("comet", None, 10)
        },
    )
    .await;
    let rest = search_pages(
        &mut client,
        pb::ListContactsRequest {
            cursor: first[2].next_cursor.clone(),
            ..request("comet", None, 10)
        },
    )
    .await;
    let mut seen: Vec<String> = first
        .iter()
        .flat_map(|p| p.contacts.iter().map(|c| c.id.clone()))
        .collect();
    seen.extend(rest.concat());
    let expected: Vec<String> = expected_pages(&seeded, "comet", None, 10).concat();
    assert_eq!(seen, expected);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), matches, "each match once");

    // Another tenant sharing the term sees none of these.
    let (_, _, mut other) = tenant(&app).await;
    let none = search_pages(&mut other, request("comet", None, 10)).await;
    assert_eq!(none, vec![Vec::<String>::new()]);
}

conformance!(
    another_tenants_matches_change_neither_pages_nor_cursors,
    a_common_term_in_one_tenant_pages_through_every_match;
    replicated
);
