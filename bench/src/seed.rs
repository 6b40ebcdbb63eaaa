//! Seeding: PostgreSQL through COPY into the real tables (the fastest honest path),
//! SQLite through the store's own INSERTs in large transactions. Either way every
//! contact gets its `contact.created` entry, one in a hundred a send, and one
//! contact a long timeline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use kraiter_contacts::domain::{Contact, SendRecord, TimelineEntry, search_text};
use sqlx::postgres::{PgPool, PgPoolCopyExt};
use sqlx::sqlite::SqlitePool;

use crate::data::{Dataset, HOT_TIMELINE_ENTRIES};

/// Rows per COPY message / per SQLite transaction.
const CHUNK: u64 = 5_000;

#[derive(Debug, Default)]
pub struct SeedTimes {
    pub contacts: Duration,
    pub activity: Duration,
    pub index: Duration,
    pub vacuum: Duration,
}

/// Rows in PostgreSQL COPY text format.
#[derive(Default)]
pub struct CopyRows {
    pub buf: Vec<u8>,
}

impl CopyRows {
    pub fn text(&mut self, value: &str) -> &mut Self {
        for byte in value.bytes() {
            match byte {
                b'\\' => self.buf.extend_from_slice(b"\\\\"),
                b'\n' => self.buf.extend_from_slice(b"\\n"),
                b'\r' => self.buf.extend_from_slice(b"\\r"),
                b'\t' => self.buf.extend_from_slice(b"\\t"),
                other => self.buf.push(other),
            }
        }
        self.buf.push(b'\t');
        self
    }

