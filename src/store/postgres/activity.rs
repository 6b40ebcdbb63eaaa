//! Reads of the records the ingestion API writes, on PostgreSQL.

use async_trait::async_trait;

use super::PgStore;
use super::rows::{
    ENROLMENT_COLUMNS, MEMBERSHIP_COLUMNS, SCHEDULED_COLUMNS, SEND_COLUMNS, enrolment_from_row,
    membership_from_row, scheduled_from_row, send_from_row,
};
use crate::domain::{
    ContactId, Enrolment, Membership, ScheduledSend, SendRecord, TenantId, TimeKey,
};
use crate::store::{ActivityStore, StoreResult};

#[async_trait]
impl ActivityStore for PgStore {
    async fn list_sends(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<SendRecord>> {
        let keyset = if after.is_some() {
            "AND id < $3"
        } else {
            "AND $3::text IS NULL"
        };
        let sql = format!(
            "SELECT {SEND_COLUMNS} FROM sends WHERE tenant_id = $1 AND contact_id = $2 {keyset} ORDER BY id DESC LIMIT $4"
        );
        let mut conn = self.conns.get().await?;
        let rows = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(contact.as_str())
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await;
        let rows = conn.finish(rows)?;
        rows.iter().map(send_from_row).collect()
    }

    async fn list_scheduled_sends(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        after: Option<&TimeKey>,
        limit: u32,
    ) -> StoreResult<Vec<ScheduledSend>> {
        let keyset = if after.is_some() {
            "AND (scheduled_for, id) > ($3, $4)"
        } else {
            "AND $3::timestamptz IS NULL AND $4::text IS NULL"
        };
        let sql = format!(
            "SELECT {SCHEDULED_COLUMNS} FROM scheduled_sends \
             WHERE tenant_id = $1 AND contact_id = $2 AND status = 'pending' {keyset} \
             ORDER BY scheduled_for, id LIMIT $5"
        );
        let mut conn = self.conns.get().await?;
        let rows = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(contact.as_str())
            .bind(after.map(TimeKey::time).transpose()?)
            .bind(after.map(|key| key.id.as_str()))
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await;
        let rows = conn.finish(rows)?;
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
            "SELECT {ENROLMENT_COLUMNS} FROM sequence_enrolments WHERE tenant_id = $1 AND contact_id = $2 {filter} \
             ORDER BY enrolled_at DESC, sequence_id"
        );
        let mut conn = self.conns.get().await?;
        let rows = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(contact.as_str())
            .fetch_all(&mut *conn)
            .await;
        let rows = conn.finish(rows)?;
        rows.iter().map(enrolment_from_row).collect()
    }

    async fn list_memberships(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
    ) -> StoreResult<Vec<Membership>> {
        let mut conn = self.conns.get().await?;
        let sql = format!(
            "SELECT {MEMBERSHIP_COLUMNS} FROM segment_memberships \
             WHERE tenant_id = $1 AND contact_id = $2 ORDER BY joined_at DESC, segment_id"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(contact.as_str())
            .fetch_all(&mut *conn)
            .await;
        let rows = conn.finish(rows)?;
        rows.iter().map(membership_from_row).collect()
    }
}
