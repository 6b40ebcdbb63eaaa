//! Hardening of the streamed lists: pages bounded in bytes, streams bounded in number,
//! no pooled connection held for a client that is not reading, and a key revoked
//! during a stream ends it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use kraiter_contacts::api::pb;
use kraiter_contacts::api::pb::contacts_service_client::ContactsServiceClient;
use kraiter_contacts::config::LimitArgs;
use prost::Message;
use serde_json::json;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};
use tonic_types::StatusExt;

use crate::conformance;
use crate::support::{
    Backend, Client, TestApp, assert_status, create, props, spawn_app, spawn_app_with,
};

/// Room the test leaves for a page's `next_cursor` when it asks whether a page was cut
/// only as late as it had to be.
const CURSOR_ROOM: usize = 1024;

/// Creates `count` contacts `{prefix}{i}@example.com` whose properties hold `filler`
/// bytes, four writers at a time; returns their ids, sorted.
async fn seed(client: &Client, prefix: &str, count: usize, filler: usize) -> Vec<String> {
    let filler = "x".repeat(filler);
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let (mut client, filler, prefix) = (client.clone(), filler.clone(), prefix.to_owned());
        writers.spawn(async move {
            let mut ids = Vec::new();
            for i in (w..count).step_by(4) {
                let email = format!("{prefix}{i}@example.com");
                let contact = create(&mut client, &email, json!({"filler": filler, "i": i})).await;
                ids.push(contact.id);
            }
            ids
        });
    }
    let mut ids = Vec::new();
    while let Some(done) = writers.join_next().await {
        ids.extend(done.expect("a seeding task"));
    }
    ids.sort();
    ids
}

/// What a page holds, for checks that apply to every list: its encoded size and the
/// encoded size of each item in it (as an element of the page's repeated field 1).
struct PageSizes {
    page: usize,
    items: Vec<usize>,
}

impl PageSizes {
    fn of<M: Message>(page: &impl Message, items: &[M]) -> Self {
        Self {
            page: page.encoded_len(),
            items: items
                .iter()
                .map(|item| prost::encoding::message::encoded_len(1, item))
                .collect(),
        }
    }
}

/// Every page of more than one item is within `budget`; every page but the last holds
/// `limit` items or ends only because its next item would have passed the budget.
fn assert_pages_fit(what: &str, pages: &[PageSizes], budget: usize, limit: usize) {
    assert!(!pages.is_empty(), "{what}: no page");
    for (i, page) in pages.iter().enumerate() {
        assert!(
            !page.items.is_empty() || pages.len() == 1,
            "{what}: page {i} is empty"
        );
        assert!(
            page.items.len() <= limit,
            "{what}: page {i} is over `limit`"
        );
        if page.items.len() > 1 {
            assert!(
                page.page <= budget,
                "{what}: page {i} of {} items is {} bytes, over the budget of {budget}",
                page.items.len(),
                page.page
            );
        }
        let Some(next) = pages.get(i + 1) else { break };
        if page.items.len() < limit {
            assert!(
                page.page + next.items[0] + CURSOR_ROOM > budget,
                "{what}: page {i} ({} bytes) was cut though its next item ({} bytes) fit",
                page.page,
                next.items[0]
            );
        }
    }
}

/// Every page of a stream, in order; a page that does not arrive fails the test with
/// its status.
async fn all_pages<M>(started: Result<tonic::Response<Streaming<M>>, Status>) -> Vec<M> {
    let mut stream = started.expect("the stream starts").into_inner();
    let mut pages = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(page)) => pages.push(page),
            Ok(None) => return pages,
            Err(status) => panic!("page {} does not arrive: {status:?}", pages.len()),
        }
    }
}

fn ids(pages: &[pb::ListContactsResponse]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|page| page.contacts.iter().map(|c| c.id.clone()))
        .collect()
}

