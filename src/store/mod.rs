//! Storage: small traits, one implementation per backend, chosen from the URL scheme.
//! Nothing above this module knows which backend runs. The SQL both databases
//! share (statements, parameters, rows, the write transaction) is written once, in
//! `common`; a backend holds only what differs (its pools, its dialect, the calls it
//! makes its own way). The rules that decide what a write does live once, in
//! `crate::app`, over `WriteTx`.

mod bell;
mod coalesce;
mod collect;
mod common;
mod connect;
mod encoded;
mod error;
mod lines;
mod migrations;
pub(crate) mod postgres;
pub mod property_index;
pub mod sqlite;
mod write;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    ChangeKind, ChangePosition, ChangeRecord, Contact, ContactId, ContactKey, ContactQuery,
    ContactView, Email, Enrolment, Membership, ScheduledSend, SendRecord, TenantId, TimeKey,
    TimelineEntry, TimelineQuery, WatchStart,
};

pub use bell::{ChangeBell, SharedBatch, SharedReads};
pub(crate) use collect::{Budget, collect_encoded, collect_within};
pub use collect::{
    ContactRows, ListRows, change_record_bytes, contact_bytes, row_bytes, timeline_entry_bytes,
};
pub use connect::{
    ConnectOptions, PoolUsage, ReadFrom, ReplicaOptions, ReplicaState, StoreCounters, connect,
};
pub(crate) use encoded::EncodedCollector;
pub use encoded::{ContactEncoder, EncodedContact, EncodedRows};
pub use error::StoreError;
pub use write::{ActivityWriteTx, ContactFlag, ContactRecord, RememberedRequest, WriteTx};

pub type StoreResult<T> = Result<T, StoreError>;

/// Whose records a call may read or write.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    pub tenant: TenantId,
    /// The caller's API key (its SHA-256) when the store is to check, in the call's
    /// own statement, that the key is live and the tenant's; `None` when the caller
    /// was authenticated already. A rejected key fails with `StoreError::KeyRejected`
    /// and nothing is read or written.
    pub key_hash: Option<[u8; 32]>,
}

impl Access {
    /// A caller already authenticated as `tenant`.
    pub fn tenant(tenant: TenantId) -> Self {
        Self {
            tenant,
            key_hash: None,
        }
    }

    /// A caller whose key the store checks with the call.
    pub fn with_key(tenant: TenantId, key_hash: [u8; 32]) -> Self {
        Self {
            tenant,
            key_hash: Some(key_hash),
        }
    }
}

/// An API key as stored: only the SHA-256 of the secret is kept.
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub tenant: TenantId,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Everything the service needs from a database.
pub trait Store: Backend + KeyStore + ContactStore + ActivityStore + ChangeStore {}

impl<T: Backend + KeyStore + ContactStore + ActivityStore + ChangeStore> Store for T {}

pub type DynStore = Arc<dyn Store>;

/// The database as a whole: health, pools, counters and write transactions.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Cheap round trip, for health checks.
    async fn ping(&self) -> StoreResult<()>;
    /// Connections of the pool(s) right now, for metrics.
    fn pool_usage(&self) -> PoolUsage;
    /// The store's own counters, read when metrics are scraped.
    fn counters(&self) -> StoreCounters {
        StoreCounters::default()
    }
    /// Whether a long list stream should read several pages per query. It saves the
    /// round trips between queries, during which a database server idles; an embedded
    /// store has none, and each of its reader threads would keep a heap as large as
    /// the largest query it decoded.
    fn multi_page_queries(&self) -> bool {
        false
    }
    /// The read replicas and their state now, for metrics (none by default).
    fn replicas(&self) -> Vec<ReplicaState> {
        Vec::new()
    }
    /// Folds up to `batch` per-process rows of the contact counters into each
    /// tenant's base row, so the counters stay a few rows a tenant however many
    /// processes ever wrote; returns how many rows went. Nothing to fold by default.
    async fn fold_counts(&self, _batch: u32) -> StoreResult<u64> {
        Ok(0)
    }
    /// Forgets remembered requests (and the tombstones of erased ones) older than
    /// `before`, at most `batch` rows of each kind per call; returns how many went.
    async fn purge_requests(&self, before: DateTime<Utc>, batch: u32) -> StoreResult<u64>;
    /// How many write transactions the database runs at once to any use: an
    /// import pipelines at most this many batches (`app::import`). One by default
    /// (SQLite has one writer: a second transaction would only wait for the lock).
    fn write_concurrency(&self) -> usize {
        1
    }
    /// A transaction of `tenant`'s records that the rules in `crate::app` drive; it
    /// rolls back unless committed.
    async fn begin_write(&self, tenant: &TenantId) -> StoreResult<Box<dyn WriteTx + '_>>;
}

