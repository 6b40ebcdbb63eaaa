//! The batch statements of a write transaction (ImportContacts): a batch of rows
//! goes to the database as one JSON array parameter of one statement, which each
//! database turns into a table (`Dialect::json_rows`: `jsonb_to_recordset` on
//! PostgreSQL, `json_each` on SQLite). So a batch costs the same few round trips
//! whatever its size, and the statements are written once for both databases.

use std::collections::HashSet;

use serde::Serialize;

use super::rows::contact_from_row;
use super::types::{JsonText, TextList};
use super::write_tx::{SqlWriteTx, TxConn};
use super::{CONTACT_COLUMNS, Dialect, SqlText, Stmt};
use crate::domain::{Contact, ContactChange, ContactId, TimelineEntry, search_text};
use crate::store::{StoreError, StoreResult};

/// A column of `Dialect::json_rows`: its name (the JSON member it is read from) and
/// what the member holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JsonColumn(pub &'static str, pub ColumnKind);

/// What a member of a `json_rows` record holds, and so the column's SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    Text,
    /// A JSON object serialized as a string (so SQLite stores serde's text as it
    /// is, and PostgreSQL parses it into `jsonb`).
    Json,
    Int,
    Bool,
    /// A time as microseconds since the Unix epoch (`DbTime` on either database).
    Micros,
}

use ColumnKind::{Bool, Int, Json, Micros, Text};

const CONTACT_ROW: &[JsonColumn] = &[
    JsonColumn("id", Text),
    JsonColumn("email", Text),
    JsonColumn("email_key", Text),
    JsonColumn("properties", Json),
    JsonColumn("search_text", Text),
    JsonColumn("suppressed", Bool),
    JsonColumn("unsubscribed", Bool),
    JsonColumn("revision", Int),
    JsonColumn("created_at", Micros),
    JsonColumn("updated_at", Micros),
];

/// A contact as a member of the JSON array `CONTACT_ROW` reads.
#[derive(Serialize)]
struct ContactRecord<'a> {
    id: &'a str,
    email: &'a str,
    email_key: &'a str,
    properties: String,
    search_text: String,
    suppressed: bool,
    unsubscribed: bool,
    revision: i64,
    created_at: i64,
    updated_at: i64,
}

const ENTRY_ROW: &[JsonColumn] = &[
    JsonColumn("contact_id", Text),
    JsonColumn("id", Text),
    JsonColumn("kind", Text),
    JsonColumn("occurred_at", Micros),
    JsonColumn("data", Json),
];

#[derive(Serialize)]
struct EntryRecord<'a> {
    contact_id: &'a str,
    id: &'a str,
    kind: &'a str,
    occurred_at: i64,
    data: String,
}

fn contacts_json(contacts: &[&Contact]) -> StoreResult<String> {
    let mut records = Vec::with_capacity(contacts.len());
    for contact in contacts {
        records.push(ContactRecord {
            id: contact.id.as_str(),
            email: contact.email.as_str(),
            email_key: contact.email.key(),
            properties: to_json(contact.properties.as_map())?,
            search_text: search_text(contact.email.as_str(), &contact.properties),
            suppressed: contact.suppressed,
            unsubscribed: contact.unsubscribed,
            revision: contact.revision,
            created_at: contact.created_at.timestamp_micros(),
            updated_at: contact.updated_at.timestamp_micros(),
        });
    }
    to_json(&records)
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(StoreError::internal)
}

