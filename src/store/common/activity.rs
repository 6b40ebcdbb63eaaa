//! Reads of the records the ingestion API writes, the same on both backends.

use async_trait::async_trait;

use super::rows::Record;
use super::types::DbTime;
use super::{ConnSource, SqlStore, SqlText, Stmt};
use crate::domain::{
    ContactId, Enrolment, Membership, ScheduledSend, SendRecord, TenantId, TimeKey,
};
use crate::store::{ActivityStore, ReadFrom, StoreResult};

#[async_trait]
impl<S: SqlStore> ActivityStore for S {
    async fn list_sends(
        &self,
        from: ReadFrom,
        tenant: &TenantId,
        contact: &ContactId,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<SendRecord>> {
        let mut sql = SqlText::new(&format!(
            "SELECT {} FROM sends WHERE tenant_id = ? AND contact_id = ?",
            SendRecord::COLUMNS
        ));
        if after.is_some() {
            sql = sql.push(" AND id < ?");
        }
        let sql = sql.push(" ORDER BY id DESC LIMIT ?");
        let sql = sql.as_str();
        self.read_heavy(from, |conns| async move {
            let mut stmt = Stmt::<S::Db>::new(sql)
                .bind(tenant.as_str())
                .bind(contact.as_str());
            if let Some(after) = after {
                stmt = stmt.bind(after);
            }
            let rows = conns.fetch_all(stmt.bind(i64::from(limit))).await?;
            rows.iter().map(SendRecord::from_row::<S::Db>).collect()
        })
        .await
    }

    async fn list_scheduled_sends(
        &self,
        from: ReadFrom,
        tenant: &TenantId,
        contact: &ContactId,
        after: Option<&TimeKey>,
        limit: u32,
    ) -> StoreResult<Vec<ScheduledSend>> {
        let mut sql = SqlText::new(&format!(
            "SELECT {} FROM scheduled_sends \
             WHERE tenant_id = ? AND contact_id = ? AND status = 'pending'",
            ScheduledSend::COLUMNS
        ));
        if after.is_some() {
            sql = sql.push(" AND (scheduled_for, id) > (?, ?)");
        }
        let sql = sql.push(" ORDER BY scheduled_for, id LIMIT ?");
        let sql = sql.as_str();
        // A forged cursor's time out of range is the caller's error.
        let after = after
            .map(|after| after.time().map(|time| (time, after.id.as_str())))
            .transpose()?;
        self.read_heavy(from, |conns| async move {
            let mut stmt = Stmt::<S::Db>::new(sql)
                .bind(tenant.as_str())
                .bind(contact.as_str());
            if let Some((time, id)) = after {
                stmt = stmt.bind(DbTime(time)).bind(id);
            }
            let rows = conns.fetch_all(stmt.bind(i64::from(limit))).await?;
            rows.iter().map(ScheduledSend::from_row::<S::Db>).collect()
        })
        .await
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
            "SELECT {} FROM sequence_enrolments WHERE tenant_id = $1 AND contact_id = $2 \
             {filter} ORDER BY enrolled_at DESC, sequence_id",
            Enrolment::COLUMNS
        );
        let stmt = Stmt::<S::Db>::new(&sql)
            .bind(tenant.as_str())
            .bind(contact.as_str());
        let rows = self.reads().fetch_all(stmt).await?;
        rows.iter().map(Enrolment::from_row::<S::Db>).collect()
    }

    async fn list_memberships(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
    ) -> StoreResult<Vec<Membership>> {
        let sql = format!(
            "SELECT {} FROM segment_memberships \
             WHERE tenant_id = $1 AND contact_id = $2 ORDER BY joined_at DESC, segment_id",
            Membership::COLUMNS
        );
        let stmt = Stmt::<S::Db>::new(&sql)
            .bind(tenant.as_str())
            .bind(contact.as_str());
        let rows = self.reads().fetch_all(stmt).await?;
        rows.iter().map(Membership::from_row::<S::Db>).collect()
    }
}