/// Tenants and their API keys.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
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
    /// The deployment's secret for signing cursors, made by a migration, so every
    /// replica of one database signs alike.
    async fn cursor_secret(&self) -> StoreResult<[u8; 32]>;
}

/// A page of a contact list, as `ContactStore::list_contacts` asks for it.
#[derive(Debug, Clone, Copy)]
pub struct ContactPage<'a> {
    /// Where the page may be read (see `SqlStore::read_heavy`).
    pub from: ReadFrom,
    pub tenant: &'a TenantId,
    pub query: &'a ContactQuery,
    /// The position after the last contact of the page before.
    pub after: Option<&'a ContactKey>,
    pub limit: u32,
    /// Most bytes of contacts the query returns, as `contact_bytes` counts them (see
    /// `ContactStore::list_contacts`).
    pub max_bytes: usize,
    /// Writes each row as the caller sends it.
    pub encoder: &'a dyn ContactEncoder,
}

/// Contacts and their timeline. Every method reads and writes inside the caller's
/// tenant only. The heavy reads (lists, counts) take a `ReadFrom`: they may run on a
/// read replica; every other read runs on the primary.
#[async_trait]
pub trait ContactStore: Send + Sync + 'static {
    /// Inserts a new contact with its `contact.created` entry, atomically; `Conflict`
    /// when the email is taken in the tenant.
    async fn insert_contact(
        &self,
        access: &Access,
        contact: &Contact,
        created: &TimelineEntry,
    ) -> StoreResult<()>;
    async fn get_contact(&self, access: &Access, id: &ContactId) -> StoreResult<ContactView>;
    async fn get_contact_by_email(
        &self,
        access: &Access,
        email: &Email,
    ) -> StoreResult<Option<ContactView>>;
    /// Up to `limit` contacts in the query's order, after `after` when given, each
    /// written by the page's encoder as it is read, and no more than `max_bytes` of
    /// them (at least one): the rows a query holds are bounded whatever the contacts
    /// weigh.
    async fn list_contacts(&self, page: ContactPage<'_>) -> StoreResult<EncodedRows>;
    /// `list_contacts` for one query of a stream that reads on past its first page,
    /// `session` being the stream's (the same for each of its queries). A store may
    /// serve a stream's later queries from one statement held open between them
    /// (PostgreSQL's searches, `postgres/portal.rs`); dropping the session ends it.
    async fn stream_contacts(
        &self,
        session: &ListSession,
        page: ContactPage<'_>,
    ) -> StoreResult<EncodedRows>;
    /// The contact with its revision (a counter every write of the row advances), for
    /// an optimistic merge.
    async fn read_for_update(&self, access: &Access, id: &ContactId) -> StoreResult<Contact>;
    /// Writes `after` with its `contact.updated` entry, atomically, only if the row is
    /// still at `revision`; returns whether it was written.
    async fn update_if_revision(
        &self,
        tenant: &TenantId,
        after: &Contact,
        updated: &TimelineEntry,
        revision: i64,
    ) -> StoreResult<bool>;
    /// The tenant's contacts whose id is one of `ids` or whose email key is one of
    /// `email_keys`, each once, in no particular order, read in one statement that
    /// also checks the caller's key (`Access`). Reading stops once the rows pass
    /// `max_bytes` as `contact_bytes` counts them (at least one row): `cut_short`
    /// then says that more matched, so a caller can refuse instead of answering part.
    async fn batch_get_contacts(
        &self,
        access: &Access,
        ids: &[String],
        email_keys: &[String],
        max_bytes: usize,
    ) -> StoreResult<ContactRows>;
    /// `NotFound` unless the contact exists in the tenant.
    async fn ensure_contact(&self, tenant: &TenantId, id: &ContactId) -> StoreResult<()>;
    /// Up to `limit` entries of the contact's timeline, after `after`, and no more
    /// than `max_bytes` of them (at least one), as `list_contacts`.
    #[allow(clippy::too_many_arguments)] // `list_contacts`' with the contact's id
    async fn list_timeline(
        &self,
        from: ReadFrom,
        tenant: &TenantId,
        contact: &ContactId,
        query: &TimelineQuery,
        after: Option<&TimeKey>,
        limit: u32,
        max_bytes: usize,
    ) -> StoreResult<ListRows<TimelineEntry>>;
    /// How many of the tenant's contacts match `query` (its order aside); with
    /// `estimate`, from the database's statistics where it keeps them.
    async fn count_contacts(
        &self,
        from: ReadFrom,
        tenant: &TenantId,
        query: &ContactQuery,
        estimate: bool,
    ) -> StoreResult<ContactCount>;
}

