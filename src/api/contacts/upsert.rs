//! UpsertContact: create by email or merge into the contact that has it.

use tonic::{Request, Response, Status};

use super::ContactsApi;
use crate::api::convert_activity::idempotency;
use crate::api::{Credentials, convert, handle_with_key, pb, wire};
use crate::app;
use crate::domain::ContactUpsert;

pub(super) async fn upsert_contact(
    api: &ContactsApi,
    request: Request<pb::UpsertContactRequest>,
) -> Result<Response<wire::UpsertContactResponse>, Status> {
    let (metadata, extensions, message) = request.into_parts();
    let credentials = Credentials::new(&metadata, &extensions);
    handle_with_key(
        &api.auth,
        "UpsertContact",
        &credentials,
        |access| async move {
            let idem = idempotency("UpsertContact", &message.request_id, &message)?;
            let upsert = ContactUpsert::try_from(message)?;
            let (contact, created) =
                app::contacts::upsert(api.store.as_ref(), &access, upsert, idem).await?;
            Ok(wire::UpsertContactResponse {
                contact: Some(convert::contact(contact)),
                created,
            })
        },
    )
    .await
}
