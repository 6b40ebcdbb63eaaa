//! SQLite's own baseline (issue 20), what pgbench is to PostgreSQL: the store's
//! statements for each call (`src/store/sqlite/sql.rs`, compiled in by path) run by a
//! minimal program on the seeded file, at the bench's concurrency, with the store's
//! pragmas. rusqlite, the thinnest safe driver over the same libsqlite3-sys as sqlx:
//! each client is an OS thread that steps its cached statements itself, with no async
//! runtime and no worker thread between it and SQLite.
//!
//! Reads: one read-only connection per client, as pgbench has one per client.
//! Writes: the clients share one writer connection under a mutex, as the store's
//! callers share its one writer (SQLite has one write lock; 32 connections would
//! instead wait in SQLite's busy handler, which sleeps, and make the baseline slow).
//! A write is the store's transaction: `BEGIN IMMEDIATE`, its statements, `COMMIT`;
//! its key check (and an update's read) on the client's read connection first, as
//! the store does them.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use kraiter_contacts::domain::{
    Contact, ContactChange, ContactUpdate, Email, Properties, PropertiesPatch, TimelineEntry,
    search_text,
};
use rusqlite::{Connection, OpenFlags, Statement, ToSql};

use crate::data::{Dataset, Rng};

#[allow(dead_code)]
#[path = "../../src/store/sqlite/sql.rs"]
mod sql;

/// What the minimal program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    GetContact,
    GetContactByEmail,
    CreateContact,
    UpdateContact,
}

/// Calls (or, for the export, rows) per second in the measured window, and the
/// bench process's CPU per call in it (the baseline runs in the bench process).
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub rate: f64,
    pub cpu_per_call: Duration,
}

/// Opens a connection with the store's pragmas (`store/sqlite/mod.rs`).
fn open(path: &Path, read_only: bool) -> anyhow::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)
        .with_context(|| format!("open {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    // sqlx's defaults for a connection, which the store keeps.
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -2000;",
    )?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Empties the WAL into the database file. SQLite's automatic checkpoint runs on
/// whichever connection commits past 1,000 WAL pages, so without this one side of a
/// round would pay for pages the side before it wrote (BENCHMARKS.md, "SQLite
/// writes coalesced").
fn checkpoint(path: &Path) -> anyhow::Result<()> {
    let conn = open(path, false)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// Binds `values` to `$1`, `$2`... by name: SQLite numbers parameters in the order
/// they first appear, which is not `$n`'s order in every statement.
fn bind(stmt: &mut Statement<'_>, values: &[&dyn ToSql]) -> anyhow::Result<()> {
    for (i, value) in values.iter().enumerate() {
        let name = format!("${}", i + 1);
        let Some(index) = stmt.parameter_index(&name)? else {
            continue;
        };
        stmt.raw_bind_parameter(index, value)?;
    }
    Ok(())
}

/// Runs a statement that returns rows, reading every column of every row; returns
/// the rows.
fn query(conn: &Connection, sql: &str, values: &[&dyn ToSql]) -> anyhow::Result<u64> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, values)?;
    let columns = stmt.column_count();
    let mut rows = stmt.raw_query();
    let mut count = 0;
    while let Some(row) = rows.next()? {
        for i in 0..columns {
            std::hint::black_box(row.get_ref(i)?);
        }
        count += 1;
    }
    Ok(count)
}

fn execute(conn: &Connection, sql: &str, values: &[&dyn ToSql]) -> anyhow::Result<usize> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, values)?;
    Ok(stmt.raw_execute()?)
}

fn micros(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_micros()
}

/// What every client shares.
struct Shared {
    data: Arc<Dataset>,
    key_hash: [u8; 32],
    writer: Mutex<Connection>,
    tag: String,
    seq: AtomicU64,
}

