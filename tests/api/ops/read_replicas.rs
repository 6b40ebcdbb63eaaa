//! Read replicas (`--database-read-url`) on a real hot standby (`support::standby`):
//! the heavy reads (lists, searches, filters, counts, timelines) run on the standby
//! and give what the primary gives once replayed; point reads stay on the primary;
//! `x-kraiter-consistency: primary` reads from the primary; a standby that stops
//! mid-stream leaves the stream to finish from the primary exactly once; a standby
//! whose replay is paused is skipped once it lags past `--max-replica-lag`. Which
//! server ran what is read from each one's `pg_stat_statements`.

use std::time::Duration;

use kraiter_contacts::api::consistency::HEADER;
use kraiter_contacts::api::pb::{self, FilterOperator as Op};
use kraiter_contacts::config::ServeArgs;
use serde_json::json;
use tonic::{Code, Request};

use crate::support::metrics::{scrape, try_sample};
use crate::support::standby::{REPLICA_CHECK, ReplicaPair, connect, replica_pair, statement_calls};
use crate::support::wait::{PATIENCE, eventually};
use crate::support::{Backend, Client, TestApp, create, json_of, spawn_app_with, unique_tenant};

/// A page of a contact list, as the store runs it (not a point read or a count).
const LIST: &[&str] = &["FROM contacts WHERE tenant_id", "ORDER BY"];
const COUNT: &[&str] = &["count(*) AS n FROM contacts"];
const TIMELINE: &[&str] = &["FROM timeline_entries WHERE tenant_id"];
const SENDS: &[&str] = &["FROM sends WHERE tenant_id"];
const SCHEDULED: &[&str] = &["FROM scheduled_sends"];
/// The coalesced point reads of GetContact.
const POINT_READ: &[&str] = &["FROM api_keys k LEFT JOIN contacts c", "c.id = ANY($2)"];

/// Statement counts of both servers, to compare before and after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ran {
    primary: i64,
    standby: i64,
}

async fn ran(pair: &ReplicaPair, parts: &[&str]) -> Ran {
    Ran {
        primary: statement_calls(&pair.primary_url(), parts).await,
        standby: statement_calls(&pair.standby_url(), parts).await,
    }
}

impl std::ops::Sub for Ran {
    type Output = Ran;

    fn sub(self, before: Ran) -> Ran {
        Ran {
            primary: self.primary - before.primary,
            standby: self.standby - before.standby,
        }
    }
}

/// A server on the pair's primary with the standby as its read replica, its tenant
/// named so the test can look for its rows on the standby.
async fn app_on(
    pair: &ReplicaPair,
    tenant: &str,
    configure: impl FnOnce(&mut ServeArgs),
) -> TestApp {
    let (primary, standby) = (pair.primary_url(), pair.standby_url());
    let tenant = tenant.to_owned();
    spawn_app_with(Backend::Postgres, move |args| {
        args.store.database_url = primary;
        args.replicas.database_read_url = vec![standby];
        args.replicas.replica_check_interval = REPLICA_CHECK;
        args.bootstrap_tenant = Some(tenant);
        args.metrics_listen = Some("127.0.0.1:0".parse().expect("an address"));
        configure(args);
    })
    .await
}

