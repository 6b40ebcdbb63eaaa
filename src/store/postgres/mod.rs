//! PostgreSQL store: the production backend.

mod activity;
mod conns;
mod lookups;
mod sql;
mod writes;

use conns::Conns;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};

use super::{
    ApiKeyRecord, Checked, ConnectOptions, ContactStore, KeyClaim, StoreError, StoreResult,
    migrations,
};
use crate::domain::{
    Contact, ContactId, ContactQuery, ContactUpdate, ContactView, Email, NewContact,
    PropertiesJson, TenantId, TimeKey, TimelineEntry, TimelineOrder, TimelineQuery,
    ValidationError,
};

use sql::CONTACT_COLUMNS;

pub struct PgStore {
    conns: Conns,
    lookups: lookups::Lookups,
}

impl PgStore {
    pub async fn connect(url: &str, options: &ConnectOptions) -> StoreResult<Self> {
        let conns = Conns::connect(url, options).await?;
        if options.migrate {
            let migrator = migrations::migrator(migrations::POSTGRES)
                .await
                .map_err(StoreError::internal)?;
            let mut conn = conns.get().await?;
            migrator
                .run(&mut *conn)
                .await
                .map_err(StoreError::internal)?;
            conn.done();
        }
        // Coalesced point reads take at most a quarter of the pool (1 to 4 statements).
        let spare = (options.max_connections / 4).clamp(1, 4) as usize - 1;
        let lookups = lookups::Lookups::start(conns.clone(), spare);
        Ok(Self { conns, lookups })
    }

    async fn lock_contact(
        tx: &mut Transaction<'_, Postgres>,
        tenant: &TenantId,
        id: &ContactId,
    ) -> StoreResult<Contact> {
        let row = sqlx::query(sql::LOCK_CONTACT)
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
}

#[async_trait]
impl ContactStore for PgStore {
    fn multi_page_queries(&self) -> bool {
        true
    }

    fn pool_usage(&self) -> super::PoolUsage {
        self.conns.usage()
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conns.get().await?;
        let done = sqlx::query("SELECT 1").execute(&mut *conn).await;
        conn.finish(done)?;
        Ok(())
    }

    async fn ensure_tenant(&self, tenant: &TenantId) -> StoreResult<bool> {
        let mut conn = self.conns.get().await?;
        let result =
            sqlx::query("INSERT INTO tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(tenant.as_str())
                .execute(&mut *conn)
                .await;
        let result = conn.finish(result)?;
        Ok(result.rows_affected() == 1)
    }

    async fn insert_api_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        key_hash: &[u8; 32],
    ) -> StoreResult<()> {
        let mut conn = self.conns.get().await?;
        let done =
            sqlx::query("INSERT INTO api_keys (key_id, tenant_id, key_hash) VALUES ($1, $2, $3)")
                .bind(key_id)
                .bind(tenant.as_str())
                .bind(&key_hash[..])
                .execute(&mut *conn)
                .await;
        conn.finish(done)?;
        Ok(())
    }

    async fn tenant_for_key(&self, key_hash: &[u8; 32]) -> StoreResult<Option<TenantId>> {
        let mut conn = self.conns.get().await?;
        let tenant = sqlx::query_scalar(sql::TENANT_FOR_KEY)
            .bind(&key_hash[..])
            .fetch_optional(&mut *conn)
            .await;
        let tenant: Option<String> = conn.finish(tenant)?;
        Ok(tenant.map(TenantId::from_trusted))
    }

    async fn list_api_keys(&self, tenant: Option<&TenantId>) -> StoreResult<Vec<ApiKeyRecord>> {
        let mut conn = self.conns.get().await?;
        let rows = sqlx::query(
            "SELECT key_id, tenant_id, created_at, revoked_at FROM api_keys \
             WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY tenant_id, created_at, key_id",
        )
        .bind(tenant.map(TenantId::as_str))
        .fetch_all(&mut *conn)
        .await;
        let rows = conn.finish(rows)?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            keys.push(ApiKeyRecord {
                key_id: row.try_get("key_id").map_err(classify)?,
                tenant: TenantId::from_trusted(row.try_get("tenant_id").map_err(classify)?),
                created_at: row.try_get("created_at").map_err(classify)?,
                revoked_at: row.try_get("revoked_at").map_err(classify)?,
            });
        }
        Ok(keys)
    }

    async fn revoke_api_key(&self, key_id: &str) -> StoreResult<bool> {
        let mut conn = self.conns.get().await?;
        let result = sqlx::query(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL",
        )
        .bind(key_id)
        .execute(&mut *conn)
        .await;
        let result = conn.finish(result)?;
        Ok(result.rows_affected() == 1)
    }

    async fn create_contact(&self, tenant: &TenantId, new: NewContact) -> StoreResult<Contact> {
        match self.create(tenant, None, new).await? {
            Checked::Live(contact) => Ok(contact),
            Checked::KeyRejected => unreachable!("no key is checked without a claim"),
        }
    }

