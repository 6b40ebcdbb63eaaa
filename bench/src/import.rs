//! ImportContacts through the Rust client (`contacts().import`: batches of 1,000 rows
//! and at most 1 MiB), one import at a time into the seeded tenant: all new rows, and
//! half existing addresses (a property patch) and half new. Rows are generated as the
//! client pulls them, like a reader of a file. Figures are printed; COPY FROM with
//! every index in place (`baseline::copy_from`, same row count) is the baseline.

use std::time::{Duration, Instant};

use kraiter_contacts::client::{Client, pb, properties};
use serde_json::json;
use tokio_stream::StreamExt;

use crate::Setup;
use crate::data::Dataset;
use crate::load::Watch;
use crate::process::{self, Server};

/// One measured import.
#[derive(Debug, Clone)]
pub struct ImportFigure {
    pub name: &'static str,
    pub rows: u64,
    pub took: Duration,
    pub errors: u64,
    pub server_peak_rss_kib: u64,
    pub server_cpu: Duration,
    pub postgres_cpu: Duration,
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

/// Rows per import: the COPY FROM baseline's count unless KRAITER_BENCH_IMPORT_ROWS
/// says otherwise (the 1,000,000).
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

/// Both imports against `server`, printed as they finish.
pub async fn run(
    setup: &Setup,
    server: &Server,
    key: &str,
    data: &Dataset,
    watch: Watch,
) -> anyhow::Result<Vec<ImportFigure>> {
    let count = rows(setup);
    let client = Client::connect(&server.addr(), key).await?;
    let mut figures = Vec::new();
    for mixed in [false, true] {
        let figure = import_once(&client, data, count, mixed, watch).await?;
        eprintln!(
            "   {:<50} {:>10.0} rows/s ({} rows in {:.1} s), errors {}, server peak RSS {:.1} MiB, CPU s: server {:.1}, PostgreSQL {:.1}",
            figure.name,
            figure.rows_per_sec(),
            figure.rows,
            figure.took.as_secs_f64(),
            figure.errors,
            figure.server_peak_rss_kib as f64 / 1024.0,
            figure.server_cpu.as_secs_f64(),
            figure.postgres_cpu.as_secs_f64(),
        );
        figures.push(figure);
    }
    Ok(figures)
}

async fn import_once(
    client: &Client,
    data: &Dataset,
    count: u64,
    mixed: bool,
    watch: Watch,
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
        let n = seeded + i;
        pb::ImportRow {
            email: Dataset::new_email(&i.to_string(), &tag),
            properties: Some(properties(serde_json::Value::Object(Dataset::properties(
                n,
            )))),
        }
    };
    let rows = tokio_stream::iter(0..count).map(row);
    let server_pid = watch.server.unwrap_or(0);
    process::reset_peak_rss(server_pid);
    let (server_before, postgres_before) = cpu(watch);
    let started = Instant::now();
    let mut results = client.contacts().import(pb::ImportMode::Upsert, rows);
    let (mut seen, mut errors) = (0, 0);
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
    }
    let took = started.elapsed();
    let (server_after, postgres_after) = cpu(watch);
    let ticks = |before: u64, after: u64| {
        Duration::from_secs_f64(after.saturating_sub(before) as f64 / process::clock_ticks())
    };
    Ok(ImportFigure {
        name: if mixed {
            "ImportContacts, 50 % existing emails"
        } else {
            "ImportContacts, new rows"
        },
        rows: seen,
        took,
        errors: errors + count.saturating_sub(seen),
        server_peak_rss_kib: process::status_kib(server_pid, "VmHWM"),
        server_cpu: ticks(server_before, server_after),
        postgres_cpu: ticks(postgres_before, postgres_after),
    })
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
