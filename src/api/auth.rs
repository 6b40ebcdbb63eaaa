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
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tonic::Extensions;
use tonic::metadata::MetadataMap;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::{ApiError, RateLimiter};
use crate::domain::{TenantId, hash_api_key};
use crate::store::{Access, DynStore, StoreError};

const MISSING: &str = "missing api key: send `authorization: Bearer <key>`";
const INVALID: &str = "invalid or revoked api key";

/// Longest header we bother hashing; real keys are 46 characters.
const MAX_KEY_LEN: usize = 256;

/// Key hashes remembered (live ones with their tenant, rejected ones with the time
/// they were rejected) before a cache starts over; far more keys than a deployment
/// has, so only a flood of distinct keys ever clears one.
const MAX_CACHED_KEYS: usize = 10_000;

/// How long a rejected key is refused without asking the database again. A revoked
/// key stays revoked; an unknown one is a guess (keys are random, none is issued to
/// match a hash tried before).
const REJECTED_KEY_TTL: Duration = Duration::from_secs(300);

/// What a call presents: its metadata (the key) and the peer it came from.
pub(crate) struct Credentials<'a> {
    pub(super) metadata: &'a MetadataMap,
    peer: Option<IpAddr>,
    /// Only while spans are exported.
    pub(super) path: Option<crate::telemetry::RpcPath>,
}

impl<'a> Credentials<'a> {
    pub fn new(metadata: &'a MetadataMap, extensions: &Extensions) -> Self {
        let peer = extensions
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .or_else(|| {
                extensions
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(|info| info.get_ref().remote_addr())
            })
            .map(|addr| addr.ip());
        let path = crate::telemetry::exporting()
            .then(|| extensions.get::<crate::telemetry::RpcPath>().cloned())
            .flatten();
        Self {
            metadata,
            peer,
            path,
        }
    }
}

/// Authenticates each call and admits it under its tenant's rate limit, doing as
/// little database work as it can for calls it will refuse: a tenant over its limit
/// is refused before any lookup, a key rejected before is refused from memory, and
/// lookups of keys not seen live are budgeted per peer address, so a flood of
/// rejected or unknown-key calls cannot load the database for other tenants.
#[derive(Clone)]
pub struct AccessControl {
    store: DynStore,
    /// Tenant of each key hash seen live. Only ever filled from a successful lookup,
    /// and never trusted for liveness: liveness is checked with the call.
    tenants: Arc<RwLock<HashMap<[u8; 32], TenantId>>>,
    /// Key hashes that matched no live key, and when.
    rejected: Arc<Mutex<HashMap<[u8; 32], Instant>>>,
    /// Per tenant, off unless configured.
    limiter: Option<Arc<RateLimiter<TenantId>>>,
    /// Per peer address: lookups of keys this server has not seen live.
    unknown_key_lookups: Arc<RateLimiter<IpAddr>>,
}

impl AccessControl {
    /// `unknown_key_lookups` budgets, per peer, the database lookups of keys not
    /// seen live (a valid key costs one, once; a flood of guesses costs its peer).
    pub fn new(
        store: DynStore,
        limiter: Option<Arc<RateLimiter<TenantId>>>,
        unknown_key_lookups: Arc<RateLimiter<IpAddr>>,
    ) -> Self {
        Self {
            store,
            tenants: Arc::default(),
            rejected: Arc::default(),
            limiter,
            unknown_key_lookups,
        }
    }

    /// The caller's tenant and key, once its key is found live and its bucket has a
    /// token; a call that runs on (a stream) checks the key again with `recheck`.
    /// The key is hashed first and looked up by its hash, so no comparison ever runs
    /// on the secret itself (and timing reveals nothing about it).
    pub(crate) async fn authorize(
        &self,
        credentials: &Credentials<'_>,
    ) -> Result<Access, ApiError> {
        let key_hash = key_hash(credentials.metadata)?;
        let Some(tenant) = self.cached_tenant(&key_hash) else {
            let tenant = self.look_up_new_key(&key_hash, credentials.peer).await?;
            self.take_token(&tenant)?;
            return Ok(Access::with_key(tenant, key_hash));
        };
        // Over its limit, a tenant is refused before the database is asked anything.
        self.take_token(&tenant)?;
        match self.store.tenant_for_key(&key_hash).await? {
            Some(live) if live == tenant => Ok(Access::with_key(tenant, key_hash)),
            _ => Err(self.reject(&key_hash)),
        }
    }

