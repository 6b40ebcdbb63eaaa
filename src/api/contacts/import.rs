//! ImportContacts.

use std::pin::Pin;

use tonic::{Request, Response, Status, Streaming};

use super::ContactsApi;
use crate::api::pb;

pub type ImportStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<pb::ImportContactsResponse, Status>> + Send>>;

pub(super) async fn import_contacts(
    _api: &ContactsApi,
    _request: Request<Streaming<pb::ImportContactsRequest>>,
) -> Result<Response<ImportStream>, Status> {
    Err(Status::unimplemented(
        "ImportContacts is not implemented yet",
    ))
}
