//! Coalesced writes on SQLite (`store::coalesce`): CreateContact, and UpdateContact's
//! compare-and-set. Alone, a write is one transaction as before; queued behind the
//! writer, a line's writes go in one transaction of batch statements
//! (`common::batch`), so one `BEGIN IMMEDIATE`, one commit and one key check serve
//! them all. Every statement is an exchange with the writer connection's worker
//! thread, made while holding the database's write lock: a batch makes five
//! whatever its size, as a write alone does (BENCHMARKS.md, "SQLite writes
//! coalesced").

use std::collections::HashSet;

use async_trait::async_trait;

use super::conns::Conns;
use super::write_tx::SqliteTx;
use crate::domain::TenantId;
use crate::store::coalesce::{BatchWriter, Line, Written};
use crate::store::common::{
    NewContact, Revised, SqlWriteTx, create_contact, create_contacts, tenant_for_key,
    update_contact_if_revision, update_contacts_if_revision,
};
use crate::store::{ChangeBell, StoreResult, key_is_tenants};

/// What a batch's transaction needs of the store.
#[derive(Clone)]
pub(super) struct Writer {
    /// Where keys are checked, off the write lock.
    pub reader: Conns,
    /// The single writer.
    pub writer: Conns,
    pub bell: ChangeBell,
}

impl Writer {
    /// A transaction of `tenant`'s, once `key_hash` (when given) is found live and
    /// the tenant's.
    async fn begin(
        &self,
        tenant: &TenantId,
        key_hash: Option<&[u8; 32]>,
    ) -> StoreResult<SqlWriteTx<SqliteTx>> {
        if let Some(key_hash) = key_hash {
            key_is_tenants(tenant_for_key(&self.reader, key_hash).await?, tenant)?;
        }
        let tx = SqliteTx::begin(&self.writer).await?;
        Ok(SqlWriteTx::new(tx, tenant).ringing(&self.bell))
    }
}

/// CreateContact.
pub(super) struct Creates(pub Writer);

#[async_trait]
impl BatchWriter for Creates {
    type Row = NewContact;

    async fn write_one(
        &self,
        tenant: &TenantId,
        key_hash: Option<&[u8; 32]>,
        row: &NewContact,
    ) -> Written {
        let tx = self.0.begin(tenant, key_hash).await?;
        create_contact(tx, &row.contact, &row.created).await
    }

    async fn write_many(&self, line: &Line, rows: &[NewContact]) -> StoreResult<HashSet<String>> {
        let tx = self.0.begin(&line.tenant, line.key_hash.as_ref()).await?;
        create_contacts(tx, rows).await
    }
}

/// UpdateContact's compare-and-set (its key was checked by its read).
pub(super) struct Updates(pub Writer);

#[async_trait]
impl BatchWriter for Updates {
    type Row = Revised;

    async fn write_one(
        &self,
        tenant: &TenantId,
        key_hash: Option<&[u8; 32]>,
        row: &Revised,
    ) -> Written {
        let tx = self.0.begin(tenant, key_hash).await?;
        update_contact_if_revision(tx, &row.after, &row.entry, row.revision).await
    }

    async fn write_many(&self, line: &Line, rows: &[Revised]) -> StoreResult<HashSet<String>> {
        let tx = self.0.begin(&line.tenant, line.key_hash.as_ref()).await?;
        update_contacts_if_revision(tx, rows).await
    }
}
