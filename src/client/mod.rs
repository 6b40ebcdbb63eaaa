//! A Rust client for the service that reads like the SDK's `contacts` namespace:
//!
//! ```no_run
//! # async fn example() -> Result<(), kraiter_contacts::client::ClientError> {
//! use futures_util::StreamExt;
//! use kraiter_contacts::client::{Client, pb};
//!
//! let client = Client::connect("http://127.0.0.1:50051", "kr_...").await?;
//! let contacts = client.contacts();
//! let alice = contacts
//!     .create(pb::CreateContactRequest {
//!         email: "alice@example.com".into(),
//!         properties: Some(kraiter_contacts::client::properties(serde_json::json!({"plan": "pro"}))),
//!         ..Default::default()
//!     })
//!     .await?;
//! assert!(contacts.get_by_email("ALICE@example.com").await?.is_some());
//! let mut all = contacts.list(pb::ListContactsRequest { search: "alice".into(), ..Default::default() });
//! while let Some(contact) = all.next().await {
//!     println!("{}", contact?.email);
//! }
//! contacts.delete(&alice.id).await?;
//! # Ok(()) }
//! ```
//!
//! Lists are streams of items that follow the pages and, when the connection breaks
//! (UNAVAILABLE, a reset), reopen the list from the last cursor received: an item is
//! delivered once, in order. Reads are retried the same way, and also when the tenant
//! is rate limited (after the delay the server gives in `RetryInfo`). So are writes
//! that carry a `request_id` (AIP-155): the server answers a repeated request id with
//! the first call's result and writes nothing twice, so a retry after a lost answer is
//! safe. Writes without one are tried once: an UNAVAILABLE or a broken connection may
//! come after the write landed, and only the caller knows whether trying again is
//! right. Errors carry the SDK code (`ClientError::reason`).

mod error;
mod import;
mod pages;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

pub use crate::api::pb;
pub use crate::error_reason::ErrorReason;
pub use error::ClientError;
pub use import::{MAX_BATCH_BYTES, MAX_BATCH_ROWS, batches};
pub use pages::{ItemStream, RetryPolicy};

use error::retry_after;
use pb::activity_service_client::ActivityServiceClient;
use pb::contacts_service_client::ContactsServiceClient;

/// Adds `authorization: Bearer <key>` to every call, and `x-kraiter-consistency:
/// primary` when the client asked for the primary's freshness.
#[derive(Clone)]
pub struct ApiKey {
    key: MetadataValue<Ascii>,
    primary_reads: bool,
}

impl Interceptor for ApiKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        metadata.insert("authorization", self.key.clone());
        if self.primary_reads {
            metadata.insert(
                crate::api::consistency::HEADER,
                MetadataValue::from_static("primary"),
            );
        }
        Ok(request)
    }
}

/// A channel that authenticates every call.
pub type AuthChannel = InterceptedService<Channel, ApiKey>;

/// The service's client: `contacts()` is the SDK's contacts namespace, `activity()`
/// the generated ingestion client. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    contacts: ContactsServiceClient<AuthChannel>,
    activity: ActivityServiceClient<AuthChannel>,
    retry: RetryPolicy,
    /// For `with_primary_reads`, which makes the service clients again.
    channel: Channel,
    key: ApiKey,
}

impl Client {
    /// Connects to `endpoint` (`http://host:port`) and authenticates with `api_key`.
    pub async fn connect(endpoint: &str, api_key: &str) -> Result<Self, ClientError> {
        let endpoint = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|_| ClientError::InvalidInput(format!("`{endpoint}` is not a valid uri")))?;
        Self::new(endpoint.connect().await?, api_key)
    }

    /// A client over an existing channel (TLS, load balancing and timeouts are the
    /// channel's business).
    pub fn new(channel: Channel, api_key: &str) -> Result<Self, ClientError> {
        let value = format!("Bearer {api_key}").parse().map_err(|_| {
            ClientError::InvalidInput("the api key is not valid header text".into())
        })?;
        let key = ApiKey {
            key: value,
            primary_reads: false,
        };
        Ok(Self::over(channel, key, RetryPolicy::default()))
    }

    fn over(channel: Channel, key: ApiKey, retry: RetryPolicy) -> Self {
        Self {
            contacts: ContactsServiceClient::with_interceptor(channel.clone(), key.clone()),
            activity: ActivityServiceClient::with_interceptor(channel.clone(), key.clone()),
            retry,
            channel,
            key,
        }
    }

    /// Reads every list and count from the primary (`x-kraiter-consistency: primary`),
    /// seeing every write acknowledged before the call, instead of from a read replica
    /// that may lag (see the README's "Read replicas").
    pub fn with_primary_reads(self) -> Self {
        let key = ApiKey {
            primary_reads: true,
            ..self.key
        };
        Self::over(self.channel, key, self.retry)
    }

    /// Replaces the retry policy of lists and reads.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The SDK's `contacts` namespace.
    pub fn contacts(&self) -> Contacts {
        Contacts {
            inner: self.contacts.clone(),
            retry: self.retry,
        }
    }

    /// The generated ingestion client (`ActivityService`), already authenticated.
    pub fn activity(&self) -> ActivityServiceClient<AuthChannel> {
        self.activity.clone()
    }
}