    /// Checks again that the key of a call still running is live, for a stream that
    /// outlasts a revocation; a key found revoked is remembered as rejected, as
    /// `authorize` would.
    pub(crate) async fn recheck(&self, access: &Access) -> Result<(), ApiError> {
        let Some(key_hash) = &access.key_hash else {
            return Ok(());
        };
        match crate::store::check_key(self.store.as_ref(), access).await {
            Ok(()) => Ok(()),
            Err(StoreError::KeyRejected) => Err(self.reject(key_hash)),
            Err(err) => Err(err.into()),
        }
    }

    /// The caller's `Access` with its key, for a call whose store statement checks
    /// the key; answer the call through `conclude`. A key never seen live is looked
    /// up here, so unknown keys are refused before any work. A tenant over its limit
    /// is refused with no database work at all (a key revoked meanwhile hears so on
    /// its first call within the limit).
    pub(crate) async fn authorize_in_store(
        &self,
        credentials: &Credentials<'_>,
    ) -> Result<Access, ApiError> {
        let key_hash = key_hash(credentials.metadata)?;
        let tenant = match self.cached_tenant(&key_hash) {
            Some(tenant) => tenant,
            None => self.look_up_new_key(&key_hash, credentials.peer).await?,
        };
        self.take_token(&tenant)?;
        Ok(Access::with_key(tenant, key_hash))
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
        let Some(key_hash) = &access.key_hash else {
            return outcome;
        };
        match outcome {
            Ok(value) => Ok(value),
            Err(ApiError::Store(StoreError::KeyRejected)) => Err(self.reject(key_hash)),
            Err(err @ ApiError::Store(_)) => Err(err),
            Err(err) => match crate::store::check_key(self.store.as_ref(), access).await {
                Ok(()) => Err(err),
                Err(StoreError::KeyRejected) => Err(self.reject(key_hash)),
                Err(store) => Err(store.into()),
            },
        }
    }

    pub(crate) fn take_token(&self, tenant: &TenantId) -> Result<(), ApiError> {
        match &self.limiter {
            Some(limiter) => limiter.check(tenant),
            None => Ok(()),
        }
    }

    fn cached_tenant(&self, key_hash: &[u8; 32]) -> Option<TenantId> {
        self.tenants
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(key_hash)
            .cloned()
    }

    /// The tenant of a key not seen live: refused from memory if it was rejected
    /// lately, else looked up within its peer's budget.
    async fn look_up_new_key(
        &self,
        key_hash: &[u8; 32],
        peer: Option<IpAddr>,
    ) -> Result<TenantId, ApiError> {
        if self.recently_rejected(key_hash) {
            return Err(ApiError::Unauthenticated(INVALID));
        }
        // Calls without a peer address (none over TCP) share one budget.
        let peer = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        self.unknown_key_lookups.check(&peer)?;
        crate::metrics::record_key_lookup();
        let Some(tenant) = self.store.tenant_for_key(key_hash).await? else {
            return Err(self.reject(key_hash));
        };
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

    fn recently_rejected(&self, key_hash: &[u8; 32]) -> bool {
        let rejected = self
            .rejected
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        rejected
            .get(key_hash)
            .is_some_and(|at| at.elapsed() < REJECTED_KEY_TTL)
    }

    /// Forgets a key's tenant and remembers it as rejected: its next calls are
    /// refused from memory and cannot draw on its tenant's rate limit.
    fn reject(&self, key_hash: &[u8; 32]) -> ApiError {
        self.tenants
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(key_hash);
        let mut rejected = self
            .rejected
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if rejected.len() >= MAX_CACHED_KEYS {
            rejected.retain(|_, at| at.elapsed() < REJECTED_KEY_TTL);
            if rejected.len() >= MAX_CACHED_KEYS {
                rejected.clear();
            }
        }
        rejected.insert(*key_hash, Instant::now());
        ApiError::Unauthenticated(INVALID)
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
