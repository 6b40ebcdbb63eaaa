//! The ingestion writes of ActivityService. Each is one transaction: the request id
//! claimed (a retry replays the first response), the rows locked contact first (the
//! order DeleteContact takes them in, so the two cannot deadlock), the domain's rule
//! applied, the record and its timeline entries written, the response
//! remembered.

use chrono::{DateTime, Utc};

use super::contacts::resolve;
use super::requests::{remember, replay};
use crate::domain::{
    ContactId, Enrolment, EnrolmentChange, Idempotency, Membership, MembershipChange,
    MembershipOutcome, NewEnrolment, NewEvent, NewScheduledSend, NewSend, ScheduledSend,
    SendEngagement, SendRecord, SendStatusChange, TenantId, TrackedEvent, UNSUBSCRIBE_EVENT,
    contact_suppressed, contact_unsubscribed, segment_entry,
};
use crate::store::{ContactFlag, ContactRecord, Store, StoreError, StoreResult, WriteTx};

/// RecordSend: by id or by address (an unknown address creates the contact); with a
/// scheduled send, that pending send is fulfilled in the same transaction.
pub async fn record_send(
    store: &dyn Store,
    tenant: &TenantId,
    new: NewSend,
    idem: Option<Idempotency>,
) -> StoreResult<SendRecord> {
    let mut tx = store.begin_write(tenant).await?;
    if let Some(first) = replay(&mut *tx, idem.as_ref()).await? {
        return Ok(first);
    }
    let (contact_id, email) = resolve(&mut *tx, &new.contact, new.at).await?;
    if let Some(scheduled_id) = &new.scheduled_send_id {
        // The contact is locked already; a scheduled send of another contact is only
        // read, to be refused.
        let scheduled = tx
            .lock_scheduled_send(scheduled_id)
            .await?
            .ok_or(StoreError::NotFound("scheduled send"))?
            .fulfil(&contact_id)?;
        tx.save_scheduled_send(&scheduled).await?;
    }
    let (send, entry) = new.into_send(contact_id.clone(), email);
    tx.save_send(&send).await?;
    tx.insert_timeline_entry(&contact_id, &entry).await?;
    finish(tx, idem.as_ref(), &contact_id, send).await
}

/// UpdateSendStatus: moves the send forward; a bounce or complaint suppresses the
/// contact (once). The current status again changes nothing.
pub async fn update_send_status(
    store: &dyn Store,
    tenant: &TenantId,
    change: SendStatusChange,
    idem: Option<Idempotency>,
) -> StoreResult<SendRecord> {
    let mut tx = store.begin_write(tenant).await?;
    if let Some(first) = replay(&mut *tx, idem.as_ref()).await? {
        return Ok(first);
    }
    let send = lock_send(&mut *tx, &change.send_id).await?;
    let send = match send.transition(change.status, change.at)? {
        None => send,
        Some((next, entry)) => {
            tx.save_send(&next).await?;
            tx.insert_timeline_entry(&next.contact_id, &entry).await?;
            if next.suppresses() {
                let flagged = contact_suppressed(&next, change.at);
                set_flag(
                    &mut *tx,
                    &next.contact_id,
                    ContactFlag::Suppressed,
                    &flagged,
                )
                .await?;
            }
            next
        }
    };
    let contact_id = send.contact_id.clone();
    finish(tx, idem.as_ref(), &contact_id, send).await
}

/// RecordSendEngagement: an open or click of a sent email.
pub async fn record_engagement(
    store: &dyn Store,
    tenant: &TenantId,
    engagement: SendEngagement,
    idem: Option<Idempotency>,
) -> StoreResult<SendRecord> {
    let mut tx = store.begin_write(tenant).await?;
    if let Some(first) = replay(&mut *tx, idem.as_ref()).await? {
        return Ok(first);
    }
    let send = lock_send(&mut *tx, &engagement.send_id).await?;
    let (next, entry) = send.engage(
        engagement.engagement,
        engagement.at,
        engagement.url.as_deref(),
    )?;
    tx.save_send(&next).await?;
    tx.insert_timeline_entry(&next.contact_id, &entry).await?;
    let contact_id = next.contact_id.clone();
    finish(tx, idem.as_ref(), &contact_id, next).await
}