/// Waits until the standby holds `count` contacts of `tenant`.
async fn wait_on_standby(pair: &ReplicaPair, tenant: &str, count: i64) {
    let mut standby = connect(&pair.standby_url()).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let held: i64 =
            match sqlx::query_scalar("SELECT count(*) FROM contacts WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&mut standby)
                .await
            {
                Ok(held) => held,
                // The standby has not replayed the migrations that made the table yet.
                Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("42P01") => 0,
                Err(err) => panic!("count on the standby: {err}"),
            };
        if held == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the standby holds {held} of {count} contacts after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn primary<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(HEADER, "primary".parse().expect("ascii"));
    request
}

/// Every contact of a ListContacts, in order, checking that no page repeats one.
async fn emails(client: &mut Client, request: Request<pb::ListContactsRequest>) -> Vec<String> {
    let mut stream = client
        .list_contacts(request)
        .await
        .expect("the list starts")
        .into_inner();
    let mut emails = Vec::new();
    while let Some(page) = stream.message().await.expect("a page") {
        emails.extend(page.contacts.into_iter().map(|c| c.email));
    }
    emails
}

async fn count(client: &mut Client, request: Request<pb::CountContactsRequest>) -> i64 {
    client
        .count_contacts(request)
        .await
        .expect("the count")
        .into_inner()
        .count
}

/// Three sends and two scheduled sends of `contact`.
async fn record_activity(app: &TestApp, contact: &str) {
    use pb::record_send_request::Recipient;
    let mut activity = app.activity();
    for template in ["welcome", "news", "digest"] {
        activity
            .record_send(pb::RecordSendRequest {
                recipient: Some(Recipient::ContactId(contact.to_owned())),
                template_id: template.into(),
                status: pb::SendStatus::Sent as i32,
                source: pb::SendSource::Transactional as i32,
                ..Default::default()
            })
            .await
            .expect("record a send");
    }
    for seconds in [4_000_000_000, 4_000_000_100] {
        activity
            .schedule_send(pb::ScheduleSendRequest {
                contact_id: contact.to_owned(),
                template_id: "later".into(),
                scheduled_for: Some(prost_types::Timestamp { seconds, nanos: 0 }),
                source: pb::SendSource::Sequence as i32,
                ..Default::default()
            })
            .await
            .expect("schedule a send");
    }
}

/// How many sends and scheduled sends of `contact` the lists stream, in pages of 2.
async fn list_sends(client: &mut Client, contact: &str) -> (usize, usize) {
    let mut sends = client
        .list_contact_sends(pb::ListContactSendsRequest {
            id: contact.to_owned(),
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("the sends")
        .into_inner();
    let mut sent = 0;
    while let Some(page) = sends.message().await.expect("a page") {
        sent += page.sends.len();
    }
    let mut scheduled = client
        .list_contact_scheduled_sends(pb::ListContactScheduledSendsRequest {
            id: contact.to_owned(),
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("the scheduled sends")
        .into_inner();
    let mut pending = 0;
    while let Some(page) = scheduled.message().await.expect("a page") {
        pending += page.scheduled_sends.len();
    }
    (sent, pending)
}

/// The ids of a contact's timeline, in order.
async fn timeline_ids(
    client: &mut Client,
    request: Request<pb::ListContactTimelineRequest>,
) -> Vec<String> {
    let mut stream = client
        .list_contact_timeline(request)
        .await
        .expect("the timeline")
        .into_inner();
    let mut ids = Vec::new();
    while let Some(page) = stream.message().await.expect("a page") {
        ids.extend(page.entries.into_iter().map(|entry| entry.id));
    }
    ids
}

fn plan_is(plan: &str) -> pb::ContactFilter {
    pb::ContactFilter {
        field: "properties.plan".into(),
        operator: Op::Equals as i32,
        value: Some(kraiter_contacts::api::convert::to_value(json!(plan))),
        ..Default::default()
    }
}

fn seats_over(seats: i64) -> pb::ContactFilter {
    pb::ContactFilter {
        field: "properties.seats".into(),
        operator: Op::GreaterThan as i32,
        value: Some(kraiter_contacts::api::convert::to_value(json!(seats))),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_searches_filters_and_counts_run_on_the_standby_and_point_reads_on_the_primary() {
    let pair = replica_pair().await;
    let _turn = pair.lock.lock().await;
    let tenant = unique_tenant().to_string();
    let app = app_on(pair, &tenant, |_| {}).await;
    let mut client = app.client();
    let mut created = Vec::new();
    for i in 0..45 {
        let plan = ["pro", "free", "team"][i % 3];
        let email = format!(
            "user{i:02}@{}.example",
            if i % 5 == 0 { "acme" } else { "mail" }
        );
        created.push(create(&mut client, &email, json!({"plan": plan, "seats": i})).await);
        if i == 0 {
            // Committed before the contacts that follow, so replayed with them.
            record_activity(&app, &created[0].id).await;
        }
    }
    wait_on_standby(pair, &tenant, created.len() as i64).await;

    let (list0, count0, timeline0, points0) = (
        ran(pair, LIST).await,
        ran(pair, COUNT).await,
        ran(pair, TIMELINE).await,
        ran(pair, POINT_READ).await,
    );
    // What the primary holds, computed from what was written.
    let by_id: Vec<String> = created.iter().map(|c| c.email.clone()).collect();
    let pro: Vec<String> = created
        .iter()
        .filter(|c| json_of(c)["plan"] == "pro")
        .map(|c| c.email.clone())
        .collect();
    let acme: Vec<String> = by_id
        .iter()
        .filter(|e| e.contains("@acme"))
        .cloned()
        .collect();
    let mut big_desc: Vec<String> = created
        .iter()
        .filter(|c| json_of(c)["seats"].as_i64().expect("seats") > 30)
        .map(|c| c.email.clone())
        .collect();
    big_desc.sort();
    big_desc.reverse();

    let all = emails(
        &mut client,
        Request::new(pb::ListContactsRequest {
            limit: 7,
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(all, by_id, "the whole list, in id order, from the standby");
    let searched = emails(
        &mut client,
        Request::new(pb::ListContactsRequest {
            search: "acme".into(),
            limit: 3,
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(searched, acme, "a search");
    let filtered = emails(
        &mut client,
        Request::new(pb::ListContactsRequest {
            filter: Some(plan_is("pro")),
            limit: 4,
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(filtered, pro, "a filter on a property");
    let ordered = emails(
        &mut client,
        Request::new(pb::ListContactsRequest {
            filter: Some(seats_over(30)),
            order_by: pb::ContactOrder::EmailDesc as i32,
            limit: 5,
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(ordered, big_desc, "a filter with an order");
    let counted = count(
        &mut client,
        Request::new(pb::CountContactsRequest {
            filter: Some(plan_is("pro")),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(counted, pro.len() as i64, "a count");
    let timeline_request = pb::ListContactTimelineRequest {
        id: created[0].id.clone(),
        limit: 2,
        ..Default::default()
    };
    let entries = timeline_ids(&mut client, Request::new(timeline_request.clone())).await;
    assert!(
        entries.len() >= 6,
        "creation, sends, schedules: {entries:?}"
    );
    let sends0 = (ran(pair, SENDS).await, ran(pair, SCHEDULED).await);
    let sends = list_sends(&mut client, &created[0].id).await;
    assert_eq!(sends.0, 3, "the sends");
    assert_eq!(sends.1, 2, "the scheduled sends");
    let sent = ran(pair, SENDS).await - sends0.0;
    let scheduled = ran(pair, SCHEDULED).await - sends0.1;
    assert!(sent.standby >= 2 && sent.primary == 0, "sends: {sent:?}");
    assert!(
        scheduled.standby >= 1 && scheduled.primary == 0,
        "scheduled sends: {scheduled:?}"
    );
    for contact in &created[..5] {
        let got = client
            .get_contact(pb::GetContactRequest {
                id: contact.id.clone(),
            })
            .await
            .expect("a point read")
            .into_inner();
        assert_eq!(got.email, contact.email);
    }

    let lists = ran(pair, LIST).await - list0;
    assert!(
        lists.standby >= 4,
        "the lists ran on the standby: {lists:?}"
    );
    assert_eq!(lists.primary, 0, "no list ran on the primary: {lists:?}");
    let counts = ran(pair, COUNT).await - count0;
    assert_eq!(
        counts,
        Ran {
            primary: 0,
            standby: 1
        },
        "the count"
    );
    let timelines = ran(pair, TIMELINE).await - timeline0;
    assert_eq!(timelines.primary, 0, "the timeline: {timelines:?}");
    assert!(timelines.standby >= 1, "the timeline: {timelines:?}");
    let points = ran(pair, POINT_READ).await - points0;
    assert_eq!(
        points.standby, 0,
        "no point read on the standby: {points:?}"
    );
    assert!(
        points.primary >= 1,
        "point reads on the primary: {points:?}"
    );

    // The same calls asking for the primary's freshness run there, alike.
    let (list0, count0) = (ran(pair, LIST).await, ran(pair, COUNT).await);
    let fresh = emails(
        &mut client,
        primary(pb::ListContactsRequest {
            filter: Some(plan_is("pro")),
            limit: 4,
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(fresh, pro);
    let fresh_count = count(
        &mut client,
        primary(pb::CountContactsRequest {
            filter: Some(plan_is("pro")),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(fresh_count, pro.len() as i64);
    let lists = ran(pair, LIST).await - list0;
    assert!(lists.primary >= 1, "on the primary: {lists:?}");
    assert_eq!(lists.standby, 0, "not on the standby: {lists:?}");
    let counts = ran(pair, COUNT).await - count0;
    assert_eq!(
        counts,
        Ran {
            primary: 1,
            standby: 0
        }
    );
    let timeline0 = ran(pair, TIMELINE).await;
    let fresh_entries = timeline_ids(&mut client, primary(timeline_request)).await;
    assert_eq!(fresh_entries, entries, "the timeline, alike on both");
    let timelines = ran(pair, TIMELINE).await - timeline0;
    assert!(
        timelines.primary >= 1 && timelines.standby == 0,
        "{timelines:?}"
    );

    // An unknown consistency is refused, naming the header.
    let mut bad = Request::new(pb::CountContactsRequest::default());
    bad.metadata_mut()
        .insert(HEADER, "eventual".parse().expect("ascii"));
    let status = client.count_contacts(bad).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains(HEADER), "{status:?}");

    let body = scrape(app.metrics_addr.expect("metrics")).await;
    let name = format!(
        "kraiter_db_replica_usable{{replica=\"127.0.0.1:{}/kraiter\"}}",
        pair.standby.port()
    );
    assert_eq!(try_sample(&body, &name), Some(1.0), "{body}");
}

#[tokio::test]
async fn sqlite_refuses_read_replicas() {
    use clap::Parser;
    let dir = tempfile::tempdir().expect("a directory");
    let sqlite = format!("sqlite://{}/contacts.db", dir.path().display());
    let cli = kraiter_contacts::config::Cli::try_parse_from([
        "kraiter-contacts",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &sqlite,
        "--database-read-url",
        "postgres://postgres@127.0.0.1:1/kraiter",
    ])
    .expect("the flags parse");
    let err = match kraiter_contacts::startup::Application::build(&cli.serve).await {
        Ok(_) => panic!("SQLite with a read replica starts"),
        Err(err) => err,
    };
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        chain.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(chain.contains("--database-read-url"), "{chain}");
    assert!(chain.contains("SQLite"), "{chain}");
}

mod faults;
