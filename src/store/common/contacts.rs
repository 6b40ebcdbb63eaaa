//! Contacts and their timeline. Every call has a portable way here: a caller's key
//! is checked with a lookup of its own, reads are plain statements, and a write
//! takes a write transaction. A backend overrides the calls of `BackendContacts`
//! that it can make faster (PostgreSQL does them in one statement each) and lists
//! contacts its own way (each database has its own search index).

use std::collections::HashSet;

use async_trait::async_trait;

use super::db::{Get, fetch_within};
use super::rows::Record;
use super::types::{DbTime, TextList};
use super::{
    CONTACT_COLUMNS, ConnSource, Dialect, SqlDb, SqlStore, SqlText, SqlWriteTx, Stmt, TxConn,
};
use crate::domain::{
    Contact, ContactChange, ContactId, ContactQuery, ContactView, Email, TenantId, TimeKey,
    TimelineEntry, TimelineOrder, TimelineQuery,
};
use crate::store::coalesce::QueuedRow;
use crate::store::{
    Access, ContactCount, ContactPage, ContactRows, ContactStore, EncodedRows, ListRows,
    ListSession, ReadFrom, StoreError, StoreResult, WriteTx, check_key, contact_bytes,
    timeline_entry_bytes,
};

/// The calls of `ContactStore` a backend may make its own way; see `ContactStore`
/// for what each does.
#[async_trait]
pub(crate) trait BackendContacts: SqlStore + Sized {
    async fn list_contacts(&self, page: ContactPage<'_>) -> StoreResult<EncodedRows>;

    /// One query of a stream (`ContactStore::stream_contacts`): by default a page
    /// query of its own, as `list_contacts`.
    async fn stream_contacts(
        &self,
        session: &ListSession,
        page: ContactPage<'_>,
    ) -> StoreResult<EncodedRows> {
        let _ = session;
        BackendContacts::list_contacts(self, page).await
    }

    async fn insert_contact(
        &self,
        access: &Access,
        contact: &Contact,
        created: &TimelineEntry,
    ) -> StoreResult<()> {
        check_key(self, access).await?;
        let tx = SqlWriteTx::new(self.begin_tx().await?, &access.tenant).ringing(self.bell());
        if !create_contact(tx, contact, created).await? {
            return Err(StoreError::Conflict { field: "email" });
        }
        Ok(())
    }

    async fn get_contact(&self, access: &Access, id: &ContactId) -> StoreResult<ContactView> {
        check_key(self, access).await?;
        read_contact(self, "id", &access.tenant, id.as_str())
            .await?
            .ok_or(StoreError::NotFound("contact"))
    }

    async fn get_contact_by_email(
        &self,
        access: &Access,
        email: &Email,
    ) -> StoreResult<Option<ContactView>> {
        check_key(self, access).await?;
        read_contact(self, "email_key", &access.tenant, email.key()).await
    }

    async fn read_for_update(&self, access: &Access, id: &ContactId) -> StoreResult<Contact> {
        check_key(self, access).await?;
        let view = read_contact(self, "id", &access.tenant, id.as_str()).await?;
        view.ok_or(StoreError::NotFound("contact"))?
            .parse()
            .map_err(StoreError::internal)
    }

    async fn update_if_revision(
        &self,
        tenant: &TenantId,
        after: &Contact,
        updated: &TimelineEntry,
        revision: i64,
    ) -> StoreResult<bool> {
        let tx = SqlWriteTx::new(self.begin_tx().await?, tenant).ringing(self.bell());
        update_contact_if_revision(tx, after, updated, revision).await
    }

    /// One statement on either backend: the key is checked in it as PostgreSQL's
    /// point reads do (`postgres::sql`, `checked_contact!`), so it costs no lookup of
    /// its own, and both key lists are bound as one parameter each.
    async fn batch_get_contacts(
        &self,
        access: &Access,
        ids: &[String],
        email_keys: &[String],
        max_bytes: usize,
    ) -> StoreResult<ContactRows> {
        let checked = access.key_hash.is_some();
        let Some(sql) = batch_get_sql::<Self::Db>(checked, !ids.is_empty(), !email_keys.is_empty())
        else {
            return Ok(ContactRows::default());
        };
        let mut stmt = Stmt::<Self::Db>::new(&sql).bind(access.tenant.as_str());
        if let Some(key_hash) = &access.key_hash {
            stmt = stmt.bind(&key_hash[..]);
        }
        if !ids.is_empty() {
            stmt = stmt.bind(TextList(ids));
        }
        if !email_keys.is_empty() {
            stmt = stmt.bind(TextList(email_keys));
        }
        let rows = fetch_within(
            self.reads(),
            stmt,
            max_bytes,
            checked_view::<Self::Db>,
            |found: &Option<ContactView>| found.as_ref().map_or(0, contact_bytes),
        )
        .await?;
        batch_got(access, rows)
    }
}

/// The contacts of `batch_get_sql`'s rows. Under a key, no row at all means the key
/// was rejected; a row of NULLs that it is live and nothing matched.
pub(crate) fn batch_got(
    access: &Access,
    rows: ListRows<Option<ContactView>>,
) -> StoreResult<ContactRows> {
    if access.key_hash.is_some() && rows.items.is_empty() {
        return Err(StoreError::KeyRejected);
    }
    Ok(ContactRows {
        items: rows.items.into_iter().flatten().collect(),
        cut_short: rows.cut_short,
    })
}

/// `batch_get_contacts`' statement: tenant `$1`, then the key's hash when `checked`,
/// then the ids when `ids`, then the email keys when `emails` (each list one
/// parameter). The contacts of the ids, then those of the email keys whose id is not
/// listed: a UNION ALL of lookups, each by its own unique index (with an `OR` of the
/// two lists SQLite scans the whole tenant). A list that is empty is left out rather
/// than bound empty: PostgreSQL's custom plan for `email_key = ANY('{}')` proves the
/// part empty and then scans any index of the tenant, the partial one of suppressed
/// contacts included, to return nothing. Under a key, the first part is a LEFT JOIN
/// from the key, so a live key yields at least a row (of NULLs when nothing matched)
/// and a rejected one none. Unchecked with neither list, it is `None`: nothing to read.
pub(crate) fn batch_get_sql<DB: Dialect>(checked: bool, ids: bool, emails: bool) -> Option<String> {
    let columns: Vec<String> = CONTACT_COLUMNS
        .split(", ")
        .map(|column| format!("c.{column}"))
        .collect();
    let columns = columns.join(", ");
    let mut next = 1;
    let mut param = || {
        next += 1;
        format!("${next}")
    };
    let key = checked.then(&mut param);
    let by_id = ids.then(|| DB::any_of("c.id").replace('?', &param()));
    let by_email = emails.then(|| DB::any_of("c.email_key").replace('?', &param()));
    let mut parts = Vec::new();
    parts.extend(by_id.clone());
    if let Some(by_email) = by_email {
        match &by_id {
            Some(by_id) => parts.push(format!("{by_email} AND NOT ({by_id})")),
            None => parts.push(by_email),
        }
    }
    let Some(key) = key else {
        let selects: Vec<String> = parts
            .iter()
            .map(|part| {
                format!("SELECT {columns} FROM contacts c WHERE c.tenant_id = $1 AND {part}")
            })
            .collect();
        return (!selects.is_empty()).then(|| selects.join(" UNION ALL "));
    };
    let live = format!("k.key_hash = {key} AND k.tenant_id = $1 AND k.revoked_at IS NULL");
    let first = parts.first().map_or("1 = 0", String::as_str);
    let mut sql = format!(
        "SELECT {columns} FROM api_keys k LEFT JOIN contacts c \
         ON c.tenant_id = $1 AND {first} WHERE {live}"
    );
    for part in parts.iter().skip(1) {
        sql.push_str(&format!(
            " UNION ALL SELECT {columns} FROM api_keys k JOIN contacts c \
             ON c.tenant_id = $1 AND {part} WHERE {live}"
        ));
    }
    Some(sql)
}

/// A contact of a checked statement's rows, or `None` for its row of NULLs.
pub(crate) fn checked_view<DB: SqlDb>(row: &DB::Row) -> StoreResult<Option<ContactView>> {
    let id: Option<String> = <DB as Get<Option<String>>>::get(row, "id").map_err(DB::classify)?;
    match id {
        Some(_) => DB::contact_view(row).map(Some),
        None => Ok(None),
    }
}

/// The tenant's contact whose `column` (`id` or `email_key`) is `key`.
/// A create as `store::coalesce` queues it: the contact and its `contact.created`
/// entry.
pub(crate) struct NewContact {
    pub contact: Contact,
    pub created: TimelineEntry,
}

impl QueuedRow for NewContact {
    fn id(&self) -> &str {
        self.contact.id.as_str()
    }

