//! `contacts import FILE`: the file's rows, in batches, through ImportContacts. A
//! thread reads the file (never whole) into batches of at most `--batch` rows and
//! 2 MiB; at most a few batches are on their way at once, so memory stays bounded
//! whatever the file's size. Rows that fail, in the file or on the server, go to
//! the failed-rows file with their errors; the exit status is 2 when there were any.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kraiter_contacts::api::convert::to_struct;
use kraiter_contacts::client::{Client, ClientError, pb};
use kraiter_contacts::config::{FileFormat, ImportArgs, ImportModeArg};
use prost::Message;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::rows::{Row, Rows, Unreadable};

/// A batch's request size at most: well under the server's default message limit.
const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Batches read ahead of the server's answers.
const BATCHES_AHEAD: usize = 2;

/// One batch: the request, and for each of its rows the line and email it came
/// from; with the file's unreadable lines met before it.
struct Batch {
    request: pb::ImportContactsRequest,
    rows: Vec<(u64, String)>,
    unreadable: Vec<Unreadable>,
}

/// The server's running totals of the last answer, and the file's unreadable lines.
#[derive(Debug, Default)]
struct Totals {
    created: i64,
    updated: i64,
    unchanged: i64,
    failed: i64,
    unreadable: i64,
}

impl Totals {
    fn failed(&self) -> i64 {
        self.failed + self.unreadable
    }
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let (rows, progress) = open(&args)?;
    let failed_path = args
        .failed
        .clone()
        .unwrap_or_else(|| failed_path_for(&args.file));
    let mut failed = FailedRows::new(failed_path);
    let client = Client::connect(&args.remote.addr, &args.remote.key)
        .await
        .with_context(|| format!("cannot connect to `{}`", args.remote.addr))?;

    let (batches_tx, batches) = mpsc::channel::<Batch>(BATCHES_AHEAD);
    let (requests_tx, requests) = mpsc::channel(1);
    let reader = {
        let (mode, size) = (mode(args.mode), usize::from(args.batch));
        tokio::task::spawn_blocking(move || read_batches(rows, mode, size, batches_tx))
    };
    let responses = client
        .contacts()
        .import_batches(tokio_stream::wrappers::ReceiverStream::new(requests));
    let exchanged = exchange(batches, requests_tx, responses, &mut failed, &progress).await;
    reader.await.context("the file reader")??;
    let Exchanged { totals, unanswered } = exchanged?;
    progress.finish_and_clear();
    failed.finish()?;
    anyhow::ensure!(unanswered == 0, "the server did not answer every batch");
    eprintln!("imported {}: {}", args.file.display(), summary(&totals));
    if totals.failed() > 0 {
        eprintln!("failed rows, with their errors: {}", failed.path.display());
        std::process::exit(2);
    }
    Ok(())
}

/// How an import's exchange with the server ended.
struct Exchanged {
    totals: Totals,
    /// Batches sent without an answer.
    unanswered: usize,
}

/// Sends the batches as requests and records the answers, until the server has
/// answered the last batch or the call ends.
///
/// The response stream is polled while a request waits for room: polling it is
/// what starts the call (`import_batches` is lazy), and until the call has started
/// nothing takes the requests. Awaiting a send without polling the responses left
/// an import waiting forever whenever two batches were read before the call's
/// first poll (seen in CI).
async fn exchange<R>(
    mut batches: mpsc::Receiver<Batch>,
    requests: mpsc::Sender<pb::ImportContactsRequest>,
    mut responses: R,
    failed: &mut FailedRows,
    progress: &ProgressBar,
) -> anyhow::Result<Exchanged>
where
    R: futures_core::Stream<Item = Result<pb::ImportContactsResponse, ClientError>> + Unpin,
{
    // The answers come in batch order: each batch's rows wait here for theirs.
    let mut pending: VecDeque<Batch> = VecDeque::new();
    let mut totals = Totals::default();
    // Dropped once the file is read: the request stream then ends.
    let mut requests = Some(requests);
    let mut outgoing: Option<pb::ImportContactsRequest> = None;
    loop {
        tokio::select! {
            room = reserve(requests.clone()), if outgoing.is_some() => match room {
                Some(room) => drop(room.send(outgoing.take().expect("a request waits"))),
                // The call has ended: its last answer says why.
                None => (requests, outgoing) = (None, None),
            },
            batch = batches.recv(), if outgoing.is_none() && requests.is_some() => match batch {
                Some(mut batch) => {
                    for line in batch.unreadable.drain(..) {
                        failed.unreadable(&line)?;
                        totals.unreadable += 1;
                    }
                    outgoing = Some(std::mem::take(&mut batch.request));
                    pending.push_back(batch);
                }
                // The file is read: the request stream ends, answers still come.
                None => requests = None,
            },
            response = responses.next() => {
                let Some(response) = response else { break };
                let response = response.context("the import stopped")?;
                let batch = pending.pop_front().context("an answer to no batch")?;
                record(&response, &batch, failed)?;
                totals = Totals {
                    created: response.created,
                    updated: response.updated,
                    unchanged: response.unchanged,
                    failed: response.failed,
                    unreadable: totals.unreadable,
                };
                progress.set_message(summary(&totals));
            }
        }
    }
    Ok(Exchanged {
        totals,
        unanswered: pending.len(),
    })
}

