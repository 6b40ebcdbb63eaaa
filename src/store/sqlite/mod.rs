//! SQLite store: the zero-setup default, in one local file.
//!
//! Writes go through a pool of one connection, so this process never contends for
//! SQLite's single write lock with itself; reads use a separate pool and see
//! committed data (WAL). Multi-statement writes begin with `BEGIN IMMEDIATE`.

mod activity;
mod records;

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::{ApiKeyRecord, ConnectOptions, ContactStore, StoreError, StoreResult, migrations};
use crate::domain::{
    Contact, ContactId, ContactQuery, ContactUpdate, ContactView, Email, NewContact,
    PropertiesJson, TenantId, TimeKey, TimelineEntry, TimelineOrder, TimelineQuery,
    ValidationError, contact_created, search_text,
};

const CONTACT_COLUMNS: &str =
    "id, email, properties, suppressed, unsubscribed, created_at, updated_at";

/// A search term with at most this many matches (in all tenants) is answered from the
/// trigram index, whatever the page size; with more, the tenant's contacts are walked
/// in id order. Public so tests can seed either side of it.
pub const SEARCH_CANDIDATES: u32 = 2_000;

/// The most index matches a search of `limit` rows is answered from. At a million
/// contacts the index costs ~3.5 us a match and the walk ~0.25 us a row, reading about
/// `limit x contacts / matches` rows when matches are spread evenly: they break even
/// near 250 x sqrt(limit) matches (~1,100 for a page of 20, 7,750 for 1,000). The floor
/// leans to the index, whose cost is bounded: the walk reads to the end of the tenant
/// when the matches after the cursor are fewer than a page (all in an early batch).
fn search_candidate_cap(limit: u32) -> u32 {
    (250 * limit.isqrt()).max(SEARCH_CANDIDATES)
}

pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str, options: &ConnectOptions) -> StoreResult<Self> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|err| StoreError::Config(format!("invalid sqlite url: {err}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(30));
        if let Some(dir) = connect.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|err| {
                StoreError::Config(format!("cannot create `{}`: {err}", dir.display()))
            })?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(classify)?;
        if options.migrate {
            let migrator = migrations::migrator(migrations::SQLITE)
                .await
                .map_err(StoreError::internal)?;
            migrator.run(&writer).await.map_err(StoreError::internal)?;
        }
        let reader = SqlitePoolOptions::new()
            .max_connections(options.max_connections.clamp(1, 8))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.read_only(true))
            .await
            .map_err(classify)?;
        Ok(Self { reader, writer })
    }

    async fn lock_contact(
        tx: &mut Transaction<'_, Sqlite>,
        tenant: &TenantId,
        id: &ContactId,
    ) -> StoreResult<Contact> {
        let sql =
            format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE tenant_id = ?1 AND id = ?2");
        let row = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(&mut **tx)
            .await
            .map_err(classify)?;
        row.as_ref()
            .map(contact_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound("contact"))
    }

    async fn insert_timeline(
        tx: &mut Transaction<'_, Sqlite>,
        tenant: &TenantId,
        contact: &ContactId,
        entry: &TimelineEntry,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO timeline_entries (tenant_id, contact_id, id, type, occurred_at, data) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(tenant.as_str())
        .bind(contact.as_str())
        .bind(&entry.id)
        .bind(&entry.kind)
        .bind(entry.timestamp.timestamp_micros())
        .bind(json_text(&entry.data)?)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
        Ok(())
    }
}

