//! ImportContacts through the Rust client (`contacts().import`: batches of 1,000 rows
//! and at most 1 MiB), one import at a time into the seeded tenant: all new rows, and
//! half existing addresses (a property patch) and half new. Rows are generated as the
//! client pulls them, like a reader of a file.
//!
//! On PostgreSQL the baseline is `COPY contacts FROM STDIN` of as many rows of the same
//! shape into the same tenant, every index in place, run before, between and after the
//! imports: each import is judged against the mean of the two around it, as both
//! rates fall while the table and its indexes grow. Before every step the tables are
//! vacuumed and a checkpoint is taken (outside the windows), so no step inherits
//! another's autovacuum or dirty buffers. Each step also reports PostgreSQL's page
//! traffic and what its busy backends waited on, and each import of 100,000 rows or
//! more its rate by tenth: what bounds it.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::Utc;
use kraiter_contacts::client::{Client, MAX_BATCH_ROWS, pb, properties};
use kraiter_contacts::domain::{Contact, Email, Properties};
use serde_json::{Map, Value, json};
use sqlx::postgres::PgPool;
use tokio_stream::StreamExt;

use crate::Setup;
use crate::baseline;
use crate::data::Dataset;
use crate::load::Watch;
use crate::process::{self, Server};

/// One measured step: an import or a COPY FROM baseline.
#[derive(Debug, Clone)]
pub struct ImportFigure {
    pub name: &'static str,
    /// An import's rate against the mean of the COPY FROM just before and after it.
    pub vs_copy: Option<f64>,
    pub rows: u64,
    pub took: Duration,
    pub errors: u64,
    /// An import's (a COPY leaves the server idle).
    pub server_peak_rss_kib: Option<u64>,
    pub probed: Probed,
}

/// What a `Probe` saw during a step.
#[derive(Debug, Clone)]
pub struct Probed {
    pub server_cpu: Duration,
    pub postgres_cpu: Duration,
    /// PostgreSQL's page traffic, when it is the store.
    pub pages: Option<Pages>,
    /// What PostgreSQL's busy backends were doing, sampled (`Waits`).
    pub waits: Option<String>,
}

/// Measures one step the same way whatever it is: the server's and PostgreSQL's CPU
/// and, given the database (`pool`), its page traffic and its backends' waits.
/// Starting one first settles the database, so every step starts alike.
struct Probe<'a> {
    watch: Watch,
    cpu: (u64, u64),
    /// The database, its page counters before the step, and its waits' sampler.
    database: Option<(&'a PgPool, Pages, Waits)>,
}

impl<'a> Probe<'a> {
    async fn start(watch: Watch, pool: Option<&'a PgPool>) -> anyhow::Result<Self> {
        let database = match pool {
            Some(pool) => {
                settle(pool).await?;
                Some((pool, Pages::now(pool).await?, Waits::start(pool).await?))
            }
            None => None,
        };
        Ok(Self {
            watch,
            cpu: cpu(watch),
            database,
        })
    }

    async fn finish(self) -> anyhow::Result<Probed> {
        let (server, postgres) = cpu(self.watch);
        let (pages, waits) = match self.database {
            Some((pool, before, waits)) => {
                let waits = waits.finish().await?;
                // Backends flush their counters at most once a second.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                (Some(before.since(Pages::now(pool).await?)), Some(waits))
            }
            None => (None, None),
        };
        Ok(Probed {
            server_cpu: ticks(self.cpu.0, server),
            postgres_cpu: ticks(self.cpu.1, postgres),
            pages,
            waits,
        })
    }
}

/// Samples `pg_stat_activity` every 50 ms while a step runs: for each backend of the
/// database in a transaction or a statement, its wait event, or "CPU" for none. What
/// a step's backends wait on when PostgreSQL's CPU is not the bound.
pub struct Waits {
    stop: tokio::sync::oneshot::Sender<()>,
    samples:
        tokio::task::JoinHandle<anyhow::Result<(u64, std::collections::BTreeMap<String, u64>)>>,
}

