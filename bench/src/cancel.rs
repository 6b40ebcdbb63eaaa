//! What PostgreSQL still does after a client drops an expensive search (issue 14). A
//! two-letter term no seeded value holds cannot use the trigram index (a trigram
//! needs three), so its first page reads every row of the tenant. The search runs
//! to its end a few times, then is started and dropped by its client while its
//! statement runs; `pg_stat_activity` shows when the statement stops, and
//! `pg_stat_user_tables` (rows read by sequential and index scans of `contacts`, as
//! each backend flushes its counters once idle) how many rows each read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kraiter_contacts::api::pb;
use sqlx::PgPool;
use tonic::Status;

use crate::data::Dataset;
use crate::load::{Client, Clients};

/// Two letters no seeded value holds (see `scenarios::nonsense_word`).
pub const TERM: &str = "qu";
/// The health probe's interval on the server this runs against (see
/// `settled_rows_read`).
pub const HEALTH_INTERVAL: &str = "100ms";

pub struct Full {
    /// The call, as its client saw it.
    pub took: Duration,
    pub rows_read: i64,
}

pub struct Dropped {
    /// How long the statement had run when its stream was dropped.
    pub age_at_drop: Duration,
    /// From the drop until `pg_stat_activity` showed the statement no longer
    /// active; `None` when it ended before the drop.
    pub stopped_after: Option<Duration>,
    pub rows_read: i64,
}

impl Dropped {
    /// Rows read after the drop, estimated at the statement's average pace: its rows
    /// in proportion to the time it ran after the drop.
    pub fn rows_after_drop(&self) -> f64 {
        let Some(after) = self.stopped_after else {
            return 0.0;
        };
        let lifetime = (self.age_at_drop + after).as_secs_f64().max(1e-9);
        self.rows_read as f64 * after.as_secs_f64() / lifetime
    }
}

pub struct CancelReport {
    pub contacts: u64,
    pub full: Vec<Full>,
    pub dropped: Vec<Dropped>,
}

/// Rows read from `contacts` so far, once every backend's counters have been flushed:
/// the value once it has not moved for 2 s. A PostgreSQL 15 backend flushes its
/// counters when it goes idle, but at most once a second, and if it flushed less than
/// a second before, only when it next goes idle or 10 s later; the server this runs
/// against probes its health every 100 ms on its most recently used connection, so
/// the search's counters are flushed within about a second.
async fn settled_rows_read(pool: &PgPool) -> anyhow::Result<i64> {
    let read = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT (coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::bigint \
             FROM pg_stat_user_tables WHERE relid = 'contacts'::regclass",
        )
        .fetch_one(pool)
        .await
    };
    let mut last = read().await?;
    let mut since = Instant::now();
    let began = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = read().await?;
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= Duration::from_secs(2) {
            return Ok(now);
        }
        if began.elapsed() > Duration::from_secs(20) {
            anyhow::bail!("the table statistics of contacts did not settle in 20 s");
        }
    }
}

/// The running search statement, if any: its backend, when it started, how long it
/// has run.
async fn running_search(pool: &PgPool) -> anyhow::Result<Option<(i32, String, f64)>> {
    Ok(sqlx::query_as(
        "SELECT pid, query_start::text, extract(epoch FROM clock_timestamp() - query_start)::float8 \
         FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() \
           AND query LIKE '%FROM contacts WHERE tenant_id = $1 AND search_text LIKE%' \
         ORDER BY query_start LIMIT 1",
    )
    .fetch_optional(pool)
    .await?)
}

async fn still_running(pool: &PgPool, pid: i32, started: &str) -> anyhow::Result<bool> {
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE pid = $1 AND state = 'active' AND query_start::text = $2",
    )
    .bind(pid)
    .bind(started)
    .fetch_one(pool)
    .await?;
    Ok(active > 0)
}