/// ScheduleSend: a pending send for a later time.
pub async fn schedule_send(
    store: &dyn Store,
    tenant: &TenantId,
    new: NewScheduledSend,
    idem: Option<Idempotency>,
) -> StoreResult<ScheduledSend> {
    let mut tx = store.begin_write(tenant).await?;
    if let Some(first) = replay(&mut *tx, idem.as_ref()).await? {
        return Ok(first);
    }
    let email = lock_contact_email(&mut *tx, &new.contact_id).await?;
    let (scheduled, entry) = new.into_scheduled(email);
    tx.save_scheduled_send(&scheduled).await?;
    tx.insert_timeline_entry(&scheduled.contact_id, &entry)
        .await?;
    let contact_id = scheduled.contact_id.clone();
    finish(tx, idem.as_ref(), &contact_id, scheduled).await
}

/// CancelScheduledSend: only a pending send can be cancelled.
pub async fn cancel_scheduled_send(
    store: &dyn Store,
    tenant: &TenantId,
    scheduled_send_id: &str,
    at: DateTime<Utc>,
    idem: Option<Idempotency>,
) -> StoreResult<ScheduledSend> {
    let mut tx = store.begin_write(tenant).await?;
    if let Some(first) = replay(&mut *tx, idem.as_ref()).await? {
        return Ok(first);
    }
    let (next, entry) = lock_scheduled_send(&mut *tx, scheduled_send_id)
        .await?
        .cancel(at)?;
    tx.save_scheduled_send(&next).await?;
    tx.insert_timeline_entry(&next.contact_id, &entry).await?;
    let contact_id = next.contact_id.clone();
    finish(tx, idem.as_ref(), &contact_id, next).await
}

/// EnrolContact: a new enrolment, or a new run of a finished one.
pub async fn enrol(
    store: &dyn Store,
    tenant: &TenantId,
    new: NewEnrolment,
    idem: Option<Idempotency>,
) -> StoreResult<Enrolment> {
    let mut tx = store.begin_write(tenant).await?;
    if let Some(first) = replay(&mut *tx, idem.as_ref()).await? {
        return Ok(first);
    }
    lock_contact_email(&mut *tx, &new.contact_id).await?;
    let existing = tx.lock_enrolment(&new.contact_id, &new.sequence_id).await?;
    let (enrolment, entry) = Enrolment::enrol(
        existing.as_ref(),
        new.contact_id.clone(),
        new.sequence_id,
        new.sequence_name,
        new.at,
    )?;
    tx.save_enrolment(&enrolment).await?;
    tx.insert_timeline_entry(&new.contact_id, &entry).await?;
    finish(tx, idem.as_ref(), &new.contact_id, enrolment).await
}

/// UpdateEnrolment: a change of status or step; nothing when neither changes.
pub async fn update_enrolment(
    store: &dyn Store,
    tenant: &TenantId,
    change: EnrolmentChange,
    idem: Option<Idempotency>,
) -> StoreResult<Enrolment> {
    let mut tx = store.begin_write(tenant).await?;
    if let Some(first) = replay(&mut *tx, idem.as_ref()).await? {
        return Ok(first);
    }
    lock_contact_email(&mut *tx, &change.contact_id).await?;
    let current = tx
        .lock_enrolment(&change.contact_id, &change.sequence_id)
        .await?
        .ok_or(StoreError::NotFound("enrolment"))?;
    let enrolment = match current.update(change.status, change.current_step, change.at)? {
        None => current,
        Some((next, entry)) => {
            tx.save_enrolment(&next).await?;
            tx.insert_timeline_entry(&change.contact_id, &entry).await?;
            next
        }
    };
    finish(tx, idem.as_ref(), &change.contact_id, enrolment).await
}

