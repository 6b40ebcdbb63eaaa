//! The ingestion records' half of the write transaction (`ActivityWriteTx`): sends,
//! scheduled sends, enrolments and memberships, written by the same statements on
//! both backends, in the transaction that locked their contact.

use async_trait::async_trait;

use super::Stmt;
use super::rows::Record;
use super::types::DbTime;
use super::write_tx::{SqlWriteTx, TxConn, lock_sql};
use crate::domain::{ContactId, Enrolment, Membership, ScheduledSend, SendRecord};
use crate::store::{ActivityWriteTx, ContactRecord, StoreResult};

const SAVE_SEND: &str = "INSERT INTO sends (tenant_id, id, contact_id, email, template_id, \
        template_name, subject, status, source, source_id, created_at, sent_at, delivered_at, \
        opened_at, clicked_at, bounced_at, complained_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
     ON CONFLICT (tenant_id, id) DO UPDATE SET status = EXCLUDED.status, \
        sent_at = EXCLUDED.sent_at, delivered_at = EXCLUDED.delivered_at, \
        opened_at = EXCLUDED.opened_at, clicked_at = EXCLUDED.clicked_at, \
        bounced_at = EXCLUDED.bounced_at, complained_at = EXCLUDED.complained_at";

const SAVE_SCHEDULED_SEND: &str = "INSERT INTO scheduled_sends (tenant_id, id, contact_id, \
        email, template_id, template_name, subject, scheduled_for, source, source_id, step, \
        status, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (tenant_id, id) DO UPDATE SET status = EXCLUDED.status";

const SAVE_ENROLMENT: &str = "INSERT INTO sequence_enrolments (tenant_id, contact_id, \
        sequence_id, sequence_name, status, current_step, enrolled_at, updated_at, \
        completed_at, exited_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (tenant_id, contact_id, sequence_id) DO UPDATE SET \
        sequence_name = EXCLUDED.sequence_name, status = EXCLUDED.status, \
        current_step = EXCLUDED.current_step, enrolled_at = EXCLUDED.enrolled_at, \
        updated_at = EXCLUDED.updated_at, completed_at = EXCLUDED.completed_at, \
        exited_at = EXCLUDED.exited_at";

const SAVE_MEMBERSHIP: &str = "INSERT INTO segment_memberships (tenant_id, contact_id, \
        segment_id, segment_name, joined_at) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (tenant_id, contact_id, segment_id) DO UPDATE SET \
        segment_name = EXCLUDED.segment_name";

#[async_trait]
impl<C: TxConn> ActivityWriteTx for SqlWriteTx<C> {
    async fn lock_owner(&mut self, record: ContactRecord, id: &str) -> StoreResult<bool> {
        let owner = format!(
            "id = (SELECT contact_id FROM {} WHERE tenant_id = $1 AND id = $2)",
            record.table()
        );
        let sql = lock_sql::<C::Db>("id", "contacts", &owner);
        let found = self.find(&sql, &[id], |_| Ok(())).await?;
        Ok(found.is_some())
    }

    async fn lock_send(&mut self, id: &str) -> StoreResult<Option<SendRecord>> {
        let sql = lock_sql::<C::Db>(SendRecord::COLUMNS, "sends", "id = $2");
        self.find(&sql, &[id], SendRecord::from_row::<C::Db>).await
    }

