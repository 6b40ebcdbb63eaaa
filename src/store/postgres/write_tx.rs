//! PostgreSQL write transactions: row locks (`FOR UPDATE`) order concurrent writes
//! about one record; the unique index on `(tenant_id, email_key)` decides races
//! between creators of one address.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;
use sqlx::types::Json;
use sqlx::{Row, TransactionManager};

use super::conns::Conn;
use super::rows::{
    ENROLMENT_COLUMNS, MEMBERSHIP_COLUMNS, SCHEDULED_COLUMNS, SEND_COLUMNS, contact_from_row,
    enrolment_from_row, membership_from_row, scheduled_from_row, send_from_row,
};
use super::{classify, sql};
use crate::domain::{
    Contact, ContactId, Email, Enrolment, Idempotency, Membership, ScheduledSend, SendRecord,
    TenantId, TimelineEntry, search_text,
};
use crate::store::{ContactFlag, RememberedRequest, StoreResult, WriteTx};

/// A transaction on a connection of the store's own pool. Dropped before `commit`,
/// it queues a ROLLBACK, which the pool runs while testing the interrupted connection.
pub(super) struct PgWriteTx {
    conn: Option<Conn>,
    tenant: TenantId,
}

impl PgWriteTx {
    pub(super) async fn begin(mut conn: Conn, tenant: &TenantId) -> StoreResult<Self> {
        sqlx::postgres::PgTransactionManager::begin(&mut conn, None)
            .await
            .map_err(classify)?;
        Ok(Self {
            conn: Some(conn),
            tenant: tenant.clone(),
        })
    }

    /// The connection and the tenant, borrowed apart so a statement can bind one
    /// and run on the other.
    fn parts(&mut self) -> (&mut PgConnection, &str) {
        let conn = self
            .conn
            .as_mut()
            .expect("the connection is held until commit or drop");
        (conn, self.tenant.as_str())
    }
}

impl Drop for PgWriteTx {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            sqlx::postgres::PgTransactionManager::start_rollback(conn);
        }
    }
}

#[async_trait]
impl WriteTx for PgWriteTx {
    async fn claim_request(
        &mut self,
        idem: &Idempotency,
    ) -> StoreResult<Option<RememberedRequest>> {
        let (conn, tenant) = self.parts();
        // Waits on a concurrent first attempt's uncommitted row, then sees its outcome.
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (tenant_id, request_id, method, fingerprint) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(&idem.request_id)
        .bind(idem.method)
        .bind(&idem.fingerprint[..])
        .execute(&mut *conn)
        .await
        .map_err(classify)?
        .rows_affected();
        if claimed == 1 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT method, fingerprint, response::text AS response FROM idempotency_keys \
                     WHERE tenant_id = $1 AND request_id = $2",
        )
        .bind(tenant)
        .bind(&idem.request_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(classify)?;
        // Gone again: the first attempt's contact was erased in between.
        let Some(row) = row else {
            return Err(crate::store::StoreError::NotFound("contact"));
        };
        Ok(Some(RememberedRequest {
            method: row.try_get("method").map_err(classify)?,
            fingerprint: row.try_get("fingerprint").map_err(classify)?,
            response: row.try_get("response").map_err(classify)?,
        }))
    }