    async fn get_contact(&self, tenant: &TenantId, id: &ContactId) -> StoreResult<ContactView> {
        let mut conn = self.conns.get().await?;
        let row = sqlx::query(sql::GET_CONTACT)
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(&mut *conn)
            .await;
        let row = conn.finish(row)?;
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
        let mut conn = self.conns.get().await?;
        let row = sqlx::query(sql::GET_CONTACT_BY_EMAIL)
            .bind(tenant.as_str())
            .bind(email.key())
            .fetch_optional(&mut *conn)
            .await;
        let row = conn.finish(row)?;
        row.as_ref().map(view_from_row).transpose()
    }

    async fn list_contacts(
        &self,
        tenant: &TenantId,
        query: &ContactQuery,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ContactView>> {
        /// The longest run of letters and digits of a search term, as a LIKE pattern,
        /// when it is not the whole term and has a trigram of its own.
        fn probe_pattern(term: &str) -> Option<String> {
            let longest = term
                .split(|c: char| !c.is_alphanumeric())
                .fold("", |longest, run| {
                    if run.chars().count() > longest.chars().count() {
                        run
                    } else {
                        longest
                    }
                });
            (longest.chars().count() >= 3 && longest.len() < term.len())
                .then(|| format!("%{longest}%"))
        }

        // Only the filters present appear in the SQL: a generic plan for
        // `$n IS NULL OR ...` could not use the indexes.
        let pattern = query.search.as_ref().map(|term| term.like_pattern());
        // The trigram index checks a row holding the pattern's rarest trigram against
        // all its other trigrams, and one that nearly every row has (the `cr-` of a
        // customer reference, the `com` of an address) costs a posting-tree descent
        // per such row: 227 of the 268 index pages a rare-term search read at 1,000,000
        // contacts. So the term's longest run of letters and digits comes first as a
        // pattern of its own (GIN takes the keys in this order and starts over at the
        // first when one rejects a row): the whole pattern is checked, still in the
        // index, only for rows that hold that run. See BENCHMARKS.md.
        let probe = query
            .search
            .as_ref()
            .and_then(|term| probe_pattern(term.as_str()));
        let mut sql = format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE tenant_id = $1");
        let mut n = 1;
        let mut param = |sql: &mut String, clause: &str| {
            n += 1;
            sql.push_str(&clause.replace('?', &format!("${n}")));
        };
        if after.is_some() {
            param(&mut sql, " AND id > ?");
        }
        if probe.is_some() {
            param(&mut sql, " AND search_text LIKE ?");
        }
        if pattern.is_some() {
            param(&mut sql, " AND search_text LIKE ?");
        }
        if query.suppressed.is_some() {
            param(&mut sql, " AND suppressed = ?");
        }
        param(&mut sql, " ORDER BY id LIMIT ?");
        // With two patterns, the generic plan of a prepared statement (estimated from
        // no terms at all) looks cheaper than the custom plans of rare terms, and after
        // five of those PostgreSQL would keep it for every term: a bitmap of all
        // 125,000 matches of `gmail.com` at 1,000,000 contacts, 660 ms instead of
        // 0.3 ms. Such a query is planned for its own terms each time.
        let mut statement = sqlx::query(&sql)
            .persistent(probe.is_none())
            .bind(tenant.as_str());
        if let Some(after) = after {
            statement = statement.bind(after);
        }
        if let Some(probe) = probe {
            statement = statement.bind(probe);
        }
        if let Some(pattern) = pattern {
            statement = statement.bind(pattern);
        }
        if let Some(suppressed) = query.suppressed {
            statement = statement.bind(suppressed);
        }
        let mut conn = self.conns.get().await?;
        let rows = statement.bind(i64::from(limit)).fetch_all(&mut *conn).await;
        let rows = conn.finish(rows)?;
        rows.iter().map(view_from_row).collect()
    }

    async fn update_contact(
        &self,
        tenant: &TenantId,
        id: &ContactId,
        update: ContactUpdate,
    ) -> StoreResult<Contact> {
        match self.update(tenant, None, id, update).await? {
            Checked::Live(contact) => Ok(contact),
            Checked::KeyRejected => unreachable!("no key is checked without a claim"),
        }
    }

    async fn delete_contact(&self, tenant: &TenantId, id: &ContactId) -> StoreResult<()> {
        // Activity rows go with the contact through ON DELETE CASCADE, in this statement.
        let mut conn = self.conns.get().await?;
        let result = sqlx::query("DELETE FROM contacts WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .execute(&mut *conn)
            .await;
        let result = conn.finish(result)?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound("contact"));
        }
        Ok(())
    }