#[async_trait]
impl ContactStore for SqliteStore {
    fn pool_usage(&self) -> super::PoolUsage {
        let mut usage = super::PoolUsage::default();
        for pool in [&self.reader, &self.writer] {
            usage.max += pool.options().get_max_connections();
            usage.open += pool.size();
            usage.idle += pool.num_idle() as u32;
        }
        usage
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn ensure_tenant(&self, tenant: &TenantId) -> StoreResult<bool> {
        let result = sqlx::query(
            "INSERT INTO tenants (tenant_id, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(crate::domain::now().timestamp_micros())
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        Ok(result.rows_affected() == 1)
    }

    async fn insert_api_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        key_hash: &[u8; 32],
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO api_keys (key_id, tenant_id, key_hash, created_at) VALUES (?1, ?2, ?3, ?4)")
            .bind(key_id)
            .bind(tenant.as_str())
            .bind(&key_hash[..])
            .bind(crate::domain::now().timestamp_micros())
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn tenant_for_key(&self, key_hash: &[u8; 32]) -> StoreResult<Option<TenantId>> {
        let tenant: Option<String> = sqlx::query_scalar(
            "SELECT tenant_id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
        )
        .bind(&key_hash[..])
        .fetch_optional(&self.reader)
        .await
        .map_err(classify)?;
        Ok(tenant.map(TenantId::from_trusted))
    }

    async fn list_api_keys(&self, tenant: Option<&TenantId>) -> StoreResult<Vec<ApiKeyRecord>> {
        let rows = sqlx::query(
            "SELECT key_id, tenant_id, created_at, revoked_at FROM api_keys \
             WHERE ?1 IS NULL OR tenant_id = ?1 ORDER BY tenant_id, created_at, key_id",
        )
        .bind(tenant.map(TenantId::as_str))
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            let revoked: Option<i64> = row.try_get("revoked_at").map_err(classify)?;
            keys.push(ApiKeyRecord {
                key_id: row.try_get("key_id").map_err(classify)?,
                tenant: TenantId::from_trusted(row.try_get("tenant_id").map_err(classify)?),
                created_at: time(row.try_get("created_at").map_err(classify)?)?,
                revoked_at: revoked.map(time).transpose()?,
            });
        }
        Ok(keys)
    }

    async fn revoke_api_key(&self, key_id: &str) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1 AND revoked_at IS NULL",
        )
        .bind(key_id)
        .bind(crate::domain::now().timestamp_micros())
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        Ok(result.rows_affected() == 1)
    }

    async fn create_contact(&self, tenant: &TenantId, new: NewContact) -> StoreResult<Contact> {
        let now = crate::domain::now();
        let contact = Contact {
            id: ContactId::generate(),
            email: new.email,
            properties: new.properties,
            suppressed: false,
            unsubscribed: false,
            created_at: now,
            updated_at: now,
        };
        let entry = contact_created(&contact);
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        sqlx::query(
            "INSERT INTO contacts (tenant_id, id, email, email_key, properties, search_text, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        )
        .bind(tenant.as_str())
        .bind(contact.id.as_str())
        .bind(contact.email.as_str())
        .bind(contact.email.key())
        .bind(json_text(contact.properties.as_map())?)
        .bind(search_text(contact.email.as_str(), &contact.properties))
        .bind(now.timestamp_micros())
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        Self::insert_timeline(&mut tx, tenant, &contact.id, &entry).await?;
        tx.commit().await.map_err(classify)?;
        Ok(contact)
    }

    async fn get_contact(&self, tenant: &TenantId, id: &ContactId) -> StoreResult<ContactView> {
        let sql =
            format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE tenant_id = ?1 AND id = ?2");
        let row = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(classify)?;
        row.as_ref()
            .map(view_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound("contact"))
    }

    async fn get_contact_by_email(
        &self,
        tenant: &TenantId,
        email: &Email,
    ) -> StoreResult<Option<ContactView>> {
        let sql = format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts WHERE tenant_id = ?1 AND email_key = ?2"
        );
        let row = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(email.key())
            .fetch_optional(&self.reader)
            .await
            .map_err(classify)?;
        row.as_ref().map(view_from_row).transpose()
    }

    async fn list_contacts(
        &self,
        tenant: &TenantId,
        query: &ContactQuery,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ContactView>> {
        let term = query.search.as_ref().map(|term| term.as_str());
        let mut conn = self.reader.acquire().await.map_err(classify)?;
        // The trigram index needs three characters; shorter terms scan the tenant's rows.
        let phrase = term
            .filter(|term| term.chars().count() >= 3)
            .map(|term| format!("\"{}\"", term.replace('"', "\"\"")));
        // Reading every index match and sorting them by id costs ~3.5 us a match (a
        // common term has 125,000 at a million contacts); walking the tenant in id
        // order finds a page of it in a few hundred rows. The count covers all tenants
        // (the index is global), so it only picks the plan: both apply the same filters.
        let mut fts = None;
        if let Some(phrase) = phrase {
            let cap = search_candidate_cap(limit);
            let candidates: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM \
                 (SELECT 1 FROM contacts_fts WHERE contacts_fts MATCH ?1 LIMIT ?2)",
            )
            .bind(&phrase)
            .bind(i64::from(cap) + 1)
            .fetch_one(&mut *conn)
            .await
            .map_err(classify)?;
            if candidates <= i64::from(cap) {
                fts = Some(phrase);
            }
        }
        // Only the filters present appear in the SQL, so no MATCH runs on a NULL.
        // CROSS JOIN keeps the index the outer loop whatever ANALYZE has recorded.
        let mut sql = format!("SELECT {CONTACT_COLUMNS} FROM ");
        if fts.is_some() {
            sql.push_str(
                "contacts_fts CROSS JOIN contacts ON contacts.rid = contacts_fts.rowid \
                 WHERE contacts_fts MATCH ? AND ",
            );
        } else {
            sql.push_str("contacts WHERE ");
        }
        sql.push_str("tenant_id = ?");
        if after.is_some() {
            sql.push_str(" AND id > ?");
        }
        // Also checked after a MATCH: the index folds case more widely than
        // `to_lowercase` (`ſ` matches `s`), so it may yield rows without the term.
        if term.is_some() {
            sql.push_str(" AND instr(contacts.search_text, ?) > 0");
        }
        if query.suppressed.is_some() {
            sql.push_str(" AND suppressed = ?");
        }
        sql.push_str(" ORDER BY id LIMIT ?");
        let mut statement = sqlx::query(&sql);
        if let Some(fts) = fts {
            statement = statement.bind(fts);
        }
        statement = statement.bind(tenant.as_str());
        if let Some(after) = after {
            statement = statement.bind(after);
        }
        if let Some(term) = term {
            statement = statement.bind(term);
        }
        if let Some(suppressed) = query.suppressed {
            statement = statement.bind(suppressed);
        }
        let rows = statement
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await
            .map_err(classify)?;
        rows.iter().map(view_from_row).collect()
    }

    async fn update_contact(
        &self,
        tenant: &TenantId,
        id: &ContactId,
        update: ContactUpdate,
    ) -> StoreResult<Contact> {
        // IMMEDIATE takes the write lock before the read, so the merge sees the latest row.
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        let before = Self::lock_contact(&mut tx, tenant, id).await?;
        let Some((after, entry)) = before.apply(update)? else {
            return Ok(before);
        };
        sqlx::query(
            "UPDATE contacts SET email = ?3, email_key = ?4, properties = ?5, search_text = ?6, \
                updated_at = ?7, revision = revision + 1 \
             WHERE tenant_id = ?1 AND id = ?2",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(after.email.as_str())
        .bind(after.email.key())
        .bind(json_text(after.properties.as_map())?)
        .bind(search_text(after.email.as_str(), &after.properties))
        .bind(after.updated_at.timestamp_micros())
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        Self::insert_timeline(&mut tx, tenant, id, &entry).await?;
        tx.commit().await.map_err(classify)?;
        Ok(after)
    }

    async fn delete_contact(&self, tenant: &TenantId, id: &ContactId) -> StoreResult<()> {
        // Activity rows go with the contact through ON DELETE CASCADE, in this statement.
        let result = sqlx::query("DELETE FROM contacts WHERE tenant_id = ?1 AND id = ?2")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound("contact"));
        }
        Ok(())
    }

    async fn ensure_contact(&self, tenant: &TenantId, id: &ContactId) -> StoreResult<()> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM contacts WHERE tenant_id = ?1 AND id = ?2")
                .bind(tenant.as_str())
                .bind(id.as_str())
                .fetch_optional(&self.reader)
                .await
                .map_err(classify)?;
        found.map(|_| ()).ok_or(StoreError::NotFound("contact"))
    }

    async fn list_timeline(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        query: &TimelineQuery,
        after: Option<&TimeKey>,
        limit: u32,
    ) -> StoreResult<Vec<TimelineEntry>> {
        let (cmp, dir) = match query.order {
            TimelineOrder::NewestFirst => ("<", "DESC"),
            TimelineOrder::OldestFirst => (">", "ASC"),
        };
        let types = (!query.types.is_empty()).then(|| Value::from(query.types.clone()).to_string());
        let sql = format!(
            "SELECT id, type, occurred_at, data FROM timeline_entries \
             WHERE tenant_id = ?1 AND contact_id = ?2 \
               AND (?3 IS NULL OR (occurred_at, id) {cmp} (?3, ?4)) \
               AND (?5 IS NULL OR type IN (SELECT value FROM json_each(?5))) \
             ORDER BY occurred_at {dir}, id {dir} LIMIT ?6"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(contact.as_str())
            .bind(after.map(|key| key.timestamp_micros))
            .bind(after.map(|key| key.id.as_str()))
            .bind(types)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            entries.push(TimelineEntry {
                id: row.try_get("id").map_err(classify)?,
                kind: row.try_get("type").map_err(classify)?,
                timestamp: time(row.try_get("occurred_at").map_err(classify)?)?,
                data: json_map(&row, "data")?,
            });
        }
        Ok(entries)
    }
}

