//! The write transaction of both backends: one set of statements, with the
//! fragments that differ taken from the `Dialect` (PostgreSQL locks the rows it
//! reads to write; SQLite holds the database's write lock from `BEGIN IMMEDIATE`).
//! A backend supplies only how the transaction holds its connection (`TxConn`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Database;

use super::changes;
use super::rows::{column, contact_from_row, remembered_from_row};
use super::types::{DbJson, DbTime, JsonText};
use super::{CONTACT_COLUMNS, Dialect, SqlDb, SqlText, Stmt};
use crate::domain::{
    ChangeKind, Contact, ContactChange, ContactId, Email, Idempotency, TenantId, TimelineEntry,
    search_text,
};
use crate::store::{ChangeBell, ContactFlag, RememberedRequest, StoreError, StoreResult, WriteTx};

/// How a backend's write transaction holds its connection: it has begun when the
/// holder exists, rolls back when the holder is dropped, and commits here.
#[async_trait]
pub(crate) trait TxConn: Send + Sized + 'static {
    type Db: SqlDb;

    fn conn(&mut self) -> &mut <Self::Db as Database>::Connection;

    async fn commit(self) -> StoreResult<()>;

    /// Called before each batch statement that writes contacts (ImportContacts), so
    /// a database can defer index maintenance to the end of the transaction. None
    /// by default.
    async fn batch_write(&mut self) -> StoreResult<()> {
        Ok(())
    }

    /// Takes the import-order lock `key` for the transaction; `wait_only`: a shared
    /// hold, taken once no transaction holds it, which blocks only a new exclusive
    /// hold (the holder's next attempt). See `WriteTx::hold_order_lock`. None by
    /// default.
    async fn order_lock(&mut self, _key: u32, _wait_only: bool) -> StoreResult<()> {
        Ok(())
    }
}

type Row<C> = <<C as TxConn>::Db as Database>::Row;

/// One transaction of one tenant's records, on the connection `C` holds. Every
/// write of a contact records its change (`contact_changes`) in the transaction,
/// right after the row (see `changes.rs` for why then), and a commit that recorded
/// any rings the bell.
pub(crate) struct SqlWriteTx<C> {
    conn: C,
    tenant: TenantId,
    /// The contacts as this transaction locked them, for the fields a rewrite
    /// changes.
    locked: std::collections::HashMap<String, Contact>,
    bell: Option<ChangeBell>,
    recorded: bool,
}

impl<C: TxConn> SqlWriteTx<C> {
    pub fn new(conn: C, tenant: &TenantId) -> Self {
        Self {
            conn,
            tenant: tenant.clone(),
            locked: Default::default(),
            bell: None,
            recorded: false,
        }
    }

    /// Rings `bell` after a commit that recorded changes.
    pub fn ringing(mut self, bell: &ChangeBell) -> Self {
        self.bell = Some(bell.clone());
        self
    }

    /// Records `change` in this transaction. The write primitives call it; a new
    /// primitive that writes contacts must too.
    pub async fn record_change(&mut self, change: &ContactChange) -> StoreResult<()> {
        let (conn, tenant) = self.parts();
        changes::record::<C>(conn, tenant, change).await?;
        self.recorded = true;
        Ok(())
    }

    /// Commits, then wakes the tenant's watchers if changes were recorded.
    pub async fn commit_and_ring(self) -> StoreResult<()> {
        let (bell, recorded, tenant) = (self.bell, self.recorded, self.tenant);
        self.conn.commit().await?;
        if let (true, Some(bell)) = (recorded, bell) {
            bell.ring(&tenant);
        }
        Ok(())
    }

    /// Records `change`, which left the contact as `after`, and keeps `after` as the
    /// state a later rewrite in this transaction starts from.
    pub(super) async fn record_write(
        &mut self,
        change: &ContactChange,
        after: &Contact,
    ) -> StoreResult<()> {
        self.record_change(change).await?;
        self.remember_locked(after);
        Ok(())
    }

