//! WatchContacts, the change feed (issue 17), on PostgreSQL, against a server of its
//! own (its per-tenant watcher limit raised to hold 100 watchers):
//!
//! - **Delivery latency**: 1 and 100 watchers of the seeded tenant (each on an HTTP/2
//!   connection of its own, as separate services would be) while the paced driver
//!   (`load::drive_paced`, the flood's) offers 1,000 CreateContact/s. A change's
//!   latency is from the moment its create's answer reached the bench to the moment
//!   the watcher received it, both read from this process's monotonic clock; the
//!   answer arrives after the commit, so this leaves out the commit-to-answer leg
//!   (a change can even arrive first: counted apart, as 0). Also shown: from the
//!   change's `occurred_at` (the server's wall clock when it built the write, before
//!   the statement) to the watcher's wall clock, the same host's clock.
//! - **Backlog replay**: a watcher from OLDEST_RETAINED over the tenant's outbox (one
//!   change per seeded contact, written by one INSERT ... SELECT, plus the changes of
//!   the writes that ran before), against `COPY (SELECT <the feed's columns> FROM
//!   contact_changes WHERE tenant_id = ... ORDER BY xid, seq) TO STDOUT` of the same
//!   rows, in rounds alternating which goes first.
//!
//! Readers frame each change (its id, its time) without decoding the contact into a
//! `Struct` tree, as the export's reader does, so the figures are the server's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kraiter_contacts::api::convert;
use kraiter_contacts::api::pb;
use sqlx::postgres::{PgPool, PgPoolCopyExt};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::data::Dataset;
use crate::load::{self, Measured, Plan, Watch};
use crate::report::{Baseline, Round, Rounds, Row};
use crate::scenarios::Scenario;

/// The offered CreateContact rate.
pub const CREATE_RATE: u32 = 1_000;
/// Paced workers offering it (each a call every `WORKERS / CREATE_RATE` s).
const WORKERS: usize = 20;
/// Watcher counts measured.
pub const WATCHERS: [usize; 2] = [1, 100];
/// The server's flags: room for 100 watchers of one tenant.
pub const SERVER_FLAGS: [&str; 4] = ["--max-watchers-per-tenant", "128", "--max-watchers", "256"];

/// A `ContactChange` as it is on the wire, its contact left as bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct FramedChange {
    #[prost(string, tag = "1")]
    token: String,
    #[prost(string, tag = "3")]
    contact_id: String,
    #[prost(bytes = "bytes", tag = "4")]
    contact: bytes::Bytes,
    #[prost(message, optional, tag = "6")]
    occurred_at: Option<prost_types::Timestamp>,
}

const WATCH_PATH: &str = "/kraiter.contacts.v1.ContactsService/WatchContacts";

async fn open_watch(
    addr: &str,
    key: &str,
    request: pb::WatchContactsRequest,
) -> anyhow::Result<tonic::Streaming<FramedChange>> {
    let channel = Channel::from_shared(addr.to_owned())?.connect().await?;
    let mut raw = tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20);
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse()?);
    raw.ready().await?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(WATCH_PATH);
    let codec = tonic_prost::ProstCodec::<pb::WatchContactsRequest, FramedChange>::default();
    Ok(raw
        .server_streaming(request, path, codec)
        .await?
        .into_inner())
}

/// A contact id's ULID as a number (ids the service makes are `con_` + a ULID).
fn id_number(id: &str) -> Option<u128> {
    id.strip_prefix("con_")
        .and_then(|ulid| ulid::Ulid::from_string(ulid).ok())
        .map(u128::from)
}

