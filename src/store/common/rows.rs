//! Rows to domain values, by column name, for either database.

use chrono::{DateTime, Utc};
use sqlx::Database;

use super::SqlDb;
use super::db::Get;
use super::types::{DbJson, DbTime, JsonText};
use crate::domain::{
    Contact, ContactId, ContactView, Email, Enrolment, EnrolmentStatus, Membership, PropertiesJson,
    ScheduledSend, ScheduledStatus, SendRecord, SendSource, SendStatus, TenantId, TimelineEntry,
};
use crate::store::{ApiKeyRecord, RememberedRequest, StoreError, StoreResult};

/// A contact's columns, first in every statement that returns a contact (the order
/// PostgreSQL's `view_from_row` reads them in; `postgres::sql::CONTACT_COLUMNS`).
pub(crate) const CONTACT_COLUMNS: &str =
    "id, email, properties, suppressed, unsubscribed, created_at, updated_at, revision";

/// A record read whole from one table.
pub(crate) trait Record: Sized {
    /// The columns `from_row` reads, for the statement's SELECT list.
    const COLUMNS: &'static str;

    fn from_row<DB: SqlDb>(row: &DB::Row) -> StoreResult<Self>;
}

/// A row's columns, read by name with errors classified.
struct Cols<'r, DB: Database>(&'r DB::Row);

impl<DB: SqlDb> Cols<'_, DB> {
    fn get<T>(&self, column: &str) -> StoreResult<T>
    where
        DB: Get<T>,
    {
        <DB as Get<T>>::get(self.0, column).map_err(DB::classify)
    }

    fn time(&self, column: &str) -> StoreResult<DateTime<Utc>> {
        self.get(column).map(|DbTime(at)| at)
    }

    fn optional_time(&self, column: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let at: Option<DbTime> = self.get(column)?;
        Ok(at.map(|DbTime(at)| at))
    }

    fn text_enum<T>(&self, column: &str, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
        let text: String = self.get(column)?;
        parse(&text).ok_or_else(|| {
            StoreError::internal(format!("unknown `{column}` value in the database"))
        })
    }

    fn contact_id(&self) -> StoreResult<ContactId> {
        self.get("contact_id").map(ContactId::from_trusted)
    }
}

/// A contact for a response, its properties the stored JSON text.
pub(crate) fn view_from_row<DB: SqlDb>(row: &DB::Row) -> StoreResult<ContactView> {
    let row = Cols::<DB>(row);
    let JsonText(properties) = row.get("properties")?;
    Ok(ContactView {
        id: ContactId::from_trusted(row.get("id")?),
        email: Email::from_trusted(row.get("email")?),
        properties: PropertiesJson::from_trusted(properties),
        suppressed: row.get("suppressed")?,
        unsubscribed: row.get("unsubscribed")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        revision: row.get("revision")?,
    })
}

/// A contact with its properties parsed, from a row that starts with `CONTACT_COLUMNS`.
pub(crate) fn contact_from_row<DB: SqlDb>(row: &DB::Row) -> StoreResult<Contact> {
    DB::contact_view(row)?.parse().map_err(StoreError::internal)
}

/// The claimed request id's row (`method, fingerprint, response`).
pub(super) fn remembered_from_row<DB: SqlDb>(row: &DB::Row) -> StoreResult<RememberedRequest> {
    let row = Cols::<DB>(row);
    let response: Option<JsonText> = row.get("response")?;
    Ok(RememberedRequest {
        method: row.get("method")?,
        fingerprint: row.get("fingerprint")?,
        response: response.map(|JsonText(text)| text),
    })
}

impl Record for SendRecord {
    const COLUMNS: &'static str = "id, contact_id, email, template_id, template_name, subject, \
        status, source, source_id, created_at, sent_at, delivered_at, opened_at, clicked_at, \
        bounced_at, complained_at";

