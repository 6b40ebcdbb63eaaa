//! Contacts and their timeline on SQLite. A caller's key is checked with a lookup
//! of its own (in-process, no round trip to save); writes take the write lock first.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::Row;

use super::rows::{CONTACT_COLUMNS, timeline_entry_from_row, view_from_row};
use super::write_tx::SqliteWriteTx;
use super::{SqliteStore, classify, search};
use crate::domain::{
    Contact, ContactId, ContactQuery, ContactView, Email, TenantId, TimeKey, TimelineEntry,
    TimelineOrder, TimelineQuery,
};
use crate::store::{Access, ContactStore, StoreError, StoreResult, WriteTx, check_key};

#[async_trait]
impl ContactStore for SqliteStore {
    async fn insert_contact(
        &self,
        access: &Access,
        contact: &Contact,
        created: &TimelineEntry,
    ) -> StoreResult<()> {
        check_key(self, access).await?;
        let mut tx = self.write_tx(&access.tenant).await?;
        if !tx.insert_contact_if_new(contact).await? {
            return Err(StoreError::Conflict { field: "email" });
        }
        tx.insert_timeline_entry(&contact.id, created).await?;
        Box::new(tx).commit().await
    }

    async fn get_contact(&self, access: &Access, id: &ContactId) -> StoreResult<ContactView> {
        check_key(self, access).await?;
        self.read_contact("id", &access.tenant, id.as_str())
            .await?
            .ok_or(StoreError::NotFound("contact"))
    }

    async fn get_contact_by_email(
        &self,
        access: &Access,
        email: &Email,
    ) -> StoreResult<Option<ContactView>> {
        check_key(self, access).await?;
        self.read_contact("email_key", &access.tenant, email.key())
            .await
    }

    async fn list_contacts(
        &self,
        tenant: &TenantId,
        query: &ContactQuery,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ContactView>> {
        let mut conn = self.reader.acquire().await.map_err(classify)?;
        search::list_contacts(&mut conn, tenant, query, after, limit).await
    }

    async fn read_for_update(
        &self,
        access: &Access,
        id: &ContactId,
    ) -> StoreResult<(Contact, i64)> {
        check_key(self, access).await?;
        let sql = format!(
            "SELECT {CONTACT_COLUMNS}, revision FROM contacts WHERE tenant_id = ?1 AND id = ?2"
        );
        let row = sqlx::query(&sql)
            .bind(access.tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(classify)?
            .ok_or(StoreError::NotFound("contact"))?;
        let revision: i64 = row.try_get("revision").map_err(classify)?;
        let contact = super::rows::contact_from_row(&row)?;
        Ok((contact, revision))
    }

    async fn update_if_revision(
        &self,
        tenant: &TenantId,
        after: &Contact,
        updated: &TimelineEntry,
        revision: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.write_tx(tenant).await?;
        if !tx.update_contact_at_revision(after, revision).await? {
            return Ok(false);
        }
        tx.insert_timeline_entry(&after.id, updated).await?;
        Box::new(tx).commit().await?;
        Ok(true)
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
        rows.iter().map(timeline_entry_from_row).collect()
    }
}

impl SqliteStore {
    /// A write transaction as its concrete type, for the writes this file makes.
    pub(super) async fn write_tx(&self, tenant: &TenantId) -> StoreResult<SqliteWriteTx> {
        let tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        Ok(SqliteWriteTx::new(tx, tenant))
    }

    /// The tenant's contact whose `column` (`id` or `email_key`) is `key`.
    async fn read_contact(
        &self,
        column: &'static str,
        tenant: &TenantId,
        key: &str,
    ) -> StoreResult<Option<ContactView>> {
        let sql = format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts WHERE tenant_id = ?1 AND {column} = ?2"
        );
        let row = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .map_err(classify)?;
        row.as_ref().map(view_from_row).transpose()
    }
}