    /// `record_write` for many contacts with one statement, the changes in their
    /// order.
    pub(super) async fn record_writes(
        &mut self,
        writes: &[(ContactChange, &Contact)],
    ) -> StoreResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let changes: Vec<&ContactChange> = writes.iter().map(|(change, _)| change).collect();
        let (conn, tenant) = self.parts();
        changes::record_many::<C>(conn, tenant, &changes).await?;
        self.recorded = true;
        for (_, after) in writes {
            self.remember_locked(after);
        }
        Ok(())
    }

    /// Keeps `contact` as this transaction holds it locked.
    pub(super) fn remember_locked(&mut self, contact: &Contact) {
        self.locked
            .insert(contact.id.as_str().to_owned(), contact.clone());
    }

    /// The contact as this transaction locked it, or read now (locked).
    pub(super) async fn before(&mut self, id: &ContactId) -> StoreResult<Option<Contact>> {
        if let Some(before) = self.locked.get(id.as_str()) {
            return Ok(Some(before.clone()));
        }
        self.lock_contact(id).await
    }

    /// The backend's hold of the transaction, for its own hooks (`TxConn`).
    pub(super) fn conn_mut(&mut self) -> &mut C {
        &mut self.conn
    }

    /// The connection and the tenant, borrowed apart so a statement can bind one
    /// and run on the other.
    pub(super) fn parts(&mut self) -> (&mut <C::Db as Database>::Connection, &str) {
        (self.conn.conn(), self.tenant.as_str())
    }

    /// What `sql` finds by the tenant (`$1`) and `keys` (`$2`, ...), if anything.
    pub(super) async fn find<T>(
        &mut self,
        sql: &str,
        keys: &[&str],
        from_row: fn(&Row<C>) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let (conn, tenant) = self.parts();
        let mut stmt = Stmt::<C::Db>::new(sql).bind(tenant);
        for key in keys {
            stmt = stmt.bind(*key);
        }
        let row = stmt.fetch_optional(conn).await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Writes a changed contact (address, properties, `updated_at`), only if its
    /// row is still at `revision` when one is given; returns whether it did.
    pub async fn update_contact_at(
        &mut self,
        contact: &Contact,
        revision: Option<i64>,
    ) -> StoreResult<bool> {
        // An address another contact has fails the write on the unique key, which
        // both backends' errors name (`Conflict` on `email`).
        let sql = match revision {
            Some(_) => UPDATE_CONTACT_IF_REVISION,
            None => UPDATE_CONTACT,
        };
        let search = search_text(contact.email.as_str(), &contact.properties);
        let (conn, tenant) = self.parts();
        let mut stmt = Stmt::<C::Db>::new(sql)
            .bind(tenant)
            .bind(contact.id.as_str())
            .bind(contact.email.as_str())
            .bind(contact.email.key())
            .bind(DbJson(contact.properties.as_map()))
            .bind(search.as_str())
            .bind(DbTime(contact.updated_at));
        if let Some(revision) = revision {
            stmt = stmt.bind(revision);
        }
        Ok(stmt.execute(conn).await? == 1)
    }
}

const UPDATE_CONTACT: &str = "UPDATE contacts SET email = $3, email_key = $4, properties = $5, \
        search_text = $6, updated_at = $7, revision = revision + 1 \
     WHERE tenant_id = $1 AND id = $2";

const UPDATE_CONTACT_IF_REVISION: &str = "UPDATE contacts SET email = $3, email_key = $4, \
        properties = $5, search_text = $6, updated_at = $7, revision = revision + 1 \
     WHERE tenant_id = $1 AND id = $2 AND revision = $8";

const INSERT_CONTACT: &str = "INSERT INTO contacts (tenant_id, id, email, email_key, \
        properties, search_text, suppressed, unsubscribed, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (tenant_id, email_key) DO NOTHING";

const INSERT_TIMELINE_ENTRY: &str = "INSERT INTO timeline_entries \
        (tenant_id, contact_id, id, type, occurred_at, data) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// A read of one row by the tenant and `key` (`$2`, `$3`...), locked where the
/// dialect locks rows.
pub(super) fn lock_sql<DB: Dialect>(columns: &str, table: &str, key: &str) -> String {
    format!(
        "SELECT {columns} FROM {table} WHERE tenant_id = $1 AND {key}{}",
        DB::FOR_UPDATE
    )
}

