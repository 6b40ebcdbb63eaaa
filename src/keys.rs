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
