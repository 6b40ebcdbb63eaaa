//! API-key authentication and admission: `authorization: Bearer kr_...` names the
//! tenant, and the tenant's rate limit admits the call.
//!
//! Every call checks that its key is live, so a revocation applies to the next call.
//! Most calls look the key up before their handler runs. The hot unary calls (get,
//! get by email, create, update) instead pass the store an `Access` carrying the
//! key: its tenant comes from a cache of keys seen live (the tenant a key was issued
//! to never changes), and the store checks the key in the same statement that reads
//! or writes the contact, so the check costs no round trip of its own.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tonic::metadata::MetadataMap;

use super::{ApiError, RateLimiter};
use crate::domain::{TenantId, hash_api_key};
use crate::store::{Access, DynStore, StoreError};

const MISSING: &str = "missing api key: send `authorization: Bearer <key>`";
const INVALID: &str = "invalid or revoked api key";

/// Longest header we bother hashing; real keys are 46 characters.
const MAX_KEY_LEN: usize = 256;

/// Key tenants remembered before the cache starts over; far more keys than a
/// deployment has, so only a flood of distinct live keys ever clears it.
const MAX_CACHED_KEYS: usize = 10_000;

/// Authenticates each call and admits it under its tenant's rate limit.
#[derive(Clone)]
pub struct AccessControl {
    store: DynStore,
    /// Tenant of each key hash seen live. Only ever filled from a successful lookup,
    /// and never trusted for liveness: an `Access` made from it is checked by the store.
    tenants: Arc<RwLock<HashMap<[u8; 32], TenantId>>>,
    limiter: Option<Arc<RateLimiter>>,
}

impl AccessControl {
    pub fn new(store: DynStore) -> Self {
        Self {
            store,
            tenants: Arc::default(),
            limiter: None,
        }
    }

    /// Shares `limiter` (one per server, so both services draw from the same buckets).
    pub fn with_rate_limit(mut self, limiter: Option<Arc<RateLimiter>>) -> Self {
        self.limiter = limiter;
        self
    }

    /// The caller's tenant, once its key is found live and its bucket has a token.
    /// The key is hashed first and looked up by its hash, so no comparison ever runs
    /// on the secret itself (and timing reveals nothing about it).
    pub async fn authorize(&self, metadata: &MetadataMap) -> Result<TenantId, ApiError> {
        let key_hash = key_hash(metadata)?;
        let tenant = self.lookup(&key_hash).await?;
        self.take_token(&tenant)?;
        Ok(tenant)
    }

    /// The caller's `Access` with its key, for a call whose store statement checks
    /// the key; answer the call through `conclude`. A key never seen live is looked
    /// up here, so unknown keys are refused before any work.
    pub async fn authorize_in_store(&self, metadata: &MetadataMap) -> Result<Access, ApiError> {
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
        let access = Access::with_key(tenant, key_hash);
        if let Err(limited) = self.take_token(&access.tenant) {
            // A revoked key hears UNAUTHENTICATED, not a rate limit.
            self.require_live(&access).await?;
            return Err(limited);
        }
        Ok(access)
    }

    /// The answer to a call made under `access`. A store error other than a
    /// rejected key comes from a statement that found the key live; any other error
    /// came before the store was asked, so the key is checked then: a revoked key
    /// hears UNAUTHENTICATED whatever else was wrong with its call.
    pub async fn conclude<T>(
        &self,
        access: &Access,
        outcome: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        match outcome {
            Ok(value) => Ok(value),
            Err(ApiError::Store(StoreError::KeyRejected)) => {
                self.forget(access);
                Err(ApiError::Unauthenticated(INVALID))
            }
            Err(err @ ApiError::Store(_)) => Err(err),
            Err(err) => {
                self.require_live(access).await?;
                Err(err)
            }
        }
    }

    fn take_token(&self, tenant: &TenantId) -> Result<(), ApiError> {
        match &self.limiter {
            Some(limiter) => limiter.check(tenant),
            None => Ok(()),
        }
    }

    /// Succeeds only if the access's key is live now.
    async fn require_live(&self, access: &Access) -> Result<(), ApiError> {
        match crate::store::check_key(self.store.as_ref(), access).await {
            Ok(()) => Ok(()),
            Err(StoreError::KeyRejected) => {
                self.forget(access);
                Err(ApiError::Unauthenticated(INVALID))
            }
            Err(err) => Err(err.into()),
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
    fn forget(&self, access: &Access) {
        if let Some(key_hash) = &access.key_hash {
            self.tenants
                .write()
                .unwrap_or_else(|poison| poison.into_inner())
                .remove(key_hash);
        }
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
