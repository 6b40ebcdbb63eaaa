//! Tenants and API keys on SQLite.

use async_trait::async_trait;
use sqlx::Row;

use super::{SqliteStore, classify, time};
use crate::domain::TenantId;
use crate::store::{ApiKeyRecord, KeyStore, StoreResult};

#[async_trait]
impl KeyStore for SqliteStore {
    async fn ensure_tenant(&self, tenant: &TenantId) -> StoreResult<bool> {
        let result = sqlx::query(
            "INSERT INTO tenants (tenant_id, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(crate::domain::now().timestamp_micros())
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        Ok(result.rows_affected() == 1)
    }

    async fn insert_api_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        key_hash: &[u8; 32],
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO api_keys (key_id, tenant_id, key_hash, created_at) VALUES (?1, ?2, ?3, ?4)")
            .bind(key_id)
            .bind(tenant.as_str())
            .bind(&key_hash[..])
            .bind(crate::domain::now().timestamp_micros())
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn tenant_for_key(&self, key_hash: &[u8; 32]) -> StoreResult<Option<TenantId>> {
        let tenant: Option<String> = sqlx::query_scalar(
            "SELECT tenant_id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
        )
        .bind(&key_hash[..])
        .fetch_optional(&self.reader)
        .await
        .map_err(classify)?;
        Ok(tenant.map(TenantId::from_trusted))
    }

    async fn list_api_keys(&self, tenant: Option<&TenantId>) -> StoreResult<Vec<ApiKeyRecord>> {
        let rows = sqlx::query(
            "SELECT key_id, tenant_id, created_at, revoked_at FROM api_keys \
             WHERE ?1 IS NULL OR tenant_id = ?1 ORDER BY tenant_id, created_at, key_id",
        )
        .bind(tenant.map(TenantId::as_str))
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            let revoked: Option<i64> = row.try_get("revoked_at").map_err(classify)?;
            keys.push(ApiKeyRecord {
                key_id: row.try_get("key_id").map_err(classify)?,
                tenant: TenantId::from_trusted(row.try_get("tenant_id").map_err(classify)?),
                created_at: time(row.try_get("created_at").map_err(classify)?)?,
                revoked_at: revoked.map(time).transpose()?,
            });
        }
        Ok(keys)
    }

    async fn revoke_api_key(&self, key_id: &str) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1 AND revoked_at IS NULL",
        )
        .bind(key_id)
        .bind(crate::domain::now().timestamp_micros())
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        Ok(result.rows_affected() == 1)
    }
}