#[async_trait]
impl<C: TxConn> WriteTx for SqlWriteTx<C> {
    async fn claim_request(
        &mut self,
        idem: &Idempotency,
    ) -> StoreResult<Option<RememberedRequest>> {
        // A request id of an erased contact is not claimed again: the retry finds no
        // remembered response below and is refused, instead of creating the person
        // anew (`erased_requests`, written by DeleteContact).
        let sql = SqlText::new(
            "INSERT INTO idempotency_keys (tenant_id, request_id, method, fingerprint, \
             request_hash, created_at) SELECT ?, ?, ?, ?, ?, ",
        )
        .now::<C::Db>()
        .push(
            " WHERE NOT EXISTS (SELECT 1 FROM erased_requests \
             WHERE tenant_id = $1 AND request_hash = $5) ON CONFLICT DO NOTHING",
        );
        let hash = idem.request_hash();
        let (conn, tenant) = self.parts();
        // Waits on a concurrent first attempt's uncommitted row, then sees its outcome.
        let claimed = Stmt::<C::Db>::new(sql.as_str())
            .bind(tenant)
            .bind(idem.request_id.as_str())
            .bind(idem.method)
            .bind(&idem.fingerprint[..])
            .bind(&hash[..])
            .bind_now()
            .execute(conn)
            .await?;
        if claimed == 1 {
            return Ok(None);
        }
        let remembered = self
            .find(
                "SELECT method, fingerprint, response FROM idempotency_keys \
                 WHERE tenant_id = $1 AND request_id = $2",
                &[&idem.request_id],
                remembered_from_row::<C::Db>,
            )
            .await?;
        // None: the request's contact was erased (now, or in between).
        remembered.map(Some).ok_or(StoreError::NotFound("contact"))
    }

