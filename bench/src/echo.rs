//! The framework's ceiling: the real server's generated ContactsService server, built
//! from the contract as the service builds it (build.rs) and with its codec settings,
//! answering the unary calls with a prebuilt Contact and doing nothing else (no auth, no
//! database), and ListContacts with a stream of pages of prebuilt contacts (the
//! transport's ceiling for an export: the client, HTTP/2 and encoding, no store). Runs
//! as its own process (`kraiter-bench echo-server --port N --stream-rows R`), like the
//! real server.

use std::net::SocketAddr;
use std::sync::Arc;

use kraiter_contacts::api::{convert, pb};
use kraiter_contacts::domain::{Contact as DomainContact, Etag};
use prost::Message;
use tokio_stream::{Empty, Stream};
use tonic::codec::CompressionEncoding;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::data::Dataset;
use server::contacts_service_server::{ContactsService, ContactsServiceServer};

mod server {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("kraiter.contacts.v1");
}

// The service answers with its own `api::wire` messages, whose `properties` field holds
// the already encoded `google.protobuf.Struct` (an embedded message and a `bytes` field
// are the same on the wire). These mirror them, so the echo server encodes what the
// service encodes at the same cost; a test below reads them back as the `pb` types.

/// `kraiter.contacts.v1.Contact`, with `properties` already encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Contact {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub email: String,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub properties: Option<Vec<u8>>,
    #[prost(bool, tag = "4")]
    pub suppressed: bool,
    #[prost(bool, tag = "5")]
    pub unsubscribed: bool,
    #[prost(message, optional, tag = "6")]
    pub created_at: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "7")]
    pub updated_at: Option<prost_types::Timestamp>,
    #[prost(string, tag = "8")]
    pub etag: String,
}

/// `kraiter.contacts.v1.GetContactByEmailResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetContactByEmailResponse {
    #[prost(message, optional, tag = "1")]
    pub contact: Option<Contact>,
}

/// `kraiter.contacts.v1.UpsertContactResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpsertContactResponse {
    #[prost(message, optional, tag = "1")]
    pub contact: Option<Contact>,
    #[prost(bool, tag = "2")]
    pub created: bool,
}

/// `kraiter.contacts.v1.BatchGetContactsResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchGetContactsResponse {
    #[prost(message, repeated, tag = "1")]
    pub contacts: Vec<Contact>,
    #[prost(string, repeated, tag = "2")]
    pub missing: Vec<String>,
}

/// `kraiter.contacts.v1.ListContactsResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContactsResponse {
    #[prost(message, repeated, tag = "1")]
    pub contacts: Vec<Contact>,
    #[prost(string, tag = "2")]
    pub next_cursor: String,
}

impl From<DomainContact> for Contact {
    fn from(contact: DomainContact) -> Self {
        let properties = convert::to_struct(contact.properties.into_map());
        Contact {
            properties: Some(properties.encode_to_vec()),
            id: contact.id.into_string(),
            email: contact.email.into_string(),
            suppressed: contact.suppressed,
            unsubscribed: contact.unsubscribed,
            created_at: Some(convert::timestamp(contact.created_at)),
            updated_at: Some(convert::timestamp(contact.updated_at)),
            etag: Etag::of(contact.revision),
        }
    }
}

struct Echo {
    contact: Contact,
    /// The contacts of a page, cloned into every page the stream sends with ids that
    /// ascend across the stream, as the export's reader checks.
    page: Arc<Vec<Contact>>,
    /// How many rows a ListContacts stream carries in all.
    stream_rows: u64,
}

/// Most contacts in one streamed page (the service's own page limit).
const MAX_PAGE: u64 = 1000;