    async fn ensure_contact(&self, tenant: &TenantId, id: &ContactId) -> StoreResult<()> {
        let mut conn = self.conns.get().await?;
        let found = sqlx::query_scalar("SELECT 1 FROM contacts WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(&mut *conn)
            .await;
        let found: Option<i32> = conn.finish(found)?;
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
        let sql = format!(
            "SELECT id, type, occurred_at, data FROM timeline_entries \
             WHERE tenant_id = $1 AND contact_id = $2 \
               AND ($3::timestamptz IS NULL OR (occurred_at, id) {cmp} ($3, $4)) \
               AND (cardinality($5::text[]) = 0 OR type = ANY($5)) \
             ORDER BY occurred_at {dir}, id {dir} LIMIT $6"
        );
        let after_time = after
            .map(|key| {
                DateTime::<Utc>::from_timestamp_micros(key.timestamp_micros).ok_or_else(|| {
                    ValidationError::new("cursor", "is not a cursor returned by this service")
                })
            })
            .transpose()?;
        let mut conn = self.conns.get().await?;
        let rows = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(contact.as_str())
            .bind(after_time)
            .bind(after.map(|key| key.id.as_str()))
            .bind(&query.types)
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await;
        let rows = conn.finish(rows)?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let Json(data): Json<Map<String, Value>> = row.try_get("data").map_err(classify)?;
            entries.push(TimelineEntry {
                id: row.try_get("id").map_err(classify)?,
                kind: row.try_get("type").map_err(classify)?,
                timestamp: row.try_get("occurred_at").map_err(classify)?,
                data,
            });
        }
        Ok(entries)
    }

    // The hot calls: the key is checked in the call's own statement.

    async fn get_contact_checked(
        &self,
        claim: &KeyClaim,
        id: &ContactId,
    ) -> StoreResult<Checked<ContactView>> {
        self.get_checked(claim, id).await
    }

    async fn get_contact_by_email_checked(
        &self,
        claim: &KeyClaim,
        email: &Email,
    ) -> StoreResult<Checked<Option<ContactView>>> {
        self.get_by_email_checked(claim, email).await
    }

    async fn create_contact_checked(
        &self,
        claim: &KeyClaim,
        new: NewContact,
    ) -> StoreResult<Checked<Contact>> {
        self.create(&claim.tenant, Some(claim), new).await
    }

    async fn update_contact_checked(
        &self,
        claim: &KeyClaim,
        id: &ContactId,
        update: ContactUpdate,
    ) -> StoreResult<Checked<Contact>> {
        self.update(&claim.tenant, Some(claim), id, update).await
    }
}

fn contact_from_row(row: &PgRow) -> StoreResult<Contact> {
    view_from_row(row)?.parse().map_err(StoreError::internal)
}

/// A contact for a response, its properties the JSON text PostgreSQL sent: jsonb's
/// binary form is a version byte (1) and then the text, so no tree is built.
/// Columns are read by position (`contact_columns!` order, first in every statement
/// that returns a contact): by name, each is a hash lookup per row, 3 % of an
/// export's server CPU.
pub(super) fn view_from_row(row: &PgRow) -> StoreResult<ContactView> {
    debug_assert!(
        sqlx::Row::columns(row)
            .iter()
            .map(sqlx::Column::name)
            .take(7)
            .eq(sql::CONTACT_COLUMNS.split(", ")),
        "a contact's columns come first, in contact_columns! order"
    );
    let raw: &[u8] = row.try_get_unchecked(2).map_err(classify)?;
    let text = match raw.split_first() {
        Some((1, text)) => std::str::from_utf8(text).map_err(StoreError::internal)?,
        _ => return Err(StoreError::internal("unknown jsonb format version")),
    };
    Ok(ContactView {
        id: ContactId::from_trusted(row.try_get(0).map_err(classify)?),
        email: Email::from_trusted(row.try_get(1).map_err(classify)?),
        properties: PropertiesJson::from_trusted(text.to_owned()),
        suppressed: row.try_get(3).map_err(classify)?,
        unsubscribed: row.try_get(4).map_err(classify)?,
        created_at: row.try_get(5).map_err(classify)?,
        updated_at: row.try_get(6).map_err(classify)?,
    })
}

/// Sorts driver errors into the kinds the API maps to status codes.
fn classify(err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        let code = db.code().unwrap_or_default();
        match code.as_ref() {
            "23505" => {
                return match db.constraint() {
                    Some("contacts_tenant_email_key") => StoreError::Conflict { field: "email" },
                    _ => StoreError::Conflict { field: "id" },
                };
            }
            // A referenced contact vanished mid-transaction (deleted concurrently).
            "23503" => return StoreError::NotFound("contact"),
            // Bytes PostgreSQL cannot store (e.g. NUL in text) or values past its limits.
            "22P05" | "22021" | "54000" | "22001" => {
                return StoreError::Invalid(ValidationError::new(
                    "request",
                    "contains a value the database cannot store",
                ));
            }
            // Connection exceptions, shutdown, too many connections, recovery.
            c if c.starts_with("08")
                || c.starts_with("57P")
                || c == "53300"
                || c == "40001"
                || c == "40P01" =>
            {
                return StoreError::Unavailable(err);
            }
            _ => {}
        }
    }
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err),
        other => StoreError::Internal(Box::new(other)),
    }
}
