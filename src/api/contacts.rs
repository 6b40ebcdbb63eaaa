//! `kraiter.contacts.v1.ContactsService`: the SDK's contacts namespace, and the
//! writes and reads beyond it (`batch_get`, `import`, `upsert`).

mod activity;
mod batch_get;
mod count;
mod import;
mod upsert;
mod watch;

use tonic::{Request, Response, Status};

use super::convert_activity::idempotency;
use super::cursors::ListCursors;
use super::pb;
use super::stream::{self, Fetched, PageStream, Pager, Streams};
use super::wire::{self, server::contacts_service_server::ContactsService};
use super::{
    AccessControl, Credentials, consistency, convert, filter, handle, handle_stream,
    handle_with_key,
};
use crate::app;
use crate::domain::{
    ContactId, ContactKey, ContactUpdate, CursorKey, CursorKind, Email, Etag, NewContact, PageSize,
    parse_max_pages,
};
use crate::store::{Access, ContactPage, DynStore, EncodedContact, ListSession};

pub struct ContactsApi {
    store: DynStore,
    auth: AccessControl,
    streams: Streams,
    /// Signs and checks the lists' cursors (the deployment's secret).
    cursor_key: CursorKey,
}

impl ContactsApi {
    /// `auth` is shared by both services, so one tenant's budget and one cache of
    /// keys cover all of its calls.
    pub fn new(
        store: DynStore,
        auth: AccessControl,
        streams: Streams,
        cursor_key: CursorKey,
    ) -> Self {
        Self {
            store,
            auth,
            streams,
            cursor_key,
        }
    }
}