/// Large contacts asked for 1,000 at a time come in pages a stock client (4 MiB
/// decoding limit) accepts, each within the default page budget, and the pages hold
/// every contact once; a page's cursor resumes with exactly the rest.
async fn large_contacts_come_in_pages_within_the_byte_budget(backend: Backend) {
    let app = spawn_app(backend).await;
    let budget = LimitArgs::default().max_page_bytes;
    // Together far over 4 MiB, each well under the budget.
    let seeded = seed(&app.client(), "big", 80, 60_000).await;
    let mut client = app.client();
    let request = pb::ListContactsRequest {
        limit: 1000,
        ..Default::default()
    };
    let pages = all_pages(client.list_contacts(request.clone()).await).await;
    let sizes: Vec<_> = pages
        .iter()
        .map(|page| PageSizes::of(page, &page.contacts))
        .collect();
    let counts: Vec<usize> = pages.iter().map(|page| page.contacts.len()).collect();
    eprintln!("80 contacts of 60 KB, limit 1000: pages of {counts:?} contacts");
    assert_pages_fit("contacts", &sizes, budget, 1000);
    assert!(pages.len() > 1, "80 contacts of 60 KB in one page");
    assert_eq!(ids(&pages), seeded, "every contact once, in id order");
    let last = pages.last().expect("pages");
    assert!(last.next_cursor.is_empty(), "the last page has no cursor");

    let first = &pages[0];
    assert!(
        !first.next_cursor.is_empty(),
        "a page before the last has a cursor"
    );
    let cursor = first.next_cursor.clone();
    let resumed = client.list_contacts(pb::ListContactsRequest { cursor, ..request });
    let rest = all_pages(resumed.await).await;
    assert_eq!(
        ids(&rest),
        seeded[first.contacts.len()..],
        "resuming after the first page yields exactly the rest"
    );
}

/// A contact whose every update changes a large property: its timeline entries (each
/// with the before and after) come in pages within a configured budget.
async fn large_timeline_entries_come_in_pages_within_the_byte_budget(backend: Backend) {
    let budget = 128 * 1024;
    let app = spawn_app_with(backend, |args| args.limits.max_page_bytes = budget).await;
    let mut client = app.client();
    let contact = create(&mut client, "history@example.com", json!({})).await;
    for i in 0..12 {
        let blob = format!("{i}").repeat(30_000);
        client
            .update_contact(pb::UpdateContactRequest {
                id: contact.id.clone(),
                email: None,
                properties: Some(props(json!({ "blob": blob }))),
                ..Default::default()
            })
            .await
            .expect("update");
    }
    let request = pb::ListContactTimelineRequest {
        id: contact.id.clone(),
        limit: 1000,
        ..Default::default()
    };
    let pages = all_pages(client.list_contact_timeline(request).await).await;
    let sizes: Vec<_> = pages
        .iter()
        .map(|page| PageSizes::of(page, &page.entries))
        .collect();
    let counts: Vec<usize> = pages.iter().map(|page| page.entries.len()).collect();
    eprintln!("13 timeline entries, budget {budget}: pages of {counts:?} entries");
    assert_pages_fit("timeline", &sizes, budget, 1000);
    let entries: Vec<String> = pages
        .iter()
        .flat_map(|page| page.entries.iter().map(|e| e.id.clone()))
        .collect();
    let distinct: BTreeSet<&String> = entries.iter().collect();
    assert_eq!(entries.len(), 13, "the creation and 12 updates");
    assert_eq!(distinct.len(), 13, "each entry once");
}

/// With a budget smaller than any item, every page of sends and of scheduled sends
/// holds one item, and the cursors walk the whole list.
async fn a_tiny_budget_gives_pages_of_one_send_or_scheduled_send(backend: Backend) {
    let app = spawn_app_with(backend, |args| args.limits.max_page_bytes = 1).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let contact = create(&mut client, "sends@example.com", json!({})).await;
    for i in 0..3 {
        activity
            .record_send(pb::RecordSendRequest {
                recipient: Some(pb::record_send_request::Recipient::ContactId(
                    contact.id.clone(),
                )),
                template_id: format!("t{i}"),
                subject: "Hello".into(),
                source: pb::SendSource::Transactional as i32,
                ..Default::default()
            })
            .await
            .expect("record send");
        activity
            .schedule_send(pb::ScheduleSendRequest {
                contact_id: contact.id.clone(),
                template_id: format!("t{i}"),
                scheduled_for: Some(prost_types::Timestamp {
                    seconds: 2_000_000_000 + i,
                    nanos: 0,
                }),
                source: pb::SendSource::Sequence as i32,
                ..Default::default()
            })
            .await
            .expect("schedule send");
    }
    let id = contact.id.clone();
    let request = pb::ListContactSendsRequest {
        id: id.clone(),
        limit: 1000,
        ..Default::default()
    };
    let pages = all_pages(client.list_contact_sends(request).await).await;
    let counts: Vec<_> = pages
        .iter()
        .map(|page| (page.sends.len(), page.next_cursor.is_empty()))
        .collect();
    assert_eq!(counts, [(1, false), (1, false), (1, true)], "sends");
    let request = pb::ListContactScheduledSendsRequest {
        id,
        limit: 1000,
        ..Default::default()
    };
    let pages = all_pages(client.list_contact_scheduled_sends(request).await).await;
    let counts: Vec<_> = pages
        .iter()
        .map(|page| (page.scheduled_sends.len(), page.next_cursor.is_empty()))
        .collect();
    assert_eq!(counts, [(1, false), (1, false), (1, true)], "scheduled");
}

