//! PostgreSQL side of the ingestion API. Each write is one transaction: an optional
//! idempotency claim, the record, its timeline entries, the remembered response.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, Row};

use super::{PgStore, classify};
use crate::domain::{
    ContactId, ContactRef, Enrolment, EnrolmentChange, EnrolmentStatus, Idempotency, Membership,
    MembershipChange, MembershipOutcome, NewEnrolment, NewEvent, NewScheduledSend, NewSend,
    Properties, ScheduledSend, ScheduledStatus, SendEngagement, SendRecord, SendSource, SendStatus,
    SendStatusChange, TenantId, TimeKey, TimelineEntry, TrackedEvent, UNSUBSCRIBE_EVENT,
    ValidationError, contact_created, contact_suppressed, contact_unsubscribed, search_text,
    segment_entry,
};
use crate::store::{ActivityStore, StoreError, StoreResult};

const SEND_COLUMNS: &str = "id, contact_id, email, template_id, template_name, subject, status, source, \
     source_id, created_at, sent_at, delivered_at, opened_at, clicked_at, bounced_at, complained_at";
const SCHEDULED_COLUMNS: &str = "id, contact_id, email, template_id, template_name, subject, \
     scheduled_for, source, source_id, step, status, created_at";
const ENROLMENT_COLUMNS: &str = "contact_id, sequence_id, sequence_name, status, current_step, \
     enrolled_at, updated_at, completed_at, exited_at";

/// Claims `idem` (when the call has one) for this transaction. Returns the first response when the request
/// already ran; waits for a concurrent first attempt to commit or roll back.
async fn replay(
    conn: &mut PgConnection,
    tenant: &TenantId,
    idem: Option<&Idempotency>,
) -> StoreResult<Option<Value>> {
    let Some(idem) = idem else {
        return Ok(None);
    };
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, request_id, method, fingerprint) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(&idem.request_id)
    .bind(idem.method)
    .bind(&idem.fingerprint[..])
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    if claimed.rows_affected() == 1 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT method, fingerprint, response FROM idempotency_keys WHERE tenant_id = $1 AND request_id = $2",
    )
    .bind(tenant.as_str())
    .bind(&idem.request_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(classify)?;
    let method: String = row.try_get("method").map_err(classify)?;
    let fingerprint: Vec<u8> = row.try_get("fingerprint").map_err(classify)?;
    if method != idem.method || fingerprint != idem.fingerprint {
        return Err(reused(idem));
    }
    let response: Option<Json<Value>> = row.try_get("response").map_err(classify)?;
    response
        .map(|Json(v)| Some(v))
        .ok_or_else(|| StoreError::internal("idempotency key without a response"))
}

fn reused(idem: &Idempotency) -> StoreError {
    StoreError::Invalid(ValidationError::new(
        "request_id",
        format!(
            "`{}` was already used for a different request",
            idem.request_id
        ),
    ))
}

async fn remember<T: Serialize>(
    conn: &mut PgConnection,
    tenant: &TenantId,
    idem: Option<&Idempotency>,
    contact: &ContactId,
    response: &T,
) -> StoreResult<()> {
    let Some(idem) = idem else { return Ok(()) };
    sqlx::query("UPDATE idempotency_keys SET response = $3, contact_id = $4 WHERE tenant_id = $1 AND request_id = $2")
        .bind(tenant.as_str())
        .bind(&idem.request_id)
        .bind(Json(response))
        .bind(contact.as_str())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    Ok(())
}

fn decode<T: DeserializeOwned>(value: Value) -> StoreResult<T> {
    serde_json::from_value(value).map_err(StoreError::internal)
}

async fn insert_entry(
    conn: &mut PgConnection,
    tenant: &TenantId,
    contact: &ContactId,
    entry: &TimelineEntry,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO timeline_entries (tenant_id, contact_id, id, type, occurred_at, data) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant.as_str())
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

