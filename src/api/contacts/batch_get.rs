//! BatchGetContacts (AIP-231): up to 1,000 contacts by id and by email in one call
//! and one statement.
//!
//! The answer follows the request: the contacts of `ids` in request order, then those
//! of `emails`; a key given twice (or an id and an email of one contact) returns the
//! contact twice; `missing` lists the keys that matched nothing, as given. A key that
//! is not an id or not an email is INVALID_ARGUMENT naming it with its index
//! (`ids[3]`, `emails[0]`), and more than 1,000 keys in all is INVALID_ARGUMENT on
//! `ids`: nothing is read then.
//!
//! The whole answer is at most `MAX_RESPONSE_BYTES` encoded, what a stock gRPC client
//! accepts. A batch whose contacts take more is RESOURCE_EXHAUSTED
//! (`MESSAGE_TOO_LARGE`), not a partial answer (AIP-231 has no partial batches): ask
//! for fewer keys. The store stops reading at twice that, so a call holds a bounded
//! number of bytes however large the contacts are.

use std::collections::HashMap;

use prost::Message;
use prost::encoding::encoded_len_varint;
use tonic::{Request, Response, Status};

use super::ContactsApi;
use crate::api::{ApiError, Credentials, convert, handle_with_key, pb, wire};
use crate::domain::{ContactId, ContactView, Email, ValidationError};
use crate::store::StoreError;

/// Most keys one call may name, ids and emails together.
pub const MAX_KEYS: usize = 1000;
/// Most bytes an answer takes encoded: the 4 MiB a stock gRPC client accepts.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Where the store stops reading rows (as `store::contact_bytes` counts them): with
/// room above the answer's limit, since a contact's stored JSON can be longer than its
/// encoding (escapes) as well as shorter.
const READ_BYTES: usize = 2 * MAX_RESPONSE_BYTES;

pub(super) async fn batch_get_contacts(
    api: &ContactsApi,
    request: Request<pb::BatchGetContactsRequest>,
) -> Result<Response<wire::BatchGetContactsResponse>, Status> {
    let (metadata, extensions, message) = request.into_parts();
    let credentials = Credentials::new(&metadata, &extensions);
    handle_with_key(
        &api.auth,
        "BatchGetContacts",
        &credentials,
        |access| async move {
            let keys = Keys::parse(&message)?;
            // Also for an empty request: the statement checks the key.
            let rows = api
                .store
                .batch_get_contacts(
                    &access,
                    &keys.unique_ids(),
                    &keys.unique_email_keys(),
                    READ_BYTES,
                )
                .await?;
            if rows.cut_short {
                return Err(too_large());
            }
            answer(message, &keys, rows.items)
        },
    )
    .await
}

/// The request's keys, parsed.
struct Keys {
    ids: Vec<ContactId>,
    emails: Vec<Email>,
}

impl Keys {
    fn parse(message: &pb::BatchGetContactsRequest) -> Result<Self, ValidationError> {
        let count = message.ids.len() + message.emails.len();
        if count > MAX_KEYS {
            return Err(ValidationError::new(
                "ids",
                format!("names {count} keys with `emails`; at most {MAX_KEYS} in all"),
            ));
        }
        // The field's name with its index is written only for a key that fails, not
        // formatted (an allocation) for every good one.
        fn at(list: &'static str, i: usize) -> impl FnOnce(ValidationError) -> ValidationError {
            move |mut err| {
                err.field = format!("{list}[{i}]");
                err
            }
        }
        let mut ids = Vec::with_capacity(message.ids.len());
        for (i, raw) in message.ids.iter().enumerate() {
            ids.push(ContactId::parse(raw, "ids").map_err(at("ids", i))?);
        }
        let mut emails = Vec::with_capacity(message.emails.len());
        for (i, raw) in message.emails.iter().enumerate() {
            emails.push(Email::parse(raw, "emails").map_err(at("emails", i))?);
        }
        Ok(Self { ids, emails })
    }

    fn unique_ids(&self) -> Vec<String> {
        unique(self.ids.iter().map(ContactId::as_str))
    }

    fn unique_email_keys(&self) -> Vec<String> {
        unique(self.emails.iter().map(Email::key))
    }
}

fn unique<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    keys.filter(|key| seen.insert(*key))
        .map(str::to_owned)
        .collect()
}

fn too_large() -> ApiError {
    ApiError::ResponseTooLarge {
        limit: MAX_RESPONSE_BYTES,
    }
}

