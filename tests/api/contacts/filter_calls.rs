//! What the filter tests share: building `ContactFilter`s, reading a whole filtered
//! list and its count, and the domain's reference semantics (`ContactFilter::matches`)
//! applied to what the server returned.

use std::collections::BTreeSet;

use kraiter_contacts::api::convert::to_value;
use kraiter_contacts::api::pb::{self, FilterOperator as Op};
use kraiter_contacts::domain::filter::Subject;
use serde_json::Value;
use tonic::Status;

use crate::support::{Activity, Client, json_of};

pub fn cond(field: &str, op: Op, value: Value) -> pb::ContactFilter {
    pb::ContactFilter {
        field: field.to_owned(),
        operator: op as i32,
        value: Some(to_value(value)),
        ..Default::default()
    }
}

pub fn bare(field: &str, op: Op) -> pb::ContactFilter {
    pb::ContactFilter {
        field: field.to_owned(),
        operator: op as i32,
        ..Default::default()
    }
}

pub fn among(field: &str, values: Vec<Value>) -> pb::ContactFilter {
    pb::ContactFilter {
        field: field.to_owned(),
        operator: Op::In as i32,
        values: values.into_iter().map(to_value).collect(),
        ..Default::default()
    }
}

pub fn at(field: &str, op: Op, time: prost_types::Timestamp) -> pb::ContactFilter {
    pb::ContactFilter {
        field: field.to_owned(),
        operator: op as i32,
        timestamp: Some(time),
        ..Default::default()
    }
}

pub fn all(members: Vec<pb::ContactFilter>) -> pb::ContactFilter {
    pb::ContactFilter {
        all: members,
        ..Default::default()
    }
}

pub fn any(members: Vec<pb::ContactFilter>) -> pb::ContactFilter {
    pb::ContactFilter {
        any: members,
        ..Default::default()
    }
}

/// Every contact a ListContacts streams, in order, or the first error.
pub async fn try_list(
    client: &mut Client,
    request: pb::ListContactsRequest,
) -> Result<Vec<pb::Contact>, Status> {
    let mut stream = client.list_contacts(request).await?.into_inner();
    let mut contacts = Vec::new();
    while let Some(page) = stream.message().await? {
        contacts.extend(page.contacts);
    }
    Ok(contacts)
}

pub async fn list(
    client: &mut Client,
    filter: Option<pb::ContactFilter>,
    order: pb::ContactOrder,
    limit: i32,
) -> Vec<pb::Contact> {
    let request = pb::ListContactsRequest {
        filter: filter.clone(),
        order_by: order as i32,
        limit,
        ..Default::default()
    };
    try_list(client, request)
        .await
        .unwrap_or_else(|status| panic!("list with {filter:?}: {status:?}"))
}

pub async fn count(client: &mut Client, filter: Option<pb::ContactFilter>) -> i64 {
    let answer = client
        .count_contacts(pb::CountContactsRequest {
            filter: filter.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("count with {filter:?}: {status:?}"))
        .into_inner();
    assert!(
        answer.exact,
        "a count is exact unless an estimate is asked for"
    );
    answer.count
}

pub fn emails(contacts: &[pb::Contact]) -> BTreeSet<String> {
    contacts.iter().map(|c| c.email.to_lowercase()).collect()
}

fn time(ts: &Option<prost_types::Timestamp>) -> chrono::DateTime<chrono::Utc> {
    let ts = ts.as_ref().expect("contacts carry their times");
    chrono::DateTime::from_timestamp(ts.seconds, ts.nanos as u32).expect("in range")
}

/// The domain's answer for `contact`: what both stores must agree with.
pub fn reference(filter: &pb::ContactFilter, contact: &pb::Contact) -> bool {
    let domain = kraiter_contacts::api::filter::contact_filter(filter.clone(), "filter")
        .expect("the filter is valid");
    let properties = match json_of(contact) {
        Value::Object(map) => map,
        _ => unreachable!("properties are an object"),
    };
    let email_key = contact.email.to_lowercase();
    domain.matches(&Subject {
        email_key: &email_key,
        properties: &properties,
        created_at: time(&contact.created_at),
        updated_at: time(&contact.updated_at),
        suppressed: contact.suppressed,
        unsubscribed: contact.unsubscribed,
    })
}

/// Suppresses the contact the way production does: a send to it bounces.
pub async fn suppress(activity: &mut Activity, contact: &str) {
    let send = activity
        .record_send(pb::RecordSendRequest {
            recipient: Some(pb::record_send_request::Recipient::ContactId(
                contact.to_owned(),
            )),
            template_id: "t".into(),
            status: pb::SendStatus::Sent as i32,
            source: pb::SendSource::Transactional as i32,
            ..Default::default()
        })
        .await
        .expect("record a send")
        .into_inner();
    activity
        .update_send_status(pb::UpdateSendStatusRequest {
            send_id: send.id,
            status: pb::SendStatus::Bounced as i32,
            ..Default::default()
        })
        .await
        .expect("bounce it");
}

pub async fn unsubscribe(activity: &mut Activity, contact: &str) {
    activity
        .track_event(pb::TrackEventRequest {
            subject: Some(pb::track_event_request::Subject::ContactId(
                contact.to_owned(),
            )),
            name: "email.unsubscribed".into(),
            ..Default::default()
        })
        .await
        .expect("unsubscribe");
}
