//! A search streamed to its end (no `max_pages`): on PostgreSQL its queries after
//! the first fetch from a cursor held open for the stream (`store/postgres/portal.rs`),
//! closed once the stream has fetched nothing for a while; on SQLite they are page
//! queries. Either way the pages and their cursors are the list's without the
//! search, filtered by the term: across page boundaries, from any cursor, in
//! another order, and after a client pauses for longer than a cursor stays open.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kraiter_contacts::api::pb;
use kraiter_contacts::api::pb::contacts_service_client::ContactsServiceClient;
use kraiter_contacts::domain::{Email, NewContact, Properties};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::conformance;
use crate::support::{Backend, Client, TestApp, pages, spawn_app, spawn_app_with, unique_tenant};

/// One contact in three has the term, spread over the id order: 143 of them, so the
/// last page of seven is not full.
const TERM: &str = "orbit";
const CONTACTS: usize = 430;
const MATCHES: usize = (CONTACTS + 1) / 3;
/// A stream's page size: pages and queries (1, 2, 4, 8 pages and a row) end at
/// different contacts.
const PAGE: i32 = 7;
/// How long a cursor stays open unused (`portal::IDLE`).
const CURSOR_IDLE: Duration = Duration::from_secs(2);

/// A tenant with the contacts, a client of it, and its key.
async fn tenant_with_contacts(app: &TestApp) -> (Client, String) {
    let tenant = unique_tenant();
    let (_, key) = kraiter_contacts::keys::create(app.store.as_ref(), &tenant)
        .await
        .expect("create a tenant");
    let seeding = tenant.clone();
    futures::stream::iter(0..CONTACTS)
        .map(|i| {
            let tenant = seeding.clone();
            async move {
                // A match carries 8 kB more, so that a client that stops reading
                // stops the server's reader (HTTP/2 window, send buffers and the
                // stream's channel full) before the last page.
                let (note, pad) = if i % 3 == 1 {
                    (format!("Orbit {i}"), "x".repeat(8_000))
                } else {
                    (format!("Comet {i}"), String::new())
                };
                let new = NewContact {
                    email: Email::parse(&format!("s{i:03}@example.com"), "email").expect("email"),
                    properties: Properties::parse(
                        json!({ "note": note, "pad": pad })
                            .as_object()
                            .cloned()
                            .expect("object"),
                        "properties",
                    )
                    .expect("valid properties"),
                };
                let access = kraiter_contacts::store::Access::tenant(tenant);
                kraiter_contacts::app::contacts::create(app.store.as_ref(), &access, new, None)
                    .await
                    .expect("create a contact");
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    (app.client_with_key(Some(&key)), key)
}

fn has_term(contact: &pb::Contact) -> bool {
    let note = contact
        .properties
        .as_ref()
        .and_then(|p| p.fields.get("note"))
        .and_then(|v| match &v.kind {
            Some(prost_types::value::Kind::StringValue(s)) => Some(s.to_lowercase()),
            _ => None,
        })
        .unwrap_or_default();
    note.contains(TERM) || contact.email.contains(TERM)
}

/// The list in `order` without the search (page queries), filtered by the term.
async fn reference(client: &mut Client, order: pb::ContactOrder) -> Vec<String> {
    let request = pb::ListContactsRequest {
        limit: 50,
        order_by: order as i32,
        ..Default::default()
    };
    let all = pages(client, request).await;
    let ids: Vec<String> = all
        .iter()
        .flat_map(|page| page.contacts.iter().filter(|c| has_term(c)))
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(ids.len(), MATCHES, "the seeded matches");
    ids
}

fn search(order: pb::ContactOrder, cursor: String) -> pb::ListContactsRequest {
    pb::ListContactsRequest {
        search: TERM.to_owned(),
        limit: PAGE,
        order_by: order as i32,
        cursor,
        ..Default::default()
    }
}

fn ids(pages: &[pb::ListContactsResponse]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|page| page.contacts.iter().map(|c| c.id.clone()))
        .collect()
}

async fn a_search_streams_pages_and_cursors_as_the_filtered_list(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, _) = tenant_with_contacts(&app).await;
    for order in [
        pb::ContactOrder::Unspecified,
        pb::ContactOrder::CreatedAtDesc,
    ] {
        let want = reference(&mut client, order).await;
        let got = pages(&mut client, search(order, String::new())).await;
        assert_eq!(ids(&got), want, "{order:?}: the whole stream");
        let sizes: Vec<usize> = got.iter().map(|page| page.contacts.len()).collect();
        let full = want.len() / PAGE as usize;
        assert!(
            sizes[..full].iter().all(|&n| n == PAGE as usize),
            "{order:?}: full pages {sizes:?}"
        );
        let (last, rest) = got.split_last().expect("pages");
        assert!(
            last.next_cursor.is_empty(),
            "{order:?}: the last page ends it"
        );
        assert!(
            rest.iter().all(|page| !page.next_cursor.is_empty()),
            "{order:?}: every other page has a cursor"
        );
        // Resumed from page boundaries inside and between the stream's queries.
        for at in [0, 1, 2, 6, 10, rest.len() - 1] {
            let resumed = pages(&mut client, search(order, got[at].next_cursor.clone())).await;
            let skip = (at + 1) * PAGE as usize;
            assert_eq!(
                ids(&resumed),
                want[skip..],
                "{order:?}: resumed after page {at}"
            );
        }
    }
}

/// The server's sessions holding a stream's cursor between fetches.
async fn open_cursors(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND state = 'idle in transaction' AND query LIKE 'FETCH FORWARD % FROM kraiter_list'",
    )
    .fetch_one(conn)
    .await
    .expect("read pg_stat_activity")
}

