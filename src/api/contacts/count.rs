//! CountContacts: the contacts a ListContacts with the same `search`, `suppressed`
//! and `filter` would stream, counted (or estimated) by the store.

use tonic::{Request, Response, Status};

use super::ContactsApi;
use crate::api::{Credentials, consistency, filter, handle, pb};

pub(super) async fn count_contacts(
    api: &ContactsApi,
    request: Request<pb::CountContactsRequest>,
) -> Result<Response<pb::CountContactsResponse>, Status> {
    let (metadata, extensions, message) = request.into_parts();
    let credentials = Credentials::new(&metadata, &extensions);
    let read_from = consistency::read_from(&metadata);
    handle(
        &api.auth,
        "CountContacts",
        &credentials,
        |tenant| async move {
            let from = read_from?;
            // Order is no part of a count.
            let query =
                filter::contact_query(&message.search, message.suppressed, message.filter, 0)?;
            let counted = api
                .store
                .count_contacts(from, &tenant, &query, message.estimate)
                .await?;
            Ok(pb::CountContactsResponse {
                count: counted.count,
                exact: counted.exact,
            })
        },
    )
    .await
}