/// The pages of a stream of `rows` contacts, `limit` a page, built as they are sent.
fn pages(
    page: Arc<Vec<Contact>>,
    rows: u64,
    limit: u64,
) -> impl Stream<Item = Result<ListContactsResponse, Status>> + Send + 'static {
    let limit = limit.clamp(1, page.len() as u64);
    tokio_stream::iter((0..rows.div_ceil(limit)).map(move |n| {
        let first = n * limit;
        let contacts = (first..rows.min(first + limit))
            .zip(page.iter())
            .map(|(row, template)| Contact {
                id: format!("con_{row:026}"),
                ..template.clone()
            })
            .collect();
        Ok(ListContactsResponse {
            contacts,
            next_cursor: String::new(),
        })
    }))
}

type Nothing<T> = Empty<Result<T, Status>>;

fn unsupported<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented(
        "the echo server answers unary contact calls only",
    ))
}

#[tonic::async_trait]
impl ContactsService for Echo {
    async fn create_contact(
        &self,
        _: Request<pb::CreateContactRequest>,
    ) -> Result<Response<Contact>, Status> {
        Ok(Response::new(self.contact.clone()))
    }

    async fn get_contact(
        &self,
        _: Request<pb::GetContactRequest>,
    ) -> Result<Response<Contact>, Status> {
        Ok(Response::new(self.contact.clone()))
    }

    async fn get_contact_by_email(
        &self,
        _: Request<pb::GetContactByEmailRequest>,
    ) -> Result<Response<GetContactByEmailResponse>, Status> {
        Ok(Response::new(GetContactByEmailResponse {
            contact: Some(self.contact.clone()),
        }))
    }

    type ListContactsStream =
        std::pin::Pin<Box<dyn Stream<Item = Result<ListContactsResponse, Status>> + Send>>;

    async fn list_contacts(
        &self,
        request: Request<pb::ListContactsRequest>,
    ) -> Result<Response<Self::ListContactsStream>, Status> {
        let limit = u64::try_from(request.get_ref().limit)
            .ok()
            .filter(|limit| *limit > 0)
            .unwrap_or(MAX_PAGE);
        Ok(Response::new(Box::pin(pages(
            self.page.clone(),
            self.stream_rows,
            limit,
        ))))
    }

    async fn update_contact(
        &self,
        _: Request<pb::UpdateContactRequest>,
    ) -> Result<Response<Contact>, Status> {
        Ok(Response::new(self.contact.clone()))
    }

    async fn delete_contact(
        &self,
        _: Request<pb::DeleteContactRequest>,
    ) -> Result<Response<pb::DeleteContactResponse>, Status> {
        unsupported()
    }

    type ListContactSendsStream = Nothing<pb::ListContactSendsResponse>;

    async fn list_contact_sends(
        &self,
        _: Request<pb::ListContactSendsRequest>,
    ) -> Result<Response<Self::ListContactSendsStream>, Status> {
        unsupported()
    }

    type ListContactScheduledSendsStream = Nothing<pb::ListContactScheduledSendsResponse>;

    async fn list_contact_scheduled_sends(
        &self,
        _: Request<pb::ListContactScheduledSendsRequest>,
    ) -> Result<Response<Self::ListContactScheduledSendsStream>, Status> {
        unsupported()
    }

    async fn list_contact_sequences(
        &self,
        _: Request<pb::ListContactSequencesRequest>,
    ) -> Result<Response<pb::ListContactSequencesResponse>, Status> {
        unsupported()
    }

    async fn list_contact_segments(
        &self,
        _: Request<pb::ListContactSegmentsRequest>,
    ) -> Result<Response<pb::ListContactSegmentsResponse>, Status> {
        unsupported()
    }

    type ListContactTimelineStream = Nothing<pb::ListContactTimelineResponse>;

    async fn list_contact_timeline(
        &self,
        _: Request<pb::ListContactTimelineRequest>,
    ) -> Result<Response<Self::ListContactTimelineStream>, Status> {
        unsupported()
    }

    async fn upsert_contact(
        &self,
        _: Request<pb::UpsertContactRequest>,
    ) -> Result<Response<UpsertContactResponse>, Status> {
        Ok(Response::new(UpsertContactResponse {
            contact: Some(self.contact.clone()),
            created: false,
        }))
    }