/// The answer in request order, from the contacts the store found (each once, in any
/// order); fails as soon as it would pass `MAX_RESPONSE_BYTES`.
fn answer(
    message: pb::BatchGetContactsRequest,
    keys: &Keys,
    found: Vec<ContactView>,
) -> Result<wire::BatchGetContactsResponse, ApiError> {
    // The maps borrow the found contacts' keys, and are gone before the contacts are
    // converted.
    let matches: Vec<Option<usize>> = {
        let mut by_email: HashMap<&str, usize> = HashMap::with_capacity(found.len());
        let mut by_id: HashMap<&str, usize> = HashMap::with_capacity(found.len());
        for (index, view) in found.iter().enumerate() {
            by_email.insert(view.email.key(), index);
            by_id.insert(view.id.as_str(), index);
        }
        keys.ids
            .iter()
            .map(|id| by_id.get(id.as_str()).copied())
            .chain(
                keys.emails
                    .iter()
                    .map(|email| by_email.get(email.key()).copied()),
            )
            .collect()
    };
    let contacts = found
        .into_iter()
        .map(convert::contact_view)
        .collect::<Result<Vec<_>, _>>()?;
    // How often each contact is answered: the last use moves it, earlier ones clone.
    let mut uses = vec![0u32; contacts.len()];
    for index in matches.iter().flatten() {
        uses[*index] += 1;
    }
    let mut contacts: Vec<Option<wire::Contact>> = contacts.into_iter().map(Some).collect();
    let mut response = wire::BatchGetContactsResponse::default();
    let mut bytes = 0;
    let given = message.ids.into_iter().chain(message.emails);
    for (found, given) in matches.into_iter().zip(given) {
        // Each is field 1 or 2 of the response: a one-byte key, a length, the bytes.
        let Some(index) = found else {
            bytes += 1 + framed(given.len());
            response.missing.push(given);
            continue;
        };
        uses[index] -= 1;
        let contact = match uses[index] {
            0 => contacts[index].take(),
            _ => contacts[index].clone(),
        }
        .ok_or_else(|| StoreError::internal("a contact answered after its last use"))?;
        bytes += 1 + framed(contact.encoded_len());
        if bytes > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        response.contacts.push(contact);
    }
    Ok(response)
}

/// A length-delimited field's length and content.
fn framed(len: usize) -> usize {
    encoded_len_varint(len as u64) + len
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::PropertiesJson;

    fn view(id: &str, email: &str) -> ContactView {
        ContactView {
            id: ContactId::from_trusted(id.to_owned()),
            email: Email::from_trusted(email.to_owned()),
            properties: PropertiesJson::from_trusted("{}".to_owned()),
            suppressed: false,
            unsubscribed: false,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            revision: 1,
        }
    }

    #[test]
    fn the_answer_follows_the_request_with_duplicates_and_missing_keys_as_given() {
        let a = "con_01J00000000000000000000000";
        let b = "con_01J00000000000000000000001";
        let absent = "con_01J00000000000000000000002";
        let message = pb::BatchGetContactsRequest {
            ids: vec![b.into(), absent.into(), a.into(), b.into()],
            emails: vec![" A@Example.com".into(), "nobody@example.com".into()],
        };
        let keys = Keys::parse(&message).expect("valid keys");
        assert_eq!(keys.unique_ids(), [b, absent, a]);
        assert_eq!(
            keys.unique_email_keys(),
            ["a@example.com", "nobody@example.com"]
        );
        let found = vec![view(a, "a@example.com"), view(b, "B@example.com")];
        let response = answer(message, &keys, found).expect("an answer");
        let ids: Vec<&str> = response.contacts.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, [b, a, b, a]);
        assert_eq!(response.missing, [absent, "nobody@example.com"]);
        assert!(response.encoded_len() <= MAX_RESPONSE_BYTES);
    }

    #[test]
    fn keys_are_checked_with_their_index_and_counted_together() {
        let message = pb::BatchGetContactsRequest {
            ids: vec!["con_01J00000000000000000000000".into(), "nope".into()],
            emails: vec![],
        };
        let err = Keys::parse(&message).err().expect("a bad id");
        assert_eq!(err.field, "ids[1]");
        let message = pb::BatchGetContactsRequest {
            ids: vec![],
            emails: vec!["a@example.com".into(), "a@".into()],
        };
        let err = Keys::parse(&message).err().expect("a bad email");
        assert_eq!(err.field, "emails[1]");
        let message = pb::BatchGetContactsRequest {
            ids: vec!["x".into(); 600],
            emails: vec!["y".into(); 401],
        };
        let err = Keys::parse(&message).err().expect("too many keys");
        assert_eq!(err.field, "ids");
    }
}
