//! ImportContacts: a bidirectional stream in which each request message is one
//! batch, written in one transaction (`app::import`) and answered by one response
//! message once committed, with a result per row and the import's running totals.
//!
//! Bounded: the import's task reads the next batch only after the previous one's
//! response is in the channel, and the channel holds one response, so an import
//! holds at most one request message (at most `--max-message-size`) and two
//! responses. An import is an open stream for `--max-streams` and
//! `--max-streams-per-tenant`; each batch after the first takes a token of the
//! tenant's rate limit (waiting for it rather than failing the import), and the key
//! is checked again every `--stream-key-recheck`. When the client goes away, the
//! batch in flight is abandoned and its transaction rolled back.

use std::pin::Pin;

use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::Instrument;

use super::ContactsApi;
use crate::api::stream::Admitted;
use crate::api::{ApiError, Credentials, convert, handle_stream, pb};
use crate::app::import::{ImportMode, RowOutcome, write_batch};
use crate::domain::{ContactUpsert, ValidationError};
use crate::store::DynStore;

pub type ImportStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<pb::ImportContactsResponse, Status>> + Send>>;

/// Most rows in one request message.
pub const MAX_BATCH_ROWS: usize = 1000;

const METHOD: &str = "ImportContacts";

pub(super) async fn import_contacts(
    api: &ContactsApi,
    request: Request<Streaming<pb::ImportContactsRequest>>,
) -> Result<Response<ImportStream>, Status> {
    let (metadata, extensions, requests) = request.into_parts();
    let credentials = Credentials::new(&metadata, &extensions);
    handle_stream(&api.auth, METHOD, &credentials, |access| async move {
        let admitted = api.streams.admit(access)?;
        let (tx, rx) = mpsc::channel(1);
        let import = Import {
            store: api.store.clone(),
            admitted,
            max_message_size: api.streams.max_message_size(),
            mode: None,
            rows_seen: 0,
            totals: pb::ImportContactsResponse::default(),
        };
        let span = tracing::Span::current();
        tokio::spawn(import.run(requests, tx).instrument(span));
        Ok(Box::pin(ReceiverStream::new(rx)) as ImportStream)
    })
    .await
}

/// One import in progress.
struct Import {
    store: DynStore,
    /// Its place among the open streams, its caller and key check.
    admitted: Admitted,
    max_message_size: usize,
    /// From the first message on.
    mode: Option<ImportMode>,
    /// Rows of the batches before the current one (the index of its first row).
    rows_seen: i64,
    /// The running totals (its `results` stay empty).
    totals: pb::ImportContactsResponse,
}

type Responses = mpsc::Sender<Result<pb::ImportContactsResponse, Status>>;