    type ImportContactsStream = Nothing<pb::ImportContactsResponse>;

    async fn import_contacts(
        &self,
        _: Request<tonic::Streaming<pb::ImportContactsRequest>>,
    ) -> Result<Response<Self::ImportContactsStream>, Status> {
        unsupported()
    }

    async fn batch_get_contacts(
        &self,
        request: Request<pb::BatchGetContactsRequest>,
    ) -> Result<Response<BatchGetContactsResponse>, Status> {
        let wanted = request.get_ref().ids.len() + request.get_ref().emails.len();
        Ok(Response::new(BatchGetContactsResponse {
            contacts: vec![self.contact.clone(); wanted],
            missing: Vec::new(),
        }))
    }

    type WatchContactsStream = Nothing<pb::ContactChange>;

    async fn watch_contacts(
        &self,
        _: Request<pb::WatchContactsRequest>,
    ) -> Result<Response<Self::WatchContactsStream>, Status> {
        unsupported()
    }

    async fn count_contacts(
        &self,
        _: Request<pb::CountContactsRequest>,
    ) -> Result<Response<pb::CountContactsResponse>, Status> {
        unsupported()
    }
}

/// Serves until killed; a ListContacts stream carries `stream_rows` contacts.
pub async fn serve(port: u16, stream_rows: u64) -> anyhow::Result<()> {
    let data = Dataset::new(kraiter_contacts::domain::TenantId::parse("echo")?, MAX_PAGE);
    let echo = Echo {
        contact: data.contact(0).into(),
        page: Arc::new((0..MAX_PAGE).map(|n| data.contact(n).into()).collect()),
        stream_rows,
    };
    let service = ContactsServiceServer::new(echo)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Zstd);
    let health = tonic_health::server::health_reporter().1;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    Server::builder()
        .add_service(health)
        .add_service(service)
        .serve(addr)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use kraiter_contacts::domain::TenantId;

    use super::*;

    #[tokio::test]
    async fn a_streamed_export_has_every_row_once_in_ascending_ids() {
        use tokio_stream::StreamExt;

        let data = Dataset::new(TenantId::parse("echo").expect("a valid tenant"), 3);
        let page: Vec<Contact> = (0..3).map(|n| data.contact(n).into()).collect();
        let stream = pages(Arc::new(page), 7, 1000);
        let pages: Vec<_> = stream.collect().await;
        let mut ids = Vec::new();
        for page in pages {
            let bytes = page.expect("a page").encode_to_vec();
            let read = pb::ListContactsResponse::decode(bytes.as_slice()).expect("decodes");
            assert!(
                read.contacts.len() <= 3,
                "a page holds at most the template's rows"
            );
            ids.extend(read.contacts.into_iter().map(|c| c.id));
        }
        assert_eq!(ids.len(), 7);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }

    #[test]
    fn the_echo_contact_reads_back_as_the_generated_contact() {
        let data = Dataset::new(TenantId::parse("echo").expect("a valid tenant"), 3);
        for n in 0..3 {
            let contact = data.contact(n);
            let want = pb::Contact {
                id: contact.id.as_str().to_owned(),
                email: contact.email.as_str().to_owned(),
                properties: Some(convert::to_struct(contact.properties.as_map().clone())),
                suppressed: contact.suppressed,
                unsubscribed: contact.unsubscribed,
                created_at: Some(convert::timestamp(contact.created_at)),
                updated_at: Some(convert::timestamp(contact.updated_at)),
                etag: Etag::of(contact.revision),
            };
            let reply = GetContactByEmailResponse {
                contact: Some(contact.into()),
            };
            let read = pb::GetContactByEmailResponse::decode(reply.encode_to_vec().as_slice())
                .expect("decodes as the generated response");
            assert_eq!(read.contact, Some(want), "contact {n}");
        }
    }
}