fn wall_micros(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// One received change: the contact's id, when it came (monotonic and wall clock),
/// and its `occurred_at` in µs since the epoch.
struct Seen {
    id: u128,
    at: Instant,
    wall: i64,
    occurred: i64,
}

/// The latency figures of one watcher count.
pub struct LatencyRow {
    pub watchers: usize,
    /// The creates in the measured window (the paced driver's figures).
    pub creates: Measured,
    /// Answer received -> watcher received, µs, sorted, over every watcher.
    pub from_answer: Vec<u32>,
    /// `occurred_at` -> watcher received (wall clocks), µs, sorted.
    pub from_occurred: Vec<u32>,
    /// Deliveries that came before their create's answer.
    pub before_answer: u64,
    /// Creates of the window some watcher never received (watcher x change).
    pub missing: u64,
    /// Wrong deliveries: a change twice to one watcher.
    pub repeated: u64,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[rank]) / 1000.0
}

/// `watchers` watchers of the tenant beside 1,000 CreateContact/s for `plan`.
async fn latency(
    addr: &str,
    key: &str,
    data: &Arc<Dataset>,
    plan: Plan,
    watch: Watch,
    watchers: usize,
) -> anyhow::Result<LatencyRow> {
    let mut streams = Vec::new();
    for _ in 0..watchers {
        let request = pb::WatchContactsRequest {
            start: pb::WatchStart::Now as i32,
            ..Default::default()
        };
        streams.push(open_watch(addr, key, request).await?);
    }
    // Every watch has taken its start position before the first create.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let measure_from = started + plan.warmup;
    let end = measure_from + plan.duration;
    let drain = end + Duration::from_secs(3);
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while let Ok(Ok(Some(change))) =
                    tokio::time::timeout_at(drain.into(), stream.message()).await
                {
                    let occurred = change
                        .occurred_at
                        .map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000);
                    if let Some(id) = id_number(&change.contact_id) {
                        seen.push(Seen {
                            id,
                            at: Instant::now(),
                            wall: wall_micros(SystemTime::now()),
                            occurred,
                        });
                    }
                }
                seen
            })
        })
        .collect();

    let answered: Arc<Mutex<Vec<(u128, Instant, Instant)>>> = Arc::default();
    let tag = Dataset::new_email_tag();
    let record = answered.clone();
    let data_for_calls = data.clone();
    let creates = load::drive_paced(
        &load::connect(addr, key, 4).await?,
        WORKERS,
        Duration::from_secs_f64(WORKERS as f64 / f64::from(CREATE_RATE)),
        plan,
        watch,
        move |mut client, r, seq| {
            let request = pb::CreateContactRequest {
                email: Dataset::new_email(&format!("w{seq:x}"), &tag),
                properties: Some(convert::to_struct(Dataset::properties(
                    r % data_for_calls.contacts,
                ))),
                ..Default::default()
            };
            let record = record.clone();
            async move {
                let began = Instant::now();
                let contact = client.create_contact(request).await?.into_inner();
                let done = Instant::now();
                if let Some(id) = id_number(&contact.id) {
                    record.lock().expect("not poisoned").push((id, began, done));
                }
                Ok(1)
            }
        },
    )
    .await;
    // The creates whose call fell in the measured window, as the driver counts them.
    let in_window: HashMap<u128, Instant> = answered
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|(_, began, done)| *began >= measure_from && *done <= end)
        .map(|(id, _, done)| (*id, *done))
        .collect();
    let mut row = LatencyRow {
        watchers,
        creates,
        from_answer: Vec::new(),
        from_occurred: Vec::new(),
        before_answer: 0,
        missing: 0,
        repeated: 0,
    };
    for reader in readers {
        let seen = reader.await?;
        let mut got = std::collections::HashSet::new();
        for change in &seen {
            let Some(done) = in_window.get(&change.id) else {
                continue;
            };
            if !got.insert(change.id) {
                row.repeated += 1;
                continue;
            }
            let micros = match change.at.checked_duration_since(*done) {
                Some(after) => after.as_micros().min(u128::from(u32::MAX)) as u32,
                None => {
                    row.before_answer += 1;
                    0
                }
            };
            row.from_answer.push(micros);
            let from_occurred = (change.wall - change.occurred).clamp(0, i64::from(u32::MAX));
            row.from_occurred.push(from_occurred as u32);
        }
        row.missing += (in_window.len() - got.len()) as u64;
    }
    row.from_answer.sort_unstable();
    row.from_occurred.sort_unstable();
    Ok(row)
}

