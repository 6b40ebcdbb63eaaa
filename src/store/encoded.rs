//! A list's contacts in the caller's encoding, made as the store reads each row.
//!
//! A list row used to become a contact of owned strings, which the API then turned
//! into its message and encoded: the row's text was copied twice and allocated
//! several times before it reached the wire. Here the store hands each row, borrowed
//! from the driver's buffer, to the caller's `ContactEncoder`, which appends its
//! encoding to a buffer shared by a chunk of rows; the rows are slices of it.
//! The store knows no protobuf: it only keeps the bytes and each row's keyset key.

use bytes::Bytes;

use super::{Budget, ListRows, StoreError, StoreResult, row_bytes};
use crate::domain::{ContactKey, ContactOrder, ContactRow};

/// Writes a list's contacts the way the caller sends them.
pub trait ContactEncoder: std::fmt::Debug + Send + Sync + 'static {
    /// Appends the encoding of `contact` to `out`. Fails only for a row the store
    /// should not hold (properties that are not a JSON object, say).
    fn encode(&self, contact: &ContactRow<'_>, out: &mut Vec<u8>) -> Result<(), String>;
}

/// One contact of a list, encoded, with the key to resume after it.
#[derive(Debug, Clone)]
pub struct EncodedContact {
    pub bytes: Bytes,
    pub key: ContactKey,
}

impl EncodedContact {
    /// Its size encoded, in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }
}

/// The rows of a list query.
pub type EncodedRows = ListRows<EncodedContact>;

/// A buffer is sealed (its rows made slices of it) at this many rows or bytes, so
/// that no buffer grows by copying itself over and over, and the next one starts
/// at the size the last one reached.
const SEAL_ROWS: usize = 128;
const SEAL_BYTES: usize = 256 << 10;

/// Collects a query's rows, encoded into buffers of a chunk of rows each, until they
/// pass `max_bytes` as `row_bytes` counts them (at least one row), as
/// `collect_within` collects views.
pub(crate) struct EncodedCollector<'e> {
    encoder: &'e dyn ContactEncoder,
    order: ContactOrder,
    budget: Budget,
    /// Rows of the buffers sealed so far.
    items: Vec<EncodedContact>,
    buf: Vec<u8>,
    /// Where each row of `buf` ends, and its key.
    ends: Vec<(usize, ContactKey)>,
    cut_short: bool,
}

impl<'e> EncodedCollector<'e> {
    pub fn new(encoder: &'e dyn ContactEncoder, order: ContactOrder, max_bytes: usize) -> Self {
        Self {
            encoder,
            order,
            budget: Budget::new(max_bytes),
            items: Vec::new(),
            buf: Vec::new(),
            ends: Vec::new(),
            cut_short: false,
        }
    }

    /// Whether the rows taken have passed the budget, so that the row read next is
    /// not taken: it then only says that more rows follow.
    pub fn full(&mut self) -> bool {
        self.cut_short |= self.budget.spent();
        self.cut_short
    }

    /// Takes `contact`; a failed encoding leaves the rows before it as they were.
    pub fn push(&mut self, contact: &ContactRow<'_>) -> StoreResult<()> {
        let start = self.buf.len();
        if let Err(err) = self.encoder.encode(contact, &mut self.buf) {
            self.buf.truncate(start);
            return Err(StoreError::internal(format!(
                "contact {} does not encode: {err}",
                contact.id
            )));
        }
        self.ends.push((self.buf.len(), self.order.key_of(contact)));
        self.budget.take(row_bytes(contact));
        if self.ends.len() >= SEAL_ROWS || self.buf.len() >= SEAL_BYTES {
            self.seal();
        }
        Ok(())
    }

    /// Makes the rows of `buf` slices of it, and starts the next buffer.
    fn seal(&mut self) {
        let next = Vec::with_capacity(self.buf.len() + self.buf.len() / 8);
        let buf = Bytes::from(std::mem::replace(&mut self.buf, next));
        let mut start = 0;
        self.items.extend(self.ends.drain(..).map(|(end, key)| {
            let bytes = buf.slice(start..end);
            start = end;
            EncodedContact { bytes, key }
        }));
    }

    pub fn finish(mut self) -> EncodedRows {
        if !self.ends.is_empty() {
            self.seal();
        }
        ListRows {
            items: self.items,
            cut_short: self.cut_short,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the id, and refuses an id of "bad".
    #[derive(Debug)]
    struct Ids;

    impl ContactEncoder for Ids {
        fn encode(&self, contact: &ContactRow<'_>, out: &mut Vec<u8>) -> Result<(), String> {
            out.extend_from_slice(contact.id.as_bytes());
            if contact.id == "bad" {
                return Err("refused".into());
            }
            Ok(())
        }
    }

    fn contact(id: &str) -> ContactRow<'_> {
        let at = chrono::DateTime::from_timestamp_micros(1).expect("a time");
        ContactRow {
            id,
            email: "A@x.io",
            properties: "{}",
            suppressed: false,
            unsubscribed: false,
            created_at: at,
            updated_at: at,
            revision: 1,
        }
    }

    #[test]
    fn rows_are_slices_of_one_buffer_with_their_keys_and_stop_past_the_budget() {
        let order = ContactOrder::Email(crate::domain::Direction::Asc);
        // Each row counts 72 bytes (`row_bytes`: "{}", "A@x.io" and 64).
        let mut rows = EncodedCollector::new(&Ids, order, 100);
        for id in ["c1", "c22", "c333"] {
            if rows.full() {
                break;
            }
            rows.push(&contact(id)).expect("encodes");
        }
        let rows = rows.finish();
        assert!(
            rows.cut_short,
            "c1 and c22 take 5 bytes: past the budget of 4"
        );
        let got: Vec<(&[u8], &ContactKey)> =
            rows.items.iter().map(|r| (&r.bytes[..], &r.key)).collect();
        let key = |id: &str| ContactKey::Email {
            key: "a@x.io".into(),
            id: id.into(),
        };
        assert_eq!(got, [(&b"c1"[..], &key("c1")), (&b"c22"[..], &key("c22"))]);
    }

    #[test]
    fn rows_past_a_sealed_buffer_keep_their_bytes_and_order() {
        let mut rows = EncodedCollector::new(&Ids, ContactOrder::Id, usize::MAX);
        let ids: Vec<String> = (0..SEAL_ROWS * 2 + 5).map(|i| format!("c{i}")).collect();
        for id in &ids {
            rows.push(&contact(id)).expect("encodes");
        }
        let rows = rows.finish();
        let got: Vec<&[u8]> = rows.items.iter().map(|r| &r.bytes[..]).collect();
        let want: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_row_that_fails_to_encode_leaves_the_rows_before_it() {
        let mut rows = EncodedCollector::new(&Ids, ContactOrder::Id, 1 << 20);
        rows.push(&contact("c1")).expect("encodes");
        let err = rows.push(&contact("bad")).expect_err("refused");
        let StoreError::Internal(cause) = err else {
            panic!("an internal error: {err:?}");
        };
        assert!(cause.to_string().contains("bad"), "{cause}");
        let rows = rows.finish();
        assert_eq!(rows.items.len(), 1);
        assert_eq!(&rows.items[0].bytes[..], b"c1");
        assert!(!rows.cut_short);
    }
}