/// What a streamed list keeps between its queries (`ContactStore::stream_contacts`):
/// nothing, unless its store holds a statement open for it. Dropping the session (the
/// stream ending, however it ends) ends that statement.
#[derive(Clone, Default)]
pub struct ListSession(Arc<tokio::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>>);

impl ListSession {
    /// What the store keeps, to read or change while no other query of the stream runs.
    pub(crate) async fn lock(
        &self,
    ) -> tokio::sync::MutexGuard<'_, Option<Box<dyn std::any::Any + Send>>> {
        self.0.lock().await
    }

    /// The session without keeping it alive (for a timer that ends what it holds).
    pub(crate) fn downgrade(&self) -> WeakListSession {
        WeakListSession(Arc::downgrade(&self.0))
    }
}

/// A `ListSession` not kept alive.
pub(crate) struct WeakListSession(
    std::sync::Weak<tokio::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>>,
);

impl WeakListSession {
    pub(crate) fn upgrade(&self) -> Option<ListSession> {
        self.0.upgrade().map(ListSession)
    }
}

/// The answer of `ContactStore::count_contacts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactCount {
    pub count: i64,
    /// False for an estimate.
    pub exact: bool,
}

/// What one read of the change feed found.
#[derive(Debug, Default)]
pub struct ChangeBatch {
    /// The changes after the position asked for that can be delivered now, in order.
    pub changes: Vec<ChangeRecord>,
    /// The tenant's purge watermark: a position before it lost changes to retention.
    pub purged: Option<ChangePosition>,
    /// Committed changes wait above the delivery horizon (a transaction with an
    /// older id is still running): read again shortly.
    pub held_back: bool,
    /// The read stopped at its byte budget before its row limit: more changes may
    /// follow at once, as after a batch that reached its limit.
    pub cut_short: bool,
    /// The edge's messages of these changes, made by whoever read them: the watchers
    /// sharing one read (`bell::SharedReads`) then send the same bytes instead of
    /// each encoding and signing every change again. The store leaves it empty.
    pub encoded: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// The change feed (`contact_changes`): the writes record changes through `WriteTx`
/// and PostgreSQL's one-statement writes; this reads and purges them.
#[async_trait]
pub trait ChangeStore: Send + Sync + 'static {
    /// Up to `limit` changes of `tenant` after `after`, of `kinds` (all when empty),
    /// in position order: only changes no later commit can precede (see
    /// `common::changes`), with the tenant's purge watermark read in the same
    /// statement. The rows stop once they pass `max_bytes` as `change_record_bytes`
    /// counts them (at least one; `ChangeBatch::cut_short`), so a batch holds at most
    /// `max_bytes` plus one change whatever `limit` is.
    async fn read_changes(
        &self,
        tenant: &TenantId,
        after: ChangePosition,
        kinds: &[ChangeKind],
        limit: u32,
        max_bytes: usize,
    ) -> StoreResult<ChangeBatch>;
    /// The position a watch without a token starts after.
    async fn change_start(
        &self,
        tenant: &TenantId,
        start: WatchStart,
    ) -> StoreResult<ChangePosition>;
    /// Deletes changes recorded before `before`, at most `batch`, raising each
    /// tenant's watermark with them; returns how many went.
    async fn purge_changes(&self, before: DateTime<Utc>, batch: u32) -> StoreResult<u64>;
    /// What a commit that recorded changes rings, and watchers wait on.
    fn change_bell(&self) -> ChangeBell;
}

/// Reads of the records the ingestion API writes (the writes are `crate::app`'s).
#[async_trait]
pub trait ActivityStore: Send + Sync + 'static {
    /// One page of the contact's sends, newest first (by id), after `after`.
    async fn list_sends(
        &self,
        from: ReadFrom,
        tenant: &TenantId,
        contact: &ContactId,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<SendRecord>>;
    /// One page of the contact's pending scheduled sends, earliest first.
    async fn list_scheduled_sends(
        &self,
        from: ReadFrom,
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

/// For a backend that checks a key with a lookup of its own (one without a
/// round trip to save): `KeyRejected` unless `access` carries no key or a live key
/// of its tenant.
pub(crate) async fn check_key(keys: &dyn KeyStore, access: &Access) -> StoreResult<()> {
    let Some(key_hash) = &access.key_hash else {
        return Ok(());
    };
    key_is_tenants(keys.tenant_for_key(key_hash).await?, &access.tenant)
}

/// Whether a key whose tenant is `found` (`None`: no live key) is `tenant`'s.
pub(crate) fn key_is_tenants(found: Option<TenantId>, tenant: &TenantId) -> StoreResult<()> {
    match found {
        Some(found) if found == *tenant => Ok(()),
        _ => Err(StoreError::KeyRejected),
    }
}
