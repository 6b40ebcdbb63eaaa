//! ImportContacts: a bidirectional stream in which each request message is one
//! batch, written in one transaction (`app::import`) and answered by one response
//! message once committed, with a result per row and the import's running totals.
//!
//! Pipelined: the import's task reads ahead up to `--import-depth` request messages
//! (1 on a store that runs one write transaction at a time) and writes their
//! batches at once, each on a task of its own, committed in batch order; responses
//! go out in batch order (see `app::import` for the ordering rules). Bounded: an
//! import holds at most that many request messages, each being written, and one
//! response more than that (the one in the channel). An import is an open stream for
//! `--max-streams` and `--max-streams-per-tenant`; each batch after the first takes
//! a token of the tenant's rate limit (waiting for it rather than failing the
//! import), and the key is checked again every `--stream-key-recheck`, both before
//! the batch is started. When the client goes away, or a batch fails, the batches
//! after it in flight are dropped and their transactions rolled back.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;

use prost::Message as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::Instrument;

use super::ContactsApi;
use crate::api::stream::Admitted;
use crate::api::{ApiError, Credentials, convert, handle_stream, pb};
use crate::app::import::{Batch, BatchOrder, BatchStage, ImportMode, RowOutcome, write_batch};
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
        let depth = (api.streams.import_depth() as usize).min(api.store.write_concurrency());
        let import = Import {
            store: api.store.clone(),
            admitted,
            depth: depth.max(1),
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
    /// Batches written at once.
    depth: usize,
    max_message_size: usize,
    /// From the first message on.
    mode: Option<ImportMode>,
    /// Rows of the batches before the current one (the index of its first row).
    rows_seen: i64,
    /// The running totals (its `results` stay empty).
    totals: pb::ImportContactsResponse,
}

type Responses = mpsc::Sender<Result<pb::ImportContactsResponse, Status>>;

/// A batch in flight, in the order the batches came.
enum InFlight {
    Writing {
        task: BatchTask,
        /// Its address keys, for the batches after it.
        keys: HashSet<String>,
        /// What the batches after it wait on (none at depth 1).
        stage: Option<BatchStage>,
    },
    /// A message refused before its batch started: the import ends with this status
    /// once the batches before it are answered.
    Refused(Status),
}

/// A batch's task, aborted when dropped: its transaction then rolls back.
struct BatchTask(JoinHandle<Result<Vec<pb::ImportResult>, ApiError>>);

impl Drop for BatchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Import {
    /// Answers batch after batch until the client ends its side (the response stream
    /// then ends with OK once every batch is answered), a batch fails (it ends with
    /// that error, after the batches before it), or the client goes away; then rolls
    /// back the batches still in flight.
    async fn run(mut self, mut requests: Streaming<pb::ImportContactsRequest>, tx: Responses) {
        let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(self.depth);
        self.answer(&mut requests, &tx, &mut in_flight).await;
        // The batches left roll back before the import gives up its place: once its
        // stream has ended, nothing of it is still being written.
        for batch in in_flight {
            if let InFlight::Writing { mut task, .. } = batch {
                task.0.abort();
                let _ = (&mut task.0).await;
            }
        }
    }

