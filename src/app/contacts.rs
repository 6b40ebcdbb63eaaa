//! Contact writes: create, merge-update, upsert, delete, and finding or creating the
//! contact an ingestion call is about. A write with a request id runs in a
//! transaction that claims it (`requests`), so a retry gets the first answer; one
//! with an etag is applied only to the version the etag names.

use chrono::{DateTime, Utc};

use super::requests::{RememberedContact, remember, replay};
use crate::domain::{
    Contact, ContactId, ContactRef, ContactUpdate, ContactUpsert, Etag, Idempotency, NewContact,
    Properties, contact_created,
};
use crate::store::{Access, Store, StoreError, StoreResult, WriteTx, check_key};

/// Creates the contact with its `contact.created` entry.
pub async fn create(
    store: &dyn Store,
    access: &Access,
    new: NewContact,
    idem: Option<Idempotency>,
) -> StoreResult<Contact> {
    let contact = Contact::new(new.email, new.properties, crate::domain::now());
    let Some(idem) = idem else {
        store
            .insert_contact(access, &contact, &contact_created(&contact))
            .await?;
        return Ok(contact);
    };
    check_key(store, access).await?;
    let mut tx = store.begin_write(&access.tenant).await?;
    if let Some(first) = replay::<RememberedContact>(&mut *tx, Some(&idem)).await? {
        return Ok(first.contact());
    }
    if !tx.insert_contact_if_new(&contact).await? {
        return Err(StoreError::Conflict { field: "email" });
    }
    tx.insert_timeline_entry(&contact.id, &contact_created(&contact))
        .await?;
    finish(tx, Some(&idem), contact, true).await.map(|(c, _)| c)
}

/// Merges `update` into the contact and records what changed in one
/// `contact.updated` entry; an update that changes nothing writes nothing.
///
/// Optimistic first: read the row and its revision, merge, and write only if the
/// revision is unchanged (one statement, no lock held across round trips). When
/// another write got in between, merge again under the row lock, which serialises
/// with every other writer, so no change is ever lost. With an etag, that other
/// write made the etag stale: the call is refused instead.
pub async fn update(
    store: &dyn Store,
    access: &Access,
    id: &ContactId,
    update: ContactUpdate,
    etag: Option<Etag>,
    idem: Option<Idempotency>,
) -> StoreResult<Contact> {
    if idem.is_some() {
        check_key(store, access).await?;
        return update_locked(store, access, id, update, etag, idem).await;
    }
    let before = store.read_for_update(access, id).await?;
    check_etag(etag, &before)?;
    let Some((after, entry)) = before.apply(update.clone())? else {
        return Ok(before);
    };
    if store
        .update_if_revision(&access.tenant, &after, &entry, before.revision)
        .await?
    {
        return Ok(after);
    }
    if etag.is_some() {
        return Err(StoreError::EtagMismatch);
    }
    update_locked(store, access, id, update, None, None).await
}

/// `update` under the row lock, in one transaction with its request id.
async fn update_locked(
    store: &dyn Store,
    access: &Access,
    id: &ContactId,
    update: ContactUpdate,
    etag: Option<Etag>,
    idem: Option<Idempotency>,
) -> StoreResult<Contact> {
    let mut tx = store.begin_write(&access.tenant).await?;
    if let Some(first) = replay::<RememberedContact>(&mut *tx, idem.as_ref()).await? {
        return Ok(first.contact());
    }
    let before = tx
        .lock_contact(id)
        .await?
        .ok_or(StoreError::NotFound("contact"))?;
    check_etag(etag, &before)?;
    let after = match before.apply(update)? {
        None => before,
        Some((after, entry)) => {
            tx.update_contact(&after).await?;
            tx.insert_timeline_entry(&after.id, &entry).await?;
            after
        }
    };
    finish(tx, idem.as_ref(), after, false)
        .await
        .map(|(c, _)| c)
}

