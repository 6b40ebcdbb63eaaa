//! Every string field of every RPC, for the hostile-string table in `strings`:
//! which kind of value it holds, its outcome when the value is acceptable, and how to
//! build the request around a value.

use kraiter_contacts::api::pb;
use tonic::Code;

use crate::hostile::strings::Kind;
use crate::support::requests::{Fixture, Req};

pub type Build = Box<dyn Fn(String) -> Req>;

/// A string field: `Rpc.field`, the kind of value it holds, its outcome when the
/// value is valid, and the request built around a value.
pub type Field = (&'static str, Kind, Code, Build);

mod activity;

/// Every string field of every RPC: (`Rpc.field`, kind, outcome when valid, builder).
pub fn string_fields(f: &Fixture) -> Vec<Field> {
    use Kind::*;
    let c = f.contact.clone();
    let ok = Code::Ok;
    let mut fields: Vec<Field> = Vec::new();
    let mut add = |name, kind, valid, build: Build| fields.push((name, kind, valid, build));

    add(
        "CreateContact.email",
        Email,
        ok,
        Box::new(|v| Req::create(&v)),
    );
    add(
        "GetContact.id",
        Id,
        ok,
        Box::new(|v| Req::Get(pb::GetContactRequest { id: v })),
    );
    add(
        "GetContactByEmail.email",
        Email,
        ok,
        Box::new(|v| Req::GetByEmail(pb::GetContactByEmailRequest { email: v })),
    );
    add(
        "BatchGetContacts.ids",
        Id,
        ok,
        Box::new(|v| {
            Req::BatchGet(pb::BatchGetContactsRequest {
                ids: vec![v],
                emails: vec![],
            })
        }),
    );
    add(
        "BatchGetContacts.emails",
        Email,
        ok,
        Box::new(|v| {
            Req::BatchGet(pb::BatchGetContactsRequest {
                ids: vec![],
                emails: vec![v],
            })
        }),
    );
    add(
        "ListContacts.search",
        Search,
        ok,
        Box::new(|v| {
            Req::List(pb::ListContactsRequest {
                search: v,
                ..Default::default()
            })
        }),
    );
    add(
        "ListContacts.cursor",
        Cursor,
        ok,
        Box::new(|v| {
            Req::List(pb::ListContactsRequest {
                cursor: v,
                ..Default::default()
            })
        }),
    );
    add(
        "UpdateContact.id",
        Id,
        ok,
        Box::new(|v| {
            Req::Update(pb::UpdateContactRequest {
                id: v,
                ..Default::default()
            })
        }),
    );
    let id = c.clone();
    add(
        "UpdateContact.email",
        Email,
        ok,
        Box::new(move |v| {
            Req::Update(pb::UpdateContactRequest {
                id: id.clone(),
                email: Some(v),
                properties: None,
                ..Default::default()
            })
        }),
    );
    add(
        "DeleteContact.id",
        Id,
        ok,
        Box::new(|v| {
            Req::Delete(pb::DeleteContactRequest {
                id: v,
                ..Default::default()
            })
        }),
    );
    add(
        "ListContactSends.id",
        Id,
        ok,
        Box::new(|v| {
            Req::Sends(pb::ListContactSendsRequest {
                id: v,
                ..Default::default()
            })
        }),
    );
    let id = c.clone();
    add(
        "ListContactSends.cursor",
        Cursor,
        ok,
        Box::new(move |v| {
            Req::Sends(pb::ListContactSendsRequest {
                id: id.clone(),
                cursor: v,
                ..Default::default()
            })
        }),
    );
    add(
        "ListContactScheduledSends.id",
        Id,
        ok,
        Box::new(|v| {
            Req::Scheduled(pb::ListContactScheduledSendsRequest {
                id: v,
                ..Default::default()
            })
        }),
    );
    let id = c.clone();
    add(
        "ListContactScheduledSends.cursor",
        Cursor,
        ok,
        Box::new(move |v| {
            Req::Scheduled(pb::ListContactScheduledSendsRequest {
                id: id.clone(),
                cursor: v,
                ..Default::default()
            })
        }),
    );
    add(
        "ListContactSequences.id",
        Id,
        ok,
        Box::new(|v| {
            Req::Sequences(pb::ListContactSequencesRequest {
                id: v,
                include_finished: true,
            })
        }),
    );
    add(
        "ListContactSegments.id",
        Id,
        ok,
        Box::new(|v| Req::Segments(pb::ListContactSegmentsRequest { id: v })),
    );
    add(
        "ListContactTimeline.id",
        Id,
        ok,
        Box::new(|v| {
            Req::Timeline(pb::ListContactTimelineRequest {
                id: v,
                ..Default::default()
            })
        }),
    );
    let id = c.clone();
    add(
        "ListContactTimeline.cursor",
        Cursor,
        ok,
        Box::new(move |v| {
            Req::Timeline(pb::ListContactTimelineRequest {
                id: id.clone(),
                cursor: v,
                ..Default::default()
            })
        }),
    );
    let id = c.clone();
    add(
        "ListContactTimeline.types",
        TimelineType,
        ok,
        Box::new(move |v| {
            Req::Timeline(pb::ListContactTimelineRequest {
                id: id.clone(),
                types: vec![v],
                ..Default::default()
            })
        }),
    );

    activity::string_fields(f, &mut fields);
    fields
}
