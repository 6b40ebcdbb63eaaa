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
use kraiter_contacts::client::{Client, pb};
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

    let (batches_tx, mut batches) = mpsc::channel::<Batch>(BATCHES_AHEAD);
    let (requests_tx, requests) = mpsc::channel(1);
    let reader = {
        let (mode, size) = (mode(args.mode), usize::from(args.batch));
        tokio::task::spawn_blocking(move || read_batches(rows, mode, size, batches_tx))
    };
    // The answers come in batch order: each batch's rows wait here for theirs.
    let mut pending: VecDeque<Batch> = VecDeque::new();
    let mut responses = client
        .contacts()
        .import_batches(tokio_stream::wrappers::ReceiverStream::new(requests));
    let mut totals = Totals::default();
    let mut requests_tx = Some(requests_tx);
    loop {
        tokio::select! {
            batch = batches.recv(), if requests_tx.is_some() => match batch {
                Some(mut batch) => {
                    for line in batch.unreadable.drain(..) {
                        failed.unreadable(&line)?;
                        totals.unreadable += 1;
                    }
                    let request = std::mem::take(&mut batch.request);
                    pending.push_back(batch);
                    let sender = requests_tx.as_ref().expect("open while batches come");
                    if sender.send(request).await.is_err() {
                        break;
                    }
                }
                // The file is read: the request stream ends, answers still come.
                None => requests_tx = None,
            },
            response = responses.next() => {
                let Some(response) = response else { break };
                let response = response.context("the import stopped")?;
                let batch = pending.pop_front().context("an answer to no batch")?;
                record(&response, &batch, &mut failed)?;
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
    reader.await.context("the file reader")??;
    progress.finish_and_clear();
    failed.finish()?;
    anyhow::ensure!(pending.is_empty(), "the server did not answer every batch");
    eprintln!("imported {}: {}", args.file.display(), summary(&totals));
    if totals.failed() > 0 {
        eprintln!("failed rows, with their errors: {}", failed.path.display());
        std::process::exit(2);
    }
    Ok(())
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