/// Creates the contact with `upsert`'s address, or merges the properties into the
/// one that has it, atomically: concurrent upserts of one new address make one
/// contact (the others wait for its insert, then merge into it). Returns the contact
/// and whether this call created it.
pub async fn upsert(
    store: &dyn Store,
    access: &Access,
    upsert: ContactUpsert,
    idem: Option<Idempotency>,
) -> StoreResult<(Contact, bool)> {
    check_key(store, access).await?;
    let mut tx = store.begin_write(&access.tenant).await?;
    if let Some(first) = replay::<RememberedContact>(&mut *tx, idem.as_ref()).await? {
        let created = first.created;
        return Ok((first.contact(), created));
    }
    let existing = match tx.lock_contact_by_email(&upsert.email).await? {
        Some(existing) => existing,
        None => {
            let new = upsert.new_contact(crate::domain::now())?;
            if tx.insert_contact_if_new(&new).await? {
                tx.insert_timeline_entry(&new.id, &contact_created(&new))
                    .await?;
                return finish(tx, idem.as_ref(), new, true).await;
            }
            // Another transaction created it first and has committed by now.
            tx.lock_contact_by_email(&upsert.email)
                .await?
                .ok_or_else(|| StoreError::internal("an address was taken, then not found"))?
        }
    };
    let after = match existing.apply(upsert.into_update())? {
        None => existing,
        Some((after, entry)) => {
            tx.update_contact(&after).await?;
            tx.insert_timeline_entry(&after.id, &entry).await?;
            after
        }
    };
    finish(tx, idem.as_ref(), after, false).await
}

/// Erases the contact and everything recorded about it. A retry with the same
/// request id answers as the first attempt did (its record is kept apart from the
/// contact's, without personal data, until it expires).
pub async fn delete(
    store: &dyn Store,
    access: &Access,
    id: &ContactId,
    etag: Option<Etag>,
    idem: Option<Idempotency>,
) -> StoreResult<()> {
    let mut tx = store.begin_write(&access.tenant).await?;
    if replay::<ContactId>(&mut *tx, idem.as_ref())
        .await?
        .is_some()
    {
        return Ok(());
    }
    // The contact first, locked: every write locks it before it remembers a request
    // id, so none can slip past the tombstones `erase_contact` leaves.
    let before = tx
        .lock_contact(id)
        .await?
        .ok_or(StoreError::NotFound("contact"))?;
    check_etag(etag, &before)?;
    tx.erase_contact(id).await?;
    remember(&mut *tx, idem.as_ref(), None, id).await?;
    tx.commit().await
}

fn check_etag(etag: Option<Etag>, contact: &Contact) -> StoreResult<()> {
    match etag {
        Some(etag) if !etag.matches(contact.revision) => Err(StoreError::EtagMismatch),
        _ => Ok(()),
    }
}

/// Remembers the contact as the request's response and commits.
async fn finish(
    mut tx: Box<dyn WriteTx + '_>,
    idem: Option<&Idempotency>,
    contact: Contact,
    created: bool,
) -> StoreResult<(Contact, bool)> {
    if idem.is_some() {
        let response = RememberedContact::new(&contact, created);
        remember(&mut *tx, idem, Some(&contact.id), &response).await?;
    }
    tx.commit().await?;
    Ok((contact, created))
}

/// The id and current address of the contact an ingestion call is about. By id, the
/// row is locked for the transaction (a concurrent delete waits for it, or it sees
/// the contact gone). An unknown address creates the contact, with its
/// `contact.created` entry, racing safely with concurrent creators.
pub(super) async fn resolve(
    tx: &mut dyn WriteTx,
    contact: &ContactRef,
    at: DateTime<Utc>,
) -> StoreResult<(ContactId, String)> {
    let email = match contact {
        ContactRef::Id(id) => {
            let email = tx
                .lock_contact_email(id)
                .await?
                .ok_or(StoreError::NotFound("contact"))?;
            return Ok((id.clone(), email));
        }
        ContactRef::Email(email) => email,
    };
    if let Some(found) = tx.find_contact_by_email(email).await? {
        return Ok(found);
    }
    // The contact dates from the send or event that revealed it (never from the
    // future), so its `contact.created` entry comes first in the timeline.
    let created = Contact::new(
        email.clone(),
        Properties::default(),
        at.min(crate::domain::now()),
    );
    if tx.insert_contact_if_new(&created).await? {
        tx.insert_timeline_entry(&created.id, &contact_created(&created))
            .await?;
        return Ok((created.id, email.as_str().to_owned()));
    }
    // Another transaction created it first and has committed by now.
    tx.find_contact_by_email(email)
        .await?
        .ok_or_else(|| StoreError::internal("a contact's address was taken, then not found"))
}
