use std::collections::BTreeSet;

use kraiter_contacts::api::pb;
use serde_json::json;
use tonic::Code;

use crate::conformance;
use crate::support::{Backend, Client, assert_status, create, pages, spawn_app};

fn emails(pages: &[pb::ListContactsResponse]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p.contacts.iter().map(|c| c.email.clone()))
        .collect()
}

async fn search(client: &mut Client, term: &str) -> BTreeSet<String> {
    let request = pb::ListContactsRequest {
        search: term.to_owned(),
        limit: 1000,
        ..Default::default()
    };
    emails(&pages(client, request).await).into_iter().collect()
}

async fn list_streams_every_contact_once_in_id_order_across_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let mut ids = Vec::new();
    for i in 0..53 {
        ids.push(
            create(&mut client, &format!("p{i:02}@example.com"), json!({}))
                .await
                .id,
        );
    }
    let pages = pages(
        &mut client,
        pb::ListContactsRequest {
            limit: 10,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(pages.len(), 6, "53 contacts in pages of 10");
    let sizes: Vec<usize> = pages.iter().map(|p| p.contacts.len()).collect();
    assert_eq!(sizes, vec![10, 10, 10, 10, 10, 3]);
    for page in &pages[..5] {
        assert!(
            !page.next_cursor.is_empty(),
            "every page but the last has a cursor"
        );
    }
    assert!(pages[5].next_cursor.is_empty(), "the last page has none");
    let listed: Vec<String> = pages
        .iter()
        .flat_map(|p| p.contacts.iter().map(|c| c.id.clone()))
        .collect();
    assert_eq!(listed, ids);
}

async fn default_page_size_is_20_and_an_exact_multiple_ends_without_an_empty_page(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    for i in 0..40 {
        create(&mut client, &format!("d{i}@example.com"), json!({})).await;
    }
    let pages = pages(&mut client, pb::ListContactsRequest::default()).await;
    let sizes: Vec<usize> = pages.iter().map(|p| p.contacts.len()).collect();
    assert_eq!(sizes, vec![20, 20]);
    assert!(pages[1].next_cursor.is_empty());
}

async fn an_empty_tenant_streams_one_empty_page(backend: Backend) {
    let app = spawn_app(backend).await;
    let pages = pages(&mut app.client(), pb::ListContactsRequest::default()).await;
    assert_eq!(pages.len(), 1);
    assert!(pages[0].contacts.is_empty());
    assert!(pages[0].next_cursor.is_empty());
}

async fn max_pages_stops_early_and_the_cursor_resumes_where_it_stopped(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let mut all = Vec::new();
    for i in 0..25 {
        all.push(
            create(&mut client, &format!("r{i:02}@example.com"), json!({}))
                .await
                .email,
        );
    }
    let first = pages(
        &mut client,
        pb::ListContactsRequest {
            limit: 7,
            max_pages: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(first.len(), 2);
    let cursor = first[1].next_cursor.clone();
    assert!(!cursor.is_empty());
    let rest = pages(
        &mut client,
        pb::ListContactsRequest {
            limit: 7,
            cursor,
            ..Default::default()
        },
    )
    .await;
    let mut seen = emails(&first);
    seen.extend(emails(&rest));
    assert_eq!(seen, all, "resuming delivers the rest, each exactly once");
}

/// A long stream reads several pages per query (1, 2, 4, ... pages): page
/// boundaries, cursors and `max_pages` must not show it, also when a query's rows
/// end exactly on a page boundary or `max_pages` ends the stream inside one.
async fn pages_read_several_per_query_keep_their_boundaries_and_cursors(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let mut all = Vec::new();
    for i in 0..70 {
        all.push(
            create(&mut client, &format!("g{i:02}@example.com"), json!({}))
                .await
                .email,
        );
    }
    // 10 + 20 + 40 rows: the third query's rows end exactly with the tenant.
    let whole = pages(
        &mut client,
        pb::ListContactsRequest {
            limit: 10,
            ..Default::default()
        },
    )
    .await;
    let sizes: Vec<usize> = whole.iter().map(|p| p.contacts.len()).collect();
    assert_eq!(sizes, vec![10; 7], "no empty page after an exact multiple");
    assert!(whole[..6].iter().all(|p| !p.next_cursor.is_empty()));
    assert!(
        whole[6].next_cursor.is_empty(),
        "the last page has no cursor"
    );
    assert_eq!(emails(&whole), all);

    // Five pages: the stream stops inside what would be the third query.
    let first = pages(
        &mut client,
        pb::ListContactsRequest {
            limit: 10,
            max_pages: 5,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(first.len(), 5);
    let rest = pages(
        &mut client,
        pb::ListContactsRequest {
            limit: 10,
            cursor: first[4].next_cursor.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(emails(&first), all[..50]);
    assert_eq!(
        emails(&rest),
        all[50..],
        "the cursor resumes after page five"
    );
}

/// Pages hold at most 1,000 contacts, whatever the limit asked: with 1,001 contacts a
/// large limit gives a page of exactly 1,000 and one of 1.
async fn limit_above_maximum_is_clamped_and_negative_is_invalid(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let mut client = app.client();
        writers.spawn(async move {
            for i in (w..1001).step_by(8) {
                create(&mut client, &format!("l{i:04}@example.com"), json!({})).await;
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("a creating task");
    }
    for limit in [1001, 1_000_000, i32::MAX] {
        let pages = pages(
            &mut client,
            pb::ListContactsRequest {
                limit,
                ..Default::default()
            },
        )
        .await;
        let sizes: Vec<usize> = pages.iter().map(|p| p.contacts.len()).collect();
        assert_eq!(sizes, vec![1000, 1], "limit {limit}");
    }
    let result = client
        .list_contacts(pb::ListContactsRequest {
            limit: -1,
            ..Default::default()
        })
        .await;
    let status = assert_status(
        result,
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "negative limit",
    );
    assert!(status.message().contains("limit"), "{}", status.message());
    let result = client
        .list_contacts(pb::ListContactsRequest {
            max_pages: -1,
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "negative max_pages",
    );
}

async fn search_matches_email_and_property_values_case_insensitively(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    create(
        &mut client,
        "Alice.Smith@Example.com",
        json!({"city": "Paris"}),
    )
    .await;
    create(
        &mut client,
        "bob@example.com",
        json!({"name": "ALICE Cooper", "tags": ["Gold", {"deep": "Hidden"}]}),
    )
    .await;
    create(
        &mut client,
        "carol@example.org",
        json!({"age": 42, "vip": true, "paris_key": "no"}),
    )
    .await;
    let set = |items: &[&str]| {
        items
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>()
    };
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "alice",
            &["Alice.Smith@Example.com", "bob@example.com"],
            "email and property value",
        ),
        (
            "ALICE",
            &["Alice.Smith@Example.com", "bob@example.com"],
            "upper-case term",
        ),
        (
            "paris",
            &["Alice.Smith@Example.com"],
            "property value, not key",
        ),
        ("gold", &["bob@example.com"], "array element"),
        ("hidden", &["bob@example.com"], "nested object value"),
        ("42", &["carol@example.org"], "number value"),
        ("example.org", &["carol@example.org"], "domain part"),
        (
            "@",
            &[
                "Alice.Smith@Example.com",
                "bob@example.com",
                "carol@example.org",
            ],
            "short term",
        ),
        ("nobody", &[], "no match"),
    ];
    for (term, expected, why) in cases {
        assert_eq!(
            search(&mut client, term).await,
            set(expected),
            "search {term:?}: {why}"
        );
    }
}

async fn search_treats_wildcard_characters_literally(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    create(
        &mut client,
        "percent@example.com",
        json!({"discount": "50% off"}),
    )
    .await;
    create(&mut client, "under_score@example.com", json!({})).await;
    create(&mut client, "back@example.com", json!({"path": "C:\\temp"})).await;
    create(
        &mut client,
        "plain@example.com",
        json!({"discount": "50 off", "x": "underXscore"}),
    )
    .await;
    let set = |items: &[&str]| {
        items
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>()
    };
    let cases: &[(&str, &[&str])] = &[
        ("50%", &["percent@example.com"]),
        ("%", &["percent@example.com"]),
        ("under_", &["under_score@example.com"]),
        ("_", &["under_score@example.com"]),
        ("c:\\t", &["back@example.com"]),
        ("\\", &["back@example.com"]),
        ("\"", &[]),
    ];
    for (term, expected) in cases {
        assert_eq!(
            search(&mut client, term).await,
            set(expected),
            "search {term:?}"
        );
    }
}

async fn search_pages_resume_with_their_cursor(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let mut matching = Vec::new();
    for i in 0..30 {
        let email = format!("s{i:02}@example.com");
        let props = if i % 3 == 0 {
            json!({"team": "Rockets"})
        } else {
            json!({"team": "Jets"})
        };
        create(&mut client, &email, props).await;
        if i % 3 == 0 {
            matching.push(email);
        }
    }
    let first = pages(
        &mut client,
        pb::ListContactsRequest {
            search: "rocket".into(),
            limit: 4,
            max_pages: 1,
            ..Default::default()
        },
    )
    .await;
    let rest = pages(
        &mut client,
        pb::ListContactsRequest {
            search: "rocket".into(),
            limit: 4,
            cursor: first[0].next_cursor.clone(),
            ..Default::default()
        },
    )
    .await;
    let mut seen = emails(&first);
    seen.extend(emails(&rest));
    assert_eq!(seen, matching);
    // The cursor is bound to its query.
    let result = client
        .list_contacts(pb::ListContactsRequest {
            search: "jet".into(),
            cursor: first[0].next_cursor.clone(),
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "cursor from another search",
    );
}

/// A bounce suppresses a contact; `suppressed` then picks it alone, or all the others.
async fn suppressed_filter_applies(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    create(&mut client, "n1@example.com", json!({})).await;
    let bounced = create(&mut client, "b@example.com", json!({})).await;
    create(&mut client, "n2@example.com", json!({})).await;
    super::filter_calls::suppress(&mut activity, &bounced.id).await;
    let cases = [
        ("suppressed only", Some(true), vec!["b@example.com"]),
        (
            "not suppressed only",
            Some(false),
            vec!["n1@example.com", "n2@example.com"],
        ),
        (
            "no filter",
            None,
            vec!["n1@example.com", "b@example.com", "n2@example.com"],
        ),
    ];
    for (why, suppressed, expected) in cases {
        let listed = pages(
            &mut client,
            pb::ListContactsRequest {
                suppressed,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(emails(&listed), expected, "{why}");
    }
}

async fn contacts_present_for_the_whole_stream_are_delivered_once_despite_concurrent_writes(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let mut stable = BTreeSet::new();
    let mut doomed = Vec::new();
    for i in 0..60 {
        let contact = create(&mut client, &format!("c{i:02}@example.com"), json!({})).await;
        if i % 4 == 0 {
            doomed.push(contact.id);
        } else {
            stable.insert(contact.id);
        }
    }
    let mut stream = client
        .list_contacts(pb::ListContactsRequest {
            limit: 5,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let mut seen = Vec::new();
    let mut writer = app.client();
    let mut page_no = 0;
    while let Some(page) = stream.message().await.expect("page") {
        seen.extend(page.contacts.into_iter().map(|c| c.id));
        // Between pages: delete some contacts and create others.
        if let Some(id) = doomed.pop() {
            writer
                .delete_contact(pb::DeleteContactRequest {
                    id,
                    ..Default::default()
                })
                .await
                .expect("delete");
        }
        create(&mut writer, &format!("new{page_no}@example.com"), json!({})).await;
        page_no += 1;
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no contact delivered twice");
    assert!(stable.is_subset(&unique), "every stable contact delivered");
}

conformance!(
    list_streams_every_contact_once_in_id_order_across_pages,
    default_page_size_is_20_and_an_exact_multiple_ends_without_an_empty_page,
    an_empty_tenant_streams_one_empty_page,
    max_pages_stops_early_and_the_cursor_resumes_where_it_stopped,
    pages_read_several_per_query_keep_their_boundaries_and_cursors,
    limit_above_maximum_is_clamped_and_negative_is_invalid,
    search_matches_email_and_property_values_case_insensitively,
    search_treats_wildcard_characters_literally,
    search_pages_resume_with_their_cursor,
    suppressed_filter_applies,
    contacts_present_for_the_whole_stream_are_delivered_once_despite_concurrent_writes;
    replicated
);
