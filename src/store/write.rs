//! The primitives a write transaction offers the rules in `crate::app`. Each backend
//! implements them with its own SQL and locking; what a write means (which rows it
//! touches, in which order, which timeline entries it leaves) is decided above.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::domain::{
    Contact, ContactId, Email, Enrolment, Idempotency, Membership, ScheduledSend, SendRecord,
    TimelineEntry,
};

/// A request id already claimed in the tenant, as the first attempt left it.
#[derive(Debug, Clone)]
pub struct RememberedRequest {
    pub method: String,
    pub fingerprint: Vec<u8>,
    /// The first attempt's response as JSON; absent only if a row was claimed and
    /// never completed, which a committed transaction cannot leave behind.
    pub response: Option<String>,
}

/// A record that belongs to one contact, found by its own id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactRecord {
    Send,
    ScheduledSend,
}

impl ContactRecord {
    /// The table that holds such records (same name in both schemas).
    pub fn table(self) -> &'static str {
        match self {
            Self::Send => "sends",
            Self::ScheduledSend => "scheduled_sends",
        }
    }
}

/// A contact flag that is set once and never cleared by the ingestion API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactFlag {
    Suppressed,
    Unsubscribed,
}

impl ContactFlag {
    /// The column that holds the flag (same name in both schemas).
    pub fn column(self) -> &'static str {
        match self {
            Self::Suppressed => "suppressed",
            Self::Unsubscribed => "unsubscribed",
        }
    }
}

/// One transaction of one tenant's records. Dropped without `commit`, it rolls back.
/// The `lock_*` reads hold the row until the transaction ends, so two writes about
/// one record queue up instead of losing one another's change.
#[async_trait]
pub trait WriteTx: ActivityWriteTx + Send {
    /// Claims `idem`'s request id for this transaction: `None` when it was free,
    /// else what the first attempt remembered. A concurrent first attempt is waited
    /// for (its commit or rollback decides).
    async fn claim_request(&mut self, idem: &Idempotency)
    -> StoreResult<Option<RememberedRequest>>;
    /// Stores the response of the request claimed with `idem`, erased with `contact`;
    /// without one (the response of an erasure) it stays until it expires.
    async fn remember_response(
        &mut self,
        idem: &Idempotency,
        contact: Option<&ContactId>,
        response_json: &str,
    ) -> StoreResult<()>;

    /// The contact, locked.
    async fn lock_contact(&mut self, id: &ContactId) -> StoreResult<Option<Contact>>;
    /// The contact's current address, the row locked (cheaper than `lock_contact`
    /// when the properties are not needed).
    async fn lock_contact_email(&mut self, id: &ContactId) -> StoreResult<Option<String>>;
    /// The id and stored address of the contact with this address (ignoring case),
    /// the row locked.
    async fn find_contact_by_email(
        &mut self,
        email: &Email,
    ) -> StoreResult<Option<(ContactId, String)>>;
    /// The contact with this address (ignoring case), locked.
    async fn lock_contact_by_email(&mut self, email: &Email) -> StoreResult<Option<Contact>>;
    /// Inserts the contact unless its address is taken; returns whether it did.
    async fn insert_contact_if_new(&mut self, contact: &Contact) -> StoreResult<bool>;
    /// Writes a changed contact (address, properties, `updated_at`); `Conflict` when
    /// the new address is taken.
    async fn update_contact(&mut self, contact: &Contact) -> StoreResult<()>;
    /// The contacts whose address keys (`Email::key`) are in `keys`, locked in key
    /// order, whatever order `keys` is in: two transactions locking overlapping
    /// sets take the rows in the same order, so they queue instead of deadlocking.
    /// One statement.
    async fn lock_contacts_by_email_keys(&mut self, keys: &[String]) -> StoreResult<Vec<Contact>>;
    /// Inserts, in address-key order, the contacts whose addresses are free; returns
    /// the ids of those it inserted (a concurrent transaction's insert of an address
    /// is waited for). One statement.
    async fn insert_contacts_if_new(
        &mut self,
        contacts: &[&Contact],
    ) -> StoreResult<Vec<ContactId>>;
    /// Writes the properties (with the search text), `updated_at` and `revision` of
    /// contacts this transaction has locked. One statement.
    async fn update_contacts(&mut self, contacts: &[&Contact]) -> StoreResult<()>;
    /// Takes the import-order lock `key` until this transaction ends (a pipelined
    /// import's batch: `app::import`), so that a later batch's wait for this one's
    /// end is a wait the database sees, and its deadlock detector can break. Nothing
    /// by default: a store whose `write_concurrency` is 1 never pipelines.
    async fn hold_order_lock(&mut self, _key: u32) -> StoreResult<()> {
        Ok(())
    }
    /// Waits until the transaction holding the import-order lock `key` has ended
    /// (at once when none holds it). Nothing by default.
    async fn await_order_lock(&mut self, _key: u32) -> StoreResult<()> {
        Ok(())
    }
    /// Inserts timeline entries, each of its contact. One statement.
    async fn insert_timeline_entries(
        &mut self,
        entries: &[(&ContactId, &TimelineEntry)],
    ) -> StoreResult<()>;
    /// Sets `flag` unless it is set, stamping `updated_at` with `at` (never moving it
    /// back); returns whether it changed.
    async fn set_contact_flag(
        &mut self,
        id: &ContactId,
        flag: ContactFlag,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    async fn insert_timeline_entry(
        &mut self,
        contact: &ContactId,
        entry: &TimelineEntry,
    ) -> StoreResult<()>;
    /// Erases a contact locked by this transaction and everything recorded about it.
    /// Of the request ids remembered with it, only a hash and the method are kept (so
    /// a late retry is refused, not run again on nobody).
    async fn erase_contact(&mut self, id: &ContactId) -> StoreResult<()>;

    async fn commit(self: Box<Self>) -> StoreResult<()>;
}

/// The ingestion records' half of a write transaction (sends, scheduled sends,
/// enrolments, memberships): the rows `crate::app::activity` writes about a contact
/// it has locked.
#[async_trait]
pub trait ActivityWriteTx: Send {
    /// Locks the contact a send or scheduled send belongs to, in one statement;
    /// false when the record (or its contact) is gone. A write locks that contact
    /// before the record, the order every write (and the cascade of DeleteContact)
    /// takes them in.
    async fn lock_owner(&mut self, record: ContactRecord, id: &str) -> StoreResult<bool>;
    async fn lock_send(&mut self, id: &str) -> StoreResult<Option<SendRecord>>;
    /// Inserts the send, or updates its status and times.
    async fn save_send(&mut self, send: &SendRecord) -> StoreResult<()>;
    async fn lock_scheduled_send(&mut self, id: &str) -> StoreResult<Option<ScheduledSend>>;
    /// Inserts the scheduled send, or updates its status.
    async fn save_scheduled_send(&mut self, scheduled: &ScheduledSend) -> StoreResult<()>;
    async fn lock_enrolment(
        &mut self,
        contact: &ContactId,
        sequence_id: &str,
    ) -> StoreResult<Option<Enrolment>>;
    /// Inserts the enrolment, or replaces the contact's enrolment in that sequence.
    async fn save_enrolment(&mut self, enrolment: &Enrolment) -> StoreResult<()>;
    async fn membership(
        &mut self,
        contact: &ContactId,
        segment_id: &str,
    ) -> StoreResult<Option<Membership>>;
    /// Inserts the membership, or renames its segment.
    async fn save_membership(&mut self, membership: &Membership) -> StoreResult<()>;
    async fn delete_membership(&mut self, contact: &ContactId, segment_id: &str)
    -> StoreResult<()>;
}