/// `contacts.create`, `get`, `getByEmail`, `list`, `update`, `delete` and the
/// per-contact reads, and beyond the SDK `upsert` and `batch_get`.
#[derive(Clone)]
pub struct Contacts {
    inner: ContactsServiceClient<AuthChannel>,
    retry: RetryPolicy,
}

impl Contacts {
    /// `contacts.create`. Retried like a read when `request.request_id` is set (a
    /// retry after a lost answer gets the contact created); tried once otherwise (a
    /// retry after a lost answer would be a CONFLICT).
    pub async fn create(
        &self,
        request: pb::CreateContactRequest,
    ) -> Result<pb::Contact, ClientError> {
        let retried = !request.request_id.is_empty();
        self.write(retried, request, |mut inner, request| async move {
            inner.create_contact(request).await
        })
        .await
    }

    /// Creates the contact with `request.email`, or merges `request.properties` into
    /// the one that has it (a property set to null is removed), in one atomic step.
    /// Returns the contact and whether it was created. Retried like a read when
    /// `request.request_id` is set.
    pub async fn upsert(
        &self,
        request: pb::UpsertContactRequest,
    ) -> Result<(pb::Contact, bool), ClientError> {
        let retried = !request.request_id.is_empty();
        let response = self
            .write(retried, request, |mut inner, request| async move {
                inner.upsert_contact(request).await
            })
            .await?;
        let contact = response.contact.ok_or_else(|| ClientError::Internal {
            message: "the server answered an upsert without its contact".into(),
        })?;
        Ok((contact, response.created))
    }

