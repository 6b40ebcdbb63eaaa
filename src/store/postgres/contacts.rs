//! Contacts on PostgreSQL, the calls it makes its own way (`BackendContacts`; the
//! rest of `ContactStore` is `store::common`'s). The hot calls are one statement
//! each: a create inserts the contact and its entry together, a merge writes only
//! if the row's revision is unchanged, and a caller's key is checked inside the
//! same statement (`Access::key_hash`) instead of in a round trip of its own; under
//! load, concurrent ones share statements (`lookups.rs`, `writes.rs`).

use async_trait::async_trait;
use sqlx::Postgres;

use super::lookups::By;
use super::rows::{ref_from_row, view_from_row};
use super::writes::WriteRow;
use super::{PgStore, classify, sql};
use crate::domain::{
    Contact, ContactId, ContactKey, ContactQuery, ContactView, Email, TenantId, TimelineEntry,
};
use crate::store::common::{
    Arg, BackendContacts, Clause, ContactPage, SqlStore, SqlText, bind_arg, contact_from_row,
    filter_condition, keyset, order_by,
};
use crate::store::{
    Access, EncodedCollector, EncodedRows, ListSession, StoreError, StoreResult, collect_encoded,
};

#[async_trait]
impl BackendContacts for PgStore {
    async fn insert_contact(
        &self,
        access: &Access,
        contact: &Contact,
        created: &TimelineEntry,
    ) -> StoreResult<()> {
        let row = WriteRow::new(contact, contact.created_at, created, 0)?;
        self.creates.insert(access, row).await?;
        self.bell.ring(&access.tenant);
        Ok(())
    }

    async fn get_contact(&self, access: &Access, id: &ContactId) -> StoreResult<ContactView> {
        let found = match &access.key_hash {
            Some(key_hash) => {
                self.lookups
                    .get(&access.tenant, key_hash, By::Id, id.as_str())
                    .await?
            }
            None => {
                self.read_one(sql::GET_CONTACT, &access.tenant, id.as_str())
                    .await?
            }
        };
        found.ok_or(StoreError::NotFound("contact"))
    }

    async fn get_contact_by_email(
        &self,
        access: &Access,
        email: &Email,
    ) -> StoreResult<Option<ContactView>> {
        match &access.key_hash {
            Some(key_hash) => {
                self.lookups
                    .get(&access.tenant, key_hash, By::EmailKey, email.key())
                    .await
            }
            None => {
                self.read_one(sql::GET_CONTACT_BY_EMAIL, &access.tenant, email.key())
                    .await
            }
        }
    }

    async fn list_contacts(&self, page: ContactPage<'_>) -> StoreResult<EncodedRows> {
        let ContactPage {
            from,
            tenant,
            query,
            after,
            limit,
            max_bytes,
            encoder,
        } = page;
        let (clause, persistent) = list_statement(tenant, query, after);
        let sql = SqlText::new(&clause.sql).push(" LIMIT ?");
        let (sql, clause) = (sql.as_str(), &clause);
        self.read_heavy(from, |conns| async move {
            let mut statement = sqlx::query(sql).persistent(persistent);
            for arg in &clause.args {
                statement = bind_arg(statement, arg);
            }
            let mut conn = conns.get().await?;
            let collected = {
                let rows = statement.bind(i64::from(limit)).fetch(&mut *conn);
                let collector = EncodedCollector::new(encoder, query.order, max_bytes);
                collect_encoded(rows, collector, ref_from_row, classify).await
            };
            match &collected {
                // Read to its end: ready for the next statement.
                Ok(rows) if !rows.cut_short => conn.done().await?,
                // Rows of the query are still coming: the pool drains (or cancels)
                // them off the caller's path.
                _ => drop(conn),
            }
            collected
        })
        .await
    }

    async fn stream_contacts(
        &self,
        session: &ListSession,
        page: ContactPage<'_>,
    ) -> StoreResult<EncodedRows> {
        super::portal::stream_contacts(self, session, page).await
    }

