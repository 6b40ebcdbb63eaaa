//! SQLite side of the ingestion API, the same transactions as the PostgreSQL one.
//! Each write runs on the single writer connection inside `BEGIN IMMEDIATE`, which
//! takes the write lock up front, so the reads that decide a change see the latest
//! rows and no `FOR UPDATE` is needed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::{Row, SqliteConnection};

use super::records::{
    ENROLMENT_COLUMNS, SCHEDULED_COLUMNS, SEND_COLUMNS, enrolment_from_row, flag_contact,
    insert_entry, load_enrolment, load_scheduled, load_send, lock_contact, membership_from_row,
    save_enrolment, save_send, scheduled_from_row, send_from_row, set_scheduled_status,
};
use super::{SqliteStore, classify};
use crate::domain::{
    ContactId, ContactRef, Enrolment, EnrolmentChange, Idempotency, Membership, MembershipChange,
    MembershipOutcome, NewEnrolment, NewEvent, NewScheduledSend, NewSend, Properties,
    ScheduledSend, SendEngagement, SendRecord, SendStatusChange, TenantId, TimeKey, TrackedEvent,
    UNSUBSCRIBE_EVENT, ValidationError, contact_created, contact_suppressed, contact_unsubscribed,
    search_text, segment_entry,
};
use crate::store::{ActivityStore, StoreError, StoreResult};

/// Claims `idem` (when the call has one) for this transaction. Returns the first response (its JSON) when
/// the request already ran; the single writer means no first attempt is in flight.
async fn replay(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    idem: Option<&Idempotency>,
) -> StoreResult<Option<String>> {
    let Some(idem) = idem else {
        return Ok(None);
    };
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, request_id, method, fingerprint, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(&idem.request_id)
    .bind(idem.method)
    .bind(&idem.fingerprint[..])
    .bind(crate::domain::now().timestamp_micros())
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    if claimed.rows_affected() == 1 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT method, fingerprint, response FROM idempotency_keys \
         WHERE tenant_id = ?1 AND request_id = ?2",
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
    let response: Option<String> = row.try_get("response").map_err(classify)?;
    response
        .map(Some)
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
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    idem: Option<&Idempotency>,
    contact: &ContactId,
    response: &T,
) -> StoreResult<()> {
    let Some(idem) = idem else { return Ok(()) };
    let response = serde_json::to_string(response).map_err(StoreError::internal)?;
    sqlx::query(
        "UPDATE idempotency_keys SET response = ?3, contact_id = ?4 \
         WHERE tenant_id = ?1 AND request_id = ?2",
    )
    .bind(tenant.as_str())
    .bind(&idem.request_id)
    .bind(response)
    .bind(contact.as_str())
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(())
}

fn decode<T: DeserializeOwned>(response: String) -> StoreResult<T> {
    serde_json::from_str(&response).map_err(StoreError::internal)
}