fn contact_from_row(row: &SqliteRow) -> StoreResult<Contact> {
    view_from_row(row)?.parse().map_err(StoreError::internal)
}

/// A contact for a response, its properties the stored JSON text.
fn view_from_row(row: &SqliteRow) -> StoreResult<ContactView> {
    Ok(ContactView {
        id: ContactId::from_trusted(row.try_get("id").map_err(classify)?),
        email: Email::from_trusted(row.try_get("email").map_err(classify)?),
        properties: PropertiesJson::from_trusted(row.try_get("properties").map_err(classify)?),
        suppressed: row.try_get("suppressed").map_err(classify)?,
        unsubscribed: row.try_get("unsubscribed").map_err(classify)?,
        created_at: time(row.try_get("created_at").map_err(classify)?)?,
        updated_at: time(row.try_get("updated_at").map_err(classify)?)?,
    })
}

fn json_text(map: &Map<String, Value>) -> StoreResult<String> {
    serde_json::to_string(map).map_err(StoreError::internal)
}

fn json_map(row: &SqliteRow, column: &str) -> StoreResult<Map<String, Value>> {
    let text: String = row.try_get(column).map_err(classify)?;
    serde_json::from_str(&text).map_err(StoreError::internal)
}

fn time(micros: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::internal(format!("timestamp {micros} out of range")))
}

/// Sorts driver errors into the kinds the API maps to status codes.
fn classify(err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        // Extended result codes: 2067 UNIQUE, 1555 PRIMARY KEY; 5/6 and their
        // extended forms are BUSY/LOCKED; 18 TOOBIG.
        let code: i64 = db.code().and_then(|c| c.parse().ok()).unwrap_or(-1);
        match code {
            2067 | 1555 => {
                return if db.message().contains("email_key") {
                    StoreError::Conflict { field: "email" }
                } else {
                    StoreError::Conflict { field: "id" }
                };
            }
            // FOREIGN KEY: the referenced contact is gone.
            787 => return StoreError::NotFound("contact"),
            18 => {
                return StoreError::Invalid(ValidationError::new(
                    "request",
                    "contains a value the database cannot store",
                ));
            }
            c if c & 0xff == 5 || c & 0xff == 6 || c & 0xff == 10 || c & 0xff == 13 => {
                return StoreError::Unavailable(err);
            }
            _ => {}
        }
    }
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err),
        other => StoreError::Internal(Box::new(other)),
    }
}
