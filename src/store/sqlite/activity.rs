//! Reads of the records the ingestion API writes, on SQLite.

use async_trait::async_trait;

use super::rows::{
    ENROLMENT_COLUMNS, MEMBERSHIP_COLUMNS, SCHEDULED_COLUMNS, SEND_COLUMNS, enrolment_from_row,
    membership_from_row, scheduled_from_row, send_from_row,
};
use super::{SqliteStore, classify};
use crate::domain::{
    ContactId, Enrolment, Membership, ScheduledSend, SendRecord, TenantId, TimeKey,
};
use crate::store::{ActivityStore, StoreResult};

#[async_trait]
impl ActivityStore for SqliteStore {
    async fn list_sends(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<SendRecord>> {
        let mut sql =
            format!("SELECT {SEND_COLUMNS} FROM sends WHERE tenant_id = ? AND contact_id = ?");
        if after.is_some() {
            sql.push_str(" AND id < ?");
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        let mut statement = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(contact.as_str());
        if let Some(after) = after {
            statement = statement.bind(after);
        }
        let rows = statement
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        rows.iter().map(send_from_row).collect()
    }

    async fn list_scheduled_sends(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        after: Option<&TimeKey>,
        limit: u32,
    ) -> StoreResult<Vec<ScheduledSend>> {
        let mut sql = format!(
            "SELECT {SCHEDULED_COLUMNS} FROM scheduled_sends \
             WHERE tenant_id = ? AND contact_id = ? AND status = 'pending'"
        );
        if after.is_some() {
            sql.push_str(" AND (scheduled_for, id) > (?, ?)");
        }
        sql.push_str(" ORDER BY scheduled_for, id LIMIT ?");
        let mut statement = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(contact.as_str());
        if let Some(after) = after {
            // Rejects a cursor whose time is out of range, as PostgreSQL does.
            after.time()?;
            statement = statement
                .bind(after.timestamp_micros)
                .bind(after.id.as_str());
        }
        let rows = statement
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        rows.iter().map(scheduled_from_row).collect()
    }

    async fn list_enrolments(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        include_finished: bool,
    ) -> StoreResult<Vec<Enrolment>> {
        let filter = if include_finished {
            ""
        } else {
            "AND status IN ('active', 'paused')"
        };
        let sql = format!(
            "SELECT {ENROLMENT_COLUMNS} FROM sequence_enrolments WHERE tenant_id = ?1 AND contact_id = ?2 {filter} \
             ORDER BY enrolled_at DESC, sequence_id"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(contact.as_str())
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        rows.iter().map(enrolment_from_row).collect()
    }

    async fn list_memberships(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
    ) -> StoreResult<Vec<Membership>> {
        let sql = format!(
            "SELECT {MEMBERSHIP_COLUMNS} FROM segment_memberships \
             WHERE tenant_id = ?1 AND contact_id = ?2 ORDER BY joined_at DESC, segment_id"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(contact.as_str())
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        rows.iter().map(membership_from_row).collect()
    }
}
