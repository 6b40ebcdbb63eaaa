//! BatchGetContacts.

use tonic::{Request, Response, Status};

use super::ContactsApi;
use crate::api::{pb, wire};

pub(super) async fn batch_get_contacts(
    _api: &ContactsApi,
    _request: Request<pb::BatchGetContactsRequest>,
) -> Result<Response<wire::BatchGetContactsResponse>, Status> {
    Err(Status::unimplemented(
        "BatchGetContacts is not implemented yet",
    ))
}
