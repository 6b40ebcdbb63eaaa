//! CreateContact's statements on PostgreSQL, as `store::coalesce` sends them: one
//! create alone (`sql::CREATE_CONTACT_CHECKED`), or a line's queue as one statement
//! (`sql::CREATE_CONTACTS_CHECKED`), so one commit, one round trip and one key check
//! serve them all. A taken address inserts nothing for its row (`ON CONFLICT DO
//! NOTHING`). UpdateContact's compare-and-set write is one statement per call:
//! coalesced, it measured slower than alone (BENCHMARKS.md, "Coalesced creates on by
//! default"), and that path was removed.
//!
//! Each contact's change is stamped in the statement by the one-call statements'
//! expression, after its row is written (ARCHITECTURE.md, the change feed): one
//! transaction for many contacts orders them as it would one.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo};
use sqlx::{Postgres, Row};

use super::conns::Conns;
use super::{classify, sql};
use crate::domain::{Contact, TenantId, TimelineEntry, search_text};
use crate::store::coalesce::{BatchWriter, Line, QueuedRow, Written};
use crate::store::{StoreError, StoreResult};

/// One contact's row as both statements bind it: the values of the contact, its
/// timeline entry, and (for an update) the revision it was merged from.
pub(super) struct WriteRow {
    id: String,
    email: String,
    email_key: String,
    /// JSON text.
    properties: String,
    search_text: String,
    at: DateTime<Utc>,
    entry_id: String,
    entry_kind: String,
    /// JSON text.
    entry_data: String,
    revision: i64,
}

impl WriteRow {
    /// Built on the caller's task, so the JSON is serialized there, not in the worker.
    pub fn new(
        contact: &Contact,
        at: DateTime<Utc>,
        entry: &TimelineEntry,
        revision: i64,
    ) -> StoreResult<Self> {
        Ok(Self {
            id: contact.id.as_str().to_owned(),
            email: contact.email.as_str().to_owned(),
            email_key: contact.email.key().to_owned(),
            properties: serde_json::to_string(contact.properties.as_map())
                .map_err(StoreError::internal)?,
            search_text: search_text(contact.email.as_str(), &contact.properties),
            at,
            entry_id: entry.id.clone(),
            entry_kind: entry.kind.clone(),
            entry_data: serde_json::to_string(&entry.data).map_err(StoreError::internal)?,
            revision,
        })
    }
}

/// JSON text bound as `jsonb` without parsing it again: the binary format is a
/// version byte and the text.
struct JsonText<'a>(&'a str);

impl sqlx::Type<Postgres> for JsonText<'_> {
    fn type_info() -> PgTypeInfo {
        <sqlx::types::Json<()> as sqlx::Type<Postgres>>::type_info()
    }
}

impl sqlx::Encode<'_, Postgres> for JsonText<'_> {
    fn encode_by_ref(
        &self,
        buf: &mut PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        buf.push(1);
        buf.extend_from_slice(self.0.as_bytes());
        Ok(sqlx::encode::IsNull::No)
    }
}

impl QueuedRow for WriteRow {
    fn id(&self) -> &str {
        &self.id
    }

    fn claim(&self) -> &str {
        &self.email_key
    }
}

/// Creates written with the pool's connections.
pub(super) struct PgCreates(pub Conns);

#[async_trait]
impl BatchWriter for PgCreates {
    type Row = WriteRow;

    async fn write_one(
        &self,
        tenant: &TenantId,
        key_hash: Option<&[u8; 32]>,
        row: &WriteRow,
    ) -> Written {
        create_one(&self.0, tenant, key_hash, row).await
    }

    async fn write_many(&self, line: &Line, rows: &[WriteRow]) -> StoreResult<HashSet<String>> {
        // Creates queue only under a key (`Coalesced::insert`); the statement checks it.
        let Some(key_hash) = &line.key_hash else {
            return Err(StoreError::internal("a batch of creates without a key"));
        };
        create_many(&self.0, &line.tenant, key_hash, rows).await
    }