impl Import {
    /// Answers batch after batch until the client ends its side (the response stream
    /// then ends with OK), a batch fails (it ends with that error), or the client
    /// goes away.
    async fn run(mut self, mut requests: Streaming<pb::ImportContactsRequest>, tx: Responses) {
        loop {
            let received = tokio::select! {
                received = requests.message() => received,
                () = tx.closed() => return,
            };
            let request = match received {
                Ok(Some(request)) => request,
                Ok(None) => return,
                Err(status) => {
                    let _ = tx.send(Err(self.refusal(status))).await;
                    return;
                }
            };
            let answered = tokio::select! {
                answered = self.batch(request, &tx) => answered,
                // The transaction in flight is dropped, so rolled back.
                () = tx.closed() => return,
            };
            let sent = match answered {
                Ok(response) => tx.send(Ok(response)).await,
                Err(err) => {
                    tracing::info!(reason = err.reason().as_str(), "import ended by a batch");
                    let _ = tx.send(Err(Status::from(err))).await;
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
            crate::metrics::record_stream_message(METHOD);
        }
    }

    /// A request message that did not decode: one over the size limit is
    /// RESOURCE_EXHAUSTED as at the start of any call (tonic says OUT_OF_RANGE);
    /// anything else is the codec's own status.
    fn refusal(&self, status: Status) -> Status {
        match status.code() {
            Code::OutOfRange => Status::from(ApiError::MessageTooLarge {
                limit: self.max_message_size,
            }),
            _ => status,
        }
    }

    /// Writes one batch and builds its response.
    async fn batch(
        &mut self,
        request: pb::ImportContactsRequest,
        tx: &Responses,
    ) -> Result<pb::ImportContactsResponse, ApiError> {
        if self.mode.is_some() {
            self.pace(tx).await?;
        }
        self.admitted.check_key_if_due().await?;
        let mode = self.mode(request.mode)?;
        if request.rows.len() > MAX_BATCH_ROWS {
            let why = format!("must hold at most {MAX_BATCH_ROWS} rows per message");
            return Err(ValidationError::new("rows", why).into());
        }
        let first = self.rows_seen;
        self.rows_seen += request.rows.len() as i64;
        // Rows that do not parse fail here; the others go to the store together.
        let mut results = Vec::with_capacity(request.rows.len());
        let mut parsed: Vec<ContactUpsert> = Vec::with_capacity(request.rows.len());
        for (position, row) in request.rows.into_iter().enumerate() {
            let index = first + position as i64;
            match convert::upsert(&row.email, row.properties, "") {
                Ok(upsert) => {
                    parsed.push(upsert);
                    results.push(pb::ImportResult {
                        index,
                        ..Default::default()
                    });
                }
                Err(invalid) => results.push(failed(index, invalid.into())),
            }
        }
        let access = self.admitted.access().clone();
        let outcomes = write_batch(self.store.as_ref(), &access, mode, &parsed).await?;
        let mut outcomes = outcomes.into_iter();
        for result in &mut results {
            if result.outcome != 0 {
                continue;
            }
            let outcome = outcomes.next().ok_or_else(|| {
                crate::store::StoreError::internal("an import row had no outcome")
            })?;
            *result = match outcome {
                RowOutcome::Created(id) => done(result.index, id, pb::ImportOutcome::Created),
                RowOutcome::Updated(id) => done(result.index, id, pb::ImportOutcome::Updated),
                RowOutcome::Unchanged(id) => done(result.index, id, pb::ImportOutcome::Unchanged),
                RowOutcome::Failed(err) => failed(result.index, err.into()),
            };
        }
        for result in &results {
            match pb::ImportOutcome::try_from(result.outcome) {
                Ok(pb::ImportOutcome::Created) => self.totals.created += 1,
                Ok(pb::ImportOutcome::Updated) => self.totals.updated += 1,
                Ok(pb::ImportOutcome::Unchanged) => self.totals.unchanged += 1,
                _ => self.totals.failed += 1,
            }
        }
        Ok(pb::ImportContactsResponse {
            results,
            ..self.totals.clone()
        })
    }

    /// The import's mode: the first message's (unspecified is upsert); a later
    /// message may leave it unspecified or repeat it.
    fn mode(&mut self, raw: i32) -> Result<ImportMode, ValidationError> {
        let given = match pb::ImportMode::try_from(raw) {
            Ok(pb::ImportMode::Unspecified) => None,
            Ok(pb::ImportMode::Upsert) => Some(ImportMode::Upsert),
            Ok(pb::ImportMode::CreateOnly) => Some(ImportMode::CreateOnly),
            Ok(pb::ImportMode::UpdateOnly) => Some(ImportMode::UpdateOnly),
            Err(_) => return Err(ValidationError::new("mode", "is not a known import mode")),
        };
        match (self.mode, given) {
            (None, given) => {
                let mode = given.unwrap_or_default();
                self.mode = Some(mode);
                Ok(mode)
            }
            (Some(mode), None) => Ok(mode),
            (Some(mode), Some(given)) if given == mode => Ok(mode),
            (Some(_), Some(_)) => Err(ValidationError::new(
                "mode",
                "must be the mode of the import's first message, or unspecified",
            )),
        }
    }

    /// Takes a token of the tenant's rate limit for a batch after the first, waiting
    /// as long as the limiter says when the bucket is empty: a tenant's import runs
    /// at its rate instead of failing halfway.
    async fn pace(&self, tx: &Responses) -> Result<(), ApiError> {
        loop {
            match self.admitted.take_token() {
                Err(ApiError::RateLimited { retry_after }) => {
                    tokio::select! {
                        () = tokio::time::sleep(retry_after) => {}
                        () = tx.closed() => return Err(ApiError::RateLimited { retry_after }),
                    }
                }
                other => return other,
            }
        }
    }
}

fn done(index: i64, id: crate::domain::ContactId, outcome: pb::ImportOutcome) -> pb::ImportResult {
    pb::ImportResult {
        index,
        contact_id: id.into_string(),
        outcome: outcome as i32,
        error: None,
    }
}

/// A failed row's result: its error is the `google.rpc.Status` a single
/// UpsertContact of the row would end with (the one status mapping builds it, and
/// tonic carries it encoded in `details`).
fn failed(index: i64, err: ApiError) -> pb::ImportResult {
    let status = Status::from(err);
    let error = tonic_types::pb::Status::decode(status.details()).unwrap_or_else(|_| {
        tonic_types::pb::Status {
            code: status.code() as i32,
            message: status.message().to_owned(),
            details: Vec::new(),
        }
    });
    pb::ImportResult {
        index,
        contact_id: String::new(),
        outcome: pb::ImportOutcome::Failed as i32,
        error: Some(error),
    }
}