/// The change row of `change`, as `store::common::changes::record` binds it.
fn insert_change(conn: &Connection, tenant: &str, change: &ContactChange) -> anyhow::Result<()> {
    let fields = serde_json::to_string(&change.changed_fields)?;
    let c = change
        .contact
        .as_ref()
        .context("a contact write's change")?;
    let properties = serde_json::to_string(c.properties.as_map())?;
    execute(
        conn,
        sql::INSERT_CHANGE,
        &[
            &tenant,
            &change.kind.as_str(),
            &change.contact_id.as_str(),
            &fields,
            &micros(change.occurred_at),
            &c.email.as_str(),
            &properties,
            &c.suppressed,
            &c.unsubscribed,
            &micros(c.created_at),
            &micros(c.updated_at),
            &c.revision,
            &micros(chrono::Utc::now()),
        ],
    )?;
    Ok(())
}

fn insert_entry(
    conn: &Connection,
    tenant: &str,
    contact: &str,
    entry: &TimelineEntry,
) -> anyhow::Result<()> {
    execute(
        conn,
        sql::INSERT_TIMELINE_ENTRY,
        &[
            &tenant,
            &contact,
            &entry.id,
            &entry.kind,
            &micros(entry.timestamp),
            &serde_json::to_string(&entry.data)?,
        ],
    )?;
    Ok(())
}

/// `body` between `BEGIN IMMEDIATE` and `COMMIT`, rolled back if it fails, so the
/// shared writer is never left inside a transaction.
fn transaction(
    writer: &Connection,
    body: impl FnOnce(&Connection) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    writer.execute_batch("BEGIN IMMEDIATE")?;
    match body(writer).and_then(|()| Ok(writer.execute_batch("COMMIT")?)) {
        Ok(()) => Ok(()),
        Err(err) => {
            if !writer.is_autocommit() {
                writer.execute_batch("ROLLBACK").ok();
            }
            Err(err)
        }
    }
}

/// One call of `call` on contact `r`.
fn one(call: Call, shared: &Shared, reader: &Connection, r: u64) -> anyhow::Result<()> {
    let data = &shared.data;
    let tenant = data.tenant.as_str();
    let key = &shared.key_hash[..];
    let n = r % data.contacts;
    match call {
        Call::GetContact => {
            let found = query(
                reader,
                sql::GET_CONTACT_CHECKED,
                &[&tenant, &data.id(n), &key],
            )?;
            anyhow::ensure!(found == 1, "contact {n} not found");
        }
        Call::GetContactByEmail => {
            let email = Email::parse(&Dataset::email(n), "email")?;
            let found = query(
                reader,
                sql::GET_CONTACT_BY_EMAIL_CHECKED,
                &[&tenant, &email.key(), &key],
            )?;
            anyhow::ensure!(found == 1, "contact {n} not found by email");
        }
        Call::CreateContact => {
            let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
            let email = Email::parse(
                &Dataset::new_email(&format!("base-{seq:x}"), &shared.tag),
                "email",
            )?;
            let properties = Properties::parse(Dataset::properties(n), "properties")?;
            let contact = Contact::new(email, properties, chrono::Utc::now());
            let entry = Dataset::created_entry(&contact);
            let search = search_text(contact.email.as_str(), &contact.properties);
            let properties = serde_json::to_string(contact.properties.as_map())?;
            query(reader, sql::TENANT_FOR_KEY, &[&key])?;
            let writer = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
            transaction(&writer, |writer| {
                let inserted = execute(
                    writer,
                    sql::INSERT_CONTACT,
                    &[
                        &tenant,
                        &contact.id.as_str(),
                        &contact.email.as_str(),
                        &contact.email.key(),
                        &properties,
                        &search,
                        &false,
                        &false,
                        &micros(contact.created_at),
                        &micros(contact.updated_at),
                    ],
                )?;
                anyhow::ensure!(inserted == 1, "a new email was taken");
                insert_change(writer, tenant, &ContactChange::created(&contact))?;
                insert_entry(writer, tenant, contact.id.as_str(), &entry)
            })?;
        }
        Call::UpdateContact => {
            let id = data.id(n);
            // The read for the merge; the merge itself from the seeded values (the
            // service's CPU, not the database's), at the row's revision.
            let revision: i64 = {
                let mut stmt = reader.prepare_cached(sql::GET_CONTACT_CHECKED)?;
                bind(&mut stmt, &[&tenant, &id, &key])?;
                let mut rows = stmt.raw_query();
                let row = rows.next()?.context("the key's row")?;
                for i in 0..8 {
                    std::hint::black_box(row.get_ref(i)?);
                }
                row.get(7)?
            };
            let mut before = data.contact(n);
            before.revision = revision;
            let mut patch = serde_json::Map::new();
            patch.insert("score".into(), (r % 1000).into());
            patch.insert("lastSeenAt".into(), chrono::Utc::now().to_rfc3339().into());
            let update = ContactUpdate {
                email: None,
                properties: Some(PropertiesPatch::parse(patch, "properties")?),
            };
            let Some((mut after, entry)) = before.apply(update)? else {
                return Ok(());
            };
            after.revision = revision + 1;
            let search = search_text(after.email.as_str(), &after.properties);
            let properties = serde_json::to_string(after.properties.as_map())?;
            let writer = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
            transaction(&writer, |writer| {
                execute(
                    writer,
                    sql::UPDATE_CONTACT_IF_REVISION,
                    &[
                        &tenant,
                        &id,
                        &after.email.as_str(),
                        &after.email.key(),
                        &properties,
                        &search,
                        &micros(after.updated_at),
                        &revision,
                    ],
                )?;
                insert_change(
                    writer,
                    tenant,
                    &ContactChange::updated_as_recorded(&after, &entry),
                )?;
                insert_entry(writer, tenant, &id, &entry)
            })?;
        }
    }
    Ok(())
}

