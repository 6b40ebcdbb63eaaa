//! SQLite rows to domain values. Times are stored as microseconds since the epoch.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{classify, json_map, time};
use crate::domain::{
    Contact, ContactId, ContactView, Email, Enrolment, EnrolmentStatus, Membership, PropertiesJson,
    ScheduledSend, ScheduledStatus, SendRecord, SendSource, SendStatus, TimelineEntry,
};
use crate::store::{StoreError, StoreResult};

pub(super) const CONTACT_COLUMNS: &str =
    "id, email, properties, suppressed, unsubscribed, created_at, updated_at";
pub(super) const SEND_COLUMNS: &str = "id, contact_id, email, template_id, template_name, subject, status, source, \
     source_id, created_at, sent_at, delivered_at, opened_at, clicked_at, bounced_at, complained_at";
pub(super) const SCHEDULED_COLUMNS: &str = "id, contact_id, email, template_id, template_name, subject, \
     scheduled_for, source, source_id, step, status, created_at";
pub(super) const ENROLMENT_COLUMNS: &str = "contact_id, sequence_id, sequence_name, status, current_step, \
     enrolled_at, updated_at, completed_at, exited_at";
pub(super) const MEMBERSHIP_COLUMNS: &str = "contact_id, segment_id, segment_name, joined_at";

pub(super) fn micros(at: Option<DateTime<Utc>>) -> Option<i64> {
    at.map(|at| at.timestamp_micros())
}

pub(super) fn contact_from_row(row: &SqliteRow) -> StoreResult<Contact> {
    view_from_row(row)?.parse().map_err(StoreError::internal)
}

/// A contact for a response, its properties the stored JSON text.
pub(super) fn view_from_row(row: &SqliteRow) -> StoreResult<ContactView> {
    Ok(ContactView {
        id: ContactId::from_trusted(row.try_get("id").map_err(classify)?),
        email: Email::from_trusted(row.try_get("email").map_err(classify)?),
        properties: PropertiesJson::from_trusted(row.try_get("properties").map_err(classify)?),
        suppressed: row.try_get("suppressed").map_err(classify)?,
        unsubscribed: row.try_get("unsubscribed").map_err(classify)?,
        created_at: time(row.try_get("created_at").map_err(classify)?)?,
        updated_at: time(row.try_get("updated_at").map_err(classify)?)?,
    })
}

pub(super) fn timeline_entry_from_row(row: &SqliteRow) -> StoreResult<TimelineEntry> {
    Ok(TimelineEntry {
        id: row.try_get("id").map_err(classify)?,
        kind: row.try_get("type").map_err(classify)?,
        timestamp: time(row.try_get("occurred_at").map_err(classify)?)?,
        data: json_map(row, "data")?,
    })
}

fn text_enum<T>(row: &SqliteRow, column: &str, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
    let text: String = row.try_get(column).map_err(classify)?;
    parse(&text)
        .ok_or_else(|| StoreError::internal(format!("unknown `{column}` value in the database")))
}

fn time_at(row: &SqliteRow, column: &str) -> StoreResult<DateTime<Utc>> {
    time(row.try_get(column).map_err(classify)?)
}

fn optional_time_at(row: &SqliteRow, column: &str) -> StoreResult<Option<DateTime<Utc>>> {
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
