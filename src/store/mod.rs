//! Storage: one trait, one implementation per backend, chosen from the URL scheme.
//! Nothing above this module knows which backend runs.

mod error;
mod keyed;
mod migrations;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    Contact, ContactId, ContactQuery, ContactUpdate, ContactView, Email, Enrolment,
    EnrolmentChange, Idempotency, Membership, MembershipChange, MembershipOutcome, NewContact,
    NewEnrolment, NewEvent, NewScheduledSend, NewSend, ScheduledSend, SendEngagement, SendRecord,
    SendStatusChange, TenantId, TimeKey, TimelineEntry, TimelineQuery, TrackedEvent,
};

pub use error::StoreError;
pub use keyed::{Checked, KeyClaim};

pub type StoreResult<T> = Result<T, StoreError>;

/// An API key as stored: only the SHA-256 of the secret is kept.
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub tenant: TenantId,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Everything the service needs from a database.
pub trait Store: ContactStore + ActivityStore {}

impl<T: ContactStore + ActivityStore> Store for T {}

/// Tenants, keys, contacts and their timeline. Every method that touches contact
/// data takes the caller's tenant and never reads outside it.
#[async_trait]
pub trait ContactStore: Send + Sync + 'static {
    /// Cheap round trip, for health checks.
    async fn ping(&self) -> StoreResult<()>;
    /// Connections of the pool(s) right now, for metrics.
    fn pool_usage(&self) -> PoolUsage;
    /// Whether a long list stream should read several pages per query. It saves the
    /// round trips between queries, during which a database server idles; an embedded
    /// store has none, and each of its reader threads would keep a heap as large as
    /// the largest query it decoded.
    fn multi_page_queries(&self) -> bool {
        false
    }

    /// Creates the tenant unless it exists; returns whether it was created.
    async fn ensure_tenant(&self, tenant: &TenantId) -> StoreResult<bool>;
    async fn insert_api_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        key_hash: &[u8; 32],
    ) -> StoreResult<()>;
    /// The tenant of a live (unrevoked) key with this hash.
    async fn tenant_for_key(&self, key_hash: &[u8; 32]) -> StoreResult<Option<TenantId>>;
    async fn list_api_keys(&self, tenant: Option<&TenantId>) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Returns false when no live key has this id.
    async fn revoke_api_key(&self, key_id: &str) -> StoreResult<bool>;

    /// Fails with `Conflict` when the email is taken in the tenant.
    async fn create_contact(&self, tenant: &TenantId, new: NewContact) -> StoreResult<Contact>;
    async fn get_contact(&self, tenant: &TenantId, id: &ContactId) -> StoreResult<ContactView>;
    async fn get_contact_by_email(
        &self,
        tenant: &TenantId,
        email: &Email,
    ) -> StoreResult<Option<ContactView>>;
    /// One keyset page in id order, after `after` when given.
    async fn list_contacts(
        &self,
        tenant: &TenantId,
        query: &ContactQuery,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ContactView>>;
    /// Applies the update atomically, with its timeline entry, in one transaction.
    async fn update_contact(
        &self,
        tenant: &TenantId,
        id: &ContactId,
        update: ContactUpdate,
    ) -> StoreResult<Contact>;
    /// Erases the contact and everything recorded about it, in one transaction.
    async fn delete_contact(&self, tenant: &TenantId, id: &ContactId) -> StoreResult<()>;

    /// `NotFound` unless the contact exists in the tenant.
    async fn ensure_contact(&self, tenant: &TenantId, id: &ContactId) -> StoreResult<()>;
    /// One keyset page of the contact's timeline.
    async fn list_timeline(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        query: &TimelineQuery,
        after: Option<&TimeKey>,
        limit: u32,
    ) -> StoreResult<Vec<TimelineEntry>>;

    // The hot calls under a `KeyClaim`. A backend where a lookup costs a round trip
    // folds the key check into the call's own statement; the defaults check it first.

    /// Whether the claim's key is live and its tenant's.
    async fn key_is_live(&self, claim: &KeyClaim) -> StoreResult<bool> {
        Ok(self.tenant_for_key(&claim.key_hash).await?.as_ref() == Some(&claim.tenant))
    }

    async fn get_contact_checked(
        &self,
        claim: &KeyClaim,
        id: &ContactId,
    ) -> StoreResult<Checked<ContactView>> {
        if !self.key_is_live(claim).await? {
            return Ok(Checked::KeyRejected);
        }
        self.get_contact(&claim.tenant, id).await.map(Checked::Live)
    }

    async fn get_contact_by_email_checked(
        &self,
        claim: &KeyClaim,
        email: &Email,
    ) -> StoreResult<Checked<Option<ContactView>>> {
        if !self.key_is_live(claim).await? {
            return Ok(Checked::KeyRejected);
        }
        self.get_contact_by_email(&claim.tenant, email)
            .await
            .map(Checked::Live)
    }

    async fn create_contact_checked(
        &self,
        claim: &KeyClaim,
        new: NewContact,
    ) -> StoreResult<Checked<Contact>> {
        if !self.key_is_live(claim).await? {
            return Ok(Checked::KeyRejected);
        }
        self.create_contact(&claim.tenant, new)
            .await
            .map(Checked::Live)
    }

    async fn update_contact_checked(
        &self,
        claim: &KeyClaim,
        id: &ContactId,
        update: ContactUpdate,
    ) -> StoreResult<Checked<Contact>> {
        if !self.key_is_live(claim).await? {
            return Ok(Checked::KeyRejected);
        }
        self.update_contact(&claim.tenant, id, update)
            .await
            .map(Checked::Live)
    }
}

