//! PostgreSQL's fast read of a contact (the other rows are read by `store::common`).

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{classify, sql};
use crate::domain::{ContactRow, ContactView};
use crate::store::{StoreError, StoreResult};

/// A contact for a response, its properties the JSON text PostgreSQL sent: jsonb's
/// binary form is a version byte (1) and then the text, so no tree is built.
/// Columns are read by position (`contact_columns!` order, first in every statement
/// that returns a contact), which spares a name lookup per column per row.
pub(super) fn view_from_row(row: &PgRow) -> StoreResult<ContactView> {
    ref_from_row(row).map(|contact| contact.to_view())
}

/// `view_from_row` borrowed from the row, for a list that encodes it as it is read.
pub(super) fn ref_from_row(row: &PgRow) -> StoreResult<ContactRow<'_>> {
    debug_assert!(
        sqlx::Row::columns(row)
            .iter()
            .map(sqlx::Column::name)
            .take(sql::CONTACT_COLUMN_COUNT)
            .eq(sql::CONTACT_COLUMNS.split(", ")),
        "a contact's columns come first, in contact_columns! order"
    );
    let raw: &[u8] = row.try_get_unchecked(2).map_err(classify)?;
    let properties = match raw.split_first() {
        Some((1, text)) => std::str::from_utf8(text).map_err(StoreError::internal)?,
        _ => return Err(StoreError::internal("unknown jsonb format version")),
    };
    Ok(ContactRow {
        id: row.try_get(0).map_err(classify)?,
        email: row.try_get(1).map_err(classify)?,
        properties,
        suppressed: row.try_get(3).map_err(classify)?,
        unsubscribed: row.try_get(4).map_err(classify)?,
        created_at: row.try_get(5).map_err(classify)?,
        updated_at: row.try_get(6).map_err(classify)?,
        revision: row.try_get(7).map_err(classify)?,
    })
}
