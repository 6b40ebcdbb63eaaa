//! CreateContact on SQLite, as `store::coalesce` sends it: alone, one transaction
//! as before; queued behind the writer, a line's creates in one transaction of the
//! import's batch statements (`common::batch`), so one `BEGIN IMMEDIATE`, one
//! commit and one key check serve them all. Every statement is an exchange with the
//! writer connection's worker thread, made while holding the database's write lock:
//! a batch makes five whatever its size, a create alone five (BENCHMARKS.md, "SQLite
//! creates coalesced").

use std::collections::HashSet;

use async_trait::async_trait;

use super::conns::Conns;
use super::write_tx::SqliteTx;
use crate::domain::TenantId;
use crate::store::coalesce::{CreateWriter, Line, Written};
use crate::store::common::{
    NewContact, SqlWriteTx, create_contact, create_contacts, tenant_for_key,
};
use crate::store::{ChangeBell, StoreResult, key_is_tenants};

pub(super) struct SqliteCreates {
    /// Where keys are checked, off the write lock.
    pub reader: Conns,
    /// The single writer.
    pub writer: Conns,
    pub bell: ChangeBell,
}

impl SqliteCreates {
    async fn check_key(&self, tenant: &TenantId, key_hash: Option<&[u8; 32]>) -> StoreResult<()> {
        match key_hash {
            Some(key_hash) => key_is_tenants(tenant_for_key(&self.reader, key_hash).await?, tenant),
            None => Ok(()),
        }
    }

    async fn begin(&self, tenant: &TenantId) -> StoreResult<SqlWriteTx<SqliteTx>> {
        let tx = SqliteTx::begin(&self.writer).await?;
        Ok(SqlWriteTx::new(tx, tenant).ringing(&self.bell))
    }
}

#[async_trait]
impl CreateWriter for SqliteCreates {
    type Row = NewContact;

    async fn create_one(
        &self,
        tenant: &TenantId,
        key_hash: Option<&[u8; 32]>,
        row: &NewContact,
    ) -> Written {
        self.check_key(tenant, key_hash).await?;
        create_contact(self.begin(tenant).await?, &row.contact, &row.created).await
    }

    async fn create_many(&self, line: &Line, rows: &[NewContact]) -> StoreResult<HashSet<String>> {
        self.check_key(&line.tenant, Some(&line.key_hash)).await?;
        create_contacts(self.begin(&line.tenant).await?, rows).await
    }
}