    async fn save_send(&mut self, send: &SendRecord) -> StoreResult<()> {
        let (conn, tenant) = self.parts();
        Stmt::<C::Db>::new(SAVE_SEND)
            .bind(tenant)
            .bind(send.id.as_str())
            .bind(send.contact_id.as_str())
            .bind(send.email.as_str())
            .bind(send.template_id.as_str())
            .bind(send.template_name.as_str())
            .bind(send.subject.as_str())
            .bind(send.status.as_str())
            .bind(send.source.as_str())
            .bind(send.source_id.as_str())
            .bind(DbTime(send.created_at))
            .bind(send.sent_at.map(DbTime))
            .bind(send.delivered_at.map(DbTime))
            .bind(send.opened_at.map(DbTime))
            .bind(send.clicked_at.map(DbTime))
            .bind(send.bounced_at.map(DbTime))
            .bind(send.complained_at.map(DbTime))
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn lock_scheduled_send(&mut self, id: &str) -> StoreResult<Option<ScheduledSend>> {
        let sql = lock_sql::<C::Db>(ScheduledSend::COLUMNS, "scheduled_sends", "id = $2");
        self.find(&sql, &[id], ScheduledSend::from_row::<C::Db>)
            .await
    }

    async fn save_scheduled_send(&mut self, scheduled: &ScheduledSend) -> StoreResult<()> {
        let (conn, tenant) = self.parts();
        Stmt::<C::Db>::new(SAVE_SCHEDULED_SEND)
            .bind(tenant)
            .bind(scheduled.id.as_str())
            .bind(scheduled.contact_id.as_str())
            .bind(scheduled.email.as_str())
            .bind(scheduled.template_id.as_str())
            .bind(scheduled.template_name.as_str())
            .bind(scheduled.subject.as_str())
            .bind(DbTime(scheduled.scheduled_for))
            .bind(scheduled.source.as_str())
            .bind(scheduled.source_id.as_str())
            .bind(scheduled.step)
            .bind(scheduled.status.as_str())
            .bind(DbTime(scheduled.created_at))
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn lock_enrolment(
        &mut self,
        contact: &ContactId,
        sequence_id: &str,
    ) -> StoreResult<Option<Enrolment>> {
        let key = "contact_id = $2 AND sequence_id = $3";
        let sql = lock_sql::<C::Db>(Enrolment::COLUMNS, "sequence_enrolments", key);
        let keys = [contact.as_str(), sequence_id];
        self.find(&sql, &keys, Enrolment::from_row::<C::Db>).await
    }

    async fn save_enrolment(&mut self, e: &Enrolment) -> StoreResult<()> {
        let (conn, tenant) = self.parts();
        Stmt::<C::Db>::new(SAVE_ENROLMENT)
            .bind(tenant)
            .bind(e.contact_id.as_str())
            .bind(e.sequence_id.as_str())
            .bind(e.sequence_name.as_str())
            .bind(e.status.as_str())
            .bind(e.current_step)
            .bind(DbTime(e.enrolled_at))
            .bind(DbTime(e.updated_at))
            .bind(e.completed_at.map(DbTime))
            .bind(e.exited_at.map(DbTime))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Not locked itself: the rules lock the contact first (`lock_contact_email`),
    /// which orders the writes about its memberships.
    async fn membership(
        &mut self,
        contact: &ContactId,
        segment_id: &str,
    ) -> StoreResult<Option<Membership>> {
        let sql = format!(
            "SELECT {} FROM segment_memberships \
             WHERE tenant_id = $1 AND contact_id = $2 AND segment_id = $3",
            Membership::COLUMNS
        );
        let keys = [contact.as_str(), segment_id];
        self.find(&sql, &keys, Membership::from_row::<C::Db>).await
    }

    async fn save_membership(&mut self, m: &Membership) -> StoreResult<()> {
        let (conn, tenant) = self.parts();
        Stmt::<C::Db>::new(SAVE_MEMBERSHIP)
            .bind(tenant)
            .bind(m.contact_id.as_str())
            .bind(m.segment_id.as_str())
            .bind(m.segment_name.as_str())
            .bind(DbTime(m.joined_at))
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn delete_membership(
        &mut self,
        contact: &ContactId,
        segment_id: &str,
    ) -> StoreResult<()> {
        let (conn, tenant) = self.parts();
        Stmt::<C::Db>::new(
            "DELETE FROM segment_memberships \
             WHERE tenant_id = $1 AND contact_id = $2 AND segment_id = $3",
        )
        .bind(tenant)
        .bind(contact.as_str())
        .bind(segment_id)
        .execute(conn)
        .await?;
        Ok(())
    }
}