    async fn read_for_update(&self, access: &Access, id: &ContactId) -> StoreResult<Contact> {
        let row = match &access.key_hash {
            // The read shares statements with point reads (`lookups.rs`); the revision
            // is among a contact's columns. The write after it is one per call
            // (`writes.rs`). Measured against a read of its own: BENCHMARKS.md,
            // "Coalesced creates on by default", run 2.
            Some(key_hash) => {
                let view = self
                    .lookups
                    .get(&access.tenant, key_hash, By::Id, id.as_str())
                    .await?;
                return view
                    .ok_or(StoreError::NotFound("contact"))?
                    .parse()
                    .map_err(StoreError::internal);
            }
            None => {
                let mut conn = self.conns.get().await?;
                let row = sqlx::query(sql::READ_FOR_UPDATE)
                    .bind(access.tenant.as_str())
                    .bind(id.as_str())
                    .fetch_optional(&mut *conn)
                    .await;
                conn.finish(row).await?
            }
        };
        let row = row.ok_or(StoreError::NotFound("contact"))?;
        contact_from_row::<Postgres>(&row)
    }

    async fn update_if_revision(
        &self,
        tenant: &TenantId,
        after: &Contact,
        updated: &TimelineEntry,
        revision: i64,
    ) -> StoreResult<bool> {
        let row = WriteRow::new(after, after.updated_at, updated, revision)?;
        let written = super::writes::update_one(&self.conns, tenant, &row).await?;
        if written {
            self.bell.ring(tenant);
        }
        Ok(written)
    }
}

impl PgStore {
    /// The contact a one-row statement of `(tenant, key)` finds, if any.
    async fn read_one(
        &self,
        statement: &'static str,
        tenant: &TenantId,
        key: &str,
    ) -> StoreResult<Option<ContactView>> {
        let mut conn = self.conns.get().await?;
        let row = sqlx::query(statement)
            .bind(tenant.as_str())
            .bind(key)
            .fetch_optional(&mut *conn)
            .await;
        let row = conn.finish(row).await?;
        row.as_ref().map(view_from_row).transpose()
    }
}

/// The longest run of letters and digits of a search term, as a LIKE pattern, when
/// it is not the whole term and has a trigram of its own.
///
/// The trigram index checks a row holding the pattern's rarest trigram against all
/// its other trigrams, and one that nearly every row has (the `cr-` of a customer
/// reference, the `com` of an address) costs a posting-tree descent per such row.
/// With the run first as a pattern of its own (GIN takes the keys in this order and
/// starts over at the first when one rejects a row), the whole pattern is checked,
/// still in the index, only for rows that hold that run.
fn probe_pattern(term: &str) -> Option<String> {
    let longest = term
        .split(|c: char| !c.is_alphanumeric())
        .fold("", |longest, run| {
            if run.chars().count() > longest.chars().count() {
                run
            } else {
                longest
            }
        });
    (longest.chars().count() >= 3 && longest.len() < term.len()).then(|| format!("%{longest}%"))
}

/// A list page's statement up to its `LIMIT`, and whether it may be prepared once
/// for every call.
pub(super) fn list_statement(
    tenant: &TenantId,
    query: &ContactQuery,
    after: Option<&ContactKey>,
) -> (Clause, bool) {
    let pattern = query.search.as_ref().map(|term| term.like_pattern());
    let probe = query
        .search
        .as_ref()
        .and_then(|term| probe_pattern(term.as_str()));
    let clause = list_clause(tenant, query, after, probe.as_deref(), pattern.as_deref());
    // With two patterns, the generic plan of a prepared statement (estimated from
    // no terms at all) can look cheaper than the custom plans of rare terms, and
    // PostgreSQL would then keep it for every term, common ones included (see
    // BENCHMARKS.md). Such a query is planned for its own terms each time.
    (clause, probe.is_none())
}

/// A list page's statement with only the filters present (a generic plan for
/// `$n IS NULL OR ...` could not use the indexes), up to its `LIMIT`.
fn list_clause(
    tenant: &TenantId,
    query: &ContactQuery,
    after: Option<&ContactKey>,
    probe: Option<&str>,
    pattern: Option<&str>,
) -> Clause {
    let mut out = Clause::default();
    out.push(&format!(
        "SELECT {} FROM contacts WHERE tenant_id = ",
        sql::CONTACT_COLUMNS
    ))
    .arg(Arg::Text(tenant.as_str().to_owned()));
    if let Some(after) = after {
        keyset::<Postgres>(&mut out, query.order, after);
    }
    for like in [probe, pattern].into_iter().flatten() {
        out.push(" AND search_text LIKE ")
            .arg(Arg::Text(like.to_owned()));
    }
    if let Some(suppressed) = query.suppressed {
        out.push(" AND suppressed = ").arg(Arg::Bool(suppressed));
    }
    filter_condition::<Postgres>(&mut out, query);
    crate::store::common::id_floor_condition(&mut out, tenant, query);
    out.push(&format!(" ORDER BY {}", order_by::<Postgres>(query.order)));
    out
}