    async fn answer(
        &mut self,
        requests: &mut Streaming<pb::ImportContactsRequest>,
        tx: &Responses,
        in_flight: &mut VecDeque<InFlight>,
    ) {
        let mut reading = true;
        loop {
            if !reading && in_flight.is_empty() {
                return;
            }
            let read_more = reading && in_flight.len() < self.depth;
            tokio::select! {
                biased;
                // Every batch in flight is dropped, so rolled back.
                () = tx.closed() => return,
                written = first_written(in_flight), if !in_flight.is_empty() => {
                    in_flight.pop_front();
                    let response = written.map(|results| self.respond(results));
                    if !send(response, tx).await {
                        return;
                    }
                }
                received = requests.message(), if read_more => match received {
                    Ok(Some(request)) => {
                        let next = self.start(request, in_flight, tx).await;
                        reading = matches!(next, InFlight::Writing { .. });
                        in_flight.push_back(next);
                    }
                    Ok(None) => reading = false,
                    Err(status) => {
                        // Answers the batches before it, then ends with this.
                        in_flight.push_back(InFlight::Refused(self.refusal(status)));
                        reading = false;
                    }
                },
            }
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

    /// Checks and parses one request message and starts writing its batch on a task
    /// of its own, placed after the batches in flight.
    async fn start(
        &mut self,
        request: pb::ImportContactsRequest,
        in_flight: &VecDeque<InFlight>,
        tx: &Responses,
    ) -> InFlight {
        let (results, parsed, mode) = match self.prepare(request, tx).await {
            Ok(prepared) => prepared,
            Err(err) => return InFlight::Refused(ended(err)),
        };
        let keys: HashSet<String> = parsed
            .iter()
            .map(|row| row.email.key().to_owned())
            .collect();
        let (order, stage) = match self.depth {
            1 => (BatchOrder::alone(), None),
            _ => {
                let (order, stage) = place(&keys, in_flight);
                (order, Some(stage))
            }
        };
        // Its new contacts' ids are made here, in batch order, before it is written
        // alongside the others: they follow row order whatever the depth.
        let batch = Batch::new(parsed);
        let store = self.store.clone();
        let access = self.admitted.access().clone();
        let span = tracing::Span::current();
        let task = tokio::spawn(
            async move {
                let outcomes = write_batch(store.as_ref(), &access, mode, &batch, &order).await?;
                fill(results, outcomes)
            }
            .instrument(span),
        );
        InFlight::Writing {
            task: BatchTask(task),
            keys,
            stage,
        }
    }

    /// The checks of a message before its batch is written (the rate limit, the key,
    /// the mode, the size), and its rows parsed: a result per row (those that did
    /// not parse failed already) and the parsed rows, in order.
    async fn prepare(
        &mut self,
        request: pb::ImportContactsRequest,
        tx: &Responses,
    ) -> Result<(Vec<pb::ImportResult>, Vec<ContactUpsert>, ImportMode), ApiError> {
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
        Ok((results, parsed, mode))
    }

    /// A written batch's response, with the import's totals after it.
    fn respond(&mut self, results: Vec<pb::ImportResult>) -> pb::ImportContactsResponse {
        for result in &results {
            match pb::ImportOutcome::try_from(result.outcome) {
                Ok(pb::ImportOutcome::Created) => self.totals.created += 1,
                Ok(pb::ImportOutcome::Updated) => self.totals.updated += 1,
                Ok(pb::ImportOutcome::Unchanged) => self.totals.unchanged += 1,
                _ => self.totals.failed += 1,
            }
        }
        pb::ImportContactsResponse {
            results,
            ..self.totals.clone()
        }
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

/// The order of a pipelined batch with address `keys`: after the batch before it,
/// and started only once the latest earlier batch in flight that shares a key with
/// it has committed.
fn place(keys: &HashSet<String>, in_flight: &VecDeque<InFlight>) -> (BatchOrder, BatchStage) {
    let mut previous = None;
    let mut after = None;
    for earlier in in_flight {
        if let InFlight::Writing {
            keys: theirs,
            stage: Some(stage),
            ..
        } = earlier
        {
            if !theirs.is_disjoint(keys) {
                after = Some(stage.clone());
            }
            previous = Some(stage.clone());
        }
    }
    BatchOrder::pipelined(previous, after)
}

/// Sends a batch's response, or the status that ends the import; whether the import
/// goes on.
async fn send(response: Result<pb::ImportContactsResponse, Status>, tx: &Responses) -> bool {
    match response {
        Ok(response) => {
            let sent = tokio::select! {
                sent = tx.send(Ok(response)) => sent.is_ok(),
                () = tx.closed() => false,
            };
            if sent {
                crate::metrics::record_stream_message(METHOD);
            }
            sent
        }
        Err(status) => {
            let _ = tx.send(Err(status)).await;
            false
        }
    }
}

/// The status that ends an import, logged.
fn ended(err: ApiError) -> Status {
    tracing::info!(reason = err.reason().as_str(), "import ended by a batch");
    Status::from(err)
}

/// The first batch in flight once written: its results, or the status that ends
/// the import.
async fn first_written(
    in_flight: &mut VecDeque<InFlight>,
) -> Result<Vec<pb::ImportResult>, Status> {
    match in_flight.front_mut() {
        Some(InFlight::Writing { task, .. }) => match (&mut task.0).await {
            Ok(written) => written.map_err(ended),
            Err(join) => Err(ended(crate::store::StoreError::internal(join).into())),
        },
        Some(InFlight::Refused(status)) => Err(status.clone()),
        None => std::future::pending().await,
    }
}

/// The results of a batch with the store's outcomes of its parsed rows filled in.
fn fill(
    mut results: Vec<pb::ImportResult>,
    outcomes: Vec<RowOutcome>,
) -> Result<Vec<pb::ImportResult>, ApiError> {
    let mut outcomes = outcomes.into_iter();
    for result in &mut results {
        if result.outcome != 0 {
            continue;
        }
        let outcome = outcomes
            .next()
            .ok_or_else(|| crate::store::StoreError::internal("an import row had no outcome"))?;
        *result = match outcome {
            RowOutcome::Created(id) => done(result.index, id, pb::ImportOutcome::Created),
            RowOutcome::Updated(id) => done(result.index, id, pb::ImportOutcome::Updated),
            RowOutcome::Unchanged(id) => done(result.index, id, pb::ImportOutcome::Unchanged),
            RowOutcome::Failed(err) => failed(result.index, err.into()),
        };
    }
    Ok(results)
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