#[tonic::async_trait]
impl ContactsService for ContactsApi {
    async fn create_contact(
        &self,
        request: Request<pb::CreateContactRequest>,
    ) -> Result<Response<wire::Contact>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let credentials = Credentials::new(&metadata, &extensions);
        handle_with_key(
            &self.auth,
            "CreateContact",
            &credentials,
            |access| async move {
                let idem = idempotency("CreateContact", &message.request_id, &message)?;
                let new = NewContact::try_from(message)?;
                let created =
                    app::contacts::create(self.store.as_ref(), &access, new, idem).await?;
                Ok(convert::contact(created))
            },
        )
        .await
    }

    async fn get_contact(
        &self,
        request: Request<pb::GetContactRequest>,
    ) -> Result<Response<wire::Contact>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let credentials = Credentials::new(&metadata, &extensions);
        handle_with_key(
            &self.auth,
            "GetContact",
            &credentials,
            |access| async move {
                let id = ContactId::parse(&message.id, "id")?;
                let found = self.store.get_contact(&access, &id).await?;
                Ok(convert::contact_view(found)?)
            },
        )
        .await
    }

    async fn get_contact_by_email(
        &self,
        request: Request<pb::GetContactByEmailRequest>,
    ) -> Result<Response<wire::GetContactByEmailResponse>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let credentials = Credentials::new(&metadata, &extensions);
        handle_with_key(
            &self.auth,
            "GetContactByEmail",
            &credentials,
            |access| async move {
                let email = Email::parse(&message.email, "email")?;
                let found = self.store.get_contact_by_email(&access, &email).await?;
                let contact = found.map(convert::contact_view).transpose()?;
                Ok(wire::GetContactByEmailResponse { contact })
            },
        )
        .await
    }

    type ListContactsStream = PageStream<wire::ListContactsResponse>;

    async fn list_contacts(
        &self,
        request: Request<pb::ListContactsRequest>,
    ) -> Result<Response<Self::ListContactsStream>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let credentials = Credentials::new(&metadata, &extensions);
        let read_from = consistency::read_from(&metadata);
        handle_stream(
            &self.auth,
            "ListContacts",
            &credentials,
            |access| async move {
                let from = read_from?;
                let tenant = access.tenant.clone();
                let page_size = PageSize::parse(message.limit)?;
                let max_pages = parse_max_pages(message.max_pages)?;
                let query = filter::contact_query(
                    &message.search,
                    message.suppressed,
                    message.filter,
                    message.order_by,
                )?;
                let fingerprint = query.fingerprint_parts();
                let parts: Vec<&str> = fingerprint.iter().map(String::as_str).collect();
                let cursors =
                    ListCursors::new(&self.cursor_key, &tenant, CursorKind::Contacts, &parts);
                let order = query.order;
                let after = cursors
                    .resume(&message.cursor)?
                    .map(|raw| order.decode_key(&raw))
                    .transpose()?;
                let admitted = self.streams.admit(access)?;
                let store = self.store.clone();
                let fetch_tenant = tenant.clone();
                let fetch_query = query.clone();
                // A stream read to its end may have its store hold a statement open
                // between its queries (`ContactStore::stream_contacts`); one of a few
                // pages reads page queries, which hold nothing.
                let session = max_pages.is_none().then(ListSession::default);
                Ok(admitted.spawn(Pager {
                    page_size,
                    max_pages,
                    after,
                    fetch: move |after: Option<ContactKey>, limit| {
                        let (store, tenant, query, session) = (
                            store.clone(),
                            fetch_tenant.clone(),
                            fetch_query.clone(),
                            session.clone(),
                        );
                        async move {
                            let page = ContactPage {
                                from,
                                tenant: &tenant,
                                query: &query,
                                after: after.as_ref(),
                                limit,
                                max_bytes: stream::QUERY_CUT_BYTES,
                                encoder: &wire::ListedContacts,
                            };
                            let rows = match &session {
                                Some(session) => store.stream_contacts(session, page).await,
                                None => store.list_contacts(page).await,
                            };
                            rows.map(Fetched::from_rows)
                        }
                    },
                    key: |row: &EncodedContact| row.key.clone(),
                    size: self
                        .store
                        .multi_page_queries()
                        .then_some(EncodedContact::size),
                    convert: |row: EncodedContact| Ok(wire::ContactBytes::from_bytes(row.bytes)),
                    message: move |contacts: Vec<wire::ContactBytes>, next: Option<ContactKey>| {
                        wire::ListContactsResponse {
                            contacts,
                            next_cursor: cursors.next(next.map(|key| order.encode_key(&key))),
                        }
                    },
                }))
            },
        )
        .await
    }

    async fn update_contact(
        &self,
        request: Request<pb::UpdateContactRequest>,
    ) -> Result<Response<wire::Contact>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let credentials = Credentials::new(&metadata, &extensions);
        handle_with_key(
            &self.auth,
            "UpdateContact",
            &credentials,
            |access| async move {
                let id = ContactId::parse(&message.id, "id")?;
                let idem = idempotency("UpdateContact", &message.request_id, &message)?;
                let etag = Etag::parse(&message.etag, "etag")?;
                let update = ContactUpdate::try_from(message)?;
                let store = self.store.as_ref();
                let updated =
                    app::contacts::update(store, &access, &id, update, etag, idem).await?;
                Ok(convert::contact(updated))
            },
        )
        .await
    }

    async fn delete_contact(
        &self,
        request: Request<pb::DeleteContactRequest>,
    ) -> Result<Response<pb::DeleteContactResponse>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let credentials = Credentials::new(&metadata, &extensions);
        handle(
            &self.auth,
            "DeleteContact",
            &credentials,
            |tenant| async move {
                let id = ContactId::parse(&message.id, "id")?;
                let idem = idempotency("DeleteContact", &message.request_id, &message)?;
                let etag = Etag::parse(&message.etag, "etag")?;
                let access = Access::tenant(tenant);
                app::contacts::delete(self.store.as_ref(), &access, &id, etag, idem).await?;
                Ok(pb::DeleteContactResponse {
                    id: id.into_string(),
                })
            },
        )
        .await
    }

    type ListContactSendsStream = PageStream<pb::ListContactSendsResponse>;

    async fn list_contact_sends(
        &self,
        request: Request<pb::ListContactSendsRequest>,
    ) -> Result<Response<Self::ListContactSendsStream>, Status> {
        activity::list_contact_sends(self, request).await
    }

    type ListContactScheduledSendsStream = PageStream<pb::ListContactScheduledSendsResponse>;

    async fn list_contact_scheduled_sends(
        &self,
        request: Request<pb::ListContactScheduledSendsRequest>,
    ) -> Result<Response<Self::ListContactScheduledSendsStream>, Status> {
        activity::list_contact_scheduled_sends(self, request).await
    }

    async fn list_contact_sequences(
        &self,
        request: Request<pb::ListContactSequencesRequest>,
    ) -> Result<Response<pb::ListContactSequencesResponse>, Status> {
        activity::list_contact_sequences(self, request).await
    }

    async fn list_contact_segments(
        &self,
        request: Request<pb::ListContactSegmentsRequest>,
    ) -> Result<Response<pb::ListContactSegmentsResponse>, Status> {
        activity::list_contact_segments(self, request).await
    }

    type ListContactTimelineStream = PageStream<pb::ListContactTimelineResponse>;

    async fn list_contact_timeline(
        &self,
        request: Request<pb::ListContactTimelineRequest>,
    ) -> Result<Response<Self::ListContactTimelineStream>, Status> {
        activity::list_contact_timeline(self, request).await
    }

    async fn upsert_contact(
        &self,
        request: Request<pb::UpsertContactRequest>,
    ) -> Result<Response<wire::UpsertContactResponse>, Status> {
        upsert::upsert_contact(self, request).await
    }

    type ImportContactsStream = import::ImportStream;

    async fn import_contacts(
        &self,
        request: Request<tonic::Streaming<pb::ImportContactsRequest>>,
    ) -> Result<Response<Self::ImportContactsStream>, Status> {
        import::import_contacts(self, request).await
    }

    async fn batch_get_contacts(
        &self,
        request: Request<pb::BatchGetContactsRequest>,
    ) -> Result<Response<wire::BatchGetContactsResponse>, Status> {
        batch_get::batch_get_contacts(self, request).await
    }

    type WatchContactsStream = watch::WatchStream;

    async fn watch_contacts(
        &self,
        request: Request<pb::WatchContactsRequest>,
    ) -> Result<Response<Self::WatchContactsStream>, Status> {
        watch::watch_contacts(self, request).await
    }

    async fn count_contacts(
        &self,
        request: Request<pb::CountContactsRequest>,
    ) -> Result<Response<pb::CountContactsResponse>, Status> {
        count::count_contacts(self, request).await
    }
}