/// One replay and its COPY.
pub struct ReplayRound {
    pub order: &'static str,
    pub changes: u64,
    pub took: Duration,
    pub copied: u64,
    pub copy_took: Duration,
    pub server_cpu: Duration,
    pub postgres_cpu: Duration,
    pub server_peak_rss_kib: u64,
}

impl ReplayRound {
    fn ratio(&self) -> f64 {
        (self.changes as f64 / self.took.as_secs_f64())
            / (self.copied as f64 / self.copy_took.as_secs_f64())
    }
}

/// One change per seeded contact (as its creation would have recorded it), in one
/// transaction: one xid, `seq` in id order.
async fn seed_changes(pool: &PgPool, data: &Dataset) -> anyhow::Result<Duration> {
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO contact_changes (tenant_id, xid, type, contact_id, changed_fields, \
         occurred_at, email, properties, suppressed, unsubscribed, created_at, updated_at, \
         revision) SELECT tenant_id, pg_current_xact_id(), 'CREATED', id, \
         (SELECT jsonb_agg(f)::text FROM (SELECT 'email' AS f UNION ALL \
          SELECT 'properties.' || k FROM jsonb_object_keys(c.properties) k) s), created_at, \
         email, properties, suppressed, unsubscribed, created_at, updated_at, revision \
         FROM contacts c WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(data.tenant.as_str())
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE contact_changes")
        .execute(pool)
        .await?;
    // As the seed's tables: COPY's and the stream's first pass must not pay for reads.
    let _ = sqlx::query(
        "SELECT pg_prewarm(c.oid) FROM pg_class c WHERE c.relname LIKE 'contact_changes%' \
         AND c.relkind IN ('r', 'i')",
    )
    .execute(pool)
    .await;
    Ok(started.elapsed())
}

