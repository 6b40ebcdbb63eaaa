//! The calls each scenario makes. Every call checks its answer, so a benchmark of
//! wrong answers (empty pages, missing contacts) shows up as errors, not speed.

use std::sync::Arc;
use std::time::Duration;

use kraiter_contacts::api::{convert, pb};
use tonic::Status;

use crate::data::Dataset;
use crate::load::{self, Client, Clients, Measured, Plan, Raw, Watch};

/// In the order the report lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    GetContact,
    GetContactByEmail,
    CreateContact,
    UpdateContact,
    UpsertContact,
    BatchGet,
    ListAll,
    ListAllDecoded,
    SearchRare,
    SearchCommon,
    SearchNone,
    Timeline,
    /// The full stream of the contacts a common term finds (one in eight).
    ListSearch,
    /// WatchContacts (`watch.rs`, a server of its own): the backlog's replay, and
    /// delivery to 1 and to 100 watchers beside paced creates.
    WatchReplay,
    WatchDelivery1,
    WatchDelivery100,
}

/// The common search term: one contact in eight has a gmail address.
pub const COMMON_TERM: &str = "gmail";

impl Scenario {
    pub const UNARY: [Scenario; 6] = [
        Scenario::GetContact,
        Scenario::GetContactByEmail,
        Scenario::CreateContact,
        Scenario::UpdateContact,
        Scenario::UpsertContact,
        Scenario::BatchGet,
    ];
    /// Measured in rounds, each next to its baseline, where there is one.
    pub const PAIRED: [Scenario; 7] = [
        Scenario::GetContact,
        Scenario::GetContactByEmail,
        Scenario::CreateContact,
        Scenario::UpdateContact,
        Scenario::UpsertContact,
        Scenario::BatchGet,
        Scenario::ListAll,
    ];
    /// Scenarios with a latency target, also measured one call at a time.
    pub const LATENCY: [Scenario; 4] = [
        Scenario::SearchRare,
        Scenario::SearchCommon,
        Scenario::SearchNone,
        Scenario::Timeline,
    ];

    /// A write whose pgbench baseline also runs at the server's pool size (`runs.rs`).
    /// UpsertContact is one too: at 32 clients its seven-statement transactions
    /// contended where the service's 16 connections do not, and its baseline spent
    /// three to five times the service's PostgreSQL CPU per call.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Scenario::CreateContact | Scenario::UpdateContact | Scenario::UpsertContact
        )
    }

    /// One whole-tenant stream at a time, counted in rows.
    pub fn is_full_list(self) -> bool {
        matches!(
            self,
            Scenario::ListAll
                | Scenario::ListAllDecoded
                | Scenario::ListSearch
                | Scenario::WatchReplay
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::GetContact => "GetContact",
            Scenario::GetContactByEmail => "GetContactByEmail",
            Scenario::CreateContact => "CreateContact",
            Scenario::UpdateContact => "UpdateContact (property merge)",
            Scenario::UpsertContact => "UpsertContact (merge into an existing email)",
            Scenario::BatchGet => "BatchGetContacts (100 ids)",
            Scenario::ListAll => "ListContacts, full stream, pages of 1000",
            Scenario::ListAllDecoded => {
                "ListContacts, full stream, pages of 1000, reader decodes each Contact"
            }
            Scenario::SearchRare => "search, rare term (1 match), first page",
            Scenario::SearchCommon => "search, common term (1 in 8), first page",
            Scenario::SearchNone => "search, no match",
            Scenario::Timeline => "ListContactTimeline, first page of 10,000 entries",
            Scenario::ListSearch => {
                "ListContacts, full stream of search `gmail` (1 in 8), pages of 1000"
            }
            Scenario::WatchReplay => "WatchContacts, backlog replay from OLDEST_RETAINED",
            Scenario::WatchDelivery1 => {
                "WatchContacts, 1 watcher: delivery after the create's answer, 1,000 creates/s offered"
            }
            Scenario::WatchDelivery100 => {
                "WatchContacts, 100 watchers: delivery after the create's answer, 1,000 creates/s offered"
            }
        }
    }
}