/// SetSegmentMembership: join or leave; a member whose segment was renamed keeps
/// its membership under the new name (no timeline entry).
pub async fn set_membership(
    store: &dyn Store,
    tenant: &TenantId,
    change: MembershipChange,
    idem: Option<Idempotency>,
) -> StoreResult<MembershipOutcome> {
    let mut tx = store.begin_write(tenant).await?;
    if let Some(first) = replay(&mut *tx, idem.as_ref()).await? {
        return Ok(first);
    }
    lock_contact_email(&mut *tx, &change.contact_id).await?;
    let existing = tx
        .membership(&change.contact_id, &change.segment_id)
        .await?;
    let (membership, changed) = match (existing, change.member) {
        (None, false) => (None, false),
        (Some(mut existing), true) => {
            if existing.segment_name != change.segment_name {
                existing.segment_name = change.segment_name.clone();
                tx.save_membership(&existing).await?;
            }
            (Some(existing), false)
        }
        (None, true) => {
            let joined = Membership {
                contact_id: change.contact_id.clone(),
                segment_id: change.segment_id.clone(),
                segment_name: change.segment_name.clone(),
                joined_at: change.at,
            };
            tx.save_membership(&joined).await?;
            let entry = segment_entry(
                "segment.entered",
                &joined.segment_id,
                &joined.segment_name,
                change.at,
            );
            tx.insert_timeline_entry(&joined.contact_id, &entry).await?;
            (Some(joined), true)
        }
        (Some(left), false) => {
            tx.delete_membership(&left.contact_id, &left.segment_id)
                .await?;
            let entry = segment_entry(
                "segment.exited",
                &left.segment_id,
                &left.segment_name,
                change.at,
            );
            tx.insert_timeline_entry(&left.contact_id, &entry).await?;
            (None, true)
        }
    };
    let outcome = MembershipOutcome {
        membership,
        changed,
    };
    finish(tx, idem.as_ref(), &change.contact_id, outcome).await
}

/// TrackEvent: by id or by address (an unknown address creates the contact);
/// `email.unsubscribed` marks the contact unsubscribed (once).
pub async fn track_event(
    store: &dyn Store,
    tenant: &TenantId,
    new: NewEvent,
    idem: Option<Idempotency>,
) -> StoreResult<TrackedEvent> {
    let mut tx = store.begin_write(tenant).await?;
    if let Some(first) = replay(&mut *tx, idem.as_ref()).await? {
        return Ok(first);
    }
    let (contact_id, _) = resolve(&mut *tx, &new.contact, new.at).await?;
    let entry = new.entry();
    tx.insert_timeline_entry(&contact_id, &entry).await?;
    if new.name == UNSUBSCRIBE_EVENT {
        let event_id = entry
            .data
            .get("event_id")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let flagged = contact_unsubscribed(event_id, new.at);
        set_flag(&mut *tx, &contact_id, ContactFlag::Unsubscribed, &flagged).await?;
    }
    let tracked = TrackedEvent {
        contact_id: contact_id.clone(),
        entry,
    };
    finish(tx, idem.as_ref(), &contact_id, tracked).await
}

/// Remembers the response for a retry, commits, and answers with it.
async fn finish<T: serde::Serialize>(
    mut tx: Box<dyn WriteTx + '_>,
    idem: Option<&Idempotency>,
    contact: &ContactId,
    response: T,
) -> StoreResult<T> {
    remember(&mut *tx, idem, Some(contact), &response).await?;
    tx.commit().await?;
    Ok(response)
}

async fn lock_contact_email(tx: &mut dyn WriteTx, id: &ContactId) -> StoreResult<String> {
    tx.lock_contact_email(id)
        .await?
        .ok_or(StoreError::NotFound("contact"))
}

async fn lock_send(tx: &mut dyn WriteTx, id: &str) -> StoreResult<SendRecord> {
    let missing = || StoreError::NotFound("send");
    // The contact first, the order in which DeleteContact takes them (the contact,
    // then its records through the cascade), so a write and a delete cannot deadlock.
    if !tx.lock_owner(ContactRecord::Send, id).await? {
        return Err(missing());
    }
    tx.lock_send(id).await?.ok_or_else(missing)
}

async fn lock_scheduled_send(tx: &mut dyn WriteTx, id: &str) -> StoreResult<ScheduledSend> {
    let missing = || StoreError::NotFound("scheduled send");
    if !tx.lock_owner(ContactRecord::ScheduledSend, id).await? {
        return Err(missing());
    }
    tx.lock_scheduled_send(id).await?.ok_or_else(missing)
}

/// Sets a contact flag with its timeline entry; nothing when it was already set. The
/// change happens now, even when the event that caused it is backdated.
async fn set_flag(
    tx: &mut dyn WriteTx,
    contact: &ContactId,
    flag: ContactFlag,
    entry: &crate::domain::TimelineEntry,
) -> StoreResult<()> {
    if tx
        .set_contact_flag(contact, flag, crate::domain::now())
        .await?
    {
        tx.insert_timeline_entry(contact, entry).await?;
    }
    Ok(())
}
