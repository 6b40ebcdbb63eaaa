//! The reads of what ingestion wrote about a contact: its sends, scheduled sends,
//! sequences, segments and timeline.

use tonic::{Request, Response, Status};

use super::ContactsApi;
use crate::api::cursors::ListCursors;
use crate::api::pb::{self, TimelineOrder as PbTimelineOrder};
use crate::api::stream::{self, Admitted, Fetched, PageStream, Pager};
use crate::api::{
    ApiError, Credentials, consistency, convert, convert_activity, handle, handle_stream,
};
use crate::domain::{
    ContactId, CursorKind, PageSize, ScheduledSend, SendRecord, TimeKey, TimelineEntry,
    TimelineOrder, TimelineQuery, ValidationError, parse_max_pages,
};
use crate::store::Access;

pub(super) async fn list_contact_sends(
    api: &ContactsApi,
    request: Request<pb::ListContactSendsRequest>,
) -> Result<Response<PageStream<pb::ListContactSendsResponse>>, Status> {
    let (metadata, extensions, message) = request.into_parts();
    let credentials = Credentials::new(&metadata, &extensions);
    let read_from = consistency::read_from(&metadata);
    handle_stream(
        &api.auth,
        "ListContactSends",
        &credentials,
        |access| async move {
            let from = read_from?;
            let tenant = access.tenant.clone();
            let Bounds(id, page_size, max_pages) =
                Bounds::parse(&message.id, message.limit, message.max_pages)?;
            let cursors =
                ListCursors::new(&api.cursor_key, &tenant, CursorKind::Sends, &[id.as_str()]);
            let after = cursors.resume(&message.cursor)?;
            let admitted = admit(api, access, &id).await?;
            let store = api.store.clone();
            let fetch_tenant = tenant.clone();
            Ok(admitted.spawn(Pager {
                page_size,
                max_pages,
                after,
                fetch: move |after: Option<String>, limit| {
                    let (store, tenant, id) = (store.clone(), fetch_tenant.clone(), id.clone());
                    async move {
                        store
                            .list_sends(from, &tenant, &id, after.as_deref(), limit)
                            .await
                            .map(Fetched::from)
                    }
                },
                key: |send: &SendRecord| send.id.clone(),
                size: None,
                convert: |send: SendRecord| Ok(convert_activity::send(send)),
                message: move |sends: Vec<pb::Send>, next: Option<String>| {
                    pb::ListContactSendsResponse {
                        sends,
                        next_cursor: cursors.next(next),
                    }
                },
            }))
        },
    )
    .await
}

pub(super) async fn list_contact_scheduled_sends(
    api: &ContactsApi,
    request: Request<pb::ListContactScheduledSendsRequest>,
) -> Result<Response<PageStream<pb::ListContactScheduledSendsResponse>>, Status> {
    let (metadata, extensions, message) = request.into_parts();
    let credentials = Credentials::new(&metadata, &extensions);
    let read_from = consistency::read_from(&metadata);
    handle_stream(
        &api.auth,
        "ListContactScheduledSends",
        &credentials,
        |access| async move {
            let from = read_from?;
            let tenant = access.tenant.clone();
            let Bounds(id, page_size, max_pages) =
                Bounds::parse(&message.id, message.limit, message.max_pages)?;
            let cursors = ListCursors::new(
                &api.cursor_key,
                &tenant,
                CursorKind::ScheduledSends,
                &[id.as_str()],
            );
            let after = cursors
                .resume(&message.cursor)?
                .as_deref()
                .map(TimeKey::decode)
                .transpose()?;
            let admitted = admit(api, access, &id).await?;
            let store = api.store.clone();
            let fetch_tenant = tenant.clone();
            Ok(admitted.spawn(Pager {
                page_size,
                max_pages,
                after,
                fetch: move |after: Option<TimeKey>, limit| {
                    let (store, tenant, id) = (store.clone(), fetch_tenant.clone(), id.clone());
                    async move {
                        store
                            .list_scheduled_sends(from, &tenant, &id, after.as_ref(), limit)
                            .await
                            .map(Fetched::from)
                    }
                },
                key: |s: &ScheduledSend| TimeKey {
                    timestamp_micros: s.scheduled_for.timestamp_micros(),
                    id: s.id.clone(),
                },
                size: None,
                convert: |item: ScheduledSend| Ok(convert_activity::scheduled_send(item)),
                message: move |scheduled_sends: Vec<pb::ScheduledSend>, next: Option<TimeKey>| {
                    pb::ListContactScheduledSendsResponse {
                        scheduled_sends,
                        next_cursor: cursors.next(next.map(|k| k.encode())),
                    }
                },
            }))
        },
    )
    .await
}

