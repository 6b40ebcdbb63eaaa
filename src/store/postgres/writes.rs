//! Contact writes, and the hot calls under a `KeyClaim` with the key checked in the
//! call's own statement.
//!
//! A merge is optimistic: read the row and its revision, merge in Rust, write only
//! if the revision is unchanged (one autocommit statement that also inserts the
//! timeline entry). Only when another write got in between does it merge again
//! under a row lock, so the common case costs two round trips instead of four
//! (BEGIN, SELECT ... FOR UPDATE, UPDATE, COMMIT) and no update is ever lost.

use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Connection, Row};

use super::lookups::By;
use super::{PgStore, classify, contact_from_row, sql};
use crate::domain::{
    Contact, ContactId, ContactUpdate, ContactView, Email, NewContact, TenantId, TimelineEntry,
    contact_created, search_text,
};
use crate::store::{Checked, KeyClaim, StoreError, StoreResult};

impl PgStore {
    /// Runs a `checked_contact!` statement: no row means the key was rejected, a
    /// row without a contact id means no such contact.
    async fn read_checked(
        &self,
        statement: &'static str,
        claim: &KeyClaim,
        key: &str,
    ) -> StoreResult<Checked<Option<PgRow>>> {
        let mut conn = self.conns.get().await?;
        let row = sqlx::query(statement)
            .bind(claim.tenant.as_str())
            .bind(key)
            .bind(&claim.key_hash[..])
            .fetch_optional(&mut *conn)
            .await;
        let row = conn.finish(row)?;
        let Some(row) = row else {
            return Ok(Checked::KeyRejected);
        };
        let found: Option<String> = row.try_get("id").map_err(classify)?;
        Ok(Checked::Live(found.map(|_| row)))
    }

    pub(super) async fn get_checked(
        &self,
        claim: &KeyClaim,
        id: &ContactId,
    ) -> StoreResult<Checked<ContactView>> {
        match self.lookups.get(claim, By::Id, id.as_str()).await? {
            Checked::Live(Some(view)) => Ok(Checked::Live(view)),
            Checked::Live(None) => Err(StoreError::NotFound("contact")),
            Checked::KeyRejected => Ok(Checked::KeyRejected),
        }
    }

    pub(super) async fn get_by_email_checked(
        &self,
        claim: &KeyClaim,
        email: &Email,
    ) -> StoreResult<Checked<Option<ContactView>>> {
        self.lookups.get(claim, By::EmailKey, email.key()).await
    }

    /// Creates the contact with its `contact.created` entry in one statement; under a
    /// claim, the statement inserts nothing unless the key is live.
    pub(super) async fn create(
        &self,
        tenant: &TenantId,
        claim: Option<&KeyClaim>,
        new: NewContact,
    ) -> StoreResult<Checked<Contact>> {
        let now = crate::domain::now();
        let contact = Contact {
            id: ContactId::generate(),
            email: new.email,
            properties: new.properties,
            suppressed: false,
            unsubscribed: false,
            created_at: now,
            updated_at: now,
        };
        let entry = contact_created(&contact);
        let statement = match claim {
            Some(_) => sql::CREATE_CONTACT_CHECKED,
            None => sql::CREATE_CONTACT,
        };
        let mut query = sqlx::query(statement)
            .bind(tenant.as_str())
            .bind(contact.id.as_str())
            .bind(contact.email.as_str())
            .bind(contact.email.key())
            .bind(Json(contact.properties.as_map()))
            .bind(search_text(contact.email.as_str(), &contact.properties))
            .bind(now)
            .bind(&entry.id)
            .bind(&entry.kind)
            .bind(Json(&entry.data));
        if let Some(claim) = claim {
            query = query.bind(&claim.key_hash[..]);
        }
        let mut conn = self.conns.get().await?;
        let result = query.execute(&mut *conn).await;
        let result = conn.finish(result)?;
        if result.rows_affected() == 0 {
            return Ok(Checked::KeyRejected);
        }
        Ok(Checked::Live(contact))
    }

    /// Reads the contact and its revision (under a claim, with the key check) and
    /// merges `update` into it.
    pub(super) async fn update(
        &self,
        tenant: &TenantId,
        claim: Option<&KeyClaim>,
        id: &ContactId,
        update: ContactUpdate,
    ) -> StoreResult<Checked<Contact>> {
        let row = match claim {
            Some(claim) => {
                match self
                    .read_checked(sql::READ_FOR_UPDATE_CHECKED, claim, id.as_str())
                    .await?
                {
                    Checked::Live(row) => row,
                    Checked::KeyRejected => return Ok(Checked::KeyRejected),
                }
            }
            None => {
                let mut conn = self.conns.get().await?;
                let row = sqlx::query(sql::READ_FOR_UPDATE)
                    .bind(tenant.as_str())
                    .bind(id.as_str())
                    .fetch_optional(&mut *conn)
                    .await;
                conn.finish(row)?
            }
        };
        let row = row.ok_or(StoreError::NotFound("contact"))?;
        let before = contact_from_row(&row)?;
        let revision: i64 = row.try_get("revision").map_err(classify)?;
        // Kept for the locked retry; `apply` consumes the update.
        let retry = update.clone();
        let Some((after, entry)) = before.apply(update)? else {
            return Ok(Checked::Live(before));
        };
        let written = self
            .write_merge(tenant, &after, &entry, Some(revision), None)
            .await?;
        if written {
            return Ok(Checked::Live(after));
        }
        // Another write got in first (or the contact is gone): merge again under the
        // row lock, which serialises with every other writer.
        self.update_locked(tenant, id, retry)
            .await
            .map(Checked::Live)
    }

    async fn update_locked(
        &self,
        tenant: &TenantId,
        id: &ContactId,
        update: ContactUpdate,
    ) -> StoreResult<Contact> {
        let mut conn = self.conns.get().await?;
        let mut tx = conn.begin().await.map_err(classify)?;
        let before = Self::lock_contact(&mut tx, tenant, id).await?;
        let Some((after, entry)) = before.apply(update)? else {
            return Ok(before);
        };
        self.write_merge(tenant, &after, &entry, None, Some(&mut tx))
            .await?;
        tx.commit().await.map_err(classify)?;
        conn.done();
        Ok(after)
    }

    /// Writes `after` with its entry; with `revision`, only if the row is still at
    /// it. Returns whether the row was written.
    async fn write_merge(
        &self,
        tenant: &TenantId,
        after: &Contact,
        entry: &TimelineEntry,
        revision: Option<i64>,
        tx: Option<&mut sqlx::Transaction<'_, sqlx::Postgres>>,
    ) -> StoreResult<bool> {
        let statement = match revision {
            Some(_) => sql::UPDATE_CONTACT_IF_REVISION,
            None => sql::UPDATE_CONTACT,
        };
        let mut query = sqlx::query(statement)
            .bind(tenant.as_str())
            .bind(after.id.as_str())
            .bind(after.email.as_str())
            .bind(after.email.key())
            .bind(Json(after.properties.as_map()))
            .bind(search_text(after.email.as_str(), &after.properties))
            .bind(after.updated_at)
            .bind(&entry.id)
            .bind(&entry.kind)
            .bind(Json(&entry.data));
        if let Some(revision) = revision {
            query = query.bind(revision);
        }
        let result = match tx {
            Some(tx) => query.execute(&mut **tx).await.map_err(classify)?,
            None => {
                let mut conn = self.conns.get().await?;
                let result = query.execute(&mut *conn).await;
                conn.finish(result)?
            }
        };
        Ok(result.rows_affected() == 1)
    }
}