/// Room for one request in `requests`; `None` once the call stopped taking them.
async fn reserve<T>(requests: Option<mpsc::Sender<T>>) -> Option<mpsc::OwnedPermit<T>> {
    match requests {
        Some(requests) => requests.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

fn summary(totals: &Totals) -> String {
    format!(
        "created {}, updated {}, unchanged {}, failed {}",
        totals.created,
        totals.updated,
        totals.unchanged,
        totals.failed()
    )
}

fn mode(mode: ImportModeArg) -> pb::ImportMode {
    match mode {
        ImportModeArg::Upsert => pb::ImportMode::Upsert,
        ImportModeArg::CreateOnly => pb::ImportMode::CreateOnly,
        ImportModeArg::UpdateOnly => pb::ImportMode::UpdateOnly,
    }
}

fn failed_path_for(file: &Path) -> PathBuf {
    let name = file
        .file_name()
        .map_or_else(|| "stdin".into(), |n| n.to_string_lossy().into_owned());
    file.with_file_name(format!("{name}.failed.jsonl"))
}

/// The file's rows, read through a progress bar (drawn only on a terminal).
fn open(args: &ImportArgs) -> anyhow::Result<(Rows, ProgressBar)> {
    let stdin = args.file.as_os_str() == "-";
    let csv = match args.format {
        FileFormat::Csv => true,
        FileFormat::Jsonl => false,
        FileFormat::Auto => !stdin && args.file.extension().is_some_and(|e| e == "csv"),
    };
    let (input, length): (Box<dyn Read + Send>, Option<u64>) = if stdin {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = File::open(&args.file)
            .with_context(|| format!("cannot open `{}`", args.file.display()))?;
        let length = file.metadata().ok().map(|m| m.len());
        (Box::new(file), length)
    };
    let progress = ProgressBar::with_draw_target(length, ProgressDrawTarget::stderr());
    progress.set_style(
        ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg}")
            .expect("a valid template"),
    );
    let input: Box<dyn Read + Send> = Box::new(progress.wrap_read(input));
    let rows = if csv {
        Rows::csv(input, args.strings)?
    } else {
        Rows::jsonl(Box::new(BufReader::with_capacity(256 * 1024, input)))
    };
    Ok((rows, progress))
}

/// Reads the rows into batches until the file ends or the importer is gone.
fn read_batches(
    rows: Rows,
    mode: pb::ImportMode,
    size: usize,
    out: mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
    let empty = || Batch {
        request: pb::ImportContactsRequest {
            rows: Vec::new(),
            mode: mode as i32,
        },
        rows: Vec::new(),
        unreadable: Vec::new(),
    };
    let mut batch = empty();
    let mut bytes = 0;
    for row in rows {
        let row = match row {
            Ok(row) => row,
            Err(unreadable) => {
                batch.unreadable.push(unreadable);
                continue;
            }
        };
        let Row {
            line,
            email,
            properties,
        } = row;
        let row = pb::ImportRow {
            email: email.clone(),
            properties: Some(to_struct(properties)),
        };
        let row_bytes = row.encoded_len() + 8;
        if !batch.rows.is_empty()
            && (batch.rows.len() == size || bytes + row_bytes > MAX_BATCH_BYTES)
        {
            if out
                .blocking_send(std::mem::replace(&mut batch, empty()))
                .is_err()
            {
                return Ok(());
            }
            bytes = 0;
        }
        bytes += row_bytes;
        batch.request.rows.push(row);
        batch.rows.push((line, email));
    }
    if !batch.rows.is_empty() || !batch.unreadable.is_empty() {
        let _ = out.blocking_send(batch);
    }
    Ok(())
}

/// Writes the batch's failed rows out.
fn record(
    response: &pb::ImportContactsResponse,
    batch: &Batch,
    failed: &mut FailedRows,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        response.results.len() == batch.rows.len(),
        "{} results for a batch of {} rows",
        response.results.len(),
        batch.rows.len()
    );
    for (result, (line, email)) in response.results.iter().zip(&batch.rows) {
        if result.outcome == pb::ImportOutcome::Failed as i32 {
            failed.server(*line, email, result.error.as_ref())?;
        }
    }
    Ok(())
}