pub(super) async fn list_contact_sequences(
    api: &ContactsApi,
    request: Request<pb::ListContactSequencesRequest>,
) -> Result<Response<pb::ListContactSequencesResponse>, Status> {
    let (metadata, extensions, message) = request.into_parts();
    let credentials = Credentials::new(&metadata, &extensions);
    handle(
        &api.auth,
        "ListContactSequences",
        &credentials,
        |tenant| async move {
            let id = ContactId::parse(&message.id, "id")?;
            api.store.ensure_contact(&tenant, &id).await?;
            let enrolments = api
                .store
                .list_enrolments(&tenant, &id, message.include_finished)
                .await?;
            Ok(pb::ListContactSequencesResponse {
                enrolments: enrolments
                    .into_iter()
                    .map(convert_activity::enrolment)
                    .collect(),
            })
        },
    )
    .await
}

pub(super) async fn list_contact_segments(
    api: &ContactsApi,
    request: Request<pb::ListContactSegmentsRequest>,
) -> Result<Response<pb::ListContactSegmentsResponse>, Status> {
    let (metadata, extensions, message) = request.into_parts();
    let credentials = Credentials::new(&metadata, &extensions);
    handle(
        &api.auth,
        "ListContactSegments",
        &credentials,
        |tenant| async move {
            let id = ContactId::parse(&message.id, "id")?;
            api.store.ensure_contact(&tenant, &id).await?;
            let memberships = api.store.list_memberships(&tenant, &id).await?;
            Ok(pb::ListContactSegmentsResponse {
                memberships: memberships
                    .into_iter()
                    .map(convert_activity::membership)
                    .collect(),
            })
        },
    )
    .await
}

pub(super) async fn list_contact_timeline(
    api: &ContactsApi,
    request: Request<pb::ListContactTimelineRequest>,
) -> Result<Response<PageStream<pb::ListContactTimelineResponse>>, Status> {
    let (metadata, extensions, message) = request.into_parts();
    let credentials = Credentials::new(&metadata, &extensions);
    let read_from = consistency::read_from(&metadata);
    handle_stream(
        &api.auth,
        "ListContactTimeline",
        &credentials,
        |access| async move {
            let from = read_from?;
            let tenant = access.tenant.clone();
            let Bounds(id, page_size, max_pages) =
                Bounds::parse(&message.id, message.limit, message.max_pages)?;
            let order = match PbTimelineOrder::try_from(message.order) {
                Ok(PbTimelineOrder::Unspecified | PbTimelineOrder::NewestFirst) => {
                    TimelineOrder::NewestFirst
                }
                Ok(PbTimelineOrder::OldestFirst) => TimelineOrder::OldestFirst,
                Err(_) => {
                    return Err(
                        ValidationError::new("order", "is not a known TimelineOrder").into(),
                    );
                }
            };
            let query = TimelineQuery::new(order, message.types)?;
            let fingerprint = query.fingerprint_parts(id.as_str());
            let parts: Vec<&str> = fingerprint.iter().map(String::as_str).collect();
            let cursors = ListCursors::new(&api.cursor_key, &tenant, CursorKind::Timeline, &parts);
            let after = cursors
                .resume(&message.cursor)?
                .as_deref()
                .map(TimeKey::decode)
                .transpose()?;
            let admitted = admit(api, access, &id).await?;
            let store = api.store.clone();
            let fetch_tenant = tenant.clone();
            Ok(admitted.spawn(Pager {
                page_size,
                max_pages,
                after,
                fetch: move |after: Option<TimeKey>, limit| {
                    let (store, tenant, query, id) = (
                        store.clone(),
                        fetch_tenant.clone(),
                        query.clone(),
                        id.clone(),
                    );
                    async move {
                        store
                            .list_timeline(
                                from,
                                &tenant,
                                &id,
                                &query,
                                after.as_ref(),
                                limit,
                                stream::QUERY_CUT_BYTES,
                            )
                            .await
                            .map(Fetched::from_rows)
                    }
                },
                key: |entry: &TimelineEntry| TimeKey {
                    timestamp_micros: entry.timestamp.timestamp_micros(),
                    id: entry.id.clone(),
                },
                size: None,
                convert: |entry: TimelineEntry| Ok(convert::timeline_entry(entry)),
                message: move |entries: Vec<pb::TimelineEntry>, next: Option<TimeKey>| {
                    pb::ListContactTimelineResponse {
                        entries,
                        next_cursor: cursors.next(next.map(|k| k.encode())),
                    }
                },
            }))
        },
    )
    .await
}

/// What each stream of a contact's records parses first, in the order its errors
/// are reported: the contact's id, the page size, the bound on pages.
struct Bounds(ContactId, PageSize, Option<u32>);

impl Bounds {
    fn parse(id: &str, limit: i32, max_pages: i32) -> Result<Self, ApiError> {
        Ok(Self(
            ContactId::parse(id, "id")?,
            PageSize::parse(limit)?,
            parse_max_pages(max_pages)?,
        ))
    }
}

/// Lets the stream in, then checks that its contact is the tenant's: a stream that
/// would be refused costs no read.
async fn admit(api: &ContactsApi, access: Access, id: &ContactId) -> Result<Admitted, ApiError> {
    let tenant = access.tenant.clone();
    let admitted = api.streams.admit(access)?;
    api.store.ensure_contact(&tenant, id).await?;
    Ok(admitted)
}
