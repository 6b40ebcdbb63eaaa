//! Row-level helpers for the activity tables: loading, saving and mapping rows.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::{classify, json_text, time};
use crate::domain::{
    ContactId, Enrolment, EnrolmentStatus, Membership, ScheduledSend, ScheduledStatus, SendRecord,
    SendSource, SendStatus, TenantId, TimelineEntry,
};
use crate::store::{StoreError, StoreResult};

pub(super) const SEND_COLUMNS: &str = "id, contact_id, email, template_id, template_name, subject, status, source, \
     source_id, created_at, sent_at, delivered_at, opened_at, clicked_at, bounced_at, complained_at";
pub(super) const SCHEDULED_COLUMNS: &str = "id, contact_id, email, template_id, template_name, subject, \
     scheduled_for, source, source_id, step, status, created_at";
pub(super) const ENROLMENT_COLUMNS: &str = "contact_id, sequence_id, sequence_name, status, current_step, \
     enrolled_at, updated_at, completed_at, exited_at";

pub(super) fn micros(at: Option<DateTime<Utc>>) -> Option<i64> {
    at.map(|at| at.timestamp_micros())
}

pub(super) async fn insert_entry(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    contact: &ContactId,
    entry: &TimelineEntry,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO timeline_entries (tenant_id, contact_id, id, type, occurred_at, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(tenant.as_str())
    .bind(contact.as_str())
    .bind(&entry.id)
    .bind(&entry.kind)
    .bind(entry.timestamp.timestamp_micros())
    .bind(json_text(&entry.data)?)
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(())
}

pub(super) async fn load_send(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    send_id: &str,
) -> StoreResult<SendRecord> {
    let sql = format!("SELECT {SEND_COLUMNS} FROM sends WHERE tenant_id = ?1 AND id = ?2");
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

pub(super) async fn save_send(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    send: &SendRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sends (tenant_id, id, contact_id, email, template_id, template_name, subject, status, source, \
             source_id, created_at, sent_at, delivered_at, opened_at, clicked_at, bounced_at, complained_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
         ON CONFLICT (tenant_id, id) DO UPDATE SET status = excluded.status, sent_at = excluded.sent_at, \
             delivered_at = excluded.delivered_at, opened_at = excluded.opened_at, clicked_at = excluded.clicked_at, \
             bounced_at = excluded.bounced_at, complained_at = excluded.complained_at",
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
    .bind(send.created_at.timestamp_micros())
    .bind(micros(send.sent_at))
    .bind(micros(send.delivered_at))
    .bind(micros(send.opened_at))
    .bind(micros(send.clicked_at))
    .bind(micros(send.bounced_at))
    .bind(micros(send.complained_at))
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(())
}

/// Sets a contact flag once, with its timeline entry; nothing when it was already set.
pub(super) async fn flag_contact(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    contact: &ContactId,
    column: &str,
    entry: &TimelineEntry,
) -> StoreResult<()> {
    let sql = format!(
        "UPDATE contacts SET {column} = 1, updated_at = max(updated_at, ?3), revision = revision + 1 \
         WHERE tenant_id = ?1 AND id = ?2 AND {column} = 0"
    );
    let updated = sqlx::query(&sql)
        .bind(tenant.as_str())
        .bind(contact.as_str())
        .bind(crate::domain::now().timestamp_micros())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    if updated.rows_affected() == 1 {
        insert_entry(conn, tenant, contact, entry).await?;
    }
    Ok(())
}

pub(super) async fn load_scheduled(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    id: &str,
) -> StoreResult<ScheduledSend> {
    let sql =
        format!("SELECT {SCHEDULED_COLUMNS} FROM scheduled_sends WHERE tenant_id = ?1 AND id = ?2");
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

pub(super) async fn set_scheduled_status(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    scheduled: &ScheduledSend,
) -> StoreResult<()> {
    sqlx::query("UPDATE scheduled_sends SET status = ?3 WHERE tenant_id = ?1 AND id = ?2")
        .bind(tenant.as_str())
        .bind(&scheduled.id)
        .bind(scheduled.status.as_str())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    Ok(())
}

pub(super) async fn load_enrolment(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    contact: &ContactId,
    sequence_id: &str,
) -> StoreResult<Option<Enrolment>> {
    let sql = format!(
        "SELECT {ENROLMENT_COLUMNS} FROM sequence_enrolments \
         WHERE tenant_id = ?1 AND contact_id = ?2 AND sequence_id = ?3"
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

pub(super) async fn save_enrolment(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    e: &Enrolment,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sequence_enrolments (tenant_id, contact_id, sequence_id, sequence_name, status, current_step, \
             enrolled_at, updated_at, completed_at, exited_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (tenant_id, contact_id, sequence_id) DO UPDATE SET sequence_name = excluded.sequence_name, \
             status = excluded.status, current_step = excluded.current_step, enrolled_at = excluded.enrolled_at, \
             updated_at = excluded.updated_at, completed_at = excluded.completed_at, exited_at = excluded.exited_at",
    )
    .bind(tenant.as_str())
    .bind(e.contact_id.as_str())
    .bind(&e.sequence_id)
    .bind(&e.sequence_name)
    .bind(e.status.as_str())
    .bind(e.current_step)
    .bind(e.enrolled_at.timestamp_micros())
    .bind(e.updated_at.timestamp_micros())
    .bind(micros(e.completed_at))
    .bind(micros(e.exited_at))
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(())
}

/// The contact's current address; `NotFound` unless it exists in the tenant. The
/// write lock taken by `BEGIN IMMEDIATE` already keeps it in place.
pub(super) async fn lock_contact(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    contact: &ContactId,
) -> StoreResult<String> {
    let email: Option<String> =
        sqlx::query_scalar("SELECT email FROM contacts WHERE tenant_id = ?1 AND id = ?2")
            .bind(tenant.as_str())
            .bind(contact.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(classify)?;
    email.ok_or(StoreError::NotFound("contact"))
}

pub(super) fn text_enum<T>(
    row: &SqliteRow,
    column: &str,
    parse: fn(&str) -> Option<T>,
) -> StoreResult<T> {
    let text: String = row.try_get(column).map_err(classify)?;
    parse(&text)
        .ok_or_else(|| StoreError::internal(format!("unknown `{column}` value in the database")))
}

pub(super) fn time_at(row: &SqliteRow, column: &str) -> StoreResult<DateTime<Utc>> {
    time(row.try_get(column).map_err(classify)?)
}

pub(super) fn optional_time_at(
    row: &SqliteRow,
    column: &str,
) -> StoreResult<Option<DateTime<Utc>>> {
    let micros: Option<i64> = row.try_get(column).map_err(classify)?;
    micros.map(time).transpose()
}

pub(super) fn send_from_row(row: &SqliteRow) -> StoreResult<SendRecord> {
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
        created_at: time_at(row, "created_at")?,
        sent_at: optional_time_at(row, "sent_at")?,
        delivered_at: optional_time_at(row, "delivered_at")?,
        opened_at: optional_time_at(row, "opened_at")?,
        clicked_at: optional_time_at(row, "clicked_at")?,
        bounced_at: optional_time_at(row, "bounced_at")?,
        complained_at: optional_time_at(row, "complained_at")?,
    })
}

pub(super) fn scheduled_from_row(row: &SqliteRow) -> StoreResult<ScheduledSend> {
    Ok(ScheduledSend {
        id: row.try_get("id").map_err(classify)?,
        contact_id: ContactId::from_trusted(row.try_get("contact_id").map_err(classify)?),
        email: row.try_get("email").map_err(classify)?,
        template_id: row.try_get("template_id").map_err(classify)?,
        template_name: row.try_get("template_name").map_err(classify)?,
        subject: row.try_get("subject").map_err(classify)?,
        scheduled_for: time_at(row, "scheduled_for")?,
        source: text_enum(row, "source", SendSource::from_db)?,
        source_id: row.try_get("source_id").map_err(classify)?,
        step: row.try_get("step").map_err(classify)?,
        status: text_enum(row, "status", ScheduledStatus::from_db)?,
        created_at: time_at(row, "created_at")?,
    })
}

pub(super) fn enrolment_from_row(row: &SqliteRow) -> StoreResult<Enrolment> {
    Ok(Enrolment {
        contact_id: ContactId::from_trusted(row.try_get("contact_id").map_err(classify)?),
        sequence_id: row.try_get("sequence_id").map_err(classify)?,
        sequence_name: row.try_get("sequence_name").map_err(classify)?,
        status: text_enum(row, "status", EnrolmentStatus::from_db)?,
        current_step: row.try_get("current_step").map_err(classify)?,
        enrolled_at: time_at(row, "enrolled_at")?,
        updated_at: time_at(row, "updated_at")?,
        completed_at: optional_time_at(row, "completed_at")?,
        exited_at: optional_time_at(row, "exited_at")?,
    })
}

pub(super) fn membership_from_row(row: &SqliteRow) -> StoreResult<Membership> {
    Ok(Membership {
        contact_id: ContactId::from_trusted(row.try_get("contact_id").map_err(classify)?),
        segment_id: row.try_get("segment_id").map_err(classify)?,
        segment_name: row.try_get("segment_name").map_err(classify)?,
        joined_at: time_at(row, "joined_at")?,
    })
}