/// Runs `call` from `clients` threads for `warmup` and then `duration`, counting
/// the calls that end in the measured window.
pub fn run(
    path: &Path,
    call: Call,
    data: &Arc<Dataset>,
    api_key: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let shared = Arc::new(Shared {
        data: data.clone(),
        key_hash: kraiter_contacts::domain::hash_api_key(api_key),
        writer: Mutex::new(open(path, false)?),
        tag: Dataset::new_email_tag(),
        seq: AtomicU64::new(0),
    });
    let start = Instant::now();
    let (from, to) = (start + warmup, start + warmup + duration);
    let calls = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..clients.max(1))
        .map(|client| {
            let (shared, calls) = (shared.clone(), calls.clone());
            let path = path.to_owned();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let reader = open(&path, true)?;
                let mut rng = Rng::new(0x5eed_0000 + client as u64);
                let mut counted = 0;
                loop {
                    one(call, &shared, &reader, rng.next_u64())
                        .with_context(|| format!("the {call:?} baseline"))?;
                    let now = Instant::now();
                    if now >= to {
                        break;
                    }
                    if now >= from {
                        counted += 1;
                    }
                }
                calls.fetch_add(counted, Ordering::Relaxed);
                Ok(())
            })
        })
        .collect();
    // The process's CPU at the window's edges (the clients are its only busy threads).
    let me = std::process::id();
    std::thread::sleep(from.saturating_duration_since(Instant::now()));
    let cpu_before = crate::process::cpu_ticks(me);
    std::thread::sleep(to.saturating_duration_since(Instant::now()));
    let cpu_after = crate::process::cpu_ticks(me);
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a baseline client panicked"))??;
    }
    let calls = calls.load(Ordering::Relaxed);
    let cpu = Duration::from_secs_f64(
        cpu_after.saturating_sub(cpu_before) as f64
            / crate::process::clock_ticks()
            / calls.max(1) as f64,
    );
    Ok(Measured {
        rate: calls as f64 / duration.as_secs_f64(),
        cpu_per_call: cpu,
    })
}

/// The bare `SELECT` of the rows the full stream exports, in its order, every
/// column read: rows and how long it took.
pub fn export(path: &Path, data: &Dataset) -> anyhow::Result<(u64, Duration)> {
    let conn = open(path, true)?;
    let started = Instant::now();
    let rows = query(&conn, sql::EXPORT, &[&data.tenant.as_str()])?;
    Ok((rows, started.elapsed()))
}

mod rounds;
pub use rounds::rounds;

#[cfg(test)]
mod tests;