    /// Up to 1,000 contacts by id and by email in one call (AIP-231): `contacts` holds
    /// those of `ids` in order, then those of `emails` (a key given twice, twice), and
    /// `missing` the keys that matched nothing, as given. A read: retried.
    pub async fn batch_get(
        &self,
        ids: impl IntoIterator<Item = impl Into<String>>,
        emails: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<pb::BatchGetContactsResponse, ClientError> {
        let request = pb::BatchGetContactsRequest {
            ids: ids.into_iter().map(Into::into).collect(),
            emails: emails.into_iter().map(Into::into).collect(),
        };
        self.read(request, |mut inner, request| async move {
            inner.batch_get_contacts(request).await
        })
        .await
    }

    /// `contacts.get`.
    pub async fn get(&self, id: &str) -> Result<pb::Contact, ClientError> {
        let request = pb::GetContactRequest { id: id.to_owned() };
        self.read(request, |mut inner, request| async move {
            inner.get_contact(request).await
        })
        .await
    }

    /// `contacts.getByEmail`: `None` when the tenant has no contact with that address.
    pub async fn get_by_email(&self, email: &str) -> Result<Option<pb::Contact>, ClientError> {
        let request = pb::GetContactByEmailRequest {
            email: email.to_owned(),
        };
        let response = self
            .read(request, |mut inner, request| async move {
                inner.get_contact_by_email(request).await
            })
            .await?;
        Ok(response.contact)
    }

    /// `contacts.list`: every contact matching `params`, page after page, resuming
    /// from the last cursor when the stream breaks. `params.cursor` starts mid-list,
    /// `params.limit` is the page size, `params.max_pages` stops early.
    pub fn list(&self, params: pb::ListContactsRequest) -> ItemStream<pb::Contact> {
        let inner = self.inner.clone();
        let open: pages::Open<_, _> = Arc::new(move |request| {
            let mut inner = inner.clone();
            Box::pin(async move { Ok(inner.list_contacts(request).await?.into_inner()) })
        });
        pages::items(open, params, self.retry)
    }

    /// `contacts.update`: only what `request` carries changes; a property set to
    /// null is removed. Retried like a read when `request.request_id` is set.
    pub async fn update(
        &self,
        request: pb::UpdateContactRequest,
    ) -> Result<pb::Contact, ClientError> {
        let retried = !request.request_id.is_empty();
        self.write(retried, request, |mut inner, request| async move {
            inner.update_contact(request).await
        })
        .await
    }

    /// `contacts.delete`: erases the contact and its activity. Tried once (see
    /// `delete_with` for a retried delete).
    pub async fn delete(&self, id: &str) -> Result<(), ClientError> {
        self.delete_with(pb::DeleteContactRequest {
            id: id.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// `contacts.delete` with the request's `etag` and `request_id`; retried like a
    /// read when `request_id` is set (a retry after a lost answer gets the first
    /// answer, not NOT_FOUND).
    pub async fn delete_with(&self, request: pb::DeleteContactRequest) -> Result<(), ClientError> {
        let retried = !request.request_id.is_empty();
        self.write(retried, request, |mut inner, request| async move {
            inner.delete_contact(request).await
        })
        .await?;
        Ok(())
    }

    /// `contacts.getSends`: the contact's sends, newest first.
    pub fn get_sends(&self, params: pb::ListContactSendsRequest) -> ItemStream<pb::Send> {
        let inner = self.inner.clone();
        let open: pages::Open<_, _> = Arc::new(move |request| {
            let mut inner = inner.clone();
            Box::pin(async move { Ok(inner.list_contact_sends(request).await?.into_inner()) })
        });
        pages::items(open, params, self.retry)
    }

    /// `contacts.getScheduled`: pending scheduled sends, earliest first.
    pub fn get_scheduled(
        &self,
        params: pb::ListContactScheduledSendsRequest,
    ) -> ItemStream<pb::ScheduledSend> {
        let inner = self.inner.clone();
        let open: pages::Open<_, _> = Arc::new(move |request| {
            let mut inner = inner.clone();
            Box::pin(async move {
                Ok(inner
                    .list_contact_scheduled_sends(request)
                    .await?
                    .into_inner())
            })
        });
        pages::items(open, params, self.retry)
    }

    /// `contacts.getSequences`: active and paused enrolments (all with `include_finished`).
    pub async fn get_sequences(
        &self,
        id: &str,
        include_finished: bool,
    ) -> Result<Vec<pb::SequenceEnrolment>, ClientError> {
        let request = pb::ListContactSequencesRequest {
            id: id.to_owned(),
            include_finished,
        };
        let response = self
            .read(request, |mut inner, request| async move {
                inner.list_contact_sequences(request).await
            })
            .await?;
        Ok(response.enrolments)
    }

    /// `contacts.getSegments`: current segment memberships.
    pub async fn get_segments(&self, id: &str) -> Result<Vec<pb::SegmentMembership>, ClientError> {
        let request = pb::ListContactSegmentsRequest { id: id.to_owned() };
        let response = self
            .read(request, |mut inner, request| async move {
                inner.list_contact_segments(request).await
            })
            .await?;
        Ok(response.memberships)
    }

    /// `contacts.getTimeline`: the contact's activity feed in the requested order.
    pub fn get_timeline(
        &self,
        params: pb::ListContactTimelineRequest,
    ) -> ItemStream<pb::TimelineEntry> {
        let inner = self.inner.clone();
        let open: pages::Open<_, _> = Arc::new(move |request| {
            let mut inner = inner.clone();
            Box::pin(async move { Ok(inner.list_contact_timeline(request).await?.into_inner()) })
        });
        pages::items(open, params, self.retry)
    }

    /// A write: retried as a read when `retried` (it carries a request id, so the
    /// server replays its first answer), else tried once.
    async fn write<Req, Resp, F, Fut>(
        &self,
        retried: bool,
        request: Req,
        call: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(ContactsServiceClient<AuthChannel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        if retried {
            return self.read(request, call).await;
        }
        Ok(call(self.inner.clone(), request).await?.into_inner())
    }

    /// The tenant's change feed (WatchContacts): the changes after
    /// `params.resume_token` (or from `params.start`), then each new one as it
    /// commits. When the stream breaks (UNAVAILABLE, a reset connection, a server
    /// restart) it reopens the watch after the last token received, so each change
    /// arrives once and in order; keep the last `token` to resume a later run.
    pub fn watch(&self, params: pb::WatchContactsRequest) -> ItemStream<pb::ContactChange> {
        watch::changes(watch::opener(self.inner.clone()), params, self.retry)
    }

    /// A read, retried on UNAVAILABLE, broken connections and RATE_LIMITED with
    /// `RetryInfo` (after its delay): see `error::retry_wait`.
    async fn read<Req, Resp, F, Fut>(&self, request: Req, call: F) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(ContactsServiceClient<AuthChannel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let mut failures = 0;
        loop {
            match call(self.inner.clone(), request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => {
                    failures += 1;
                    let Some(wait) = retry_after(&status, failures, &self.retry) else {
                        return Err(status.into());
                    };
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// A JSON object as contact properties; anything but an object gives no properties.
pub fn properties(json: serde_json::Value) -> prost_types::Struct {
    match json {
        serde_json::Value::Object(map) => crate::api::convert::to_struct(map),
        _ => prost_types::Struct::default(),
    }
}

/// Contact properties as JSON (empty if a value has no JSON form, such as NaN, which
/// the service never sends).
pub fn properties_json(
    properties: Option<&prost_types::Struct>,
) -> serde_json::Map<String, serde_json::Value> {
    properties
        .cloned()
        .and_then(|p| crate::api::convert::from_struct(p, "properties").ok())
        .unwrap_or_default()
}

/// The health of the server at `addr` (`host:port`) as gRPC health reports it for
/// `service` (`""` is the whole server). Used by `kraiter-contacts health`, the
/// container's HEALTHCHECK.
pub async fn health_check(
    addr: &str,
    service: &str,
    timeout: Duration,
) -> Result<tonic_health::pb::health_check_response::ServingStatus, ClientError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|_| ClientError::InvalidInput(format!("`{addr}` is not host:port")))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint.connect().await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?
        .into_inner();
    Ok(ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown))
}
