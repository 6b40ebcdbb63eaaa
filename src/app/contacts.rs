//! Contact writes: create, merge-update, delete, and finding or creating the
//! contact an ingestion call is about.

use chrono::{DateTime, Utc};

use crate::domain::{
    Contact, ContactId, ContactRef, ContactUpdate, NewContact, Properties, TenantId,
    contact_created,
};
use crate::store::{Access, Store, StoreError, StoreResult, WriteTx};

/// Creates the contact with its `contact.created` entry.
pub async fn create(store: &dyn Store, access: &Access, new: NewContact) -> StoreResult<Contact> {
    let contact = Contact::new(new.email, new.properties, crate::domain::now());
    store
        .insert_contact(access, &contact, &contact_created(&contact))
        .await?;
    Ok(contact)
}

/// Merges `update` into the contact and records what changed in one
/// `contact.updated` entry; an update that changes nothing writes nothing.
///
/// Optimistic first: read the row and its revision, merge, and write only if the
/// revision is unchanged (one statement, no lock held across round trips). When
/// another write got in between, merge again under the row lock, which serialises
/// with every other writer, so no change is ever lost.
pub async fn update(
    store: &dyn Store,
    access: &Access,
    id: &ContactId,
    update: ContactUpdate,
) -> StoreResult<Contact> {
    let (before, revision) = store.read_for_update(access, id).await?;
    let Some((after, entry)) = before.apply(update.clone())? else {
        return Ok(before);
    };
    if store
        .update_if_revision(&access.tenant, &after, &entry, revision)
        .await?
    {
        return Ok(after);
    }
    let mut tx = store.begin_write(&access.tenant).await?;
    let before = tx
        .lock_contact(id)
        .await?
        .ok_or(StoreError::NotFound("contact"))?;
    let Some((after, entry)) = before.apply(update)? else {
        return Ok(before);
    };
    tx.update_contact(&after).await?;
    tx.insert_timeline_entry(&after.id, &entry).await?;
    tx.commit().await?;
    Ok(after)
}

/// Erases the contact and everything recorded about it.
pub async fn delete(store: &dyn Store, tenant: &TenantId, id: &ContactId) -> StoreResult<()> {
    store.delete_contact(tenant, id).await
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