/// A stream of one contact a page on a connection of its own whose flow-control
/// windows are HTTP/2's smallest, so a reader that stops reading stops the server
/// after a few pages instead of megabytes.
struct SlowStream {
    pages: Streaming<pb::ListContactsResponse>,
    _channel: Channel,
}

impl SlowStream {
    async fn open(addr: SocketAddr, key: &str) -> Result<SlowStream, Status> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("valid uri")
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect()
            .await
            .expect("connect to the test server");
        let mut request = tonic::Request::new(pb::ListContactsRequest {
            limit: 1,
            ..Default::default()
        });
        let bearer = format!("Bearer {key}").parse().expect("metadata");
        request.metadata_mut().insert("authorization", bearer);
        let mut client = ContactsServiceClient::new(channel.clone());
        let pages = client.list_contacts(request).await?.into_inner();
        Ok(SlowStream {
            pages,
            _channel: channel,
        })
    }

    async fn next(&mut self) -> Result<Option<pb::ListContactsResponse>, Status> {
        self.pages.message().await
    }
}

/// Contacts enough that a stream of one a page outlasts what the flow-control
/// windows and the server's read-ahead hold.
const SLOW_CONTACTS: usize = 60;
const SLOW_FILLER: usize = 8_000;

/// Asserts a stream was refused for the stream limit: RESOURCE_EXHAUSTED, with a
/// `RetryInfo` delay.
#[track_caller]
fn assert_refused(result: Result<SlowStream, Status>, what: &str) {
    let status = assert_status(
        result.map(|_| ()),
        Code::ResourceExhausted,
        "RATE_LIMITED",
        what,
    );
    let delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    assert!(
        delay.is_some_and(|delay| delay > Duration::ZERO),
        "{what}: a RetryInfo delay in {status:?}"
    );
}

