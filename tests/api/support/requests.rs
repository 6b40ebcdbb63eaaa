//! Any request of either service as one value, so tables can hold calls to every RPC;
//! and a fixture with one record of each kind to point them at.

use kraiter_contacts::api::pb;
use pb::record_send_request::Recipient;
use tonic::{Status, Streaming};

use crate::support::{Activity, Client};

#[derive(Debug, Clone)]
pub enum Req {
    Create(pb::CreateContactRequest),
    Get(pb::GetContactRequest),
    GetByEmail(pb::GetContactByEmailRequest),
    List(pb::ListContactsRequest),
    Update(pb::UpdateContactRequest),
    Delete(pb::DeleteContactRequest),
    Sends(pb::ListContactSendsRequest),
    Scheduled(pb::ListContactScheduledSendsRequest),
    Sequences(pb::ListContactSequencesRequest),
    Segments(pb::ListContactSegmentsRequest),
    Timeline(pb::ListContactTimelineRequest),
    RecordSend(pb::RecordSendRequest),
    SendStatus(pb::UpdateSendStatusRequest),
    Engagement(pb::RecordSendEngagementRequest),
    Schedule(pb::ScheduleSendRequest),
    Cancel(pb::CancelScheduledSendRequest),
    Enrol(pb::EnrolContactRequest),
    UpdateEnrolment(pb::UpdateEnrolmentRequest),
    Membership(pb::SetSegmentMembershipRequest),
    Track(pb::TrackEventRequest),
    Upsert(pb::UpsertContactRequest),
    BatchGet(pb::BatchGetContactsRequest),
    /// ImportContacts with one request message (one batch).
    Import(pb::ImportContactsRequest),
    Watch(pb::WatchContactsRequest),
    Count(pb::CountContactsRequest),
}

impl Req {
    pub fn create(email: &str) -> Self {
        Self::Create(pb::CreateContactRequest {
            email: email.to_owned(),
            properties: None,
            ..Default::default()
        })
    }

    /// Whether the client sends a stream of request messages (of which `encode` is
    /// one): no message at all is then a valid call.
    pub fn streams_requests(&self) -> bool {
        matches!(self, Self::Import(_))
    }

    /// The full method path, as on the wire.
    pub fn path(&self) -> &'static str {
        match self {
            Self::Create(_) => "/kraiter.contacts.v1.ContactsService/CreateContact",
            Self::Get(_) => "/kraiter.contacts.v1.ContactsService/GetContact",
            Self::GetByEmail(_) => "/kraiter.contacts.v1.ContactsService/GetContactByEmail",
            Self::List(_) => "/kraiter.contacts.v1.ContactsService/ListContacts",
            Self::Update(_) => "/kraiter.contacts.v1.ContactsService/UpdateContact",
            Self::Delete(_) => "/kraiter.contacts.v1.ContactsService/DeleteContact",
            Self::Sends(_) => "/kraiter.contacts.v1.ContactsService/ListContactSends",
            Self::Scheduled(_) => "/kraiter.contacts.v1.ContactsService/ListContactScheduledSends",
            Self::Sequences(_) => "/kraiter.contacts.v1.ContactsService/ListContactSequences",
            Self::Segments(_) => "/kraiter.contacts.v1.ContactsService/ListContactSegments",
            Self::Timeline(_) => "/kraiter.contacts.v1.ContactsService/ListContactTimeline",
            Self::RecordSend(_) => "/kraiter.contacts.v1.ActivityService/RecordSend",
            Self::SendStatus(_) => "/kraiter.contacts.v1.ActivityService/UpdateSendStatus",
            Self::Engagement(_) => "/kraiter.contacts.v1.ActivityService/RecordSendEngagement",
            Self::Schedule(_) => "/kraiter.contacts.v1.ActivityService/ScheduleSend",
            Self::Cancel(_) => "/kraiter.contacts.v1.ActivityService/CancelScheduledSend",
            Self::Enrol(_) => "/kraiter.contacts.v1.ActivityService/EnrolContact",
            Self::UpdateEnrolment(_) => "/kraiter.contacts.v1.ActivityService/UpdateEnrolment",
            Self::Membership(_) => "/kraiter.contacts.v1.ActivityService/SetSegmentMembership",
            Self::Track(_) => "/kraiter.contacts.v1.ActivityService/TrackEvent",
            Self::Upsert(_) => "/kraiter.contacts.v1.ContactsService/UpsertContact",
            Self::BatchGet(_) => "/kraiter.contacts.v1.ContactsService/BatchGetContacts",
            Self::Import(_) => "/kraiter.contacts.v1.ContactsService/ImportContacts",
            Self::Watch(_) => "/kraiter.contacts.v1.ContactsService/WatchContacts",
            Self::Count(_) => "/kraiter.contacts.v1.ContactsService/CountContacts",
        }
    }

    /// The request's protobuf bytes.
    pub fn encode(&self) -> Vec<u8> {
        use prost::Message;
        match self {
            Self::Create(r) => r.encode_to_vec(),
            Self::Get(r) => r.encode_to_vec(),
            Self::GetByEmail(r) => r.encode_to_vec(),
            Self::List(r) => r.encode_to_vec(),
            Self::Update(r) => r.encode_to_vec(),
            Self::Delete(r) => r.encode_to_vec(),
            Self::Sends(r) => r.encode_to_vec(),
            Self::Scheduled(r) => r.encode_to_vec(),
            Self::Sequences(r) => r.encode_to_vec(),
            Self::Segments(r) => r.encode_to_vec(),
            Self::Timeline(r) => r.encode_to_vec(),
            Self::RecordSend(r) => r.encode_to_vec(),
            Self::SendStatus(r) => r.encode_to_vec(),
            Self::Engagement(r) => r.encode_to_vec(),
            Self::Schedule(r) => r.encode_to_vec(),
            Self::Cancel(r) => r.encode_to_vec(),
            Self::Enrol(r) => r.encode_to_vec(),
            Self::UpdateEnrolment(r) => r.encode_to_vec(),
            Self::Membership(r) => r.encode_to_vec(),
            Self::Track(r) => r.encode_to_vec(),
            Self::Upsert(r) => r.encode_to_vec(),
            Self::BatchGet(r) => r.encode_to_vec(),
            Self::Import(r) => r.encode_to_vec(),
            Self::Watch(r) => r.encode_to_vec(),
            Self::Count(r) => r.encode_to_vec(),
        }
    }
}

