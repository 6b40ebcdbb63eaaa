//! ImportContacts: a batch of rows written in one transaction, with a result per
//! row. The rows of a batch are merged in row order exactly as single upserts would
//! be (`ContactUpsert::new_contact`, `Contact::apply`, the same timeline entries),
//! and then written with a constant number of statements: lock the batch's
//! existing contacts, insert the new ones, update the changed ones, insert the
//! timeline entries.
//!
//! Concurrent batches (of other imports, or single writes) cannot deadlock on each
//! other's rows: a batch locks its existing contacts in address-key order, then
//! inserts its new ones in that order too. If another transaction created one of
//! the batch's new addresses after the batch read them, the insert skips it (after
//! waiting for that transaction), and the batch is rolled back and run again: the
//! second time that contact is an existing one. A deadlock PostgreSQL still finds
//! (with a single write that locks a contact out of order) is retried the same way.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use chrono::{DateTime, Utc};

use crate::domain::{Contact, ContactId, ContactUpsert, TimelineEntry, contact_created};
use crate::store::{Access, Store, StoreError, StoreResult};

/// Most attempts at one batch before its error is returned: each retry follows a
/// race the previous attempt lost, which leaves the raced address existing.
const MAX_ATTEMPTS: u32 = 5;

/// How an import treats rows whose address the tenant has, or has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportMode {
    /// Create new contacts, merge into existing ones.
    #[default]
    Upsert,
    /// Create new contacts; a row whose address exists fails with `Conflict`.
    CreateOnly,
    /// Merge into existing contacts; a row whose address does not fails with
    /// `NotFound`.
    UpdateOnly,
}

/// What happened to one row.
#[derive(Debug)]
pub enum RowOutcome {
    Created(ContactId),
    /// The contact's properties changed.
    Updated(ContactId),
    /// The contact existed and the row changed nothing.
    Unchanged(ContactId),
    /// The row was not written, for the reason a single upsert of it would fail.
    Failed(StoreError),
}

/// Writes one batch of `rows` for `access`'s tenant in one transaction and returns
/// an outcome per row, in row order. Rows that share an address are merged in row
/// order: the first may create the contact, the next ones update it. A row that
/// fails leaves the others alone; only the store failing fails the batch, and then
/// nothing of it is written.
pub async fn write_batch(
    store: &dyn Store,
    access: &Access,
    mode: ImportMode,
    rows: &[ContactUpsert],
) -> StoreResult<Vec<RowOutcome>> {
    let mut attempt = 1;
    loop {
        let err = match try_batch(store, access, mode, rows).await {
            Ok(Some(outcomes)) => return Ok(outcomes),
            Ok(None) => StoreError::internal("import batch kept losing races for new addresses"),
            Err(err) if err.is_contention() => err,
            Err(err) => return Err(err),
        };
        if attempt >= MAX_ATTEMPTS {
            return Err(err);
        }
        tracing::debug!(
            attempt,
            "import batch raced another writer; running it again"
        );
        attempt += 1;
    }
}

/// A contact the batch writes or has found, and what the batch did to it.
struct Slot {
    contact: Contact,
    /// Created by this batch (to insert), else found existing (to update).
    new: bool,
    changed: bool,
}

/// One attempt at a batch; `None` when another transaction created one of its new
/// addresses first (rolled back, run again).
async fn try_batch(
    store: &dyn Store,
    access: &Access,
    mode: ImportMode,
    rows: &[ContactUpsert],
) -> StoreResult<Option<Vec<RowOutcome>>> {
    let mut keys: Vec<String> = rows.iter().map(|row| row.email.key().to_owned()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut tx = store.begin_write(&access.tenant).await?;
    let mut slots: HashMap<String, Slot> = tx
        .lock_contacts_by_email_keys(&keys)
        .await?
        .into_iter()
        .map(|contact| {
            let slot = Slot {
                contact,
                new: false,
                changed: false,
            };
            (slot.contact.email.key().to_owned(), slot)
        })
        .collect();
    let at = crate::domain::now();
    let mut entries = Vec::new();
    let outcomes = rows
        .iter()
        .map(|row| apply_row(&mut slots, &mut entries, mode, row.clone(), at))
        .collect();

    let mut new: Vec<&Contact> = Vec::new();
    let mut changed: Vec<&Contact> = Vec::new();
    for slot in slots.values() {
        match (slot.new, slot.changed) {
            (true, _) => new.push(&slot.contact),
            (false, true) => changed.push(&slot.contact),
            (false, false) => {}
        }
    }
    new.sort_unstable_by(|a, b| a.email.key().cmp(b.email.key()));
    let inserted = tx.insert_contacts_if_new(&new).await?;
    if inserted.len() != new.len() {
        return Ok(None);
    }
    tx.update_contacts(&changed).await?;
    let entries: Vec<(&ContactId, &TimelineEntry)> =
        entries.iter().map(|(id, entry)| (id, entry)).collect();
    tx.insert_timeline_entries(&entries).await?;
    tx.commit().await?;
    Ok(Some(outcomes))
}

/// Applies one row to the batch's contacts, as a single upsert in `mode` would,
/// recording its timeline entry.
fn apply_row(
    slots: &mut HashMap<String, Slot>,
    entries: &mut Vec<(ContactId, TimelineEntry)>,
    mode: ImportMode,
    row: ContactUpsert,
    at: DateTime<Utc>,
) -> RowOutcome {
    let slot = match slots.entry(row.email.key().to_owned()) {
        Entry::Vacant(vacant) => {
            if mode == ImportMode::UpdateOnly {
                return RowOutcome::Failed(StoreError::NotFound("contact"));
            }
            let contact = match row.new_contact(at) {
                Ok(contact) => contact,
                Err(invalid) => return RowOutcome::Failed(invalid.into()),
            };
            let id = contact.id.clone();
            entries.push((id.clone(), contact_created(&contact)));
            vacant.insert(Slot {
                contact,
                new: true,
                changed: true,
            });
            return RowOutcome::Created(id);
        }
        Entry::Occupied(occupied) => occupied.into_mut(),
    };
    // A contact this batch created is the import's own: a later row merges into it
    // in every mode.
    if mode == ImportMode::CreateOnly && !slot.new {
        return RowOutcome::Failed(StoreError::Conflict { field: "email" });
    }
    let id = slot.contact.id.clone();
    match slot.contact.apply(row.into_update()) {
        Err(invalid) => RowOutcome::Failed(invalid.into()),
        Ok(None) => RowOutcome::Unchanged(id),
        Ok(Some((after, entry))) => {
            entries.push((id.clone(), entry));
            slot.contact = after;
            slot.changed = true;
            RowOutcome::Updated(id)
        }
    }
}