    async fn remember_response(
        &mut self,
        idem: &Idempotency,
        contact: &ContactId,
        response_json: &str,
    ) -> StoreResult<()> {
        let (conn, tenant) = self.parts();
        sqlx::query(
            "UPDATE idempotency_keys SET response = $3::jsonb, contact_id = $4 \
                 WHERE tenant_id = $1 AND request_id = $2",
        )
        .bind(tenant)
        .bind(&idem.request_id)
        .bind(response_json)
        .bind(contact.as_str())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn lock_contact(&mut self, id: &ContactId) -> StoreResult<Option<Contact>> {
        let (conn, tenant) = self.parts();
        let row = sqlx::query(sql::LOCK_CONTACT)
            .bind(tenant)
            .bind(id.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(classify)?;
        row.as_ref().map(contact_from_row).transpose()
    }

    async fn lock_contact_email(&mut self, id: &ContactId) -> StoreResult<Option<String>> {
        let (conn, tenant) = self.parts();
        let row =
            sqlx::query("SELECT email FROM contacts WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
                .bind(tenant)
                .bind(id.as_str())
                .fetch_optional(&mut *conn)
                .await
                .map_err(classify)?;
        row.map(|row| row.try_get("email").map_err(classify))
            .transpose()
    }

    async fn find_contact_by_email(
        &mut self,
        email: &Email,
    ) -> StoreResult<Option<(ContactId, String)>> {
        let (conn, tenant) = self.parts();
        let row =
            sqlx::query("SELECT id, email FROM contacts WHERE tenant_id = $1 AND email_key = $2")
                .bind(tenant)
                .bind(email.key())
                .fetch_optional(&mut *conn)
                .await
                .map_err(classify)?;
        let Some(row) = row else { return Ok(None) };
        let id: String = row.try_get("id").map_err(classify)?;
        let email: String = row.try_get("email").map_err(classify)?;
        Ok(Some((ContactId::from_trusted(id), email)))
    }

    async fn insert_contact_if_new(&mut self, contact: &Contact) -> StoreResult<bool> {
        let (conn, tenant) = self.parts();
        let inserted = sqlx::query(
            "INSERT INTO contacts (tenant_id, id, email, email_key, properties, search_text, \
                         suppressed, unsubscribed, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (tenant_id, email_key) DO NOTHING",
        )
        .bind(tenant)
        .bind(contact.id.as_str())
        .bind(contact.email.as_str())
        .bind(contact.email.key())
        .bind(Json(contact.properties.as_map()))
        .bind(search_text(contact.email.as_str(), &contact.properties))
        .bind(contact.suppressed)
        .bind(contact.unsubscribed)
        .bind(contact.created_at)
        .bind(contact.updated_at)
        .execute(&mut *conn)
        .await
        .map_err(classify)?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn update_contact(&mut self, contact: &Contact) -> StoreResult<()> {
        let (conn, tenant) = self.parts();
        sqlx::query(sql::UPDATE_CONTACT)
            .bind(tenant)
            .bind(contact.id.as_str())
            .bind(contact.email.as_str())
            .bind(contact.email.key())
            .bind(Json(contact.properties.as_map()))
            .bind(search_text(contact.email.as_str(), &contact.properties))
            .bind(contact.updated_at)
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn set_contact_flag(
        &mut self,
        id: &ContactId,
        flag: ContactFlag,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let column = flag.column();
        let statement = format!(
            "UPDATE contacts SET {column} = true, updated_at = greatest(updated_at, $3), \
             revision = revision + 1 WHERE tenant_id = $1 AND id = $2 AND NOT {column}"
        );
        let (conn, tenant) = self.parts();
        let updated = sqlx::query(&statement)
            .bind(tenant)
            .bind(id.as_str())
            .bind(at)
            .execute(&mut *conn)
            .await
            .map_err(classify)?
            .rows_affected();
        Ok(updated == 1)
    }

    async fn insert_timeline_entry(
        &mut self,
        contact: &ContactId,
        entry: &TimelineEntry,
    ) -> StoreResult<()> {
        let (conn, tenant) = self.parts();
        sqlx::query(
            "INSERT INTO timeline_entries (tenant_id, contact_id, id, type, occurred_at, data) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant)
        .bind(contact.as_str())
        .bind(&entry.id)
        .bind(&entry.kind)
        .bind(entry.timestamp)
        .bind(Json(&entry.data))
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn lock_send(&mut self, id: &str) -> StoreResult<Option<SendRecord>> {
        let statement =
            format!("SELECT {SEND_COLUMNS} FROM sends WHERE tenant_id = $1 AND id = $2 FOR UPDATE");
        let (conn, tenant) = self.parts();
        let row = sqlx::query(&statement)
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(classify)?;
        row.as_ref().map(send_from_row).transpose()
    }

    async fn save_send(&mut self, send: &SendRecord) -> StoreResult<()> {
        let (conn, tenant) = self.parts();
        sqlx::query(
                "INSERT INTO sends (tenant_id, id, contact_id, email, template_id, template_name, subject, \
                     status, source, source_id, created_at, sent_at, delivered_at, opened_at, clicked_at, \
                     bounced_at, complained_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
                 ON CONFLICT (tenant_id, id) DO UPDATE SET status = EXCLUDED.status, \
                     sent_at = EXCLUDED.sent_at, delivered_at = EXCLUDED.delivered_at, \
                     opened_at = EXCLUDED.opened_at, clicked_at = EXCLUDED.clicked_at, \
                     bounced_at = EXCLUDED.bounced_at, complained_at = EXCLUDED.complained_at",
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
            .bind(send.created_at)
            .bind(send.sent_at)
            .bind(send.delivered_at)
            .bind(send.opened_at)
            .bind(send.clicked_at)
            .bind(send.bounced_at)
            .bind(send.complained_at).execute(&mut *conn).await.map_err(classify)?;
        Ok(())
    }

    async fn lock_scheduled_send(&mut self, id: &str) -> StoreResult<Option<ScheduledSend>> {
        let statement = format!(
            "SELECT {SCHEDULED_COLUMNS} FROM scheduled_sends WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
        );
        let (conn, tenant) = self.parts();
        let row = sqlx::query(&statement)
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(classify)?;
        row.as_ref().map(scheduled_from_row).transpose()
    }

    async fn save_scheduled_send(&mut self, scheduled: &ScheduledSend) -> StoreResult<()> {
        let (conn, tenant) = self.parts();
        sqlx::query(
                "INSERT INTO scheduled_sends (tenant_id, id, contact_id, email, template_id, template_name, \
                     subject, scheduled_for, source, source_id, step, status, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (tenant_id, id) DO UPDATE SET status = EXCLUDED.status",
            )
            .bind(tenant)
            .bind(&scheduled.id)
            .bind(scheduled.contact_id.as_str())
            .bind(&scheduled.email)
            .bind(&scheduled.template_id)
            .bind(&scheduled.template_name)
            .bind(&scheduled.subject)
            .bind(scheduled.scheduled_for)
            .bind(scheduled.source.as_str())
            .bind(&scheduled.source_id)
            .bind(scheduled.step)
            .bind(scheduled.status.as_str())
            .bind(scheduled.created_at).execute(&mut *conn).await.map_err(classify)?;
        Ok(())
    }

    async fn lock_enrolment(
        &mut self,
        contact: &ContactId,
        sequence_id: &str,
    ) -> StoreResult<Option<Enrolment>> {
        let statement = format!(
            "SELECT {ENROLMENT_COLUMNS} FROM sequence_enrolments \
             WHERE tenant_id = $1 AND contact_id = $2 AND sequence_id = $3 FOR UPDATE"
        );
        let (conn, tenant) = self.parts();
        let row = sqlx::query(&statement)
            .bind(tenant)
            .bind(contact.as_str())
            .bind(sequence_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(classify)?;
        row.as_ref().map(enrolment_from_row).transpose()
    }

    async fn save_enrolment(&mut self, e: &Enrolment) -> StoreResult<()> {
        let (conn, tenant) = self.parts();
        sqlx::query(
                "INSERT INTO sequence_enrolments (tenant_id, contact_id, sequence_id, sequence_name, status, \
                     current_step, enrolled_at, updated_at, completed_at, exited_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (tenant_id, contact_id, sequence_id) DO UPDATE SET \
                     sequence_name = EXCLUDED.sequence_name, status = EXCLUDED.status, \
                     current_step = EXCLUDED.current_step, enrolled_at = EXCLUDED.enrolled_at, \
                     updated_at = EXCLUDED.updated_at, completed_at = EXCLUDED.completed_at, \
                     exited_at = EXCLUDED.exited_at",
            )
            .bind(tenant)
            .bind(e.contact_id.as_str())
            .bind(&e.sequence_id)
            .bind(&e.sequence_name)
            .bind(e.status.as_str())
            .bind(e.current_step)
            .bind(e.enrolled_at)
            .bind(e.updated_at)
            .bind(e.completed_at)
            .bind(e.exited_at).execute(&mut *conn).await.map_err(classify)?;
        Ok(())
    }

    async fn membership(
        &mut self,
        contact: &ContactId,
        segment_id: &str,
    ) -> StoreResult<Option<Membership>> {
        let statement = format!(
            "SELECT {MEMBERSHIP_COLUMNS} FROM segment_memberships \
             WHERE tenant_id = $1 AND contact_id = $2 AND segment_id = $3"
        );
        let (conn, tenant) = self.parts();
        let row = sqlx::query(&statement)
            .bind(tenant)
            .bind(contact.as_str())
            .bind(segment_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(classify)?;
        row.as_ref().map(membership_from_row).transpose()
    }

    async fn save_membership(&mut self, m: &Membership) -> StoreResult<()> {
        let (conn, tenant) = self.parts();
        sqlx::query(
                "INSERT INTO segment_memberships (tenant_id, contact_id, segment_id, segment_name, joined_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (tenant_id, contact_id, segment_id) DO UPDATE SET segment_name = EXCLUDED.segment_name",
            )
            .bind(tenant)
            .bind(m.contact_id.as_str())
            .bind(&m.segment_id)
            .bind(&m.segment_name)
            .bind(m.joined_at).execute(&mut *conn).await.map_err(classify)?;
        Ok(())
    }

    async fn delete_membership(
        &mut self,
        contact: &ContactId,
        segment_id: &str,
    ) -> StoreResult<()> {
        let (conn, tenant) = self.parts();
        sqlx::query(
                "DELETE FROM segment_memberships WHERE tenant_id = $1 AND contact_id = $2 AND segment_id = $3",
            )
            .bind(tenant)
            .bind(contact.as_str())
            .bind(segment_id).execute(&mut *conn).await.map_err(classify)?;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> StoreResult<()> {
        let mut conn = self
            .conn
            .take()
            .expect("the connection is held until commit or drop");
        sqlx::postgres::PgTransactionManager::commit(&mut conn)
            .await
            .map_err(classify)?;
        conn.done();
        Ok(())
    }
}