async fn drive_maybe_paced<F, Fut>(
    clients: &Clients,
    plan: Plan,
    watch: Watch,
    every: Option<Duration>,
    call: F,
) -> Measured
where
    F: Fn(Client, u64, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<u64, Status>> + Send,
{
    match every {
        Some(every) => {
            load::drive_paced_with(clients, plan.concurrency, every, true, plan, watch, call).await
        }
        None => load::drive(clients, plan, watch, call).await,
    }
}

/// Runs `scenario` under `plan` (the full list runs streams one after another for
/// at least `plan.duration`).
pub async fn run(
    scenario: Scenario,
    clients: &Clients,
    plan: Plan,
    watch: Watch,
    data: &Arc<Dataset>,
) -> Measured {
    run_paced(scenario, clients, plan, watch, data, None).await
}

/// `run`, with each of the point reads' workers starting a call every `every`
/// instead of as soon as the last one came back (the other scenarios ignore it):
/// light load measures echo at the service's own call rate with it, so that echo's
/// threads sleep between calls as the service's do.
pub async fn run_paced(
    scenario: Scenario,
    clients: &Clients,
    plan: Plan,
    watch: Watch,
    data: &Arc<Dataset>,
    every: Option<Duration>,
) -> Measured {
    let data = data.clone();
    // Creates need fresh emails on every run, also across repeated runs.
    let tag = Dataset::new_email_tag();
    match scenario {
        Scenario::GetContact => {
            drive_maybe_paced(clients, plan, watch, every, move |mut client, r, _| {
                let id = data.id(r % data.contacts);
                async move {
                    client.get_contact(pb::GetContactRequest { id }).await?;
                    Ok(1)
                }
            })
            .await
        }
        Scenario::GetContactByEmail => {
            drive_maybe_paced(clients, plan, watch, every, move |mut client, r, _| {
                let email = Dataset::email(r % data.contacts);
                async move {
                    let found = client
                        .get_contact_by_email(pb::GetContactByEmailRequest { email })
                        .await?;
                    match found.into_inner().contact {
                        Some(_) => Ok(1),
                        None => Err(Status::not_found("seeded contact not found by email")),
                    }
                }
            })
            .await
        }
        Scenario::CreateContact => {
            load::drive(clients, plan, watch, move |mut client, r, seq| {
                let request = pb::CreateContactRequest {
                    email: Dataset::new_email(&format!("{seq:x}"), &tag),
                    properties: Some(convert::to_struct(Dataset::properties(r % data.contacts))),
                    ..Default::default()
                };
                async move {
                    client.create_contact(request).await?;
                    Ok(1)
                }
            })
            .await
        }
        Scenario::UpdateContact => {
            load::drive(clients, plan, watch, move |mut client, r, seq| {
                let request = pb::UpdateContactRequest {
                    id: data.id(r % data.contacts),
                    email: None,
                    properties: Some(convert::to_struct(update_patch(r, seq))),
                    ..Default::default()
                };
                async move {
                    client.update_contact(request).await?;
                    Ok(1)
                }
            })
            .await
        }
        Scenario::UpsertContact => {
            // UpdateContact's patch, by email: every call merges into a seeded contact.
            load::drive(clients, plan, watch, move |mut client, r, seq| {
                let request = pb::UpsertContactRequest {
                    email: Dataset::email(r % data.contacts),
                    properties: Some(convert::to_struct(update_patch(r, seq))),
                    ..Default::default()
                };
                async move {
                    let response = client.upsert_contact(request).await?.into_inner();
                    if response.created || response.contact.is_none() {
                        return Err(Status::internal("an upsert of a seeded email created"));
                    }
                    Ok(1)
                }
            })
            .await
        }
        Scenario::BatchGet => {
            load::drive(clients, plan, watch, move |mut client, r, _| {
                let ids = (0..BATCH_IDS)
                    .map(|j| data.id(crate::data::splitmix(r ^ j) % data.contacts))
                    .collect();
                async move {
                    let request = pb::BatchGetContactsRequest {
                        ids,
                        emails: Vec::new(),
                    };
                    let response = client.batch_get_contacts(request).await?.into_inner();
                    if response.contacts.len() as u64 != BATCH_IDS {
                        return Err(Status::internal(format!(
                            "batch get found {} of {BATCH_IDS} seeded contacts",
                            response.contacts.len()
                        )));
                    }
                    Ok(1)
                }
            })
            .await
        }
        Scenario::ListAll => {
            let expected = data.contacts;
            load::drive_sequential(&clients.raw, plan.duration, watch, move |raw| {
                list_all_framed(raw, expected)
            })
            .await
        }
        Scenario::ListSearch => {
            let expected = common_term_matches(data.contacts);
            load::drive_sequential(&clients.raw, plan.duration, watch, move |raw| {
                list_framed(raw, COMMON_TERM, expected)
            })
            .await
        }
        // Measured by `watch::run`, against a server of its own.
        Scenario::WatchReplay | Scenario::WatchDelivery1 | Scenario::WatchDelivery100 => {
            Measured::default()
        }
        Scenario::ListAllDecoded => {
            let expected = data.contacts;
            load::drive_sequential(&clients[0], plan.duration, watch, move |client| {
                list_all(client, expected)
            })
            .await
        }
        Scenario::SearchRare => {
            load::drive(clients, plan, watch, move |client, r, _| {
                let term = Dataset::customer_ref(r % data.contacts);
                search(client, term, 1)
            })
            .await
        }
        Scenario::SearchCommon => {
            load::drive(clients, plan, watch, move |client, _, _| {
                search(client, COMMON_TERM.to_owned(), 20)
            })
            .await
        }
        Scenario::SearchNone => {
            load::drive(clients, plan, watch, move |client, r, _| {
                search(client, nonsense_word(r), 0)
            })
            .await
        }
        Scenario::Timeline => {
            let id = data.id(data.hot_contact());
            load::drive(clients, plan, watch, move |mut client, _, _| {
                let request = pb::ListContactTimelineRequest {
                    id: id.clone(),
                    max_pages: 1,
                    ..Default::default()
                };
                async move {
                    let mut stream = client.list_contact_timeline(request).await?.into_inner();
                    let mut items = 0;
                    while let Some(page) = stream.message().await? {
                        items += page.entries.len() as u64;
                    }
                    if items != 20 {
                        return Err(Status::internal(format!(
                            "timeline page had {items} entries"
                        )));
                    }
                    Ok(items)
                }
            })
            .await
        }
    }
}

/// Ids a BatchGetContacts call asks for.
pub const BATCH_IDS: u64 = 100;

/// UpdateContact's (and UpsertContact's) patch: `score` and a `lastSeenAt` within the
/// last day, as an app would record it (its trigrams are common ones).
fn update_patch(r: u64, seq: u64) -> serde_json::Map<String, serde_json::Value> {
    let mut patch = serde_json::Map::new();
    patch.insert("score".into(), (r % 1000).into());
    let seen = chrono::Utc::now() - chrono::Duration::seconds((seq % 86_400) as i64);
    patch.insert(
        "lastSeenAt".into(),
        seen.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            .into(),
    );
    patch
}

/// Eight letters that spell no name, company, address or customer reference of the
/// dataset.
fn nonsense_word(r: u64) -> String {
    let mut x = r;
    // "qu": no seeded value holds it. A `q` and seven letters was once the customer
    // reference of contact 553795 (`CR-QSFPETMZ`); references never hold a `U`.
    let mut word = String::from("qu");
    for _ in 0..6 {
        word.push((b'a' + (x % 26) as u8) as char);
        x /= 26;
    }
    word
}

async fn search(mut client: Client, term: String, expect: u64) -> Result<u64, Status> {
    let request = pb::ListContactsRequest {
        search: term.clone(),
        limit: 20,
        max_pages: 1,
        ..Default::default()
    };
    let mut stream = client.list_contacts(request).await?.into_inner();
    let mut items = 0;
    let mut first = None;
    while let Some(page) = stream.message().await? {
        items += page.contacts.len() as u64;
        first = first.or(page.contacts.into_iter().next());
    }
    if items < expect || (expect == 0 && items > 0) {
        let found = first.map_or_else(String::new, |c| {
            format!(", the first {} <{}>", c.id, c.email)
        });
        return Err(Status::internal(format!(
            "search `{term}` returned {items} contacts{found}, expected {expect}"
        )));
    }
    Ok(items)
}

/// `ListContactsResponse` as it is on the wire, each contact left as its bytes. The
/// export's reader frames contacts (and checks that ids ascend) the way `COPY`'s reader
/// splits lines, so the scenario measures the server rather than the bench building a
/// `Struct` per row; `ListAllDecoded` measures the latter too.
#[derive(Clone, PartialEq, prost::Message)]
struct FramedPage {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    contacts: Vec<bytes::Bytes>,
    #[prost(string, tag = "2")]
    next_cursor: String,
}

/// Just the id of a contact (field 1), skipping the rest.
#[derive(Clone, PartialEq, prost::Message)]
struct ContactId {
    #[prost(string, tag = "1")]
    id: String,
}

pub(crate) async fn list_all_framed(raw: Raw, expected: u64) -> Result<u64, Status> {
    list_framed(raw, "", expected).await
}

/// Seeded contacts with a gmail address: contact `n` has `DOMAINS[n % 8]`.
pub(crate) fn common_term_matches(contacts: u64) -> u64 {
    contacts.div_ceil(8)
}

/// The whole stream of the contacts `search` finds (all of them if it is empty),
/// framed as `list_all_framed` frames it.
pub(crate) async fn list_framed(mut raw: Raw, search: &str, expected: u64) -> Result<u64, Status> {
    let request = tonic::Request::new(pb::ListContactsRequest {
        limit: 1000,
        search: search.to_owned(),
        ..Default::default()
    });
    raw.ready()
        .await
        .map_err(|err| Status::unavailable(err.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/kraiter.contacts.v1.ContactsService/ListContacts",
    );
    let codec = tonic_prost::ProstCodec::<pb::ListContactsRequest, FramedPage>::default();
    let mut stream = raw
        .server_streaming(request, path, codec)
        .await?
        .into_inner();
    let mut items = 0;
    let mut last = String::new();
    while let Some(page) = stream.message().await? {
        items += page.contacts.len() as u64;
        if let Some(contact) = page.contacts.last() {
            let id = <ContactId as prost::Message>::decode(contact.clone())
                .map_err(|err| Status::internal(err.to_string()))?
                .id;
            if id <= last {
                return Err(Status::internal("ids out of order across pages"));
            }
            last = id;
        }
    }
    if items < expected {
        return Err(Status::internal(format!(
            "full list returned {items} contacts, expected at least {expected}"
        )));
    }
    Ok(items)
}

async fn list_all(mut client: Client, expected: u64) -> Result<u64, Status> {
    let request = pb::ListContactsRequest {
        limit: 1000,
        ..Default::default()
    };
    let mut stream = client.list_contacts(request).await?.into_inner();
    let mut items = 0;
    while let Some(page) = stream.message().await? {
        items += page.contacts.len() as u64;
    }
    if items < expected {
        return Err(Status::internal(format!(
            "full list returned {items} contacts, expected at least {expected}"
        )));
    }
    Ok(items)
}

/// One call at a time, for latency targets.
pub fn single(plan: Plan) -> Plan {
    Plan {
        concurrency: 1,
        ..plan
    }
}