async fn search(mut client: Client) -> Result<(), Status> {
    let mut pages = client
        .list_contacts(pb::ListContactsRequest {
            search: TERM.into(),
            limit: 20,
            max_pages: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    while let Some(page) = pages.message().await? {
        if !page.contacts.is_empty() {
            return Err(Status::internal(format!(
                "`{TERM}` matched a seeded contact"
            )));
        }
    }
    Ok(())
}

/// `runs` searches to their end, then `runs` dropped while their statement runs:
/// once it has run 100 ms when a whole search takes over 200 ms, else as soon as it
/// shows in `pg_stat_activity`.
pub async fn run(
    pool: &PgPool,
    clients: &Clients,
    data: &Arc<Dataset>,
    runs: usize,
    after_other_scenarios: bool,
) -> anyhow::Result<CancelReport> {
    if after_other_scenarios {
        // Connections of the scenarios before may hold counters for up to 10 s.
        tokio::time::sleep(Duration::from_millis(10_500)).await;
    }
    let mut full = Vec::new();
    for _ in 0..runs {
        let before = settled_rows_read(pool).await?;
        let began = Instant::now();
        search(clients[0].clone()).await?;
        let took = began.elapsed();
        let rows_read = settled_rows_read(pool).await? - before;
        eprintln!(
            "   search `{TERM}` to its end: {:.1} ms, {rows_read} rows read",
            took.as_secs_f64() * 1e3
        );
        full.push(Full { took, rows_read });
    }
    let mut tooks: Vec<Duration> = full.iter().map(|f| f.took).collect();
    tooks.sort();
    let drop_at = if tooks[tooks.len() / 2] > Duration::from_millis(200) {
        0.1
    } else {
        0.0
    };

    let mut dropped = Vec::new();
    for _ in 0..runs {
        let before = settled_rows_read(pool).await?;
        let task = tokio::spawn(search(clients[0].clone()));
        let seen = loop {
            if let Some((pid, started, age)) = running_search(pool).await? {
                if age >= drop_at {
                    break Some((pid, started, age));
                }
            } else if task.is_finished() {
                break None;
            }
        };
        let drop_time = Instant::now();
        task.abort();
        let _ = task.await;
        let (age_at_drop, stopped_after) = match seen {
            Some((pid, started, age)) => {
                while still_running(pool, pid, &started).await? {
                    if drop_time.elapsed() > Duration::from_secs(60) {
                        anyhow::bail!("the dropped search still runs after 60 s");
                    }
                }
                (Duration::from_secs_f64(age), Some(drop_time.elapsed()))
            }
            None => (Duration::ZERO, None),
        };
        let rows_read = settled_rows_read(pool).await? - before;
        let run = Dropped {
            age_at_drop,
            stopped_after,
            rows_read,
        };
        eprintln!(
            "   search `{TERM}` dropped at {:.1} ms: statement stopped {} after the drop, {rows_read} rows read (~{:.0} after the drop)",
            age_at_drop.as_secs_f64() * 1e3,
            stopped_after.map_or("before the drop (it had ended)".into(), |d| format!(
                "{:.1} ms",
                d.as_secs_f64() * 1e3
            )),
            run.rows_after_drop()
        );
        dropped.push(run);
    }
    Ok(CancelReport {
        contacts: data.contacts,
        full,
        dropped,
    })
}

impl CancelReport {
    pub fn markdown(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "### A dropped expensive search (PostgreSQL)\n\n\
             `ListContacts` with `search: \"{TERM}\"` (two letters: no trigram, so the whole tenant of {} \
             contacts is read for a first page that stays empty), to its end, then dropped by its client \
             while its statement runs. Rows read: `seq_tup_read + idx_tup_fetch` of `contacts` in \
             `pg_stat_user_tables` across the search; stopped: from the drop until `pg_stat_activity` \
             shows the statement no longer active (polled back to back). Rows after the drop are \
             estimated at the statement's average pace.\n",
            crate::report::rate(self.contacts as f64)
        );
        let _ = writeln!(
            out,
            "| search | dropped after | statement stopped after the drop | rows read | rows read after the drop (est.) | call |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for f in &self.full {
            let _ = writeln!(
                out,
                "| to its end | - | - | {} | - | {:.1} ms |",
                crate::report::rate(f.rows_read as f64),
                f.took.as_secs_f64() * 1e3
            );
        }
        for d in &self.dropped {
            let _ = writeln!(
                out,
                "| dropped | {:.1} ms | {} | {} | {} | - |",
                d.age_at_drop.as_secs_f64() * 1e3,
                d.stopped_after.map_or("it had ended".into(), |s| format!(
                    "{:.1} ms",
                    s.as_secs_f64() * 1e3
                )),
                crate::report::rate(d.rows_read as f64),
                crate::report::rate(d.rows_after_drop()),
            );
        }
        out.push('\n');
    }
}