    fn claim(&self) -> &str {
        self.contact.email.key()
    }
}

/// An update's compare-and-set as `store::coalesce` queues it: the contact merged,
/// its `contact.updated` entry, and the revision it was merged from.
pub(crate) struct Revised {
    pub after: Contact,
    pub entry: TimelineEntry,
    pub revision: i64,
}

impl QueuedRow for Revised {
    fn id(&self) -> &str {
        self.after.id.as_str()
    }

    fn claim(&self) -> &str {
        self.after.id.as_str()
    }
}

/// `ContactStore::update_if_revision` in `tx`: writes the contact, its entry and its
/// change and commits if its row is still at `revision`; whether it was.
pub(crate) async fn update_contact_if_revision<C: TxConn>(
    mut tx: SqlWriteTx<C>,
    after: &Contact,
    updated: &TimelineEntry,
    revision: i64,
) -> StoreResult<bool> {
    if !tx.update_contact_at(after, Some(revision)).await? {
        return Ok(false);
    }
    tx.record_change(&ContactChange::updated_as_recorded(after, updated))
        .await?;
    tx.insert_timeline_entry(&after.id, updated).await?;
    Box::new(tx).commit().await?;
    Ok(true)
}

/// `update_contact_if_revision` for many contacts (distinct) with the batch
/// statements, in one commit: the ids of the contacts written.
pub(crate) async fn update_contacts_if_revision<C: TxConn>(
    mut tx: SqlWriteTx<C>,
    updates: &[Revised],
) -> StoreResult<HashSet<String>> {
    let rows: Vec<(&Contact, &TimelineEntry)> =
        updates.iter().map(|u| (&u.after, &u.entry)).collect();
    let written = tx.update_if_revisions(&rows).await?;
    let entries: Vec<(&ContactId, &TimelineEntry)> = updates
        .iter()
        .filter(|u| written.contains(u.after.id.as_str()))
        .map(|u| (&u.after.id, &u.entry))
        .collect();
    tx.insert_timeline_entries(&entries).await?;
    Box::new(tx).commit().await?;
    Ok(written)
}

/// Writes the contact, its entry and its change in `tx` and commits; `false` (and
/// nothing written) when its address is taken.
pub(crate) async fn create_contact<C: TxConn>(
    mut tx: SqlWriteTx<C>,
    contact: &Contact,
    created: &TimelineEntry,
) -> StoreResult<bool> {
    if !tx.insert_contact_if_new(contact).await? {
        return Ok(false);
    }
    tx.insert_timeline_entry(&contact.id, created).await?;
    Box::new(tx).commit().await?;
    Ok(true)
}

/// Writes the creates (distinct addresses) with the batch statements in `tx` and
/// commits: the ids of the contacts written, those whose address was free.
pub(crate) async fn create_contacts<C: TxConn>(
    mut tx: SqlWriteTx<C>,
    creates: &[NewContact],
) -> StoreResult<HashSet<String>> {
    let contacts: Vec<&Contact> = creates.iter().map(|c| &c.contact).collect();
    let inserted = tx.insert_contacts_if_new(&contacts).await?;
    let written: HashSet<String> = inserted.into_iter().map(ContactId::into_string).collect();
    let entries: Vec<(&ContactId, &TimelineEntry)> = creates
        .iter()
        .filter(|c| written.contains(c.contact.id.as_str()))
        .map(|c| (&c.contact.id, &c.created))
        .collect();
    tx.insert_timeline_entries(&entries).await?;
    Box::new(tx).commit().await?;
    Ok(written)
}

async fn read_contact<S: SqlStore>(
    store: &S,
    column: &'static str,
    tenant: &TenantId,
    key: &str,
) -> StoreResult<Option<ContactView>> {
    let sql =
        format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE tenant_id = $1 AND {column} = $2");
    let stmt = Stmt::<S::Db>::new(&sql).bind(tenant.as_str()).bind(key);
    let row = store.reads().fetch_optional(stmt).await?;
    row.as_ref().map(S::Db::contact_view).transpose()
}

#[async_trait]
impl<S: BackendContacts> ContactStore for S {
    async fn insert_contact(
        &self,
        access: &Access,
        contact: &Contact,
        created: &TimelineEntry,
    ) -> StoreResult<()> {
        BackendContacts::insert_contact(self, access, contact, created).await
    }