impl Waits {
    async fn start(pool: &PgPool) -> anyhow::Result<Self> {
        let mut conn = pool.acquire().await?.detach();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let samples = tokio::spawn(async move {
            let mut counts = std::collections::BTreeMap::new();
            let mut rounds = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let events: Vec<(String,)> = sqlx::query_as(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') \
                     FROM pg_stat_activity WHERE datname = current_database() \
                     AND pid <> pg_backend_pid() AND backend_type = 'client backend' \
                     AND state IN ('active', 'idle in transaction')",
                )
                .fetch_all(&mut conn)
                .await?;
                rounds += 1;
                for (event,) in events {
                    *counts.entry(event).or_insert(0) += 1;
                }
            }
            anyhow::Ok((rounds, counts))
        });
        Ok(Self { stop, samples })
    }

    /// The events by share of samples, largest first: "CPU 0.83, Client:ClientRead
    /// 0.40, ..." in backends busy on average.
    async fn finish(self) -> anyhow::Result<String> {
        let _ = self.stop.send(());
        let (rounds, counts) = self.samples.await??;
        let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
        counts.sort_by_key(|count| std::cmp::Reverse(count.1));
        Ok(counts
            .iter()
            .take(6)
            .map(|(event, n)| format!("{event} {:.2}", *n as f64 / rounds.max(1) as f64))
            .collect::<Vec<_>>()
            .join(", "))
    }
}

/// Shared-buffer traffic of the database in one step (`pg_stat_database`,
/// `pg_stat_bgwriter`), and the size of `contacts` (with indexes) before it: whether a
/// step's pages still fit in shared buffers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pages {
    pub read: i64,
    pub hit: i64,
    /// Dirty pages a backend had to write itself to free a buffer.
    pub written_by_backends: i64,
    pub contacts_mib_before: i64,
}

impl Pages {
    async fn now(pool: &PgPool) -> anyhow::Result<Self> {
        let (read, hit, written_by_backends, bytes): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT d.blks_read, d.blks_hit, b.buffers_backend, \
                    pg_total_relation_size('contacts') \
             FROM pg_stat_database d, pg_stat_bgwriter b WHERE d.datname = current_database()",
        )
        .fetch_one(pool)
        .await?;
        Ok(Self {
            read,
            hit,
            written_by_backends,
            contacts_mib_before: bytes >> 20,
        })
    }

    /// What happened between `self` (before) and `after`.
    fn since(self, after: Self) -> Self {
        Self {
            read: after.read - self.read,
            hit: after.hit - self.hit,
            written_by_backends: after.written_by_backends - self.written_by_backends,
            contacts_mib_before: self.contacts_mib_before,
        }
    }
}

impl ImportFigure {
    pub fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.took.as_secs_f64()
    }
}

/// Whether `--only` asks for the imports (or says nothing).
pub fn wanted(setup: &Setup) -> bool {
    setup.only.is_empty()
        || setup
            .only
            .iter()
            .any(|name| "ImportContacts".contains(name.as_str()))
}