    async fn remember_response(
        &mut self,
        idem: &Idempotency,
        contact: Option<&ContactId>,
        response_json: &str,
    ) -> StoreResult<()> {
        let (conn, tenant) = self.parts();
        Stmt::<C::Db>::new(
            "UPDATE idempotency_keys SET response = $3, contact_id = $4 \
             WHERE tenant_id = $1 AND request_id = $2",
        )
        .bind(tenant)
        .bind(idem.request_id.as_str())
        .bind(JsonText(response_json))
        .bind(contact.map(ContactId::as_str))
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn lock_contact(&mut self, id: &ContactId) -> StoreResult<Option<Contact>> {
        let sql = lock_sql::<C::Db>(CONTACT_COLUMNS, "contacts", "id = $2");
        let found = self
            .find(&sql, &[id.as_str()], contact_from_row::<C::Db>)
            .await?;
        if let Some(contact) = &found {
            self.locked
                .insert(contact.id.as_str().to_owned(), contact.clone());
        }
        Ok(found)
    }

    async fn lock_contact_email(&mut self, id: &ContactId) -> StoreResult<Option<String>> {
        let sql = lock_sql::<C::Db>("email", "contacts", "id = $2");
        self.find(&sql, &[id.as_str()], |row| column::<C::Db, _>(row, "email"))
            .await
    }

    async fn find_contact_by_email(
        &mut self,
        email: &Email,
    ) -> StoreResult<Option<(ContactId, String)>> {
        let sql = lock_sql::<C::Db>("id, email", "contacts", "email_key = $2");
        self.find(&sql, &[email.key()], |row| {
            let id = column::<C::Db, String>(row, "id")?;
            Ok((
                ContactId::from_trusted(id),
                column::<C::Db, _>(row, "email")?,
            ))
        })
        .await
    }

    async fn lock_contact_by_email(&mut self, email: &Email) -> StoreResult<Option<Contact>> {
        let sql = lock_sql::<C::Db>(CONTACT_COLUMNS, "contacts", "email_key = $2");
        let found = self
            .find(&sql, &[email.key()], contact_from_row::<C::Db>)
            .await?;
        if let Some(contact) = &found {
            self.locked
                .insert(contact.id.as_str().to_owned(), contact.clone());
        }
        Ok(found)
    }

    async fn insert_contact_if_new(&mut self, contact: &Contact) -> StoreResult<bool> {
        let search = search_text(contact.email.as_str(), &contact.properties);
        let (conn, tenant) = self.parts();
        let inserted = Stmt::<C::Db>::new(INSERT_CONTACT)
            .bind(tenant)
            .bind(contact.id.as_str())
            .bind(contact.email.as_str())
            .bind(contact.email.key())
            .bind(DbJson(contact.properties.as_map()))
            .bind(search.as_str())
            .bind(contact.suppressed)
            .bind(contact.unsubscribed)
            .bind(DbTime(contact.created_at))
            .bind(DbTime(contact.updated_at))
            .execute(conn)
            .await?;
        if inserted != 1 {
            return Ok(false);
        }
        self.record_write(&ContactChange::created(contact), contact)
            .await?;
        Ok(true)
    }

    async fn update_contact(&mut self, contact: &Contact) -> StoreResult<()> {
        let before = self
            .before(&contact.id)
            .await?
            .ok_or(StoreError::NotFound("contact"))?;
        self.update_contact_at(contact, None).await?;
        self.record_write(&ContactChange::updated(&before, contact), contact)
            .await
    }

    // The batch statements are in `batch.rs`, which records their changes too.
    async fn lock_contacts_by_email_keys(&mut self, keys: &[String]) -> StoreResult<Vec<Contact>> {
        self.lock_by_email_keys(keys).await
    }

    async fn insert_contacts_if_new(
        &mut self,
        contacts: &[&Contact],
    ) -> StoreResult<Vec<ContactId>> {
        self.insert_new(contacts).await
    }

    async fn update_contacts(&mut self, contacts: &[&Contact]) -> StoreResult<()> {
        self.update_many(contacts).await
    }

    async fn insert_timeline_entries(
        &mut self,
        entries: &[(&ContactId, &TimelineEntry)],
    ) -> StoreResult<()> {
        self.insert_entries(entries).await
    }

    async fn hold_order_lock(&mut self, key: u32) -> StoreResult<()> {
        self.conn.order_lock(key, false).await
    }

    async fn await_order_lock(&mut self, key: u32) -> StoreResult<()> {
        self.conn.order_lock(key, true).await
    }

    async fn set_contact_flag(
        &mut self,
        id: &ContactId,
        flag: ContactFlag,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (column, greatest) = (flag.column(), C::Db::GREATEST);
        let sql = format!(
            "UPDATE contacts SET {column} = true, updated_at = {greatest}(updated_at, $3), \
             revision = revision + 1 WHERE tenant_id = $1 AND id = $2 AND NOT {column} \
             RETURNING {CONTACT_COLUMNS}"
        );
        let (conn, tenant) = self.parts();
        let row = Stmt::<C::Db>::new(&sql)
            .bind(tenant)
            .bind(id.as_str())
            .bind(DbTime(at))
            .fetch_optional(conn)
            .await?;
        let Some(after) = row.as_ref().map(contact_from_row::<C::Db>).transpose()? else {
            return Ok(false);
        };
        let kind = match flag {
            ContactFlag::Suppressed => ChangeKind::Suppressed,
            ContactFlag::Unsubscribed => ChangeKind::Unsubscribed,
        };
        self.locked.insert(id.as_str().to_owned(), after.clone());
        self.record_change(&ContactChange::flagged(kind, after))
            .await?;
        Ok(true)
    }

    async fn insert_timeline_entry(
        &mut self,
        contact: &ContactId,
        entry: &TimelineEntry,
    ) -> StoreResult<()> {
        let (conn, tenant) = self.parts();
        Stmt::<C::Db>::new(INSERT_TIMELINE_ENTRY)
            .bind(tenant)
            .bind(contact.as_str())
            .bind(entry.id.as_str())
            .bind(entry.kind.as_str())
            .bind(DbTime(entry.timestamp))
            .bind(DbJson(&entry.data))
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn erase_contact(&mut self, id: &ContactId) -> StoreResult<()> {
        let tombstones = SqlText::new(
            "INSERT INTO erased_requests (tenant_id, request_hash, method, erased_at) \
             SELECT tenant_id, request_hash, method, ",
        )
        .now::<C::Db>()
        .push(
            " FROM idempotency_keys WHERE tenant_id = ? AND contact_id = ? \
             AND request_hash IS NOT NULL ON CONFLICT DO NOTHING",
        );
        let (conn, tenant) = self.parts();
        Stmt::<C::Db>::new(tombstones.as_str())
            .bind_now()
            .bind(tenant)
            .bind(id.as_str())
            .execute(&mut *conn)
            .await?;
        // Activity rows and remembered requests go with the contact (ON DELETE CASCADE).
        Stmt::<C::Db>::new("DELETE FROM contacts WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id.as_str())
            .execute(&mut *conn)
            .await?;
        // Earlier changes keep only ids; the deletion carries only the id.
        changes::scrub::<C>(conn, tenant, id).await?;
        self.locked.remove(id.as_str());
        self.record_change(&ContactChange::deleted(id, crate::domain::now()))
            .await
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        (*self).commit_and_ring().await
    }
}

#[cfg(test)]
mod tests;