    fn everyones(&self, err: &StoreError) -> bool {
        match err {
            // A deadlock or serialization failure is the batch's, not the database's.
            StoreError::Unavailable(sqlx::Error::Database(db)) => {
                !matches!(db.code().as_deref(), Some("40P01" | "40001"))
            }
            // A batch is one key's creates.
            StoreError::Unavailable(_) | StoreError::KeyRejected => true,
            _ => false,
        }
    }
}

/// The ten parameters the one-call create and update share, in their order.
fn bind_row<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    tenant: &'q TenantId,
    row: &'q WriteRow,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(tenant.as_str())
        .bind(&row.id)
        .bind(&row.email)
        .bind(&row.email_key)
        .bind(JsonText(&row.properties))
        .bind(&row.search_text)
        .bind(row.at)
        .bind(&row.entry_id)
        .bind(&row.entry_kind)
        .bind(JsonText(&row.entry_data))
}

/// The one-call create: a taken address is the unique index's error.
async fn create_one(
    conns: &Conns,
    tenant: &TenantId,
    key_hash: Option<&[u8; 32]>,
    row: &WriteRow,
) -> Written {
    let statement = match key_hash {
        Some(_) => sql::CREATE_CONTACT_CHECKED,
        None => sql::CREATE_CONTACT,
    };
    let mut query = bind_row(sqlx::query(statement), tenant, row);
    if let Some(key_hash) = key_hash {
        query = query.bind(&key_hash[..]);
    }
    let mut conn = conns.get().await?;
    let result = query.execute(&mut *conn).await;
    match conn.finish(result).await {
        // Under a key, the statement inserts nothing unless the key is live.
        Ok(done) if done.rows_affected() == 0 => Err(StoreError::KeyRejected),
        Ok(_) => Ok(true),
        Err(StoreError::Conflict { field: "email" }) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Writes the merged contact, its `contact.updated` entry and its change if the
/// row is still at `row`'s revision; whether it was. Always its own statement.
pub(super) async fn update_one(conns: &Conns, tenant: &TenantId, row: &WriteRow) -> Written {
    let query =
        bind_row(sqlx::query(sql::UPDATE_CONTACT_IF_REVISION), tenant, row).bind(row.revision);
    let mut conn = conns.get().await?;
    let result = query.execute(&mut *conn).await;
    Ok(conn.finish(result).await?.rows_affected() == 1)
}

/// One statement for `rows` (addresses distinct): the ids of the contacts it wrote,
/// or `KeyRejected` if the key is not live.
async fn create_many(
    conns: &Conns,
    tenant: &TenantId,
    key_hash: &[u8; 32],
    rows: &[WriteRow],
) -> StoreResult<HashSet<String>> {
    fn column<'a, T: ?Sized>(
        rows: &'a [WriteRow],
        f: impl Fn(&'a WriteRow) -> &'a T,
    ) -> Vec<&'a T> {
        rows.iter().map(f).collect()
    }
    let ats: Vec<DateTime<Utc>> = rows.iter().map(|row| row.at).collect();
    let query = sqlx::query(sql::CREATE_CONTACTS_CHECKED)
        .bind(tenant.as_str())
        .bind(&key_hash[..])
        .bind(column(rows, |r| r.id.as_str()))
        .bind(column(rows, |r| r.email.as_str()))
        .bind(column(rows, |r| r.email_key.as_str()))
        .bind(column(rows, |r| r.properties.as_str()))
        .bind(column(rows, |r| r.search_text.as_str()))
        .bind(ats)
        .bind(column(rows, |r| r.entry_id.as_str()))
        .bind(column(rows, |r| r.entry_kind.as_str()))
        .bind(column(rows, |r| r.entry_data.as_str()));
    let mut conn = conns.get().await?;
    let result = query.fetch_all(&mut *conn).await;
    let found = conn.finish(result).await?;
    // No row at all means the key was rejected; the key's row is NULL.
    if found.is_empty() {
        return Err(StoreError::KeyRejected);
    }
    let mut written = HashSet::with_capacity(found.len());
    for row in found {
        let id: Option<String> = row.try_get(0).map_err(classify)?;
        written.extend(id);
    }
    Ok(written)
}