/// Rows per import and per COPY FROM: KRAITER_BENCH_IMPORT_ROWS (the issue's
/// 1,000,000) or a tenth of the seeded contacts, 1,000 to 100,000.
pub fn rows(setup: &Setup) -> u64 {
    std::env::var("KRAITER_BENCH_IMPORT_ROWS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or((setup.contacts / 10).clamp(1000, 100_000))
}

/// The `--import-depth`s to compare, each on a server of its own, when
/// KRAITER_BENCH_IMPORT_DEPTHS lists them (`1,2,2,1`).
pub fn depths() -> Option<Vec<u32>> {
    let listed = std::env::var("KRAITER_BENCH_IMPORT_DEPTHS").ok()?;
    let depths: Vec<u32> = listed
        .split(',')
        .filter_map(|depth| depth.trim().parse().ok())
        .collect();
    (!depths.is_empty()).then_some(depths)
}

/// Both imports against `server`, each between two COPY FROM baselines when `pool`
/// (PostgreSQL) is given. Printed as they finish; returns the Markdown table.
pub async fn run(
    setup: &Setup,
    server: &Server,
    key: &str,
    data: &Dataset,
    watch: Watch,
    pool: Option<&PgPool>,
) -> anyhow::Result<String> {
    let count = rows(setup);
    let client = Client::connect(&server.addr(), key).await?;
    let mut steps: Vec<ImportFigure> = Vec::new();
    // The rate of the COPY FROM before the next import.
    let mut copied = match pool {
        Some(pool) => {
            let copy = copy_step(pool, data, count, watch).await?;
            let rate = copy.rows_per_sec();
            steps.push(copy);
            Some(rate)
        }
        None => None,
    };
    for mixed in [false, true] {
        let mut figure = import_once(&client, data, count, mixed, watch, pool).await?;
        print(&figure);
        let (Some(pool), Some(before)) = (pool, copied) else {
            steps.push(figure);
            continue;
        };
        let copy = copy_step(pool, data, count, watch).await?;
        let after = copy.rows_per_sec();
        let around = (before + after) / 2.0;
        let ratio = figure.rows_per_sec() / around;
        eprintln!(
            "   -> {ratio:.2} x the mean of the COPY FROM before and after it ({around:.0} rows/s)"
        );
        figure.vs_copy = Some(ratio);
        copied = Some(after);
        steps.extend([figure, copy]);
    }
    Ok(markdown(&steps))
}

/// Not measured: `-`.
fn peak_rss(figure: &ImportFigure) -> String {
    figure
        .server_peak_rss_kib
        .map_or("-".into(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0))
}

fn print(figure: &ImportFigure) {
    let probed = &figure.probed;
    if let Some(waits) = &probed.waits {
        eprintln!("   (backends, on average: {waits})");
    }
    if let Some(pages) = probed.pages {
        eprintln!(
            "   (contacts {} MiB before; pages read {}, hit {}, written by backends {})",
            pages.contacts_mib_before, pages.read, pages.hit, pages.written_by_backends
        );
    }
    eprintln!(
        "   {:<50} {:>10.0} rows/s ({} rows in {:.1} s), errors {}, server peak RSS {}, CPU s: server {:.1}, PostgreSQL {:.1}",
        figure.name,
        figure.rows_per_sec(),
        figure.rows,
        figure.took.as_secs_f64(),
        figure.errors,
        peak_rss(figure),
        probed.server_cpu.as_secs_f64(),
        probed.postgres_cpu.as_secs_f64(),
    );
}

fn markdown(steps: &[ImportFigure]) -> String {
    let mut out = String::from(
        "| step, in order | rows | rows/s | x COPY FROM around it | server peak RSS | server CPU | PostgreSQL CPU | contacts before | pages read / hit / written by backends | backends, on average |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for step in steps {
        let ratio = step.vs_copy.map_or(String::new(), |r| format!("{r:.2}"));
        let probed = &step.probed;
        let pages = probed.pages.map_or(" | ".into(), |p| {
            format!(
                "{} MiB | {} / {} / {}",
                p.contacts_mib_before, p.read, p.hit, p.written_by_backends
            )
        });
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {ratio} | {} | {:.1} s | {:.1} s | {pages} | {} |",
            step.name,
            step.rows,
            step.rows_per_sec(),
            peak_rss(step),
            probed.server_cpu.as_secs_f64(),
            probed.postgres_cpu.as_secs_f64(),
            probed.waits.as_deref().unwrap_or(""),
        );
    }
    out
}

