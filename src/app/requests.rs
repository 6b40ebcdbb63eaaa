//! Idempotent writes (AIP-155): a request id is claimed inside the write's own
//! transaction, and the response is remembered in it, so a retry either replays the
//! first response or (while the first attempt is in flight) waits for its outcome.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::domain::{Contact, ContactId, Email, Idempotency, Properties, ValidationError};
use crate::store::{StoreError, StoreResult, WriteTx};

/// The first attempt's response when `idem`'s request already ran; `None` when this
/// call is the first (the id is now claimed by `tx`) or carries no request id.
pub(super) async fn replay<T: DeserializeOwned>(
    tx: &mut dyn WriteTx,
    idem: Option<&Idempotency>,
) -> StoreResult<Option<T>> {
    let Some(idem) = idem else {
        return Ok(None);
    };
    let Some(first) = tx.claim_request(idem).await? else {
        return Ok(None);
    };
    if first.method != idem.method || first.fingerprint != idem.fingerprint {
        return Err(StoreError::Invalid(ValidationError::new(
            "request_id",
            format!(
                "`{}` was already used for a different request",
                idem.request_id
            ),
        )));
    }
    let response = first
        .response
        .ok_or_else(|| StoreError::internal("request id claimed without a response"))?;
    serde_json::from_str(&response)
        .map(Some)
        .map_err(StoreError::internal)
}

/// Remembers `response` for the request claimed by `replay`; erased with `contact`,
/// or kept until it expires without one.
pub(super) async fn remember<T: Serialize>(
    tx: &mut dyn WriteTx,
    idem: Option<&Idempotency>,
    contact: Option<&ContactId>,
    response: &T,
) -> StoreResult<()> {
    let Some(idem) = idem else {
        return Ok(());
    };
    let json = serde_json::to_string(response).map_err(StoreError::internal)?;
    tx.remember_response(idem, contact, &json).await
}

/// A contact write's response as remembered for its request id: the contact as the
/// first attempt left it, and whether that attempt created it.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct RememberedContact {
    id: ContactId,
    email: String,
    properties: serde_json::Map<String, serde_json::Value>,
    suppressed: bool,
    unsubscribed: bool,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    revision: i64,
    pub created: bool,
}

impl RememberedContact {
    pub fn new(contact: &Contact, created: bool) -> Self {
        Self {
            id: contact.id.clone(),
            email: contact.email.as_str().to_owned(),
            properties: contact.properties.as_map().clone(),
            suppressed: contact.suppressed,
            unsubscribed: contact.unsubscribed,
            created_at: contact.created_at,
            updated_at: contact.updated_at,
            revision: contact.revision,
            created,
        }
    }

    /// The contact, as valid as when it was written.
    pub fn contact(self) -> Contact {
        Contact {
            id: self.id,
            email: Email::from_trusted(self.email),
            properties: Properties::from_trusted(self.properties),
            suppressed: self.suppressed,
            unsubscribed: self.unsubscribed,
            created_at: self.created_at,
            updated_at: self.updated_at,
            revision: self.revision,
        }
    }
}