/// Waits up to five seconds for `open_cursors` to be `want`.
async fn await_cursors(conn: &mut PgConnection, want: i64, what: &str) {
    let began = Instant::now();
    loop {
        let open = open_cursors(conn).await;
        if open == want {
            return;
        }
        if began.elapsed() >= Duration::from_secs(5) {
            let sessions: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT state, query FROM pg_stat_activity WHERE datname = current_database()",
            )
            .fetch_all(&mut *conn)
            .await
            .expect("read pg_stat_activity");
            panic!("{what}: {open} cursors open, expected {want}; sessions: {sessions:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client that stops reading after its first page, for longer than a cursor stays
/// open unused, still gets every match once, in order; no cursor is left open once
/// the pause has passed, nor after the stream. (Whether a cursor is open during the
/// pause depends on how far the server read ahead into the client's window and its
/// own send buffer, so that is not asserted.)
async fn a_search_stream_that_pauses_longer_than_its_cursor_stays_open_ends_right(
    backend: Backend,
) {
    // On PostgreSQL a database of its own, so the only cursors are this test's.
    let own = (backend == Backend::Postgres).then(crate::support::postgres::own_database);
    let app = match &own {
        Some(url) => {
            let url = url.clone();
            spawn_app_with(backend, |args| args.store.database_url = url).await
        }
        None => spawn_app(backend).await,
    };
    let mut watch = match &own {
        Some(url) => Some(PgConnection::connect(url).await.expect("connect")),
        None => None,
    };
    let (mut client, key) = tenant_with_contacts(&app).await;
    let want = reference(&mut client, pb::ContactOrder::Unspecified).await;
    // HTTP/2's smallest windows, so that what the client does not read stops the
    // server's reader well before the stream's end.
    let channel = Channel::from_shared(format!("http://{}", app.addr))
        .expect("valid uri")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect to the test server");
    let bearer: MetadataValue<_> = format!("Bearer {key}").parse().expect("metadata");
    let mut slow =
        ContactsServiceClient::with_interceptor(channel, move |mut request: Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        });
    let mut stream = slow
        .list_contacts(search(pb::ContactOrder::Unspecified, String::new()))
        .await
        .expect("list starts")
        .into_inner();
    let first = stream
        .message()
        .await
        .expect("a page")
        .expect("a first page");
    let mut got = first
        .contacts
        .iter()
        .map(|c| c.id.clone())
        .collect::<Vec<_>>();
    tokio::time::sleep(CURSOR_IDLE + Duration::from_millis(500)).await;
    if let Some(conn) = watch.as_mut() {
        await_cursors(conn, 0, "after the cursor's idle time").await;
    }
    while let Some(page) = stream.message().await.expect("a page") {
        got.extend(page.contacts.iter().map(|c| c.id.clone()));
    }
    assert_eq!(got, want, "every match once, in order, after the pause");
    if let Some(conn) = watch.as_mut() {
        await_cursors(conn, 0, "after the stream").await;
    }
}

conformance!(
    a_search_streams_pages_and_cursors_as_the_filtered_list,
    a_search_stream_that_pauses_longer_than_its_cursor_stays_open_ends_right,
);
crate::replicated!(a_search_streams_pages_and_cursors_as_the_filtered_list);
