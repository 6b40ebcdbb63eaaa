//! Contacts and their timeline on PostgreSQL. The hot calls are one statement each:
//! a create inserts the contact and its entry together, a merge writes only if the
//! row's revision is unchanged, and a caller's key is checked inside the same
//! statement (`Access::key_hash`) instead of in a round trip of its own.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

use super::lookups::By;
use super::rows::{contact_from_row, view_from_row};
use super::{PgStore, classify, sql};
use crate::domain::{
    Contact, ContactId, ContactQuery, ContactView, Email, TenantId, TimeKey, TimelineEntry,
    TimelineOrder, TimelineQuery, ValidationError, search_text,
};
use crate::store::{Access, ContactStore, StoreError, StoreResult};

#[async_trait]
impl ContactStore for PgStore {
    async fn insert_contact(
        &self,
        access: &Access,
        contact: &Contact,
        created: &TimelineEntry,
    ) -> StoreResult<()> {
        let statement = match access.key_hash {
            Some(_) => sql::CREATE_CONTACT_CHECKED,
            None => sql::CREATE_CONTACT,
        };
        let mut query = sqlx::query(statement)
            .bind(access.tenant.as_str())
            .bind(contact.id.as_str())
            .bind(contact.email.as_str())
            .bind(contact.email.key())
            .bind(Json(contact.properties.as_map()))
            .bind(search_text(contact.email.as_str(), &contact.properties))
            .bind(contact.created_at)
            .bind(&created.id)
            .bind(&created.kind)
            .bind(Json(&created.data));
        if let Some(key_hash) = &access.key_hash {
            query = query.bind(&key_hash[..]);
        }
        let mut conn = self.conns.get().await?;
        let result = query.execute(&mut *conn).await;
        let result = conn.finish(result)?;
        // Under a key, the statement inserts nothing unless the key is live.
        if result.rows_affected() == 0 {
            return Err(StoreError::KeyRejected);
        }
        Ok(())
    }

    async fn get_contact(&self, access: &Access, id: &ContactId) -> StoreResult<ContactView> {
        let found = match &access.key_hash {
            Some(key_hash) => {
                self.lookups
                    .get(&access.tenant, key_hash, By::Id, id.as_str())
                    .await?
            }
            None => {
                self.read_one(sql::GET_CONTACT, &access.tenant, id.as_str())
                    .await?
            }
        };
        found.ok_or(StoreError::NotFound("contact"))
    }

    async fn get_contact_by_email(
        &self,
        access: &Access,
        email: &Email,
    ) -> StoreResult<Option<ContactView>> {
        match &access.key_hash {
            Some(key_hash) => {
                self.lookups
                    .get(&access.tenant, key_hash, By::EmailKey, email.key())
                    .await
            }
            None => {
                self.read_one(sql::GET_CONTACT_BY_EMAIL, &access.tenant, email.key())
                    .await
            }
        }
    }