/// Records written by the ingestion API, and their reads. Each write is one
/// transaction with its timeline entries; with `Some(Idempotency)` a retry returns
/// the first result and writes nothing.
#[async_trait]
pub trait ActivityStore: Send + Sync + 'static {
    async fn record_send(
        &self,
        tenant: &TenantId,
        new: NewSend,
        idem: Option<Idempotency>,
    ) -> StoreResult<SendRecord>;
    async fn update_send_status(
        &self,
        tenant: &TenantId,
        change: SendStatusChange,
        idem: Option<Idempotency>,
    ) -> StoreResult<SendRecord>;
    async fn record_engagement(
        &self,
        tenant: &TenantId,
        engagement: SendEngagement,
        idem: Option<Idempotency>,
    ) -> StoreResult<SendRecord>;
    async fn schedule_send(
        &self,
        tenant: &TenantId,
        new: NewScheduledSend,
        idem: Option<Idempotency>,
    ) -> StoreResult<ScheduledSend>;
    async fn cancel_scheduled_send(
        &self,
        tenant: &TenantId,
        scheduled_send_id: &str,
        at: DateTime<Utc>,
        idem: Option<Idempotency>,
    ) -> StoreResult<ScheduledSend>;
    async fn enrol(
        &self,
        tenant: &TenantId,
        new: NewEnrolment,
        idem: Option<Idempotency>,
    ) -> StoreResult<Enrolment>;
    async fn update_enrolment(
        &self,
        tenant: &TenantId,
        change: EnrolmentChange,
        idem: Option<Idempotency>,
    ) -> StoreResult<Enrolment>;
    async fn set_membership(
        &self,
        tenant: &TenantId,
        change: MembershipChange,
        idem: Option<Idempotency>,
    ) -> StoreResult<MembershipOutcome>;
    async fn track_event(
        &self,
        tenant: &TenantId,
        new: NewEvent,
        idem: Option<Idempotency>,
    ) -> StoreResult<TrackedEvent>;

    /// One page of the contact's sends, newest first (by id), after `after`.
    async fn list_sends(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<SendRecord>>;
    /// One page of the contact's pending scheduled sends, earliest first.
    async fn list_scheduled_sends(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        after: Option<&TimeKey>,
        limit: u32,
    ) -> StoreResult<Vec<ScheduledSend>>;
    /// The contact's enrolments, most recently enrolled first; finished ones only on request.
    async fn list_enrolments(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        include_finished: bool,
    ) -> StoreResult<Vec<Enrolment>>;
    /// The contact's current memberships, most recently joined first.
    async fn list_memberships(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
    ) -> StoreResult<Vec<Membership>>;
}

pub type DynStore = Arc<dyn Store>;

/// Opens (and migrates) the store named by `url`: `postgres://...` or `sqlite://PATH`.
pub async fn connect(url: &str, options: &ConnectOptions) -> StoreResult<DynStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url, options).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url, options).await?))
    } else {
        Err(StoreError::Config(
            "database url must start with `postgres://`, `postgresql://` or `sqlite://`".into(),
        ))
    }
}

/// Database connections, summed over a backend's pools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// Connections the pools may open.
    pub max: u32,
    /// Connections open now (idle or in use).
    pub open: u32,
    /// Open connections waiting for work.
    pub idle: u32,
}

/// Pool settings shared by both backends.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
    /// How long a call waits for a free connection before failing with UNAVAILABLE.
    pub acquire_timeout: std::time::Duration,
    /// Run pending migrations on connect.
    pub migrate: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: std::time::Duration::from_secs(5),
            migrate: true,
        }
    }
}