/// Vacuums what an import (or a write scenario) writes and takes a checkpoint, so
/// the next step starts with no dead rows, no pending autovacuum and no dirty buffers
/// of the last one.
pub(crate) async fn settle(pool: &PgPool) -> anyhow::Result<()> {
    let started = Instant::now();
    for table in ["contacts", "timeline_entries", "contact_changes"] {
        sqlx::query(&format!("VACUUM (ANALYZE) {table}"))
            .execute(pool)
            .await?;
    }
    // Needs superuser (or pg_checkpoint) on a cluster the bench did not make.
    if let Err(err) = sqlx::query("CHECKPOINT").execute(pool).await {
        eprintln!("   (no checkpoint between steps: {err})");
    }
    eprintln!(
        "   (vacuumed and checkpointed in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// COPY FROM of `count` rows shaped like an all-new import's, into the same tenant.
async fn copy_step(
    pool: &PgPool,
    data: &Dataset,
    count: u64,
    watch: Watch,
) -> anyhow::Result<ImportFigure> {
    let tag = Dataset::new_email_tag();
    let now = Utc::now();
    let contacts = (0..count).map(|i| {
        let (email, props) = new_row(data.contacts.max(1), i, &tag);
        Contact::new(
            Email::parse(&email, "email").expect("generated emails are valid"),
            Properties::parse(props, "properties").expect("generated properties are valid"),
            now,
        )
    });
    let rows = baseline::copy_rows(data.tenant.as_str(), contacts);
    let probe = Probe::start(watch, Some(pool)).await?;
    let took = baseline::copy_from(pool, &rows).await?;
    let figure = ImportFigure {
        name: "COPY contacts FROM STDIN, same tenant, all indexes",
        vs_copy: None,
        rows: count,
        took,
        errors: 0,
        server_peak_rss_kib: None,
        probed: probe.finish().await?,
    };
    print(&figure);
    Ok(figure)
}

/// The `i`th new row of an import run tagged `tag`: its email and properties.
/// `seeded` is the dataset's contact count, so properties continue its numbering.
fn new_row(seeded: u64, i: u64, tag: &str) -> (String, Map<String, Value>) {
    (
        Dataset::new_email(&i.to_string(), tag),
        Dataset::properties(seeded + i),
    )
}

async fn import_once(
    client: &Client,
    data: &Dataset,
    count: u64,
    mixed: bool,
    watch: Watch,
    pool: Option<&PgPool>,
) -> anyhow::Result<ImportFigure> {
    let tag = Dataset::new_email_tag();
    // Each mixed import of a run patches other scores, so a repeated one (the
    // KRAITER_BENCH_IMPORT_AB baseline) updates its existing rows too.
    static MIXED_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let offset = if mixed {
        1000 * MIXED_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    } else {
        0
    };
    let seeded = data.contacts.max(1);
    let row = move |i: u64| {
        // Existing rows are spread over the seeded contacts (a prime stride).
        if mixed && i % 2 == 1 {
            let n = (i.wrapping_mul(7919)) % seeded;
            let patch = json!({"plan": "imported", "score": offset + i % 1000});
            return pb::ImportRow {
                email: Dataset::email(n),
                properties: Some(properties(patch)),
            };
        }
        let (email, props) = new_row(seeded, i, &tag);
        pb::ImportRow {
            email,
            properties: Some(properties(Value::Object(props))),
        }
    };
    let rows = tokio_stream::iter(0..count).map(row);
    let probe = Probe::start(watch, pool).await?;
    let server_pid = watch.server.unwrap_or(0);
    process::reset_peak_rss(server_pid);
    let started = Instant::now();
    let mut results = client.contacts().import(pb::ImportMode::Upsert, rows);
    let (mut seen, mut errors) = (0, 0);
    // When each tenth of the rows was answered: whether a row costs more late in an
    // import than early. Answers come a batch at a time, so only a tenth of at least
    // ten batches says anything.
    let tenth = count / 10;
    let by_tenth = tenth >= 10 * MAX_BATCH_ROWS as u64;
    let mut tenths = Vec::with_capacity(10);
    while let Some(result) = results.next().await {
        let result = result?;
        let expected = if mixed && result.index % 2 == 1 {
            pb::ImportOutcome::Updated
        } else {
            pb::ImportOutcome::Created
        };
        if result.outcome != expected as i32 {
            errors += 1;
        }
        seen += 1;
        if by_tenth && seen % tenth == 0 {
            tenths.push(started.elapsed());
        }
    }
    let took = started.elapsed();
    if by_tenth {
        let rates: Vec<String> = tenths
            .iter()
            .scan(Duration::ZERO, |last, &at| {
                let rate = tenth as f64 / (at - *last).as_secs_f64();
                *last = at;
                Some(format!("{rate:.0}"))
            })
            .collect();
        eprintln!("   (rows/s by tenth of the import: {})", rates.join(", "));
    }
    let probed = probe.finish().await?;
    Ok(ImportFigure {
        vs_copy: None,
        name: if mixed {
            "ImportContacts, 50 % existing emails"
        } else {
            "ImportContacts, new rows"
        },
        rows: seen,
        took,
        errors: errors + count.saturating_sub(seen),
        server_peak_rss_kib: Some(process::status_kib(server_pid, "VmHWM")),
        probed,
    })
}

fn ticks(before: u64, after: u64) -> Duration {
    Duration::from_secs_f64(after.saturating_sub(before) as f64 / process::clock_ticks())
}

/// With the backends that exited counted too: a server stopped before the import
/// (KRAITER_BENCH_IMPORT_DEPTHS) takes its backends' CPU out of the live children.
fn cpu(watch: Watch) -> (u64, u64) {
    (
        watch.server.map_or(0, process::cpu_ticks),
        watch
            .postgres
            .map_or(0, process::cpu_ticks_with_reaped_children),
    )
}