/// The failed-rows file, created when the first row fails.
struct FailedRows {
    path: PathBuf,
    file: Option<std::io::BufWriter<File>>,
}

impl FailedRows {
    fn new(path: PathBuf) -> Self {
        Self { path, file: None }
    }

    fn write(&mut self, line: Value) -> anyhow::Result<()> {
        if self.file.is_none() {
            let file = File::create(&self.path)
                .with_context(|| format!("cannot create `{}`", self.path.display()))?;
            self.file = Some(std::io::BufWriter::new(file));
        }
        let file = self.file.as_mut().expect("just created");
        serde_json::to_writer(&mut *file, &line)?;
        file.write_all(b"\n")?;
        Ok(())
    }

    fn unreadable(&mut self, line: &Unreadable) -> anyhow::Result<()> {
        self.write(json!({
            "line": line.line,
            "reason": "UNREADABLE",
            "message": line.message,
        }))
    }

    fn server(
        &mut self,
        line: u64,
        email: &str,
        status: Option<&tonic_types::pb::Status>,
    ) -> anyhow::Result<()> {
        let (mut reason, mut field) = (Value::Null, Value::Null);
        for detail in status.map(|s| s.details.as_slice()).unwrap_or_default() {
            if detail.type_url.ends_with("google.rpc.ErrorInfo") {
                let info = tonic_types::pb::ErrorInfo::decode(detail.value.as_slice())?;
                reason = Value::String(info.reason);
            } else if detail.type_url.ends_with("google.rpc.BadRequest") {
                let bad = tonic_types::pb::BadRequest::decode(detail.value.as_slice())?;
                if let Some(violation) = bad.field_violations.first() {
                    field = Value::String(violation.field.clone());
                }
            }
        }
        self.write(json!({
            "line": line,
            "email": email,
            "code": status.map(|s| tonic::Code::from(s.code).description()),
            "reason": reason,
            "field": field,
            "message": status.map(|s| s.message.as_str()),
        }))
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(file) = &mut self.file {
            file.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;

    /// A batch of `rows` rows, numbered from `first`.
    fn batch(first: u64, rows: u64) -> Batch {
        let lines: Vec<(u64, String)> = (first..first + rows)
            .map(|line| (line, format!("row{line}@example.com")))
            .collect();
        Batch {
            request: pb::ImportContactsRequest {
                rows: lines
                    .iter()
                    .map(|(_, email)| pb::ImportRow {
                        email: email.clone(),
                        properties: None,
                    })
                    .collect(),
                mode: pb::ImportMode::Upsert as i32,
            },
            rows: lines,
            unreadable: Vec::new(),
        }
    }

    /// All the batches are read before the call is first polled, and the call takes a
    /// request only while it is polled, as an unstarted gRPC call does: every batch
    /// is still sent and answered.
    #[tokio::test]
    async fn batches_read_before_the_call_starts_are_all_answered() {
        let (batches_tx, batches) = mpsc::channel(16);
        for n in 0..16 {
            batches_tx.try_send(batch(n * 3, 3)).expect("room");
        }
        drop(batches_tx);
        let (requests_tx, requests) = mpsc::channel(1);
        let mut created = 0;
        // Answers a request only when polled.
        let responses = ReceiverStream::new(requests).map(move |request| {
            let request: pb::ImportContactsRequest = request;
            created += request.rows.len() as i64;
            Ok(pb::ImportContactsResponse {
                results: vec![pb::ImportResult::default(); request.rows.len()],
                created,
                ..Default::default()
            })
        });
        let path = std::env::temp_dir().join("kraiter-never-written.failed.jsonl");
        let mut failed = FailedRows::new(path);
        let progress = ProgressBar::hidden();
        let exchange = exchange(
            batches,
            requests_tx,
            Box::pin(responses),
            &mut failed,
            &progress,
        );
        let exchanged = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .expect("the exchange ends")
            .expect("no error");
        assert_eq!(exchanged.unanswered, 0);
        assert_eq!(exchanged.totals.created, 48);
        assert!(failed.file.is_none(), "no row failed");
    }
}
