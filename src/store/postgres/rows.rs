//! PostgreSQL rows to domain values.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{classify, sql};
use crate::domain::{
    Contact, ContactId, ContactView, Email, Enrolment, EnrolmentStatus, Membership, PropertiesJson,
    ScheduledSend, ScheduledStatus, SendRecord, SendSource, SendStatus,
};
use crate::store::{StoreError, StoreResult};

pub(super) const SEND_COLUMNS: &str = "id, contact_id, email, template_id, template_name, subject, status, source, \
     source_id, created_at, sent_at, delivered_at, opened_at, clicked_at, bounced_at, complained_at";
pub(super) const SCHEDULED_COLUMNS: &str = "id, contact_id, email, template_id, template_name, subject, \
     scheduled_for, source, source_id, step, status, created_at";
pub(super) const ENROLMENT_COLUMNS: &str = "contact_id, sequence_id, sequence_name, status, current_step, \
     enrolled_at, updated_at, completed_at, exited_at";
pub(super) const MEMBERSHIP_COLUMNS: &str = "contact_id, segment_id, segment_name, joined_at";

pub(super) fn contact_from_row(row: &PgRow) -> StoreResult<Contact> {
    view_from_row(row)?.parse().map_err(StoreError::internal)
}

/// A contact for a response, its properties the JSON text PostgreSQL sent: jsonb's
/// binary form is a version byte (1) and then the text, so no tree is built.
/// Columns are read by position (`contact_columns!` order, first in every statement
/// that returns a contact), which spares a name lookup per column per row.
pub(super) fn view_from_row(row: &PgRow) -> StoreResult<ContactView> {
    debug_assert!(
        sqlx::Row::columns(row)
            .iter()
            .map(sqlx::Column::name)
            .take(sql::CONTACT_COLUMN_COUNT)
            .eq(sql::CONTACT_COLUMNS.split(", ")),
        "a contact's columns come first, in contact_columns! order"
    );
    let raw: &[u8] = row.try_get_unchecked(2).map_err(classify)?;
    let text = match raw.split_first() {
        Some((1, text)) => std::str::from_utf8(text).map_err(StoreError::internal)?,
        _ => return Err(StoreError::internal("unknown jsonb format version")),
    };
    Ok(ContactView {
        id: ContactId::from_trusted(row.try_get(0).map_err(classify)?),
        email: Email::from_trusted(row.try_get(1).map_err(classify)?),
        properties: PropertiesJson::from_trusted(text.to_owned()),
        suppressed: row.try_get(3).map_err(classify)?,
        unsubscribed: row.try_get(4).map_err(classify)?,
        created_at: row.try_get(5).map_err(classify)?,
        updated_at: row.try_get(6).map_err(classify)?,
    })
}

fn text_enum<T>(row: &PgRow, column: &str, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
    let text: String = row.try_get(column).map_err(classify)?;
    parse(&text)
        .ok_or_else(|| StoreError::internal(format!("unknown `{column}` value in the database")))
}

fn get<'r, T>(row: &'r PgRow, column: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(classify)
}

fn contact_id(row: &PgRow) -> StoreResult<ContactId> {
    get(row, "contact_id").map(ContactId::from_trusted)
}

pub(super) fn send_from_row(row: &PgRow) -> StoreResult<SendRecord> {
    let time = |c: &str| get::<Option<DateTime<Utc>>>(row, c);
    Ok(SendRecord {
        id: get(row, "id")?,
        contact_id: contact_id(row)?,
        email: get(row, "email")?,
        template_id: get(row, "template_id")?,
        template_name: get(row, "template_name")?,
        subject: get(row, "subject")?,
        status: text_enum(row, "status", SendStatus::from_db)?,
        source: text_enum(row, "source", SendSource::from_db)?,
        source_id: get(row, "source_id")?,
        created_at: get(row, "created_at")?,
        sent_at: time("sent_at")?,
        delivered_at: time("delivered_at")?,
        opened_at: time("opened_at")?,
        clicked_at: time("clicked_at")?,
        bounced_at: time("bounced_at")?,
        complained_at: time("complained_at")?,
    })
}

pub(super) fn scheduled_from_row(row: &PgRow) -> StoreResult<ScheduledSend> {
    Ok(ScheduledSend {
        id: get(row, "id")?,
        contact_id: contact_id(row)?,
        email: get(row, "email")?,
        template_id: get(row, "template_id")?,
        template_name: get(row, "template_name")?,
        subject: get(row, "subject")?,
        scheduled_for: get(row, "scheduled_for")?,
        source: text_enum(row, "source", SendSource::from_db)?,
        source_id: get(row, "source_id")?,
        step: get(row, "step")?,
        status: text_enum(row, "status", ScheduledStatus::from_db)?,
        created_at: get(row, "created_at")?,
    })
}

pub(super) fn enrolment_from_row(row: &PgRow) -> StoreResult<Enrolment> {
    Ok(Enrolment {
        contact_id: contact_id(row)?,
        sequence_id: get(row, "sequence_id")?,
        sequence_name: get(row, "sequence_name")?,
        status: text_enum(row, "status", EnrolmentStatus::from_db)?,
        current_step: get(row, "current_step")?,
        enrolled_at: get(row, "enrolled_at")?,
        updated_at: get(row, "updated_at")?,
        completed_at: get(row, "completed_at")?,
        exited_at: get(row, "exited_at")?,
    })
}

pub(super) fn membership_from_row(row: &PgRow) -> StoreResult<Membership> {
    Ok(Membership {
        contact_id: contact_id(row)?,
        segment_id: get(row, "segment_id")?,
        segment_name: get(row, "segment_name")?,
        joined_at: get(row, "joined_at")?,
    })
}