/// The contact's id and current address; an unknown email creates the contact (with
/// its `contact.created` entry).
async fn resolve(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    contact: &ContactRef,
    at: DateTime<Utc>,
) -> StoreResult<(ContactId, String)> {
    match contact {
        ContactRef::Id(id) => {
            let email: Option<String> =
                sqlx::query_scalar("SELECT email FROM contacts WHERE tenant_id = ?1 AND id = ?2")
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
                "SELECT id, email FROM contacts WHERE tenant_id = ?1 AND email_key = ?2",
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
                 VALUES (?1, ?2, ?3, ?4, '{}', ?5, ?6, ?6) ON CONFLICT (tenant_id, email_key) DO NOTHING",
            )
            .bind(tenant.as_str())
            .bind(contact.id.as_str())
            .bind(email.as_str())
            .bind(email.key())
            .bind(search_text(email.as_str(), &contact.properties))
            .bind(at.timestamp_micros())
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
            if inserted.rows_affected() == 1 {
                insert_entry(conn, tenant, &contact.id, &contact_created(&contact)).await?;
                return Ok((contact.id, email.as_str().to_owned()));
            }
            // Unreachable under the single writer, kept in step with PostgreSQL.
            let (id, email): (String, String) = sqlx::query_as(
                "SELECT id, email FROM contacts WHERE tenant_id = ?1 AND email_key = ?2",
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

impl SqliteStore {
    /// A write transaction holding SQLite's write lock from its first statement.
    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'_, sqlx::Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)
    }
}

#[async_trait]
impl ActivityStore for SqliteStore {
    async fn record_send(
        &self,
        tenant: &TenantId,
        new: NewSend,
        idem: Option<Idempotency>,
    ) -> StoreResult<SendRecord> {
        let mut tx = self.begin_write().await?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        let (contact_id, email) = resolve(&mut tx, tenant, &new.contact, new.at).await?;
        if let Some(scheduled_id) = &new.scheduled_send_id {
            let scheduled = load_scheduled(&mut tx, tenant, scheduled_id)
                .await?
                .fulfil(&contact_id)?;
            set_scheduled_status(&mut tx, tenant, &scheduled).await?;
        }
        let (send, entry) = new.into_send(contact_id.clone(), email);
        save_send(&mut tx, tenant, &send).await?;
        insert_entry(&mut tx, tenant, &contact_id, &entry).await?;
        remember(&mut tx, tenant, idem.as_ref(), &contact_id, &send).await?;
        tx.commit().await.map_err(classify)?;
        Ok(send)
    }

    async fn update_send_status(
        &self,
        tenant: &TenantId,
        change: SendStatusChange,
        idem: Option<Idempotency>,
    ) -> StoreResult<SendRecord> {
        let mut tx = self.begin_write().await?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        let send = load_send(&mut tx, tenant, &change.send_id).await?;
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
        Ok(send)
    }

    async fn record_engagement(
        &self,
        tenant: &TenantId,
        engagement: SendEngagement,
        idem: Option<Idempotency>,
    ) -> StoreResult<SendRecord> {
        let mut tx = self.begin_write().await?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        let send = load_send(&mut tx, tenant, &engagement.send_id).await?;
        let (next, entry) = send.engage(
            engagement.engagement,
            engagement.at,
            engagement.url.as_deref(),
        )?;
        save_send(&mut tx, tenant, &next).await?;
        insert_entry(&mut tx, tenant, &next.contact_id, &entry).await?;
        remember(&mut tx, tenant, idem.as_ref(), &next.contact_id, &next).await?;
        tx.commit().await.map_err(classify)?;
        Ok(next)
    }

    async fn schedule_send(
        &self,
        tenant: &TenantId,
        new: NewScheduledSend,
        idem: Option<Idempotency>,
    ) -> StoreResult<ScheduledSend> {
        let mut tx = self.begin_write().await?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        let email = lock_contact(&mut tx, tenant, &new.contact_id).await?;
        let (scheduled, entry) = new.into_scheduled(email);
        sqlx::query(
            "INSERT INTO scheduled_sends (tenant_id, id, contact_id, email, template_id, template_name, subject, \
                 scheduled_for, source, source_id, step, status, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )
        .bind(tenant.as_str())
        .bind(&scheduled.id)
        .bind(scheduled.contact_id.as_str())
        .bind(&scheduled.email)
        .bind(&scheduled.template_id)
        .bind(&scheduled.template_name)
        .bind(&scheduled.subject)
        .bind(scheduled.scheduled_for.timestamp_micros())
        .bind(scheduled.source.as_str())
        .bind(&scheduled.source_id)
        .bind(scheduled.step)
        .bind(scheduled.status.as_str())
        .bind(scheduled.created_at.timestamp_micros())
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
        Ok(scheduled)
    }

    async fn cancel_scheduled_send(
        &self,
        tenant: &TenantId,
        scheduled_send_id: &str,
        at: DateTime<Utc>,
        idem: Option<Idempotency>,
    ) -> StoreResult<ScheduledSend> {
        let mut tx = self.begin_write().await?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        let (next, entry) = load_scheduled(&mut tx, tenant, scheduled_send_id)
            .await?
            .cancel(at)?;
        set_scheduled_status(&mut tx, tenant, &next).await?;
        insert_entry(&mut tx, tenant, &next.contact_id, &entry).await?;
        remember(&mut tx, tenant, idem.as_ref(), &next.contact_id, &next).await?;
        tx.commit().await.map_err(classify)?;
        Ok(next)
    }

    async fn enrol(
        &self,
        tenant: &TenantId,
        new: NewEnrolment,
        idem: Option<Idempotency>,
    ) -> StoreResult<Enrolment> {
        let mut tx = self.begin_write().await?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        lock_contact(&mut tx, tenant, &new.contact_id).await?;
        let existing = load_enrolment(&mut tx, tenant, &new.contact_id, &new.sequence_id).await?;
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
        Ok(enrolment)
    }

    async fn update_enrolment(
        &self,
        tenant: &TenantId,
        change: EnrolmentChange,
        idem: Option<Idempotency>,
    ) -> StoreResult<Enrolment> {
        let mut tx = self.begin_write().await?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        lock_contact(&mut tx, tenant, &change.contact_id).await?;
        let current = load_enrolment(&mut tx, tenant, &change.contact_id, &change.sequence_id)
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
        Ok(enrolment)
    }

    async fn set_membership(
        &self,
        tenant: &TenantId,
        change: MembershipChange,
        idem: Option<Idempotency>,
    ) -> StoreResult<MembershipOutcome> {
        let mut tx = self.begin_write().await?;
        if let Some(first) = replay(&mut tx, tenant, idem.as_ref()).await? {
            return decode(first);
        }
        lock_contact(&mut tx, tenant, &change.contact_id).await?;
        let existing = sqlx::query(
            "SELECT contact_id, segment_id, segment_name, joined_at FROM segment_memberships \
             WHERE tenant_id = ?1 AND contact_id = ?2 AND segment_id = ?3",
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
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .bind(tenant.as_str())
                .bind(change.contact_id.as_str())
                .bind(&change.segment_id)
                .bind(&change.segment_name)
                .bind(change.at.timestamp_micros())
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
                sqlx::query(
                    "DELETE FROM segment_memberships \
                     WHERE tenant_id = ?1 AND contact_id = ?2 AND segment_id = ?3",
                )
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
                        "UPDATE segment_memberships SET segment_name = ?4 \
                         WHERE tenant_id = ?1 AND contact_id = ?2 AND segment_id = ?3",
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
        Ok(outcome)
    }

    async fn track_event(
        &self,
        tenant: &TenantId,
        new: NewEvent,
        idem: Option<Idempotency>,
    ) -> StoreResult<TrackedEvent> {
        let mut tx = self.begin_write().await?;
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
        Ok(tracked)
    }

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
        let rows = sqlx::query(
            "SELECT contact_id, segment_id, segment_name, joined_at FROM segment_memberships \
             WHERE tenant_id = ?1 AND contact_id = ?2 ORDER BY joined_at DESC, segment_id",
        )
        .bind(tenant.as_str())
        .bind(contact.as_str())
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        rows.iter().map(membership_from_row).collect()
    }
}