    fn from_row<DB: SqlDb>(row: &DB::Row) -> StoreResult<Self> {
        let row = Cols::<DB>(row);
        Ok(SendRecord {
            id: row.get("id")?,
            contact_id: row.contact_id()?,
            email: row.get("email")?,
            template_id: row.get("template_id")?,
            template_name: row.get("template_name")?,
            subject: row.get("subject")?,
            status: row.text_enum("status", SendStatus::from_db)?,
            source: row.text_enum("source", SendSource::from_db)?,
            source_id: row.get("source_id")?,
            created_at: row.time("created_at")?,
            sent_at: row.optional_time("sent_at")?,
            delivered_at: row.optional_time("delivered_at")?,
            opened_at: row.optional_time("opened_at")?,
            clicked_at: row.optional_time("clicked_at")?,
            bounced_at: row.optional_time("bounced_at")?,
            complained_at: row.optional_time("complained_at")?,
        })
    }
}

impl Record for ScheduledSend {
    const COLUMNS: &'static str = "id, contact_id, email, template_id, template_name, subject, \
        scheduled_for, source, source_id, step, status, created_at";

    fn from_row<DB: SqlDb>(row: &DB::Row) -> StoreResult<Self> {
        let row = Cols::<DB>(row);
        Ok(ScheduledSend {
            id: row.get("id")?,
            contact_id: row.contact_id()?,
            email: row.get("email")?,
            template_id: row.get("template_id")?,
            template_name: row.get("template_name")?,
            subject: row.get("subject")?,
            scheduled_for: row.time("scheduled_for")?,
            source: row.text_enum("source", SendSource::from_db)?,
            source_id: row.get("source_id")?,
            step: row.get("step")?,
            status: row.text_enum("status", ScheduledStatus::from_db)?,
            created_at: row.time("created_at")?,
        })
    }
}

impl Record for Enrolment {
    const COLUMNS: &'static str = "contact_id, sequence_id, sequence_name, status, current_step, \
        enrolled_at, updated_at, completed_at, exited_at";

    fn from_row<DB: SqlDb>(row: &DB::Row) -> StoreResult<Self> {
        let row = Cols::<DB>(row);
        Ok(Enrolment {
            contact_id: row.contact_id()?,
            sequence_id: row.get("sequence_id")?,
            sequence_name: row.get("sequence_name")?,
            status: row.text_enum("status", EnrolmentStatus::from_db)?,
            current_step: row.get("current_step")?,
            enrolled_at: row.time("enrolled_at")?,
            updated_at: row.time("updated_at")?,
            completed_at: row.optional_time("completed_at")?,
            exited_at: row.optional_time("exited_at")?,
        })
    }
}

impl Record for Membership {
    const COLUMNS: &'static str = "contact_id, segment_id, segment_name, joined_at";

    fn from_row<DB: SqlDb>(row: &DB::Row) -> StoreResult<Self> {
        let row = Cols::<DB>(row);
        Ok(Membership {
            contact_id: row.contact_id()?,
            segment_id: row.get("segment_id")?,
            segment_name: row.get("segment_name")?,
            joined_at: row.time("joined_at")?,
        })
    }
}

impl Record for TimelineEntry {
    const COLUMNS: &'static str = "id, type, occurred_at, data";

    fn from_row<DB: SqlDb>(row: &DB::Row) -> StoreResult<Self> {
        let row = Cols::<DB>(row);
        let DbJson(data) = row.get("data")?;
        Ok(TimelineEntry {
            id: row.get("id")?,
            kind: row.get("type")?,
            timestamp: row.time("occurred_at")?,
            data,
        })
    }
}

impl Record for ApiKeyRecord {
    const COLUMNS: &'static str = "key_id, tenant_id, created_at, revoked_at";

    fn from_row<DB: SqlDb>(row: &DB::Row) -> StoreResult<Self> {
        let row = Cols::<DB>(row);
        Ok(ApiKeyRecord {
            key_id: row.get("key_id")?,
            tenant: TenantId::from_trusted(row.get("tenant_id")?),
            created_at: row.time("created_at")?,
            revoked_at: row.optional_time("revoked_at")?,
        })
    }
}

/// One column of a row, for statements that read a single value.
pub(super) fn column<DB: SqlDb + Get<T>, T>(row: &DB::Row, column: &str) -> StoreResult<T> {
    Cols::<DB>(row).get(column)
}
