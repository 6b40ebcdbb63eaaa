//! Tenants and API keys on PostgreSQL.

use async_trait::async_trait;
use sqlx::Row;

use super::{PgStore, classify, sql};
use crate::domain::TenantId;
use crate::store::{ApiKeyRecord, KeyStore, StoreResult};

#[async_trait]
impl KeyStore for PgStore {
    async fn ensure_tenant(&self, tenant: &TenantId) -> StoreResult<bool> {
        let mut conn = self.conns.get().await?;
        let result =
            sqlx::query("INSERT INTO tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(tenant.as_str())
                .execute(&mut *conn)
                .await;
        let result = conn.finish(result)?;
        Ok(result.rows_affected() == 1)
    }

    async fn insert_api_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        key_hash: &[u8; 32],
    ) -> StoreResult<()> {
        let mut conn = self.conns.get().await?;
        let done =
            sqlx::query("INSERT INTO api_keys (key_id, tenant_id, key_hash) VALUES ($1, $2, $3)")
                .bind(key_id)
                .bind(tenant.as_str())
                .bind(&key_hash[..])
                .execute(&mut *conn)
                .await;
        conn.finish(done)?;
        Ok(())
    }

    async fn tenant_for_key(&self, key_hash: &[u8; 32]) -> StoreResult<Option<TenantId>> {
        let mut conn = self.conns.get().await?;
        let tenant = sqlx::query_scalar(sql::TENANT_FOR_KEY)
            .bind(&key_hash[..])
            .fetch_optional(&mut *conn)
            .await;
        let tenant: Option<String> = conn.finish(tenant)?;
        Ok(tenant.map(TenantId::from_trusted))
    }

    async fn list_api_keys(&self, tenant: Option<&TenantId>) -> StoreResult<Vec<ApiKeyRecord>> {
        let mut conn = self.conns.get().await?;
        let rows = sqlx::query(
            "SELECT key_id, tenant_id, created_at, revoked_at FROM api_keys \
             WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY tenant_id, created_at, key_id",
        )
        .bind(tenant.map(TenantId::as_str))
        .fetch_all(&mut *conn)
        .await;
        let rows = conn.finish(rows)?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            keys.push(ApiKeyRecord {
                key_id: row.try_get("key_id").map_err(classify)?,
                tenant: TenantId::from_trusted(row.try_get("tenant_id").map_err(classify)?),
                created_at: row.try_get("created_at").map_err(classify)?,
                revoked_at: row.try_get("revoked_at").map_err(classify)?,
            });
        }
        Ok(keys)
    }

    async fn revoke_api_key(&self, key_id: &str) -> StoreResult<bool> {
        let mut conn = self.conns.get().await?;
        let result = sqlx::query(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL",
        )
        .bind(key_id)
        .execute(&mut *conn)
        .await;
        let result = conn.finish(result)?;
        Ok(result.rows_affected() == 1)
    }
}
