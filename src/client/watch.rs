//! `contacts.watch`: the change feed as a stream of changes that survives a broken
//! connection or a restarted server by reopening the watch after the last token it
//! received, so each change arrives once and in order.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream;
use tonic::Streaming;

use super::error::retry_after;
use super::pages::{ItemStream, Open, RetryPolicy};
use super::{ClientError, pb};

struct Watch {
    open: Open<pb::WatchContactsRequest, pb::ContactChange>,
    /// The request to (re)open the watch with: its token follows the changes received.
    request: pb::WatchContactsRequest,
    stream: Option<Streaming<pb::ContactChange>>,
    retry: RetryPolicy,
    failures: u32,
    done: bool,
}

impl Watch {
    async fn next_change(&mut self) -> Option<Result<pb::ContactChange, ClientError>> {
        loop {
            if self.done {
                return None;
            }
            let result = match self.stream.as_mut() {
                Some(stream) => stream.message().await,
                None => match (self.open)(self.request.clone()).await {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        continue;
                    }
                    Err(status) => Err(status),
                },
            };
            match result {
                Ok(Some(change)) => {
                    self.failures = 0;
                    self.request.resume_token = change.token.clone();
                    match self.request.max_changes {
                        0 => {}
                        1 => self.done = true,
                        left => self.request.max_changes = left - 1,
                    }
                    return Some(Ok(change));
                }
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(status) => {
                    self.failures += 1;
                    let Some(wait) = retry_after(&status, self.failures, &self.retry) else {
                        self.done = true;
                        return Some(Err(status.into()));
                    };
                    self.stream = None;
                    tracing::debug!(
                        code = ?status.code(),
                        attempt = self.failures,
                        "watch failed; resuming after the last token"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Streams the changes of the watch that `open` opens for `request`.
pub(crate) fn changes(
    open: Open<pb::WatchContactsRequest, pb::ContactChange>,
    request: pb::WatchContactsRequest,
    retry: RetryPolicy,
) -> ItemStream<pb::ContactChange> {
    let watch = Watch {
        open,
        request,
        stream: None,
        retry,
        failures: 0,
        done: false,
    };
    let changes = stream::unfold(watch, |mut watch| async move {
        let change = watch.next_change().await?;
        Some((change, watch))
    });
    Box::pin(changes.boxed())
}

/// An `Open` for WatchContacts on `inner`.
pub(crate) fn opener(
    inner: super::pb::contacts_service_client::ContactsServiceClient<super::AuthChannel>,
) -> Open<pb::WatchContactsRequest, pb::ContactChange> {
    Arc::new(move |request| {
        let mut inner = inner.clone();
        Box::pin(async move { Ok(inner.watch_contacts(request).await?.into_inner()) })
    })
}
