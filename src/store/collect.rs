//! What a list query holds: its rows, what each weighs in memory, and the one byte
//! budget every list query of both backends collects its rows within.

use super::{EncodedCollector, EncodedRows, StoreError, StoreResult};
use crate::domain::{ChangeRecord, ContactRow, ContactView, TimelineEntry};

/// The rows of a list query. `cut_short`: the query stopped at its byte budget before
/// `limit`, and more rows follow.
#[derive(Debug)]
pub struct ListRows<T> {
    pub items: Vec<T>,
    pub cut_short: bool,
}

/// No rows, and none left unread: an empty answer, or a collection about to start.
impl<T> Default for ListRows<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            cut_short: false,
        }
    }
}

pub type ContactRows = ListRows<ContactView>;

/// What a timeline entry holds in memory, roughly: its data's strings and a fixed
/// part per value.
pub fn timeline_entry_bytes(entry: &TimelineEntry) -> usize {
    fn value_bytes(value: &serde_json::Value) -> usize {
        match value {
            serde_json::Value::String(text) => text.len() + 24,
            serde_json::Value::Array(items) => items.iter().map(value_bytes).sum::<usize>() + 24,
            serde_json::Value::Object(map) => {
                map.iter()
                    .map(|(k, v)| k.len() + value_bytes(v))
                    .sum::<usize>()
                    + 48
            }
            _ => 24,
        }
    }
    entry
        .data
        .iter()
        .map(|(k, v)| k.len() + value_bytes(v))
        .sum::<usize>()
        + 128
}

/// What a contact of a list holds in memory, roughly: its properties' text, its
/// address and a fixed part.
pub fn contact_bytes(contact: &ContactView) -> usize {
    row_bytes(&contact.borrowed())
}

/// `contact_bytes` of a borrowed row.
pub fn row_bytes(contact: &ContactRow<'_>) -> usize {
    contact.properties.len() + contact.email.len() + 64
}

/// A list query's byte budget: rows are taken until they pass `max` bytes (at least
/// one is), and the row read after that only tells that more follow. Bounds the
/// rows a query holds whatever they weigh.
#[derive(Debug)]
pub(crate) struct Budget {
    max: usize,
    bytes: usize,
    taken: bool,
}

impl Budget {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            bytes: 0,
            taken: false,
        }
    }

    /// Whether the rows taken have passed the budget: the next row is not taken.
    pub fn spent(&self) -> bool {
        self.taken && self.bytes > self.max
    }

    /// Counts a row of `bytes` taken.
    pub fn take(&mut self, bytes: usize) {
        self.bytes += bytes;
        self.taken = true;
    }
}

/// Collects list rows from `rows` as `read` maps them until they pass `max_bytes` as
/// `size` counts them (at least one), then reads one more row, if any, to tell
/// whether rows follow; the rest of the query is left to the caller to drop.
pub(crate) async fn collect_within<R, T, S>(
    mut rows: S,
    max_bytes: usize,
    read: impl Fn(&R) -> StoreResult<T>,
    size: impl Fn(&T) -> usize,
    classify: fn(sqlx::Error) -> StoreError,
) -> StoreResult<ListRows<T>>
where
    S: futures_util::Stream<Item = Result<R, sqlx::Error>> + Unpin,
{
    use futures_util::TryStreamExt;
    let mut collected = ListRows::default();
    let mut budget = Budget::new(max_bytes);
    while let Some(row) = rows.try_next().await.map_err(classify)? {
        if budget.spent() {
            collected.cut_short = true;
            break;
        }
        let item = read(&row)?;
        budget.take(size(&item));
        collected.items.push(item);
    }
    Ok(collected)
}

/// `collect_within` for a list's contacts: each row read by `read`, borrowed, goes
/// straight to `collector`'s encoding.
pub(crate) async fn collect_encoded<R, S>(
    mut rows: S,
    mut collector: EncodedCollector<'_>,
    read: for<'r> fn(&'r R) -> StoreResult<ContactRow<'r>>,
    classify: fn(sqlx::Error) -> StoreError,
) -> StoreResult<EncodedRows>
where
    S: futures_util::Stream<Item = Result<R, sqlx::Error>> + Unpin,
{
    use futures_util::TryStreamExt;
    while let Some(row) = rows.try_next().await.map_err(classify)? {
        if collector.full() {
            break;
        }
        collector.push(&read(&row)?)?;
    }
    Ok(collector.finish())
}

/// What a change of the feed holds in memory, roughly: its strings and a fixed part.
pub fn change_record_bytes(change: &ChangeRecord) -> usize {
    let contact = change.contact.as_ref().map_or(0, |contact| {
        contact.email.as_str().len() + contact.properties.as_str().len() + 96
    });
    let fields: usize = change.changed_fields.iter().map(|f| f.len() + 24).sum();
    change.contact_id.as_str().len() + fields + contact + 96
}
