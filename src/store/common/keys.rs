//! Tenants and API keys, the same on both backends.

use async_trait::async_trait;

use super::rows::{Record, column};
use super::{ConnSource, SqlStore, SqlText, Stmt};
use crate::domain::TenantId;
use crate::store::{ApiKeyRecord, KeyStore, StoreError, StoreResult};

/// The tenant of a live key.
const TENANT_FOR_KEY: &str =
    "SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL";

#[async_trait]
impl<S: SqlStore> KeyStore for S {
    async fn ensure_tenant(&self, tenant: &TenantId) -> StoreResult<bool> {
        let sql = SqlText::new("INSERT INTO tenants (tenant_id, created_at) VALUES (?, ")
            .now::<S::Db>()
            .push(") ON CONFLICT DO NOTHING");
        let stmt = Stmt::<S::Db>::new(sql.as_str())
            .bind(tenant.as_str())
            .bind_now();
        Ok(self.writes().execute(stmt).await? == 1)
    }

    async fn insert_api_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        key_hash: &[u8; 32],
    ) -> StoreResult<()> {
        let sql = SqlText::new(
            "INSERT INTO api_keys (key_id, tenant_id, key_hash, created_at) VALUES (?, ?, ?, ",
        )
        .now::<S::Db>()
        .push(")");
        let stmt = Stmt::<S::Db>::new(sql.as_str())
            .bind(key_id)
            .bind(tenant.as_str())
            .bind(&key_hash[..])
            .bind_now();
        self.writes().execute(stmt).await?;
        Ok(())
    }

    async fn tenant_for_key(&self, key_hash: &[u8; 32]) -> StoreResult<Option<TenantId>> {
        tenant_for_key(self.reads(), key_hash).await
    }

    async fn cursor_secret(&self) -> StoreResult<[u8; 32]> {
        let stmt =
            Stmt::<S::Db>::new("SELECT secret FROM deployment_secrets WHERE name = 'cursor'");
        let row =
            self.reads().fetch_optional(stmt).await?.ok_or_else(|| {
                StoreError::internal("no cursor secret: are the migrations applied?")
            })?;
        let secret: Vec<u8> = column::<S::Db, Vec<u8>>(&row, "secret")?;
        secret
            .try_into()
            .map_err(|_| StoreError::internal("the cursor secret is not 32 bytes"))
    }

    async fn list_api_keys(&self, tenant: Option<&TenantId>) -> StoreResult<Vec<ApiKeyRecord>> {
        let mut sql = SqlText::new(&format!("SELECT {} FROM api_keys", ApiKeyRecord::COLUMNS));
        if tenant.is_some() {
            sql = sql.push(" WHERE tenant_id = ?");
        }
        let sql = sql.push(" ORDER BY tenant_id, created_at, key_id");
        let mut stmt = Stmt::<S::Db>::new(sql.as_str());
        if let Some(tenant) = tenant {
            stmt = stmt.bind(tenant.as_str());
        }
        let rows = self.reads().fetch_all(stmt).await?;
        rows.iter().map(ApiKeyRecord::from_row::<S::Db>).collect()
    }

    async fn revoke_api_key(&self, key_id: &str) -> StoreResult<bool> {
        let sql = SqlText::new("UPDATE api_keys SET revoked_at = ")
            .now::<S::Db>()
            .push(" WHERE key_id = ? AND revoked_at IS NULL");
        // The time comes first in the text, so it is bound first.
        let stmt = Stmt::<S::Db>::new(sql.as_str()).bind_now().bind(key_id);
        Ok(self.writes().execute(stmt).await? == 1)
    }
}

/// `KeyStore::tenant_for_key`, read with `conns`.
pub(crate) async fn tenant_for_key<C: ConnSource>(
    conns: &C,
    key_hash: &[u8; 32],
) -> StoreResult<Option<TenantId>> {
    let stmt = Stmt::<C::Db>::new(TENANT_FOR_KEY).bind(&key_hash[..]);
    let Some(row) = conns.fetch_optional(stmt).await? else {
        return Ok(None);
    };
    column::<C::Db, String>(&row, "tenant_id").map(|id| Some(TenantId::from_trusted(id)))
}

#[cfg(test)]
mod tests {
    /// The benchmark's UpsertContact baseline runs `postgres::sql`'s copy.
    #[test]
    fn the_benchmarks_copy_of_the_key_lookup_is_the_stores() {
        assert_eq!(
            super::TENANT_FOR_KEY,
            crate::store::postgres::sql::TENANT_FOR_KEY
        );
        assert_eq!(
            super::TENANT_FOR_KEY,
            crate::store::sqlite::sql::TENANT_FOR_KEY
        );
    }
}