    pub fn time(&mut self, value: DateTime<Utc>) -> &mut Self {
        self.text(&value.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn opt_time(&mut self, value: Option<DateTime<Utc>>) -> &mut Self {
        match value {
            Some(value) => self.time(value),
            None => {
                self.buf.extend_from_slice(b"\\N\t");
                self
            }
        }
    }

    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.text(if value { "t" } else { "f" })
    }

    pub fn end(&mut self) {
        // Replace the last field separator by the row terminator.
        if let Some(last) = self.buf.last_mut() {
            *last = b'\n';
        }
    }

    pub fn contact(&mut self, tenant: &str, contact: &Contact) {
        let properties =
            serde_json::to_string(contact.properties.as_map()).expect("a JSON map serializes");
        self.text(tenant)
            .text(contact.id.as_str())
            .text(contact.email.as_str())
            .text(contact.email.key())
            .text(&properties)
            .text(&search_text(contact.email.as_str(), &contact.properties))
            .bool(contact.suppressed)
            .bool(contact.unsubscribed)
            .time(contact.created_at)
            .time(contact.updated_at)
            .end();
    }

    pub fn entry(&mut self, tenant: &str, contact_id: &str, entry: &TimelineEntry) {
        let data = serde_json::to_string(&entry.data).expect("a JSON map serializes");
        self.text(tenant)
            .text(contact_id)
            .text(&entry.id)
            .text(&entry.kind)
            .time(entry.timestamp)
            .text(&data)
            .end();
    }

    pub fn send(&mut self, tenant: &str, send: &SendRecord) {
        self.text(tenant)
            .text(&send.id)
            .text(send.contact_id.as_str())
            .text(&send.email)
            .text(&send.template_id)
            .text(&send.template_name)
            .text(&send.subject)
            .text(send.status.as_str())
            .text(send.source.as_str())
            .text(&send.source_id)
            .time(send.created_at)
            .opt_time(send.sent_at)
            .opt_time(send.delivered_at)
            .opt_time(send.opened_at)
            .opt_time(send.clicked_at)
            .opt_time(send.bounced_at)
            .opt_time(send.complained_at)
            .end();
    }
}

pub const COPY_CONTACTS: &str = "COPY contacts (tenant_id, id, email, email_key, properties, search_text, \
     suppressed, unsubscribed, created_at, updated_at) FROM STDIN";
const COPY_TIMELINE: &str =
    "COPY timeline_entries (tenant_id, contact_id, id, type, occurred_at, data) FROM STDIN";
const COPY_SENDS: &str = "COPY sends (tenant_id, id, contact_id, email, template_id, template_name, \
     subject, status, source, source_id, created_at, sent_at, delivered_at, opened_at, clicked_at, \
     bounced_at, complained_at) FROM STDIN";

/// The trigram index is built once after loading, as a bulk load does; its
/// definition comes from the catalog, so the index is the migration's own.
const SEARCH_INDEX: &str = "contacts_search_tenant";

pub async fn postgres(
    pool: &PgPool,
    data: Arc<Dataset>,
    workers: u64,
) -> anyhow::Result<SeedTimes> {
    let mut times = SeedTimes::default();
    let index_def: String =
        sqlx::query_scalar("SELECT indexdef FROM pg_indexes WHERE indexname = $1")
            .bind(SEARCH_INDEX)
            .fetch_one(pool)
            .await
            .context("find the search index")?;
    sqlx::query(&format!("DROP INDEX {SEARCH_INDEX}"))
        .execute(pool)
        .await?;

    let started = Instant::now();
    in_parallel(workers, data.contacts, |from, to| {
        let (pool, data) = (pool.clone(), data.clone());
        async move {
            let mut copy = pool.copy_in_raw(COPY_CONTACTS).await?;
            let mut rows = CopyRows::default();
            let tenant = data.tenant.as_str();
            for n in from..to {
                rows.contact(tenant, &data.contact(n));
                if rows.buf.len() > 1 << 20 {
                    copy.send(std::mem::take(&mut rows.buf)).await?;
                }
            }
            copy.send(rows.buf).await?;
            copy.finish().await?;
            anyhow::Ok(())
        }
    })
    .await
    .context("copy contacts")?;
    times.contacts = started.elapsed();

    let started = Instant::now();
    in_parallel(workers, data.contacts, |from, to| {
        let (pool, data) = (pool.clone(), data.clone());
        async move {
            let tenant = data.tenant.as_str();
            let mut entries = pool.copy_in_raw(COPY_TIMELINE).await?;
            let mut rows = CopyRows::default();
            let mut sends = CopyRows::default();
            for n in from..to {
                let contact = data.contact(n);
                rows.entry(
                    tenant,
                    contact.id.as_str(),
                    &Dataset::created_entry(&contact),
                );
                if Dataset::has_send(n) {
                    let (send, entry) = data.send(&contact);
                    rows.entry(tenant, contact.id.as_str(), &entry);
                    sends.send(tenant, &send);
                }
                if n == data.hot_contact() {
                    for i in 0..HOT_TIMELINE_ENTRIES {
                        rows.entry(tenant, contact.id.as_str(), &data.hot_entry(i));
                    }
                }
                if rows.buf.len() > 1 << 20 {
                    entries.send(std::mem::take(&mut rows.buf)).await?;
                }
            }
            entries.send(rows.buf).await?;
            entries.finish().await?;
            let mut copy = pool.copy_in_raw(COPY_SENDS).await?;
            copy.send(sends.buf).await?;
            copy.finish().await?;
            anyhow::Ok(())
        }
    })
    .await
    .context("copy activity")?;
    times.activity = started.elapsed();

    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    sqlx::query("SET maintenance_work_mem = '1GB'")
        .execute(&mut *conn)
        .await?;
    sqlx::query(&index_def).execute(&mut *conn).await?;
    drop(conn);
    times.index = started.elapsed();

    let started = Instant::now();
    for table in ["contacts", "timeline_entries", "sends"] {
        sqlx::query(&format!("VACUUM (ANALYZE) {table}"))
            .execute(pool)
            .await?;
    }
    times.vacuum = started.elapsed();
    Ok(times)
}

/// Runs `job(from, to)` over `0..count` split into `workers` ranges, concurrently.
async fn in_parallel<F, Fut>(workers: u64, count: u64, job: F) -> anyhow::Result<()>
where
    F: Fn(u64, u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let per = count.div_ceil(workers.max(1));
    let mut tasks = Vec::new();
    for w in 0..workers.max(1) {
        let (from, to) = (w * per, ((w + 1) * per).min(count));
        if from < to {
            tasks.push(tokio::spawn(job(from, to)));
        }
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// SQLite: the store's own statements, many rows per transaction (the service
/// commits one per call; bulk loading it that way would take hours at a million).
pub async fn sqlite(pool: &SqlitePool, data: &Dataset) -> anyhow::Result<SeedTimes> {
    let mut times = SeedTimes::default();
    let tenant = data.tenant.as_str();
    let started = Instant::now();
    let mut n = 0;
    while n < data.contacts {
        let end = (n + CHUNK).min(data.contacts);
        let mut tx = pool.begin().await?;
        for i in n..end {
            let contact = data.contact(i);
            sqlx::query(
                "INSERT INTO contacts (tenant_id, id, email, email_key, properties, search_text, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            )
            .bind(tenant)
            .bind(contact.id.as_str())
            .bind(contact.email.as_str())
            .bind(contact.email.key())
            .bind(serde_json::to_string(contact.properties.as_map())?)
            .bind(search_text(contact.email.as_str(), &contact.properties))
            .bind(contact.created_at.timestamp_micros())
            .execute(&mut *tx)
            .await?;
            sqlite_entry(
                &mut tx,
                tenant,
                contact.id.as_str(),
                &Dataset::created_entry(&contact),
            )
            .await?;
            if Dataset::has_send(i) {
                let (send, entry) = data.send(&contact);
                sqlite_send(&mut tx, tenant, &send).await?;
                sqlite_entry(&mut tx, tenant, contact.id.as_str(), &entry).await?;
            }
            if i == data.hot_contact() {
                for k in 0..HOT_TIMELINE_ENTRIES {
                    sqlite_entry(&mut tx, tenant, contact.id.as_str(), &data.hot_entry(k)).await?;
                }
            }
        }
        tx.commit().await?;
        n = end;
    }
    times.contacts = started.elapsed();
    let started = Instant::now();
    sqlx::query("ANALYZE").execute(pool).await?;
    times.vacuum = started.elapsed();
    Ok(times)
}

async fn sqlite_entry(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    tenant: &str,
    contact_id: &str,
    entry: &TimelineEntry,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO timeline_entries (tenant_id, contact_id, id, type, occurred_at, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(tenant)
    .bind(contact_id)
    .bind(&entry.id)
    .bind(&entry.kind)
    .bind(entry.timestamp.timestamp_micros())
    .bind(serde_json::to_string(&entry.data)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn sqlite_send(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    tenant: &str,
    send: &SendRecord,
) -> anyhow::Result<()> {
    let micros = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_micros());
    sqlx::query(
        "INSERT INTO sends (tenant_id, id, contact_id, email, template_id, template_name, subject, status, \
         source, source_id, created_at, sent_at, delivered_at, opened_at, clicked_at, bounced_at, complained_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )
    .bind(tenant)
    .bind(&send.id)
    .bind(send.contact_id.as_str())
    .bind(&send.email)
    .bind(&send.template_id)
    .bind(&send.template_name)
    .bind(&send.subject)
    .bind(send.status.as_str())
    .bind(send.source.as_str())
    .bind(&send.source_id)
    .bind(send.created_at.timestamp_micros())
    .bind(micros(send.sent_at))
    .bind(micros(send.delivered_at))
    .bind(micros(send.opened_at))
    .bind(micros(send.clicked_at))
    .bind(micros(send.bounced_at))
    .bind(micros(send.complained_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
