//! ImportContacts and search: a row is found by search as soon as its batch is
//! acknowledged, whatever the search index defers (PostgreSQL's trigram index takes
//! rows into a pending list, and an import may merge it a batch at a time).

use kraiter_contacts::api::pb;
use serde_json::json;

use crate::conformance;
use crate::support::imports::{batch, open_import, row};
use crate::support::{Backend, Client, pages, spawn_app};

/// The addresses a search for `term` finds, sorted.
async fn found(client: &mut Client, term: &str) -> Vec<String> {
    let request = pb::ListContactsRequest {
        search: term.to_owned(),
        limit: 100,
        ..Default::default()
    };
    let mut emails: Vec<String> = pages(client, request)
        .await
        .into_iter()
        .flat_map(|page| page.contacts)
        .map(|contact| contact.email)
        .collect();
    emails.sort();
    emails
}

async fn a_row_is_found_by_search_once_its_batch_is_acknowledged(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let mut searcher = app.client();
    let (requests, mut responses) = open_import(&mut client, 1).await;
    // Batches large enough to pass PostgreSQL's pending-list limit several times.
    for k in 0..3 {
        let mut rows: Vec<pb::ImportRow> = (0..400)
            .map(|i| {
                row(
                    &format!("b{k}r{i}@example.com"),
                    json!({"city": format!("town{i:03}"), "code": format!("c{k}x{i:03}"),
                           "plan": "imported"}),
                )
            })
            .collect();
        rows[123] = row(
            &format!("b{k}r123@example.com"),
            json!({"note": format!("quokka{k}")}),
        );
        if k > 0 {
            // An existing contact of the first batch gets a new searchable value.
            rows.push(row(
                "b0r7@example.com",
                json!({"note": format!("wombat{k}")}),
            ));
        }
        requests
            .send(batch(pb::ImportMode::Upsert, rows))
            .await
            .expect("batch sent");
        let response = responses
            .message()
            .await
            .expect("batch answered")
            .expect("a response per batch");
        assert_eq!(response.failed, 0, "batch {k}: {response:?}");
        assert_eq!(
            found(&mut searcher, &format!("quokka{k}")).await,
            [format!("b{k}r123@example.com")],
            "a new row of batch {k} is found right after its answer"
        );
        assert_eq!(
            found(&mut searcher, &format!("c{k}x399")).await,
            [format!("b{k}r399@example.com")],
            "the last row of batch {k} is found right after its answer"
        );
        if k > 0 {
            assert_eq!(
                found(&mut searcher, &format!("wombat{k}")).await,
                ["b0r7@example.com"],
                "an updated row of batch {k} is found by its new value"
            );
        }
        if k > 1 {
            assert_eq!(
                found(&mut searcher, &format!("wombat{}", k - 1)).await,
                Vec::<String>::new(),
                "and no longer by the value batch {k} replaced"
            );
        }
    }
    drop(requests);
    assert!(
        responses.message().await.expect("import ends").is_none(),
        "the import ends with OK"
    );
}

conformance!(a_row_is_found_by_search_once_its_batch_is_acknowledged);