    async fn list_contacts(
        &self,
        tenant: &TenantId,
        query: &ContactQuery,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ContactView>> {
        let pattern = query.search.as_ref().map(|term| term.like_pattern());
        let probe = query
            .search
            .as_ref()
            .and_then(|term| probe_pattern(term.as_str()));
        let sql = list_sql(after.is_some(), probe.is_some(), pattern.is_some(), query);
        // With two patterns, the generic plan of a prepared statement (estimated from
        // no terms at all) can look cheaper than the custom plans of rare terms, and
        // PostgreSQL would then keep it for every term, common ones included (see
        // BENCHMARKS.md). Such a query is planned for its own terms each time.
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

    async fn read_for_update(
        &self,
        access: &Access,
        id: &ContactId,
    ) -> StoreResult<(Contact, i64)> {
        let row = match &access.key_hash {
            Some(key_hash) => {
                let mut conn = self.conns.get().await?;
                let row = sqlx::query(sql::READ_FOR_UPDATE_CHECKED)
                    .bind(access.tenant.as_str())
                    .bind(id.as_str())
                    .bind(&key_hash[..])
                    .fetch_optional(&mut *conn)
                    .await;
                // No row: the key was rejected; a row of NULLs: no such contact.
                let row = conn.finish(row)?.ok_or(StoreError::KeyRejected)?;
                let found: Option<String> = row.try_get("id").map_err(classify)?;
                found.map(|_| row)
            }
            None => {
                let mut conn = self.conns.get().await?;
                let row = sqlx::query(sql::READ_FOR_UPDATE)
                    .bind(access.tenant.as_str())
                    .bind(id.as_str())
                    .fetch_optional(&mut *conn)
                    .await;
                conn.finish(row)?
            }
        };
        let row = row.ok_or(StoreError::NotFound("contact"))?;
        let revision: i64 = row.try_get("revision").map_err(classify)?;
        Ok((contact_from_row(&row)?, revision))
    }

    async fn update_if_revision(
        &self,
        tenant: &TenantId,
        after: &Contact,
        updated: &TimelineEntry,
        revision: i64,
    ) -> StoreResult<bool> {
        let query = sqlx::query(sql::UPDATE_CONTACT_IF_REVISION)
            .bind(tenant.as_str())
            .bind(after.id.as_str())
            .bind(after.email.as_str())
            .bind(after.email.key())
            .bind(Json(after.properties.as_map()))
            .bind(search_text(after.email.as_str(), &after.properties))
            .bind(after.updated_at)
            .bind(&updated.id)
            .bind(&updated.kind)
            .bind(Json(&updated.data))
            .bind(revision);
        let mut conn = self.conns.get().await?;
        let result = query.execute(&mut *conn).await;
        Ok(conn.finish(result)?.rows_affected() == 1)
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
        rows.iter().map(timeline_entry_from_row).collect()
    }
}

impl PgStore {
    /// The contact a one-row statement of `(tenant, key)` finds, if any.
    async fn read_one(
        &self,
        statement: &'static str,
        tenant: &TenantId,
        key: &str,
    ) -> StoreResult<Option<ContactView>> {
        let mut conn = self.conns.get().await?;
        let row = sqlx::query(statement)
            .bind(tenant.as_str())
            .bind(key)
            .fetch_optional(&mut *conn)
            .await;
        let row = conn.finish(row)?;
        row.as_ref().map(view_from_row).transpose()
    }
}

fn timeline_entry_from_row(row: &PgRow) -> StoreResult<TimelineEntry> {
    let Json(data): Json<Map<String, Value>> = row.try_get("data").map_err(classify)?;
    Ok(TimelineEntry {
        id: row.try_get("id").map_err(classify)?,
        kind: row.try_get("type").map_err(classify)?,
        timestamp: row.try_get("occurred_at").map_err(classify)?,
        data,
    })
}

/// The longest run of letters and digits of a search term, as a LIKE pattern, when
/// it is not the whole term and has a trigram of its own.
///
/// The trigram index checks a row holding the pattern's rarest trigram against all
/// its other trigrams, and one that nearly every row has (the `cr-` of a customer
/// reference, the `com` of an address) costs a posting-tree descent per such row.
/// With the run first as a pattern of its own (GIN takes the keys in this order and
/// starts over at the first when one rejects a row), the whole pattern is checked,
/// still in the index, only for rows that hold that run.
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
    (longest.chars().count() >= 3 && longest.len() < term.len()).then(|| format!("%{longest}%"))
}

/// A list page's statement with only the filters present: a generic plan for
/// `$n IS NULL OR ...` could not use the indexes.
fn list_sql(after: bool, probe: bool, pattern: bool, query: &ContactQuery) -> String {
    let mut sql = format!(
        "SELECT {} FROM contacts WHERE tenant_id = $1",
        sql::CONTACT_COLUMNS
    );
    let mut n = 1;
    let mut param = |clause: &str| {
        n += 1;
        sql.push_str(&clause.replace('?', &format!("${n}")));
    };
    if after {
        param(" AND id > ?");
    }
    if probe {
        param(" AND search_text LIKE ?");
    }
    if pattern {
        param(" AND search_text LIKE ?");
    }
    if query.suppressed.is_some() {
        param(" AND suppressed = ?");
    }
    param(" ORDER BY id LIMIT ?");
    sql
}