    async fn get_contact(&self, access: &Access, id: &ContactId) -> StoreResult<ContactView> {
        BackendContacts::get_contact(self, access, id).await
    }

    async fn get_contact_by_email(
        &self,
        access: &Access,
        email: &Email,
    ) -> StoreResult<Option<ContactView>> {
        BackendContacts::get_contact_by_email(self, access, email).await
    }

    async fn list_contacts(&self, page: ContactPage<'_>) -> StoreResult<EncodedRows> {
        BackendContacts::list_contacts(self, page).await
    }

    async fn stream_contacts(
        &self,
        session: &ListSession,
        page: ContactPage<'_>,
    ) -> StoreResult<EncodedRows> {
        BackendContacts::stream_contacts(self, session, page).await
    }

    async fn read_for_update(&self, access: &Access, id: &ContactId) -> StoreResult<Contact> {
        BackendContacts::read_for_update(self, access, id).await
    }

    async fn update_if_revision(
        &self,
        tenant: &TenantId,
        after: &Contact,
        updated: &TimelineEntry,
        revision: i64,
    ) -> StoreResult<bool> {
        BackendContacts::update_if_revision(self, tenant, after, updated, revision).await
    }

    async fn batch_get_contacts(
        &self,
        access: &Access,
        ids: &[String],
        email_keys: &[String],
        max_bytes: usize,
    ) -> StoreResult<ContactRows> {
        BackendContacts::batch_get_contacts(self, access, ids, email_keys, max_bytes).await
    }

