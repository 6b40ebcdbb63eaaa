//! API-key authentication: `authorization: Bearer kr_...` names the tenant.

use tonic::metadata::MetadataMap;

use super::ApiError;
use crate::domain::{TenantId, hash_api_key};
use crate::store::DynStore;

const MISSING: &str = "missing api key: send `authorization: Bearer <key>`";
const INVALID: &str = "invalid or revoked api key";

/// Longest header we bother hashing; real keys are 46 characters.
const MAX_KEY_LEN: usize = 256;

#[derive(Clone)]
pub struct Authenticator {
    store: DynStore,
}

impl Authenticator {
    pub fn new(store: DynStore) -> Self {
        Self { store }
    }

    /// The tenant of the request's key. The key is hashed first and looked up by
    /// its hash, so no comparison ever runs on the secret itself (and timing reveals
    /// nothing about it). Revocation takes effect on the next call: there is no cache.
    pub async fn tenant(&self, metadata: &MetadataMap) -> Result<TenantId, ApiError> {
        let header = metadata
            .get("authorization")
            .ok_or(ApiError::Unauthenticated(MISSING))?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::Unauthenticated(INVALID))?;
        let key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(ApiError::Unauthenticated(MISSING))?
            .trim();
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(ApiError::Unauthenticated(INVALID));
        }
        self.store
            .tenant_for_key(&hash_api_key(key))
            .await?
            .ok_or(ApiError::Unauthenticated(INVALID))
    }
}