async fn drain<T>(mut stream: Streaming<T>) -> Result<(), Status> {
    while stream.message().await?.is_some() {}
    Ok(())
}

/// Sends `request`; a stream is read to its end, so an error in any page counts.
pub async fn send(clients: &mut (Client, Activity), request: Req) -> Result<(), Status> {
    let (c, a) = clients;
    match request {
        Req::Create(r) => c.create_contact(r).await.map(drop),
        Req::Get(r) => c.get_contact(r).await.map(drop),
        Req::GetByEmail(r) => c.get_contact_by_email(r).await.map(drop),
        Req::List(r) => drain(c.list_contacts(r).await?.into_inner()).await,
        Req::Update(r) => c.update_contact(r).await.map(drop),
        Req::Delete(r) => c.delete_contact(r).await.map(drop),
        Req::Sends(r) => drain(c.list_contact_sends(r).await?.into_inner()).await,
        Req::Scheduled(r) => drain(c.list_contact_scheduled_sends(r).await?.into_inner()).await,
        Req::Sequences(r) => c.list_contact_sequences(r).await.map(drop),
        Req::Segments(r) => c.list_contact_segments(r).await.map(drop),
        Req::Timeline(r) => drain(c.list_contact_timeline(r).await?.into_inner()).await,
        Req::RecordSend(r) => a.record_send(r).await.map(drop),
        Req::SendStatus(r) => a.update_send_status(r).await.map(drop),
        Req::Engagement(r) => a.record_send_engagement(r).await.map(drop),
        Req::Schedule(r) => a.schedule_send(r).await.map(drop),
        Req::Cancel(r) => a.cancel_scheduled_send(r).await.map(drop),
        Req::Enrol(r) => a.enrol_contact(r).await.map(drop),
        Req::UpdateEnrolment(r) => a.update_enrolment(r).await.map(drop),
        Req::Membership(r) => a.set_segment_membership(r).await.map(drop),
        Req::Track(r) => a.track_event(r).await.map(drop),
        Req::Upsert(r) => c.upsert_contact(r).await.map(drop),
        Req::BatchGet(r) => c.batch_get_contacts(r).await.map(drop),
        Req::Import(r) => {
            drain(
                c.import_contacts(tokio_stream::iter([r]))
                    .await?
                    .into_inner(),
            )
            .await
        }
        // A watch ends after its `max_changes` (a request without one would not).
        Req::Watch(r) => drain(c.watch_contacts(r).await?.into_inner()).await,
        Req::Count(r) => c.count_contacts(r).await.map(drop),
    }
}

