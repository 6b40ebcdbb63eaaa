//! `contacts.import`: a stream of rows in, a stream of per-row results out, over
//! ImportContacts (one request message per batch, one response per committed batch).

use futures_core::Stream;
use futures_util::{StreamExt, stream};
use prost::Message as _;

use super::{Contacts, ItemStream, pb};
use crate::client::ClientError;

/// Most rows the client puts in one request message (the server's limit).
pub const MAX_BATCH_ROWS: usize = 1000;
/// Most encoded bytes the client puts in one request message, well under the
/// server's default `--max-message-size` of 4 MiB (a row larger than this goes in a
/// message of its own).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

impl Contacts {
    /// `contacts.import`: imports `rows` in `mode` and yields one result per row, in
    /// row order (`index` counts from 0), as each batch is committed. Rows are sent
    /// in batches of up to 1,000 rows and 1 MiB; a row that fails (an invalid
    /// address, say) is a result with outcome FAILED and its `error`, not an error
    /// of the stream. An error of the stream (the connection broke, the key was
    /// revoked) ends it: the rows whose results arrived are committed, and of the
    /// others at most whole batches right after them (their answers lost on the
    /// way), so the import can go on from the first row without a result. Not
    /// retried by the client.
    pub fn import<S>(&self, mode: pb::ImportMode, rows: S) -> ItemStream<pb::ImportResult>
    where
        S: Stream<Item = pb::ImportRow> + Send + 'static,
    {
        let responses = self.import_batches(batches(mode, rows));
        let results = responses.flat_map(|response| {
            let results: Vec<Result<pb::ImportResult, ClientError>> = match response {
                Ok(response) => response.results.into_iter().map(Ok).collect(),
                Err(err) => vec![Err(err)],
            };
            stream::iter(results)
        });
        Box::pin(results)
    }

    /// ImportContacts with the caller's own batches: one response per request
    /// message, once its batch is committed, with the import's running totals.
    pub fn import_batches<S>(&self, requests: S) -> ItemStream<pb::ImportContactsResponse>
    where
        S: Stream<Item = pb::ImportContactsRequest> + Send + 'static,
    {
        let mut inner = self.inner.clone();
        let opened = async move { inner.import_contacts(requests).await };
        let responses = stream::once(opened).flat_map(|opened| match opened {
            Ok(response) => response
                .into_inner()
                .map(|message| message.map_err(ClientError::from))
                .boxed(),
            Err(status) => stream::iter([Err(ClientError::from(status))]).boxed(),
        });
        Box::pin(responses)
    }
}

/// `rows` cut into request messages of at most `MAX_BATCH_ROWS` rows and about
/// `MAX_BATCH_BYTES`; the first carries `mode`.
pub fn batches<S>(
    mode: pb::ImportMode,
    rows: S,
) -> impl Stream<Item = pb::ImportContactsRequest> + Send + 'static
where
    S: Stream<Item = pb::ImportRow> + Send + 'static,
{
    struct Batcher<S> {
        rows: std::pin::Pin<Box<S>>,
        /// A row that did not fit in the previous batch.
        carried: Option<pb::ImportRow>,
        mode: Option<pb::ImportMode>,
    }
    let batcher = Batcher {
        rows: Box::pin(rows),
        carried: None,
        mode: Some(mode),
    };
    stream::unfold(batcher, |mut batcher| async move {
        let mut rows = Vec::new();
        let mut bytes = 0;
        loop {
            let row = match batcher.carried.take() {
                Some(row) => row,
                None => match batcher.rows.next().await {
                    Some(row) => row,
                    None => break,
                },
            };
            let size = row.encoded_len() + 8;
            if !rows.is_empty() && bytes + size > MAX_BATCH_BYTES {
                batcher.carried = Some(row);
                break;
            }
            bytes += size;
            rows.push(row);
            if rows.len() == MAX_BATCH_ROWS {
                break;
            }
        }
        if rows.is_empty() {
            return None;
        }
        let mode = batcher.mode.take().unwrap_or(pb::ImportMode::Unspecified);
        let request = pb::ImportContactsRequest {
            rows,
            mode: mode as i32,
        };
        Some((request, batcher))
    })
}