async fn copy_changes(pool: &PgPool, data: &Dataset) -> anyhow::Result<(u64, Duration)> {
    let statement = format!(
        "COPY (SELECT xid::text, seq, type, contact_id, changed_fields, occurred_at, email, \
         properties, suppressed, unsubscribed, created_at, updated_at, revision \
         FROM contact_changes WHERE tenant_id = '{}' ORDER BY xid, seq) TO STDOUT",
        data.tenant.as_str()
    );
    let started = Instant::now();
    let mut stream = pool.copy_out_raw(&statement).await?;
    let mut rows = 0u64;
    while let Some(chunk) = stream.next().await {
        rows += chunk?.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    Ok((rows, started.elapsed()))
}

/// One replay from OLDEST_RETAINED to the last of `expected` changes; the changes.
async fn replay_stream(addr: &str, key: &str, expected: u64) -> Result<u64, tonic::Status> {
    let failed = |err: anyhow::Error| tonic::Status::internal(err.to_string());
    let request = pb::WatchContactsRequest {
        start: pb::WatchStart::OldestRetained as i32,
        max_changes: i32::try_from(expected).map_err(|e| failed(e.into()))?,
        ..Default::default()
    };
    let mut stream = open_watch(addr, key, request).await.map_err(failed)?;
    let mut changes = 0u64;
    let mut last = String::new();
    while let Some(change) = stream.message().await? {
        changes += 1;
        last = change.token;
    }
    if changes != expected || last.is_empty() {
        return Err(tonic::Status::internal(format!(
            "the replay delivered {changes} of {expected} changes"
        )));
    }
    Ok(changes)
}

/// One replay, measured as the full stream is (`load::drive_sequential`: CPU of
/// each process, the server's peak RSS, the rest of the machine's CPU).
async fn replay_once(
    addr: &str,
    key: &str,
    expected: u64,
    watch: Watch,
) -> anyhow::Result<Measured> {
    let target = (addr.to_owned(), key.to_owned());
    let measured =
        load::drive_sequential(&target, Duration::ZERO, watch, |(addr, key)| async move {
            replay_stream(&addr, &key, expected).await
        })
        .await;
    if let Some(err) = &measured.first_error {
        anyhow::bail!("replay failed: {err}");
    }
    Ok(measured)
}

/// Both measurements, printed as they finish.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    addr: &str,
    key: &str,
    pool: &PgPool,
    data: &Arc<Dataset>,
    plan: Plan,
    rounds: usize,
    watch: Watch,
) -> anyhow::Result<WatchRun> {
    eprintln!("   seeding one change per seeded contact");
    let seeded = seed_changes(pool, data).await?;
    let expected: i64 =
        sqlx::query_scalar("SELECT count(*) FROM contact_changes WHERE tenant_id = $1")
            .bind(data.tenant.as_str())
            .fetch_one(pool)
            .await?;
    let expected = expected as u64;
    eprintln!(
        "   {expected} changes in the outbox ({:.1} s to write)",
        seeded.as_secs_f64()
    );
    // Once: COPY's and the stream's first pass read in what the other may not have.
    copy_changes(pool, data).await?;
    let mut replays = Vec::new();
    let mut rounds_run = Vec::new();
    for round in 0..rounds {
        let forward = round % 2 == 0;
        let early = if forward {
            Some(copy_changes(pool, data).await?)
        } else {
            None
        };
        let measured = replay_once(addr, key, expected, watch).await?;
        let (changes, took, server_cpu, postgres_cpu, rss) = (
            measured.items,
            measured.elapsed,
            measured.server_cpu,
            measured.postgres_cpu,
            measured.server_peak_rss_kib,
        );
        let (copied, copy_took) = match early {
            Some(copied) => copied,
            None => copy_changes(pool, data).await?,
        };
        let replay = ReplayRound {
            order: if forward {
                "COPY, watch"
            } else {
                "watch, COPY"
            },
            changes,
            took,
            copied,
            copy_took,
            server_cpu,
            postgres_cpu,
            server_peak_rss_kib: rss,
        };
        rounds_run.push(Round {
            order: replay.order,
            service: measured,
            baseline: Baseline::CopyTo {
                rows: copied,
                took: copy_took,
            },
        });
        eprintln!(
            "   replay round {}: watch {:>8.0} changes/s, COPY TO {:>8.0} rows/s ({:.2} x); CPU s: server {:.1}, PostgreSQL {:.1}; server peak RSS {:.1} MiB",
            round + 1,
            changes as f64 / took.as_secs_f64(),
            copied as f64 / copy_took.as_secs_f64(),
            replay.ratio(),
            server_cpu.as_secs_f64(),
            postgres_cpu.as_secs_f64(),
            rss as f64 / 1024.0,
        );
        replays.push(replay);
    }

    let mut latencies = Vec::new();
    for watchers in WATCHERS {
        let row = latency(addr, key, data, plan, watch, watchers).await?;
        eprintln!(
            "   {watchers:>3} watcher(s): creates {:.0}/s (p50 {:.2} ms), delivery p50 {:.2} ms p99 {:.2} ms (from occurred_at p50 {:.2} ms p99 {:.2} ms), {} before the answer, {} missing, {} repeated",
            row.creates.throughput(),
            row.creates.percentile(0.5).as_secs_f64() * 1e3,
            percentile(&row.from_answer, 0.5),
            percentile(&row.from_answer, 0.99),
            percentile(&row.from_occurred, 0.5),
            percentile(&row.from_occurred, 0.99),
            row.before_answer,
            row.missing,
            row.repeated,
        );
        latencies.push(row);
    }
    let delivery = latencies.iter().map(LatencyRow::report_row).collect();
    Ok(WatchRun {
        section: markdown(plan, expected, &replays, &latencies),
        replay: Rounds {
            scenario: Scenario::WatchReplay,
            rounds: rounds_run,
        },
        delivery,
    })
}

/// What the change feed's run gives the report: its rows in the main table (the
/// replay judged against its COPY TO rounds, each watcher count's delivery) and its
/// own section with the figures the table has no columns for.
pub struct WatchRun {
    pub section: String,
    pub replay: Rounds,
    pub delivery: Vec<Row>,
}

mod report;
use report::markdown;
