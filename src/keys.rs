//! API key administration, shared by the CLI, first-start bootstrap and tests.

use crate::domain::{NewApiKey, TenantId};
use crate::store::{Store, StoreError};

/// Creates the tenant if needed and a new key for it; returns the secret, which is
/// never stored and cannot be shown again.
pub async fn create(store: &dyn Store, tenant: &TenantId) -> Result<(String, String), StoreError> {
    store.ensure_tenant(tenant).await?;
    let key = NewApiKey::generate().map_err(|err| StoreError::internal(err.to_string()))?;
    store.insert_api_key(tenant, &key.key_id, &key.hash).await?;
    Ok((key.key_id, key.secret))
}

/// Creates the tenant and its first key only if the tenant does not exist yet, so a
/// deployment that keeps `--bootstrap-tenant` set mints no key on later starts (of
/// any replica: the tenant's insert decides which start is the first). `None` when
/// the tenant existed.
pub async fn create_first(
    store: &dyn Store,
    tenant: &TenantId,
) -> Result<Option<(String, String)>, StoreError> {
    if !store.ensure_tenant(tenant).await? {
        return Ok(None);
    }
    let key = NewApiKey::generate().map_err(|err| StoreError::internal(err.to_string()))?;
    store.insert_api_key(tenant, &key.key_id, &key.hash).await?;
    Ok(Some((key.key_id, key.secret)))
}