/// The contact's id and current address; an unknown email creates the contact (with
/// its `contact.created` entry), racing safely with concurrent creators.
async fn resolve(
    conn: &mut PgConnection,
    tenant: &TenantId,
    contact: &ContactRef,
    at: DateTime<Utc>,
) -> StoreResult<(ContactId, String)> {
    match contact {
        ContactRef::Id(id) => {
            // Locked, so a concurrent delete waits for this write (or this write sees it gone).
            let email: Option<String> = sqlx::query_scalar(
                "SELECT email FROM contacts WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            )
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(classify)?;
            email
                .map(|email| (id.clone(), email))
                .ok_or(StoreError::NotFound("contact"))
        }
        ContactRef::Email(email) => {
            let found: Option<(String, String)> = sqlx::query_as(
                "SELECT id, email FROM contacts WHERE tenant_id = $1 AND email_key = $2",
            )
            .bind(tenant.as_str())
            .bind(email.key())
            .fetch_optional(&mut *conn)
            .await
            .map_err(classify)?;
            if let Some((id, email)) = found {
                return Ok((ContactId::from_trusted(id), email));
            }
            // The contact dates from the send or event that revealed it (never from the
            // future), so its `contact.created` entry comes first in the timeline.
            let at = at.min(crate::domain::now());
            let contact = crate::domain::Contact {
                id: ContactId::generate(),
                email: email.clone(),
                properties: Properties::default(),
                suppressed: false,
                unsubscribed: false,
                created_at: at,
                updated_at: at,
            };
            let inserted = sqlx::query(
                "INSERT INTO contacts (tenant_id, id, email, email_key, properties, search_text, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, '{}', $5, $6, $6) ON CONFLICT (tenant_id, email_key) DO NOTHING",
            )
            .bind(tenant.as_str())
            .bind(contact.id.as_str())
            .bind(email.as_str())
            .bind(email.key())
            .bind(search_text(email.as_str(), &contact.properties))
            .bind(at)
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
            if inserted.rows_affected() == 1 {
                insert_entry(conn, tenant, &contact.id, &contact_created(&contact)).await?;
                return Ok((contact.id, email.as_str().to_owned()));
            }
            // Another transaction created it first and has committed by now.
            let (id, email): (String, String) = sqlx::query_as(
                "SELECT id, email FROM contacts WHERE tenant_id = $1 AND email_key = $2",
            )
            .bind(tenant.as_str())
            .bind(email.key())
            .fetch_one(&mut *conn)
            .await
            .map_err(classify)?;
            Ok((ContactId::from_trusted(id), email))
        }
    }
}

async fn lock_send(
    conn: &mut PgConnection,
    tenant: &TenantId,
    send_id: &str,
) -> StoreResult<SendRecord> {
    let sql =
        format!("SELECT {SEND_COLUMNS} FROM sends WHERE tenant_id = $1 AND id = $2 FOR UPDATE");
    let row = sqlx::query(&sql)
        .bind(tenant.as_str())
        .bind(send_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(classify)?;
    row.as_ref()
        .map(send_from_row)
        .transpose()?
        .ok_or(StoreError::NotFound("send"))
}

async fn save_send(
    conn: &mut PgConnection,
    tenant: &TenantId,
    send: &SendRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sends (tenant_id, id, contact_id, email, template_id, template_name, subject, status, source, \
             source_id, created_at, sent_at, delivered_at, opened_at, clicked_at, bounced_at, complained_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
         ON CONFLICT (tenant_id, id) DO UPDATE SET status = EXCLUDED.status, sent_at = EXCLUDED.sent_at, \
             delivered_at = EXCLUDED.delivered_at, opened_at = EXCLUDED.opened_at, clicked_at = EXCLUDED.clicked_at, \
             bounced_at = EXCLUDED.bounced_at, complained_at = EXCLUDED.complained_at",
    )
    .bind(tenant.as_str())
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
    .bind(send.complained_at)
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(())
}

/// Sets a contact flag once, with its timeline entry; nothing when it was already set.
async fn flag_contact(
    conn: &mut PgConnection,
    tenant: &TenantId,
    contact: &ContactId,
    column: &str,
    entry: &TimelineEntry,
) -> StoreResult<()> {
    let sql = format!(
        "UPDATE contacts SET {column} = true, updated_at = greatest(updated_at, $3), revision = revision + 1 \
         WHERE tenant_id = $1 AND id = $2 AND NOT {column}"
    );
    let updated = sqlx::query(&sql)
        .bind(tenant.as_str())
        .bind(contact.as_str())
        // The change happens now, even when the triggering event is backdated or ahead.
        .bind(crate::domain::now())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    if updated.rows_affected() == 1 {
        insert_entry(conn, tenant, contact, entry).await?;
    }
    Ok(())
}

async fn lock_scheduled(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: &str,
) -> StoreResult<ScheduledSend> {
    let sql = format!(
        "SELECT {SCHEDULED_COLUMNS} FROM scheduled_sends WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
    );
    let row = sqlx::query(&sql)
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(classify)?;
    row.as_ref()
        .map(scheduled_from_row)
        .transpose()?
        .ok_or(StoreError::NotFound("scheduled send"))
}

async fn set_scheduled_status(
    conn: &mut PgConnection,
    tenant: &TenantId,
    scheduled: &ScheduledSend,
) -> StoreResult<()> {
    sqlx::query("UPDATE scheduled_sends SET status = $3 WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_str())
        .bind(&scheduled.id)
        .bind(scheduled.status.as_str())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    Ok(())
}

async fn lock_enrolment(
    conn: &mut PgConnection,
    tenant: &TenantId,
    contact: &ContactId,
    sequence_id: &str,
) -> StoreResult<Option<Enrolment>> {
    let sql = format!(
        "SELECT {ENROLMENT_COLUMNS} FROM sequence_enrolments \
         WHERE tenant_id = $1 AND contact_id = $2 AND sequence_id = $3 FOR UPDATE"
    );
    let row = sqlx::query(&sql)
        .bind(tenant.as_str())
        .bind(contact.as_str())
        .bind(sequence_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(classify)?;
    row.as_ref().map(enrolment_from_row).transpose()
}

async fn save_enrolment(
    conn: &mut PgConnection,
    tenant: &TenantId,
    e: &Enrolment,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sequence_enrolments (tenant_id, contact_id, sequence_id, sequence_name, status, current_step, \
             enrolled_at, updated_at, completed_at, exited_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (tenant_id, contact_id, sequence_id) DO UPDATE SET sequence_name = EXCLUDED.sequence_name, \
             status = EXCLUDED.status, current_step = EXCLUDED.current_step, enrolled_at = EXCLUDED.enrolled_at, \
             updated_at = EXCLUDED.updated_at, completed_at = EXCLUDED.completed_at, exited_at = EXCLUDED.exited_at",
    )
    .bind(tenant.as_str())
    .bind(e.contact_id.as_str())
    .bind(&e.sequence_id)
    .bind(&e.sequence_name)
    .bind(e.status.as_str())
    .bind(e.current_step)
    .bind(e.enrolled_at)
    .bind(e.updated_at)
    .bind(e.completed_at)
    .bind(e.exited_at)
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(())
}

/// Locks the contact row, so concurrent writes about one contact queue up.
async fn lock_contact(
    conn: &mut PgConnection,
    tenant: &TenantId,
    contact: &ContactId,
) -> StoreResult<String> {
    let email: Option<String> = sqlx::query_scalar(
        "SELECT email FROM contacts WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(tenant.as_str())
    .bind(contact.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(classify)?;
    email.ok_or(StoreError::NotFound("contact"))
}

#[async_trait]
impl ActivityStore for PgStore {
    async fn record_send(
        &self,
        tenant: &TenantId,
        new: NewSend,
        idem: Option<Idempotency>,
    ) -> StoreResult<SendRecord> {
        let mut conn = self.conns.get().await?;
        let mut tx = conn.begin().await.map_err(classify)?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        let (contact_id, email) = resolve(&mut tx, tenant, &new.contact, new.at).await?;
        if let Some(scheduled_id) = &new.scheduled_send_id {
            let scheduled = lock_scheduled(&mut tx, tenant, scheduled_id)
                .await?
                .fulfil(&contact_id)?;
            set_scheduled_status(&mut tx, tenant, &scheduled).await?;
        }
        let (send, entry) = new.into_send(contact_id.clone(), email);
        save_send(&mut tx, tenant, &send).await?;
        insert_entry(&mut tx, tenant, &contact_id, &entry).await?;
        remember(&mut tx, tenant, idem.as_ref(), &contact_id, &send).await?;
        tx.commit().await.map_err(classify)?;
        conn.done();
        Ok(send)
    }

    async fn update_send_status(
        &self,
        tenant: &TenantId,
        change: SendStatusChange,
        idem: Option<Idempotency>,
    ) -> StoreResult<SendRecord> {
        let mut conn = self.conns.get().await?;
        let mut tx = conn.begin().await.map_err(classify)?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        let send = lock_send(&mut tx, tenant, &change.send_id).await?;
        let send = match send.transition(change.status, change.at)? {
            None => send,
            Some((next, entry)) => {
                save_send(&mut tx, tenant, &next).await?;
                insert_entry(&mut tx, tenant, &next.contact_id, &entry).await?;
                if next.suppresses() {
                    let entry = contact_suppressed(&next, change.at);
                    flag_contact(&mut tx, tenant, &next.contact_id, "suppressed", &entry).await?;
                }
                next
            }
        };
        remember(&mut tx, tenant, idem.as_ref(), &send.contact_id, &send).await?;
        tx.commit().await.map_err(classify)?;
        conn.done();
        Ok(send)
    }

    async fn record_engagement(
        &self,
        tenant: &TenantId,
        engagement: SendEngagement,
        idem: Option<Idempotency>,
    ) -> StoreResult<SendRecord> {
        let mut conn = self.conns.get().await?;
        let mut tx = conn.begin().await.map_err(classify)?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        let send = lock_send(&mut tx, tenant, &engagement.send_id).await?;
        let (next, entry) = send.engage(
            engagement.engagement,
            engagement.at,
            engagement.url.as_deref(),
        )?;
        save_send(&mut tx, tenant, &next).await?;
        insert_entry(&mut tx, tenant, &next.contact_id, &entry).await?;
        remember(&mut tx, tenant, idem.as_ref(), &next.contact_id, &next).await?;
        tx.commit().await.map_err(classify)?;
        conn.done();
        Ok(next)
    }

    async fn schedule_send(
        &self,
        tenant: &TenantId,
        new: NewScheduledSend,
        idem: Option<Idempotency>,
    ) -> StoreResult<ScheduledSend> {
        let mut conn = self.conns.get().await?;
        let mut tx = conn.begin().await.map_err(classify)?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        let email = lock_contact(&mut tx, tenant, &new.contact_id).await?;
        let (scheduled, entry) = new.into_scheduled(email);
        sqlx::query(
            "INSERT INTO scheduled_sends (tenant_id, id, contact_id, email, template_id, template_name, subject, \
                 scheduled_for, source, source_id, step, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(tenant.as_str())
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
        .bind(scheduled.created_at)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        insert_entry(&mut tx, tenant, &scheduled.contact_id, &entry).await?;
        remember(
            &mut tx,
            tenant,
            idem.as_ref(),
            &scheduled.contact_id,
            &scheduled,
        )
        .await?;
        tx.commit().await.map_err(classify)?;
        conn.done();
        Ok(scheduled)
    }

    async fn cancel_scheduled_send(
        &self,
        tenant: &TenantId,
        scheduled_send_id: &str,
        at: DateTime<Utc>,
        idem: Option<Idempotency>,
    ) -> StoreResult<ScheduledSend> {
        let mut conn = self.conns.get().await?;
        let mut tx = conn.begin().await.map_err(classify)?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        let (next, entry) = lock_scheduled(&mut tx, tenant, scheduled_send_id)
            .await?
            .cancel(at)?;
        set_scheduled_status(&mut tx, tenant, &next).await?;
        insert_entry(&mut tx, tenant, &next.contact_id, &entry).await?;
        remember(&mut tx, tenant, idem.as_ref(), &next.contact_id, &next).await?;
        tx.commit().await.map_err(classify)?;
        conn.done();
        Ok(next)
    }

    async fn enrol(
        &self,
        tenant: &TenantId,
        new: NewEnrolment,
        idem: Option<Idempotency>,
    ) -> StoreResult<Enrolment> {
        let mut conn = self.conns.get().await?;
        let mut tx = conn.begin().await.map_err(classify)?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        lock_contact(&mut tx, tenant, &new.contact_id).await?;
        let existing = lock_enrolment(&mut tx, tenant, &new.contact_id, &new.sequence_id).await?;
        let (enrolment, entry) = Enrolment::enrol(
            existing.as_ref(),
            new.contact_id.clone(),
            new.sequence_id,
            new.sequence_name,
            new.at,
        )?;
        save_enrolment(&mut tx, tenant, &enrolment).await?;
        insert_entry(&mut tx, tenant, &new.contact_id, &entry).await?;
        remember(&mut tx, tenant, idem.as_ref(), &new.contact_id, &enrolment).await?;
        tx.commit().await.map_err(classify)?;
        conn.done();
        Ok(enrolment)
    }

    async fn update_enrolment(
        &self,
        tenant: &TenantId,
        change: EnrolmentChange,
        idem: Option<Idempotency>,
    ) -> StoreResult<Enrolment> {
        let mut conn = self.conns.get().await?;
        let mut tx = conn.begin().await.map_err(classify)?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        lock_contact(&mut tx, tenant, &change.contact_id).await?;
        let current = lock_enrolment(&mut tx, tenant, &change.contact_id, &change.sequence_id)
            .await?
            .ok_or(StoreError::NotFound("enrolment"))?;
        let enrolment = match current.update(change.status, change.current_step, change.at)? {
            None => current,
            Some((next, entry)) => {
                save_enrolment(&mut tx, tenant, &next).await?;
                insert_entry(&mut tx, tenant, &change.contact_id, &entry).await?;
                next
            }
        };
        remember(
            &mut tx,
            tenant,
            idem.as_ref(),
            &change.contact_id,
            &enrolment,
        )
        .await?;
        tx.commit().await.map_err(classify)?;
        conn.done();
        Ok(enrolment)
    }

    async fn set_membership(
        &self,
        tenant: &TenantId,
        change: MembershipChange,
        idem: Option<Idempotency>,
    ) -> StoreResult<MembershipOutcome> {
        let mut conn = self.conns.get().await?;
        let mut tx = conn.begin().await.map_err(classify)?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        lock_contact(&mut tx, tenant, &change.contact_id).await?;
        let existing = sqlx::query(
            "SELECT contact_id, segment_id, segment_name, joined_at FROM segment_memberships \
             WHERE tenant_id = $1 AND contact_id = $2 AND segment_id = $3",
        )
        .bind(tenant.as_str())
        .bind(change.contact_id.as_str())
        .bind(&change.segment_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let existing = existing.as_ref().map(membership_from_row).transpose()?;
        let outcome = match (existing, change.member) {
            (None, true) => {
                let membership = Membership {
                    contact_id: change.contact_id.clone(),
                    segment_id: change.segment_id.clone(),
                    segment_name: change.segment_name.clone(),
                    joined_at: change.at,
                };
                sqlx::query(
                    "INSERT INTO segment_memberships (tenant_id, contact_id, segment_id, segment_name, joined_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(tenant.as_str())
                .bind(change.contact_id.as_str())
                .bind(&change.segment_id)
                .bind(&change.segment_name)
                .bind(change.at)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
                let entry = segment_entry(
                    "segment.entered",
                    &change.segment_id,
                    &change.segment_name,
                    change.at,
                );
                insert_entry(&mut tx, tenant, &change.contact_id, &entry).await?;
                MembershipOutcome {
                    membership: Some(membership),
                    changed: true,
                }
            }
            (Some(existing), false) => {
                sqlx::query("DELETE FROM segment_memberships WHERE tenant_id = $1 AND contact_id = $2 AND segment_id = $3")
                    .bind(tenant.as_str())
                    .bind(change.contact_id.as_str())
                    .bind(&change.segment_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                let entry = segment_entry(
                    "segment.exited",
                    &existing.segment_id,
                    &existing.segment_name,
                    change.at,
                );
                insert_entry(&mut tx, tenant, &change.contact_id, &entry).await?;
                MembershipOutcome {
                    membership: None,
                    changed: true,
                }
            }
            (Some(mut existing), true) => {
                // Still a member: only the segment's name may have changed (no timeline entry).
                if existing.segment_name != change.segment_name {
                    sqlx::query(
                        "UPDATE segment_memberships SET segment_name = $4 \
                         WHERE tenant_id = $1 AND contact_id = $2 AND segment_id = $3",
                    )
                    .bind(tenant.as_str())
                    .bind(change.contact_id.as_str())
                    .bind(&change.segment_id)
                    .bind(&change.segment_name)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                    existing.segment_name = change.segment_name.clone();
                }
                MembershipOutcome {
                    membership: Some(existing),
                    changed: false,
                }
            }
            (None, false) => MembershipOutcome {
                membership: None,
                changed: false,
            },
        };
        remember(&mut tx, tenant, idem.as_ref(), &change.contact_id, &outcome).await?;
        tx.commit().await.map_err(classify)?;
        conn.done();
        Ok(outcome)
    }

    async fn track_event(
        &self,
        tenant: &TenantId,
        new: NewEvent,
        idem: Option<Idempotency>,
    ) -> StoreResult<TrackedEvent> {
        let mut conn = self.conns.get().await?;
        let mut tx = conn.begin().await.map_err(classify)?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        let (contact_id, _) = resolve(&mut tx, tenant, &new.contact, new.at).await?;
        let entry = new.entry();
        insert_entry(&mut tx, tenant, &contact_id, &entry).await?;
        if new.name == UNSUBSCRIBE_EVENT {
            let event_id = entry
                .data
                .get("event_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let flag = contact_unsubscribed(event_id, new.at);
            flag_contact(&mut tx, tenant, &contact_id, "unsubscribed", &flag).await?;
        }
        let tracked = TrackedEvent { contact_id, entry };
        remember(
            &mut tx,
            tenant,
            idem.as_ref(),
            &tracked.contact_id,
            &tracked,
        )
        .await?;
        tx.commit().await.map_err(classify)?;
        conn.done();
        Ok(tracked)
    }

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
        let rows = sqlx::query(
            "SELECT contact_id, segment_id, segment_name, joined_at FROM segment_memberships \
             WHERE tenant_id = $1 AND contact_id = $2 ORDER BY joined_at DESC, segment_id",
        )
        .bind(tenant.as_str())
        .bind(contact.as_str())
        .fetch_all(&mut *conn)
        .await;
        let rows = conn.finish(rows)?;
        rows.iter().map(membership_from_row).collect()
    }
}

fn text_enum<T>(row: &PgRow, column: &str, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
    let text: String = row.try_get(column).map_err(classify)?;
    parse(&text)
        .ok_or_else(|| StoreError::internal(format!("unknown `{column}` value in the database")))
}

fn send_from_row(row: &PgRow) -> StoreResult<SendRecord> {
    let get = |c: &str| row.try_get::<Option<DateTime<Utc>>, _>(c).map_err(classify);
    Ok(SendRecord {
        id: row.try_get("id").map_err(classify)?,
        contact_id: ContactId::from_trusted(row.try_get("contact_id").map_err(classify)?),
        email: row.try_get("email").map_err(classify)?,
        template_id: row.try_get("template_id").map_err(classify)?,
        template_name: row.try_get("template_name").map_err(classify)?,
        subject: row.try_get("subject").map_err(classify)?,
        status: text_enum(row, "status", SendStatus::from_db)?,
        source: text_enum(row, "source", SendSource::from_db)?,
        source_id: row.try_get("source_id").map_err(classify)?,
        created_at: row.try_get("created_at").map_err(classify)?,
        sent_at: get("sent_at")?,
        delivered_at: get("delivered_at")?,
        opened_at: get("opened_at")?,
        clicked_at: get("clicked_at")?,
        bounced_at: get("bounced_at")?,
        complained_at: get("complained_at")?,
    })
}

fn scheduled_from_row(row: &PgRow) -> StoreResult<ScheduledSend> {
    Ok(ScheduledSend {
        id: row.try_get("id").map_err(classify)?,
        contact_id: ContactId::from_trusted(row.try_get("contact_id").map_err(classify)?),
        email: row.try_get("email").map_err(classify)?,
        template_id: row.try_get("template_id").map_err(classify)?,
        template_name: row.try_get("template_name").map_err(classify)?,
        subject: row.try_get("subject").map_err(classify)?,
        scheduled_for: row.try_get("scheduled_for").map_err(classify)?,
        source: text_enum(row, "source", SendSource::from_db)?,
        source_id: row.try_get("source_id").map_err(classify)?,
        step: row.try_get("step").map_err(classify)?,
        status: text_enum(row, "status", ScheduledStatus::from_db)?,
        created_at: row.try_get("created_at").map_err(classify)?,
    })
}

fn enrolment_from_row(row: &PgRow) -> StoreResult<Enrolment> {
    Ok(Enrolment {
        contact_id: ContactId::from_trusted(row.try_get("contact_id").map_err(classify)?),
        sequence_id: row.try_get("sequence_id").map_err(classify)?,
        sequence_name: row.try_get("sequence_name").map_err(classify)?,
        status: text_enum(row, "status", EnrolmentStatus::from_db)?,
        current_step: row.try_get("current_step").map_err(classify)?,
        enrolled_at: row.try_get("enrolled_at").map_err(classify)?,
        updated_at: row.try_get("updated_at").map_err(classify)?,
        completed_at: row.try_get("completed_at").map_err(classify)?,
        exited_at: row.try_get("exited_at").map_err(classify)?,
    })
}

fn membership_from_row(row: &PgRow) -> StoreResult<Membership> {
    Ok(Membership {
        contact_id: ContactId::from_trusted(row.try_get("contact_id").map_err(classify)?),
        segment_id: row.try_get("segment_id").map_err(classify)?,
        segment_name: row.try_get("segment_name").map_err(classify)?,
        joined_at: row.try_get("joined_at").map_err(classify)?,
    })
}