impl<C: TxConn> SqlWriteTx<C> {
    /// See `WriteTx::lock_contacts_by_email_keys`.
    pub(super) async fn lock_by_email_keys(
        &mut self,
        keys: &[String],
    ) -> StoreResult<Vec<Contact>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // The rows are locked as the sort emits them, so in key order.
        let sql = SqlText::new(&format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts WHERE tenant_id = ? AND {} \
             ORDER BY email_key{}",
            C::Db::any_of("email_key"),
            C::Db::FOR_UPDATE
        ));
        let (conn, tenant) = self.parts();
        let rows = Stmt::<C::Db>::new(sql.as_str())
            .bind(tenant)
            .bind(TextList(keys))
            .fetch_all(conn)
            .await?;
        let locked: Vec<Contact> = rows
            .iter()
            .map(contact_from_row::<C::Db>)
            .collect::<StoreResult<_>>()?;
        for contact in &locked {
            self.remember_locked(contact);
        }
        Ok(locked)
    }

    /// See `WriteTx::insert_contacts_if_new`.
    pub(super) async fn insert_new(
        &mut self,
        contacts: &[&Contact],
    ) -> StoreResult<Vec<ContactId>> {
        if contacts.is_empty() {
            return Ok(Vec::new());
        }
        // `WHERE true`: SQLite's parser needs it before an upsert clause.
        let sql = SqlText::new(
            "INSERT INTO contacts (tenant_id, id, email, email_key, properties, search_text, \
             suppressed, unsubscribed, revision, created_at, updated_at) \
             SELECT ?, r.id, r.email, r.email_key, r.properties, r.search_text, r.suppressed, \
             r.unsubscribed, r.revision, r.created_at, r.updated_at FROM ",
        )
        .push(&C::Db::json_rows(CONTACT_ROW))
        .push(
            " WHERE true ORDER BY r.email_key \
             ON CONFLICT (tenant_id, email_key) DO NOTHING RETURNING id",
        );
        let json = contacts_json(contacts)?;
        self.conn_mut().batch_write().await?;
        let (conn, tenant) = self.parts();
        let rows = Stmt::<C::Db>::new(sql.as_str())
            .bind(tenant)
            .bind(JsonText(json.as_str()))
            .fetch_all(conn)
            .await?;
        let inserted: Vec<ContactId> = rows
            .iter()
            .map(|row| super::rows::column::<C::Db, String>(row, "id").map(ContactId::from_trusted))
            .collect::<StoreResult<_>>()?;
        // Each contact written records its change, as the single-row primitives do.
        let ids: HashSet<&str> = inserted.iter().map(ContactId::as_str).collect();
        let writes: Vec<(ContactChange, &Contact)> = contacts
            .iter()
            .filter(|c| ids.contains(c.id.as_str()))
            .map(|c| (ContactChange::created(c), *c))
            .collect();
        self.record_writes(&writes).await?;
        Ok(inserted)
    }

    /// See `WriteTx::update_contacts`.
    pub(super) async fn update_many(&mut self, contacts: &[&Contact]) -> StoreResult<()> {
        if contacts.is_empty() {
            return Ok(());
        }
        let sql = SqlText::new(
            "UPDATE contacts SET properties = r.properties, search_text = r.search_text, \
             updated_at = r.updated_at, revision = r.revision FROM ",
        )
        .push(&C::Db::json_rows(CONTACT_ROW))
        .push(" WHERE contacts.tenant_id = ? AND contacts.id = r.id");
        let mut befores = Vec::with_capacity(contacts.len());
        for contact in contacts {
            let before = self.before(&contact.id).await?;
            befores.push(before.ok_or(StoreError::NotFound("contact"))?);
        }
        let json = contacts_json(contacts)?;
        self.conn_mut().batch_write().await?;
        let (conn, tenant) = self.parts();
        Stmt::<C::Db>::new(sql.as_str())
            .bind(JsonText(json.as_str()))
            .bind(tenant)
            .execute(conn)
            .await?;
        let writes: Vec<(ContactChange, &Contact)> = befores
            .iter()
            .zip(contacts)
            .map(|(before, contact)| (ContactChange::updated(before, contact), *contact))
            .collect();
        self.record_writes(&writes).await?;
        Ok(())
    }

    /// Writes each contact (address, properties, `updated_at`, revision) whose row
    /// is still at the revision before its own, with its change: the ids written.
    /// An address another contact holds fails the statement (`Conflict`).
    pub(super) async fn update_if_revisions(
        &mut self,
        rows: &[(&Contact, &TimelineEntry)],
    ) -> StoreResult<HashSet<String>> {
        if rows.is_empty() {
            return Ok(HashSet::new());
        }
        let sql = SqlText::new(
            "UPDATE contacts SET email = r.email, email_key = r.email_key, \
             properties = r.properties, search_text = r.search_text, \
             updated_at = r.updated_at, revision = r.revision FROM ",
        )
        .push(&C::Db::json_rows(CONTACT_ROW))
        .push(
            " WHERE contacts.tenant_id = ? AND contacts.id = r.id \
             AND contacts.revision = r.revision - 1 RETURNING contacts.id",
        );
        let contacts: Vec<&Contact> = rows.iter().map(|(contact, _)| *contact).collect();
        let json = contacts_json(&contacts)?;
        let (conn, tenant) = self.parts();
        let found = Stmt::<C::Db>::new(sql.as_str())
            .bind(JsonText(json.as_str()))
            .bind(tenant)
            .fetch_all(conn)
            .await?;
        let written: HashSet<String> = found
            .iter()
            .map(|row| super::rows::column::<C::Db, String>(row, "id"))
            .collect::<StoreResult<_>>()?;
        let writes: Vec<(ContactChange, &Contact)> = rows
            .iter()
            .filter(|(contact, _)| written.contains(contact.id.as_str()))
            .map(|(contact, entry)| (ContactChange::updated_as_recorded(contact, entry), *contact))
            .collect();
        self.record_writes(&writes).await?;
        Ok(written)
    }

    /// See `WriteTx::insert_timeline_entries`.
    pub(super) async fn insert_entries(
        &mut self,
        entries: &[(&ContactId, &TimelineEntry)],
    ) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut records = Vec::with_capacity(entries.len());
        for (contact, entry) in entries {
            records.push(EntryRecord {
                contact_id: contact.as_str(),
                id: entry.id.as_str(),
                kind: entry.kind.as_str(),
                occurred_at: entry.timestamp.timestamp_micros(),
                data: to_json(&entry.data)?,
            });
        }
        let json = to_json(&records)?;
        let sql = SqlText::new(
            "INSERT INTO timeline_entries (tenant_id, contact_id, id, type, occurred_at, data) \
             SELECT ?, r.contact_id, r.id, r.kind, r.occurred_at, r.data FROM ",
        )
        .push(&C::Db::json_rows(ENTRY_ROW));
        let (conn, tenant) = self.parts();
        Stmt::<C::Db>::new(sql.as_str())
            .bind(tenant)
            .bind(JsonText(json.as_str()))
            .execute(conn)
            .await?;
        Ok(())
    }
}