/// Past the per-tenant limit a tenant's next stream is refused, other tenants still
/// stream; past the global limit every tenant's is. A stream that ends (its client
/// gone) lets the next one in.
async fn open_streams_are_bounded_per_tenant_and_in_all(backend: Backend) {
    let app = spawn_app_with(backend, |args| {
        args.limits.max_streams = 3;
        args.limits.max_streams_per_tenant = 2;
    })
    .await;
    let (b_key, c_key) = (app.other_tenant_key().await, app.other_tenant_key().await);
    let b_client = app.client_with_key(Some(&b_key));
    seed(&app.client(), "a", SLOW_CONTACTS, SLOW_FILLER).await;
    seed(&b_client, "b", SLOW_CONTACTS, SLOW_FILLER).await;

    let a1 = SlowStream::open(app.addr, &app.key)
        .await
        .expect("a's first stream");
    let _a2 = SlowStream::open(app.addr, &app.key)
        .await
        .expect("a's second stream");
    assert_refused(
        SlowStream::open(app.addr, &app.key).await,
        "a's third stream",
    );
    let _b1 = SlowStream::open(app.addr, &b_key)
        .await
        .expect("b streams while a is at its limit");
    assert_refused(
        SlowStream::open(app.addr, &c_key).await,
        "c's stream past the global limit",
    );

    drop(a1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SlowStream::open(app.addr, &app.key).await {
            Ok(_) => break,
            Err(status) => {
                assert_refused(Err(status), "a's stream while its first one closes");
                assert!(Instant::now() < deadline, "a's first stream never closed");
                // Polling: nothing tells a client that another one's stream ended.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A reader that takes one page and then stops reading holds no database connection
/// while it is paused: a query gives its connection back as soon as its rows are in,
/// and the read-ahead holds rows, not connections.
async fn a_paused_reader_holds_no_pooled_connection(backend: Backend) {
    let app = spawn_app_with(backend, |args| {
        // The tenant's one place shows whether its stream is still open.
        args.limits.max_streams_per_tenant = 1;
        // No health probe takes a connection while the test looks at the pool.
        args.health_interval = Duration::from_secs(3600);
    })
    .await;
    seed(&app.client(), "paused", SLOW_CONTACTS, SLOW_FILLER).await;
    let mut reader = SlowStream::open(app.addr, &app.key)
        .await
        .expect("the stream opens");
    let first = reader.next().await.expect("first page").expect("a page");
    assert_eq!(first.contacts.len(), 1);

    pool_goes_idle(&app, Duration::from_secs(10), "while the reader is paused").await;
    assert_refused(
        SlowStream::open(app.addr, &app.key).await,
        "a second stream: the paused one is still open",
    );
    // The refused call looked its key up; once that connection is back the pool is
    // idle again, with the paused stream still open.
    pool_goes_idle(&app, Duration::from_secs(10), "after the refused stream").await;

    // Then the reader goes on and gets every contact once.
    let mut ids = BTreeSet::from([first.contacts[0].id.clone()]);
    let mut count = 1;
    while let Some(page) = reader.next().await.expect("a page") {
        count += page.contacts.len();
        ids.extend(page.contacts.into_iter().map(|c| c.id));
    }
    assert_eq!((count, ids.len()), (SLOW_CONTACTS, SLOW_CONTACTS));
}

/// Waits until no database connection of the app is lent out, or panics after `within`.
async fn pool_goes_idle(app: &TestApp, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let usage = app.store.pool_usage();
        if usage.open == usage.idle {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} connections still in use after {within:?}: {usage:?}",
            usage.open - usage.idle
        );
        // Polling: the pool has no event for "a connection came back".
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A key revoked while its stream runs ends the stream with UNAUTHENTICATED: the
/// stream checks its key again before a page once `--stream-key-recheck` has passed.
async fn a_key_revoked_mid_stream_ends_the_stream(backend: Backend) {
    let recheck = Duration::from_millis(300);
    let app = spawn_app_with(backend, |args| args.limits.stream_key_recheck = recheck).await;
    let tenant = crate::support::unique_tenant();
    let (key_id, key) = kraiter_contacts::keys::create(app.store.as_ref(), &tenant)
        .await
        .expect("a key of a new tenant");
    seed(
        &app.client_with_key(Some(&key)),
        "revoked",
        SLOW_CONTACTS,
        SLOW_FILLER,
    )
    .await;
    let mut reader = SlowStream::open(app.addr, &key)
        .await
        .expect("the stream opens");
    reader.next().await.expect("first page").expect("a page");

    assert!(app.store.revoke_api_key(&key_id).await.expect("revoke"));
    let revoked = Instant::now();
    // A reader slower than the recheck interval: the next page the server sends is
    // due a check.
    tokio::time::sleep_until(revoked + recheck).await;
    let mut pages = 1;
    let status = loop {
        match reader.next().await {
            Ok(Some(_)) => pages += 1,
            Ok(None) => panic!("the stream ran to its end ({pages} pages) on a revoked key"),
            Err(status) => break status,
        }
    };
    let took = revoked.elapsed();
    assert_status(
        Err::<(), _>(status),
        Code::Unauthenticated,
        "UNAUTHORISED",
        "a stream whose key was revoked",
    );
    eprintln!("revoked key: stream ended after {pages} pages, {took:?} after the revocation");
    // The pages already on their way (flow-control windows, the channel) still come;
    // the end comes once they are read.
    assert!(
        took < recheck + Duration::from_secs(5),
        "the stream ended {took:?} after the revocation"
    );
}

conformance!(
    a_key_revoked_mid_stream_ends_the_stream,
    a_paused_reader_holds_no_pooled_connection,
    open_streams_are_bounded_per_tenant_and_in_all,
    large_contacts_come_in_pages_within_the_byte_budget,
    large_timeline_entries_come_in_pages_within_the_byte_budget,
    a_tiny_budget_gives_pages_of_one_send_or_scheduled_send,
);
