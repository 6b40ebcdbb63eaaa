//! Contacts on SQLite: the portable calls of `store::common`, but for the point
//! reads, which check the caller's key in the same statement (`sql.rs`): one
//! exchange with a connection's worker thread instead of two, and the list, which
//! searches SQLite's own index and reads its rows past the worker (`rows.rs`).

use async_trait::async_trait;
use rusqlite::types::Value;
use sqlx::Sqlite;

use super::point::Found;
use super::{SqliteStore, search, sql};
use crate::domain::{Contact, ContactId, ContactView, Email, TenantId, TimelineEntry};
use crate::store::common::{
    BackendContacts, ConnSource, ContactPage, NewContact, Revised, Stmt, batch_get_sql, batch_got,
    checked_view,
};
use crate::store::{Access, ContactRows, EncodedRows, StoreError, StoreResult};

#[async_trait]
impl BackendContacts for SqliteStore {
    async fn insert_contact(
        &self,
        access: &Access,
        contact: &Contact,
        created: &TimelineEntry,
    ) -> StoreResult<()> {
        let create = NewContact {
            contact: contact.clone(),
            created: created.clone(),
        };
        self.creates.insert(access, create).await
    }

    async fn update_if_revision(
        &self,
        tenant: &TenantId,
        after: &Contact,
        updated: &TimelineEntry,
        revision: i64,
    ) -> StoreResult<bool> {
        let update = Revised {
            after: after.clone(),
            entry: updated.clone(),
            revision,
        };
        self.updates.write(tenant, None, update).await
    }

    async fn list_contacts(&self, page: ContactPage<'_>) -> StoreResult<EncodedRows> {
        let plan = search::list_plan(&page);
        let place = self.reader.get().await?;
        self.pages.fetch_contacts(place, plan, &page).await
    }

    async fn get_contact(&self, access: &Access, id: &ContactId) -> StoreResult<ContactView> {
        read_checked(self, access, ById, id.as_str())
            .await?
            .ok_or(StoreError::NotFound("contact"))
    }

    async fn get_contact_by_email(
        &self,
        access: &Access,
        email: &Email,
    ) -> StoreResult<Option<ContactView>> {
        read_checked(self, access, ByEmail, email.key()).await
    }

    /// The common statement, its rows read past sqlx's worker (`rows.rs`): one
    /// hand-over for the batch instead of one per row.
    async fn batch_get_contacts(
        &self,
        access: &Access,
        ids: &[String],
        email_keys: &[String],
        max_bytes: usize,
    ) -> StoreResult<ContactRows> {
        let checked = access.key_hash.is_some();
        let Some(sql) = batch_get_sql::<Sqlite>(checked, !ids.is_empty(), !email_keys.is_empty())
        else {
            return Ok(ContactRows::default());
        };
        // In `batch_get_sql`'s order; each list as JSON, as `TextList` binds it.
        let mut params = vec![Value::Text(access.tenant.as_str().to_owned())];
        params.extend(access.key_hash.map(|hash| Value::Blob(hash.to_vec())));
        for list in [ids, email_keys] {
            if !list.is_empty() {
                let json = serde_json::to_string(list).map_err(StoreError::internal)?;
                params.push(Value::Text(json));
            }
        }
        let place = self.reader.get().await?;
        let rows = self
            .pages
            .fetch_checked(place, sql, params, max_bytes)
            .await?;
        batch_got(access, rows)
    }

    async fn read_for_update(&self, access: &Access, id: &ContactId) -> StoreResult<Contact> {
        read_checked(self, access, ById, id.as_str())
            .await?
            .ok_or(StoreError::NotFound("contact"))?
            .parse()
            .map_err(StoreError::internal)
    }
}

/// How a point read finds its contact.
#[derive(Clone, Copy)]
enum Lookup {
    ById,
    ByEmail,
}
use Lookup::{ByEmail, ById};

/// The tenant's contact at `key`, the caller's key checked in the same statement;
/// without a key (the service's own calls, which have none to check), a plain read.
async fn read_checked(
    store: &SqliteStore,
    access: &Access,
    lookup: Lookup,
    key: &str,
) -> StoreResult<Option<ContactView>> {
    let (checked, plain) = match lookup {
        ById => (sql::GET_CONTACT_CHECKED, sql::GET_CONTACT),
        ByEmail => (sql::GET_CONTACT_BY_EMAIL_CHECKED, sql::GET_CONTACT_BY_EMAIL),
    };
    let key_hash = access.key_hash.as_ref().map(|hash| &hash[..]);
    let sql = if key_hash.is_some() { checked } else { plain };
    match point_read(store, sql, access.tenant.as_str(), key, key_hash).await? {
        Found::Contact(contact) => Ok(Some(contact)),
        // A checked read's answer for a rejected key; a plain read's for no contact.
        Found::NoRow if key_hash.is_some() => Err(StoreError::KeyRejected),
        Found::NoRow | Found::Nulls => Ok(None),
    }
}

/// What `sql` (bound to the tenant, the key, and the key's hash if any) finds:
/// stepped in place (`point.rs`) unless that hands it back, then on a reader.
async fn point_read(
    store: &SqliteStore,
    sql: &str,
    tenant: &str,
    key: &str,
    key_hash: Option<&[u8]>,
) -> StoreResult<Found> {
    let in_place = match key_hash {
        Some(hash) => store.points.contact(sql, &[&tenant, &key, &hash]),
        None => store.points.contact(sql, &[&tenant, &key]),
    };
    if let Some(found) = in_place {
        return found;
    }
    let mut stmt = Stmt::<Sqlite>::new(sql).bind(tenant).bind(key);
    if let Some(hash) = key_hash {
        stmt = stmt.bind(hash);
    }
    let found = match store.reader.fetch_optional(stmt).await? {
        Some(row) => checked_view::<Sqlite>(&row)?.map_or(Found::Nulls, Found::Contact),
        None => Found::NoRow,
    };
    Ok(found)
}

#[cfg(test)]
mod tests {
    /// The checked point read is PostgreSQL's, and the plain point reads and the
    /// export baseline read a contact's columns (`sql.rs` is the benchmark's too, so
    /// its tests live here).
    #[test]
    fn the_checked_reads_and_the_export_read_what_the_store_reads() {
        use super::sql;
        use crate::store::postgres::sql as pg;
        assert_eq!(
            sql::GET_CONTACT_CHECKED,
            pg::GET_CONTACTS_CHECKED.replace("c.id = ANY($2)", "c.id = $2")
        );
        let columns = format!("SELECT {} FROM contacts", pg::CONTACT_COLUMNS);
        let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        for read in [sql::EXPORT, sql::GET_CONTACT, sql::GET_CONTACT_BY_EMAIL] {
            assert!(words(read).starts_with(&columns), "{read}");
        }
    }
}
