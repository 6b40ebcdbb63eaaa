//! `kraiter.contacts.v1.ActivityService`: how the platform's other services record
//! what happens to a contact.

use tonic::{Request, Response, Status};

use super::convert::timeline_entry;
use super::convert_activity::{self as conv, idempotency};
use super::pb;
use super::pb::activity_service_server::ActivityService;
use super::{AccessControl, Credentials, handle};
use crate::app::activity as app;
use crate::store::DynStore;

pub struct ActivityApi {
    store: DynStore,
    auth: AccessControl,
}

impl ActivityApi {
    /// `auth` is shared by both services, so one tenant's budget and one cache of
    /// keys cover all of its calls.
    pub fn new(store: DynStore, auth: AccessControl) -> Self {
        Self { store, auth }
    }
}

#[tonic::async_trait]
impl ActivityService for ActivityApi {
    async fn record_send(
        &self,
        request: Request<pb::RecordSendRequest>,
    ) -> Result<Response<pb::Send>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let credentials = Credentials::new(&metadata, &extensions);
        handle(
            &self.auth,
            "RecordSend",
            &credentials,
            |tenant| async move {
                let idem = idempotency("RecordSend", &message.request_id, &message)?;
                let new = conv::new_send(message)?;
                Ok(conv::send(
                    app::record_send(self.store.as_ref(), &tenant, new, idem).await?,
                ))
            },
        )
        .await
    }

    async fn update_send_status(
        &self,
        request: Request<pb::UpdateSendStatusRequest>,
    ) -> Result<Response<pb::Send>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let credentials = Credentials::new(&metadata, &extensions);
        handle(
            &self.auth,
            "UpdateSendStatus",
            &credentials,
            |tenant| async move {
                let idem = idempotency("UpdateSendStatus", &message.request_id, &message)?;
                let change = conv::status_change(message)?;
                Ok(conv::send(
                    app::update_send_status(self.store.as_ref(), &tenant, change, idem).await?,
                ))
            },
        )
        .await
    }

    async fn record_send_engagement(
        &self,
        request: Request<pb::RecordSendEngagementRequest>,
    ) -> Result<Response<pb::Send>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let credentials = Credentials::new(&metadata, &extensions);
        handle(
            &self.auth,
            "RecordSendEngagement",
            &credentials,
            |tenant| async move {
                let idem = idempotency("RecordSendEngagement", &message.request_id, &message)?;
                let engagement = conv::engagement(message)?;
                Ok(conv::send(
                    app::record_engagement(self.store.as_ref(), &tenant, engagement, idem).await?,
                ))
            },
        )
        .await
    }

    async fn schedule_send(
        &self,
        request: Request<pb::ScheduleSendRequest>,
    ) -> Result<Response<pb::ScheduledSend>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let credentials = Credentials::new(&metadata, &extensions);
        handle(
            &self.auth,
            "ScheduleSend",
            &credentials,
            |tenant| async move {
                let idem = idempotency("ScheduleSend", &message.request_id, &message)?;
                let new = conv::new_scheduled_send(message)?;
                Ok(conv::scheduled_send(
                    app::schedule_send(self.store.as_ref(), &tenant, new, idem).await?,
                ))
            },
        )
        .await
    }

    async fn cancel_scheduled_send(
        &self,
        request: Request<pb::CancelScheduledSendRequest>,
    ) -> Result<Response<pb::ScheduledSend>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let credentials = Credentials::new(&metadata, &extensions);
        handle(
            &self.auth,
            "CancelScheduledSend",
            &credentials,
            |tenant| async move {
                let idem = idempotency("CancelScheduledSend", &message.request_id, &message)?;
                let id = conv::scheduled_send_id(&message.scheduled_send_id)?;
                let cancelled = app::cancel_scheduled_send(
                    self.store.as_ref(),
                    &tenant,
                    &id,
                    crate::domain::now(),
                    idem,
                )
                .await?;
                Ok(conv::scheduled_send(cancelled))
            },
        )
        .await
    }

    async fn enrol_contact(
        &self,
        request: Request<pb::EnrolContactRequest>,
    ) -> Result<Response<pb::SequenceEnrolment>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let credentials = Credentials::new(&metadata, &extensions);
        handle(
            &self.auth,
            "EnrolContact",
            &credentials,
            |tenant| async move {
                let idem = idempotency("EnrolContact", &message.request_id, &message)?;
                let new = conv::new_enrolment(message)?;
                Ok(conv::enrolment(
                    app::enrol(self.store.as_ref(), &tenant, new, idem).await?,
                ))
            },
        )
        .await
    }

    async fn update_enrolment(
        &self,
        request: Request<pb::UpdateEnrolmentRequest>,
    ) -> Result<Response<pb::SequenceEnrolment>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let credentials = Credentials::new(&metadata, &extensions);
        handle(
            &self.auth,
            "UpdateEnrolment",
            &credentials,
            |tenant| async move {
                let idem = idempotency("UpdateEnrolment", &message.request_id, &message)?;
                let change = conv::enrolment_change(message)?;
                Ok(conv::enrolment(
                    app::update_enrolment(self.store.as_ref(), &tenant, change, idem).await?,
                ))
            },
        )
        .await
    }

    async fn set_segment_membership(
        &self,
        request: Request<pb::SetSegmentMembershipRequest>,
    ) -> Result<Response<pb::SetSegmentMembershipResponse>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let credentials = Credentials::new(&metadata, &extensions);
        handle(
            &self.auth,
            "SetSegmentMembership",
            &credentials,
            |tenant| async move {
                let idem = idempotency("SetSegmentMembership", &message.request_id, &message)?;
                let change = conv::membership_change(message)?;
                let outcome =
                    app::set_membership(self.store.as_ref(), &tenant, change, idem).await?;
                Ok(pb::SetSegmentMembershipResponse {
                    membership: outcome.membership.map(conv::membership),
                    changed: outcome.changed,
                })
            },
        )
        .await
    }

    async fn track_event(
        &self,
        request: Request<pb::TrackEventRequest>,
    ) -> Result<Response<pb::TrackEventResponse>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let credentials = Credentials::new(&metadata, &extensions);
        handle(
            &self.auth,
            "TrackEvent",
            &credentials,
            |tenant| async move {
                let idem = idempotency("TrackEvent", &message.request_id, &message)?;
                let new = conv::new_event(message)?;
                let tracked = app::track_event(self.store.as_ref(), &tenant, new, idem).await?;
                Ok(pb::TrackEventResponse {
                    contact_id: tracked.contact_id.into_string(),
                    entry: Some(timeline_entry(tracked.entry)),
                })
            },
        )
        .await
    }
}
