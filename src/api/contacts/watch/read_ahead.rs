//! A watch's next batch, read while the current one is sent, and how many changes
//! that read asks for.

use super::{BatchMessages, Feed, MAX_BATCH, MIN_BATCH, READ_BYTES};
use crate::domain::{ChangePosition, ChangeRecord};
use crate::store::{ChangeBatch, StoreError, change_record_bytes};

/// The next batch, read while the current one is sent; aborted when the watch ends
/// first.
pub(super) struct ReadAhead {
    read: tokio::task::JoinHandle<Result<ChangeBatch, StoreError>>,
    /// The read's row limit: a batch that reaches it is full.
    pub(super) limit: u32,
}

impl ReadAhead {
    /// Reads and encodes up to `limit` changes after `after` in a task of its own,
    /// beside the sending of the current batch.
    pub(super) fn start(feed: &Feed, after: ChangePosition, limit: u32) -> Self {
        let (store, tenant, kinds) = (feed.store.clone(), feed.tenant.clone(), feed.kinds.clone());
        let tokens = feed.tokens.clone();
        let read = tokio::spawn(async move {
            let batch = store
                .read_changes(&tenant, after, &kinds, limit, READ_BYTES)
                .await?;
            Ok(BatchMessages::attach(batch, &tokens))
        });
        Self { read, limit }
    }

    pub(super) async fn batch(mut self) -> Result<ChangeBatch, StoreError> {
        (&mut self.read).await.map_err(StoreError::internal)?
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.read.abort();
    }
}

/// The row limit of the read after `changes` (a full batch): as many changes of
/// their average size as fit in `READ_BYTES`, within `MIN_BATCH..=MAX_BATCH`, and
/// no more than the `wanted` still to send.
pub(super) fn next_limit(changes: &[ChangeRecord], wanted: Option<u64>) -> u32 {
    let bytes: usize = changes.iter().map(change_record_bytes).sum();
    let per_change = bytes.div_ceil(changes.len().max(1)).max(1);
    let fit = (READ_BYTES / per_change).clamp(MIN_BATCH as usize, MAX_BATCH as usize);
    let fit = u32::try_from(fit).unwrap_or(MAX_BATCH);
    wanted.map_or(fit, |wanted| {
        u32::try_from(wanted).map_or(fit, |wanted| fit.min(wanted))
    })
}