/// One contact with a sent send, a pending scheduled send, an active enrolment in
/// `seq` and a membership of `vip`, plus the first-page cursors of its lists.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub contact: String,
    pub email: String,
    pub send: String,
    pub scheduled: String,
    /// `next_cursor` of the first page (limit 1) of each list.
    pub contacts_cursor: String,
    pub sends_cursor: String,
    pub scheduled_cursor: String,
    pub timeline_cursor: String,
}

pub async fn fixture(clients: &mut (Client, Activity)) -> Fixture {
    let (c, a) = clients;
    let email = format!("fixture-{}@example.com", ulid::Ulid::new()).to_lowercase();
    for i in 0..2 {
        c.create_contact(pb::CreateContactRequest {
            email: format!("other{i}-{email}"),
            properties: None,
            ..Default::default()
        })
        .await
        .expect("create another contact");
    }
    let contact = c
        .create_contact(pb::CreateContactRequest {
            email: email.clone(),
            properties: None,
            ..Default::default()
        })
        .await
        .expect("create the fixture contact")
        .into_inner()
        .id;
    let mut sends = Vec::new();
    for template in ["welcome", "news"] {
        let send = a
            .record_send(pb::RecordSendRequest {
                recipient: Some(Recipient::ContactId(contact.clone())),
                template_id: template.into(),
                status: pb::SendStatus::Sent as i32,
                source: pb::SendSource::Transactional as i32,
                ..Default::default()
            })
            .await
            .expect("record a send")
            .into_inner();
        sends.push(send.id);
    }
    let mut scheduled = Vec::new();
    for seconds in [4_000_000_000, 4_000_000_100] {
        let item = a
            .schedule_send(pb::ScheduleSendRequest {
                contact_id: contact.clone(),
                template_id: "later".into(),
                scheduled_for: Some(prost_types::Timestamp { seconds, nanos: 0 }),
                source: pb::SendSource::Sequence as i32,
                ..Default::default()
            })
            .await
            .expect("schedule a send")
            .into_inner();
        scheduled.push(item.id);
    }
    a.enrol_contact(pb::EnrolContactRequest {
        contact_id: contact.clone(),
        sequence_id: "seq".into(),
        ..Default::default()
    })
    .await
    .expect("enrol");
    a.set_segment_membership(pb::SetSegmentMembershipRequest {
        contact_id: contact.clone(),
        segment_id: "vip".into(),
        member: true,
        ..Default::default()
    })
    .await
    .expect("join a segment");
    let first = |cursor: Option<String>, what: &str| {
        let cursor = cursor.unwrap_or_else(|| panic!("a first page of {what}"));
        assert!(!cursor.is_empty(), "{what} has a second page");
        cursor
    };
    let contacts_cursor = c
        .list_contacts(pb::ListContactsRequest {
            limit: 1,
            max_pages: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .message()
        .await
        .expect("page")
        .map(|p| p.next_cursor);
    let sends_cursor = c
        .list_contact_sends(pb::ListContactSendsRequest {
            id: contact.clone(),
            limit: 1,
            max_pages: 1,
            ..Default::default()
        })
        .await
        .expect("sends")
        .into_inner()
        .message()
        .await
        .expect("page")
        .map(|p| p.next_cursor);
    let scheduled_cursor = c
        .list_contact_scheduled_sends(pb::ListContactScheduledSendsRequest {
            id: contact.clone(),
            limit: 1,
            max_pages: 1,
            ..Default::default()
        })
        .await
        .expect("scheduled")
        .into_inner()
        .message()
        .await
        .expect("page")
        .map(|p| p.next_cursor);
    let timeline_cursor = c
        .list_contact_timeline(pb::ListContactTimelineRequest {
            id: contact.clone(),
            limit: 1,
            max_pages: 1,
            ..Default::default()
        })
        .await
        .expect("timeline")
        .into_inner()
        .message()
        .await
        .expect("page")
        .map(|p| p.next_cursor);
    Fixture {
        contact,
        email,
        send: sends.remove(0),
        scheduled: scheduled.remove(0),
        contacts_cursor: first(contacts_cursor, "contacts"),
        sends_cursor: first(sends_cursor, "sends"),
        scheduled_cursor: first(scheduled_cursor, "scheduled sends"),
        timeline_cursor: first(timeline_cursor, "timeline"),
    }
}

/// One valid request of every RPC of both services, aimed at the fixture.
pub fn every_rpc(f: &Fixture) -> Vec<Req> {
    let c = || f.contact.clone();
    vec![
        Req::create(&format!("new-{}@example.com", ulid::Ulid::new()).to_lowercase()),
        Req::Get(pb::GetContactRequest { id: c() }),
        Req::GetByEmail(pb::GetContactByEmailRequest {
            email: f.email.clone(),
        }),
        Req::List(pb::ListContactsRequest::default()),
        Req::Update(pb::UpdateContactRequest {
            id: c(),
            ..Default::default()
        }),
        Req::Sends(pb::ListContactSendsRequest {
            id: c(),
            ..Default::default()
        }),
        Req::Scheduled(pb::ListContactScheduledSendsRequest {
            id: c(),
            ..Default::default()
        }),
        Req::Sequences(pb::ListContactSequencesRequest {
            id: c(),
            include_finished: true,
        }),
        Req::Segments(pb::ListContactSegmentsRequest { id: c() }),
        Req::Timeline(pb::ListContactTimelineRequest {
            id: c(),
            ..Default::default()
        }),
        Req::RecordSend(pb::RecordSendRequest {
            recipient: Some(Recipient::ContactId(c())),
            template_id: "t".into(),
            source: pb::SendSource::Transactional as i32,
            ..Default::default()
        }),
        Req::SendStatus(pb::UpdateSendStatusRequest {
            send_id: f.send.clone(),
            status: pb::SendStatus::Sent as i32,
            ..Default::default()
        }),
        Req::Engagement(pb::RecordSendEngagementRequest {
            send_id: f.send.clone(),
            engagement: pb::Engagement::Opened as i32,
            ..Default::default()
        }),
        Req::Schedule(pb::ScheduleSendRequest {
            contact_id: c(),
            template_id: "t".into(),
            scheduled_for: Some(prost_types::Timestamp {
                seconds: 4_000_000_000,
                nanos: 0,
            }),
            source: pb::SendSource::Sequence as i32,
            ..Default::default()
        }),
        Req::Cancel(pb::CancelScheduledSendRequest {
            scheduled_send_id: f.scheduled.clone(),
            ..Default::default()
        }),
        Req::Enrol(pb::EnrolContactRequest {
            contact_id: c(),
            sequence_id: format!("seq-{}", ulid::Ulid::new()),
            ..Default::default()
        }),
        Req::UpdateEnrolment(pb::UpdateEnrolmentRequest {
            contact_id: c(),
            sequence_id: "seq".into(),
            current_step: Some(2),
            ..Default::default()
        }),
        Req::Membership(pb::SetSegmentMembershipRequest {
            contact_id: c(),
            segment_id: "vip".into(),
            member: true,
            ..Default::default()
        }),
        Req::Track(pb::TrackEventRequest {
            subject: Some(pb::track_event_request::Subject::ContactId(c())),
            name: "page.viewed".into(),
            ..Default::default()
        }),
        Req::Upsert(pb::UpsertContactRequest {
            email: f.email.clone(),
            ..Default::default()
        }),
        Req::BatchGet(pb::BatchGetContactsRequest {
            ids: vec![c()],
            emails: vec![f.email.clone()],
        }),
        Req::Import(pb::ImportContactsRequest {
            rows: vec![pb::ImportRow {
                email: f.email.clone(),
                properties: None,
            }],
            mode: pb::ImportMode::UpdateOnly as i32,
        }),
        // The fixture's first change, then the watch ends.
        Req::Watch(pb::WatchContactsRequest {
            start: pb::WatchStart::OldestRetained as i32,
            max_changes: 1,
            ..Default::default()
        }),
        Req::Count(pb::CountContactsRequest {
            filter: Some(pb::ContactFilter {
                field: "email".into(),
                operator: pb::FilterOperator::Equals as i32,
                value: Some(prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(f.email.clone())),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        // Last: it erases the fixture contact.
        Req::Delete(pb::DeleteContactRequest {
            id: c(),
            ..Default::default()
        }),
    ]
}
