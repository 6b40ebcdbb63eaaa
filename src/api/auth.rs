//! API-key authentication: `authorization: Bearer kr_...` names the tenant.
//!
//! Every call checks that its key is live, so a revocation applies to the next call.
//! Most calls look the key up before their handler runs. The hot unary calls
//! (get, get by email, create, update) instead take a `KeyClaim`: the key's tenant,
//! from a cache of keys seen live (the tenant a key was issued to never changes), and
//! the store checks the key in the same statement that reads or writes the contact.
//! That keeps the check on every call without a round trip of its own.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tonic::metadata::MetadataMap;

use super::ApiError;
use crate::domain::{TenantId, hash_api_key};
use crate::store::{Checked, DynStore, KeyClaim};

const MISSING: &str = "missing api key: send `authorization: Bearer <key>`";
const INVALID: &str = "invalid or revoked api key";

/// Longest header we bother hashing; real keys are 46 characters.
const MAX_KEY_LEN: usize = 256;

/// Key tenants remembered before the cache starts over; far more keys than a
/// deployment has, so only a flood of distinct live keys ever clears it.
const MAX_CACHED_KEYS: usize = 10_000;

#[derive(Clone)]
pub struct Authenticator {
    store: DynStore,
    /// Tenant of each key hash seen live. Only ever filled from a successful lookup,
    /// and never trusted for liveness: a claim made from it is checked by the store.
    tenants: Arc<RwLock<HashMap<[u8; 32], TenantId>>>,
}

impl Authenticator {
    pub fn new(store: DynStore) -> Self {
        Self {
            store,
            tenants: Arc::default(),
        }
    }

    /// The tenant of the request's live key. The key is hashed first and looked up
    /// by its hash, so no comparison ever runs on the secret itself (and timing
    /// reveals nothing about it).
    pub async fn tenant(&self, metadata: &MetadataMap) -> Result<TenantId, ApiError> {
        let key_hash = key_hash(metadata)?;
        self.lookup(&key_hash).await
    }

    /// The request's key and its tenant, for a call whose store statement checks
    /// that the key is live (a `*_checked` store method). A key never seen live is
    /// looked up here, so unknown keys are refused before any work.
    pub async fn claim(&self, metadata: &MetadataMap) -> Result<KeyClaim, ApiError> {
        let key_hash = key_hash(metadata)?;
        let cached = self
            .tenants
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(&key_hash)
            .cloned();
        let tenant = match cached {
            Some(tenant) => tenant,
            None => self.lookup(&key_hash).await?,
        };
        Ok(KeyClaim { tenant, key_hash })
    }

    /// Succeeds only if the claim's key is live now.
    pub async fn require_live(&self, claim: &KeyClaim) -> Result<(), ApiError> {
        if self.store.key_is_live(claim).await? {
            return Ok(());
        }
        self.forget(claim);
        Err(ApiError::Unauthenticated(INVALID))
    }

    /// The caller's answer to a call made under `claim`. An error is only reported
    /// once the key is known live, so a revoked key hears UNAUTHENTICATED whatever
    /// else was wrong with its call, as it would with a lookup first.
    pub async fn settle<T>(
        &self,
        claim: &KeyClaim,
        outcome: Result<Checked<T>, ApiError>,
    ) -> Result<T, ApiError> {
        match outcome {
            Ok(Checked::Live(value)) => Ok(value),
            Ok(Checked::KeyRejected) => {
                self.forget(claim);
                Err(ApiError::Unauthenticated(INVALID))
            }
            Err(err) => {
                self.require_live(claim).await?;
                Err(err)
            }
        }
    }

    async fn lookup(&self, key_hash: &[u8; 32]) -> Result<TenantId, ApiError> {
        let tenant = self
            .store
            .tenant_for_key(key_hash)
            .await?
            .ok_or(ApiError::Unauthenticated(INVALID))?;
        let mut tenants = self
            .tenants
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if tenants.len() >= MAX_CACHED_KEYS {
            tenants.clear();
        }
        tenants.insert(*key_hash, tenant.clone());
        Ok(tenant)
    }

    /// A rejected key goes back to a full lookup on its next call, so it cannot
    /// draw on its tenant's rate limit.
    fn forget(&self, claim: &KeyClaim) {
        self.tenants
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(&claim.key_hash);
    }
}

/// SHA-256 of the bearer key; missing or malformed headers are refused here.
fn key_hash(metadata: &MetadataMap) -> Result<[u8; 32], ApiError> {
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
    Ok(hash_api_key(key))
}
