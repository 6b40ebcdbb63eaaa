//! The framework's ceiling: the real server's generated ContactsService server (the
//! `api::wire` one) with its codec settings, answering the unary calls with a prebuilt
//! Contact and doing nothing else (no auth, no database). Runs as its own process
//! (`kraiter-bench echo-server --port N`), like the real server.

use std::net::SocketAddr;

use kraiter_contacts::api::wire::server::contacts_service_server::{
    ContactsService, ContactsServiceServer,
};
use kraiter_contacts::api::{convert, pb, wire};
use tokio_stream::Empty;
use tonic::codec::CompressionEncoding;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::data::Dataset;

struct Echo {
    contact: wire::Contact,
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
    ) -> Result<Response<wire::Contact>, Status> {
        Ok(Response::new(self.contact.clone()))
    }

    async fn get_contact(
        &self,
        _: Request<pb::GetContactRequest>,
    ) -> Result<Response<wire::Contact>, Status> {
        Ok(Response::new(self.contact.clone()))
    }

    async fn get_contact_by_email(
        &self,
        _: Request<pb::GetContactByEmailRequest>,
    ) -> Result<Response<wire::GetContactByEmailResponse>, Status> {
        Ok(Response::new(wire::GetContactByEmailResponse {
            contact: Some(self.contact.clone()),
        }))
    }

    type ListContactsStream = Nothing<wire::ListContactsResponse>;

    async fn list_contacts(
        &self,
        _: Request<pb::ListContactsRequest>,
    ) -> Result<Response<Self::ListContactsStream>, Status> {
        unsupported()
    }

    async fn update_contact(
        &self,
        _: Request<pb::UpdateContactRequest>,
    ) -> Result<Response<wire::Contact>, Status> {
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
}

/// Serves until killed.
pub async fn serve(port: u16) -> anyhow::Result<()> {
    let data = Dataset::new(kraiter_contacts::domain::TenantId::parse("echo")?, 1);
    let echo = Echo {
        contact: convert::contact(data.contact(0)),
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