    async fn ensure_contact(&self, tenant: &TenantId, id: &ContactId) -> StoreResult<()> {
        let stmt = Stmt::<S::Db>::new("SELECT 1 FROM contacts WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id.as_str());
        match self.reads().fetch_optional(stmt).await? {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound("contact")),
        }
    }

    async fn list_timeline(
        &self,
        from: ReadFrom,
        tenant: &TenantId,
        contact: &ContactId,
        query: &TimelineQuery,
        after: Option<&TimeKey>,
        limit: u32,
        max_bytes: usize,
    ) -> StoreResult<ListRows<TimelineEntry>> {
        let (cmp, dir) = match query.order {
            TimelineOrder::NewestFirst => ("<", "DESC"),
            TimelineOrder::OldestFirst => (">", "ASC"),
        };
        let mut sql = SqlText::new(&format!(
            "SELECT {} FROM timeline_entries WHERE tenant_id = ? AND contact_id = ?",
            TimelineEntry::COLUMNS
        ));
        if after.is_some() {
            sql = sql.push(&format!(" AND (occurred_at, id) {cmp} (?, ?)"));
        }
        if !query.types.is_empty() {
            sql = sql.push(" AND ").push(&S::Db::any_of("type"));
        }
        let sql = sql.push(&format!(" ORDER BY occurred_at {dir}, id {dir} LIMIT ?"));
        let sql = sql.as_str();
        // A forged cursor's time out of range is the caller's error.
        let after = after
            .map(|after| after.time().map(|time| (time, after.id.as_str())))
            .transpose()?;
        self.read_heavy(from, |conns| async move {
            let mut stmt = Stmt::<S::Db>::new(sql)
                .bind(tenant.as_str())
                .bind(contact.as_str());
            if let Some((time, id)) = after {
                stmt = stmt.bind(DbTime(time)).bind(id);
            }
            if !query.types.is_empty() {
                stmt = stmt.bind(TextList(&query.types));
            }
            fetch_within(
                &conns,
                stmt.bind(i64::from(limit)),
                max_bytes,
                TimelineEntry::from_row::<S::Db>,
                timeline_entry_bytes,
            )
            .await
        })
        .await
    }

    async fn count_contacts(
        &self,
        from: ReadFrom,
        tenant: &TenantId,
        query: &ContactQuery,
        estimate: bool,
    ) -> StoreResult<ContactCount> {
        super::count::count_contacts(self, from, tenant, query, estimate).await
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Postgres;

    use super::batch_get_sql;
    use crate::store::postgres::sql;

    /// The benchmark's BatchGetContacts baseline runs `postgres::sql`'s copy.
    #[test]
    fn the_benchmarks_copy_of_the_batch_get_statement_is_the_stores() {
        let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        let ids_only = batch_get_sql::<Postgres>(true, true, false).expect("a statement");
        assert_eq!(words(&ids_only), words(sql::BATCH_GET_CHECKED));
    }

    #[test]
    fn a_batch_get_binds_only_the_lists_it_has_in_order() {
        let both = batch_get_sql::<Postgres>(true, true, true).expect("a statement");
        assert!(
            both.contains("c.id = ANY($3)") && both.contains("c.email_key = ANY($4)"),
            "{both}"
        );
        assert!(both.contains("k.key_hash = $2"), "{both}");
        let emails = batch_get_sql::<Postgres>(false, false, true).expect("a statement");
        assert!(
            emails.contains("c.email_key = ANY($2)") && !emails.contains("UNION"),
            "{emails}"
        );
        let nothing = batch_get_sql::<Postgres>(true, false, false).expect("the key check");
        assert!(nothing.contains("1 = 0"), "{nothing}");
        assert_eq!(batch_get_sql::<Postgres>(false, false, false), None);
    }
}
