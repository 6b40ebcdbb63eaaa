//! Contact lists and search on SQLite: an FTS5 trigram index for terms it
//! answers well, a walk of the tenant in id order for the rest.

use sqlx::{Sqlite, SqliteConnection};

use super::classify;
use crate::store::common::{CONTACT_COLUMNS, ContactPage, view_from_row};
use crate::store::{ContactRows, StoreResult, collect_within, contact_bytes};

/// A search term with at most this many matches (in all tenants) is answered from the
/// trigram index, whatever the page size; with more, the tenant's contacts are walked
/// in id order. Public so tests can seed either side of it.
pub const SEARCH_CANDIDATES: u32 = 2_000;

/// The most index matches a search of `limit` rows is answered from. The cost model
/// (per-match and per-row costs measured at a million contacts, BENCHMARKS.md): the
/// index costs ~3.5 us a match and the walk ~0.25 us a row, reading about
/// `limit x contacts / matches` rows when matches are spread evenly: they break even
/// near 250 x sqrt(limit) matches (~1,100 for a page of 20, 7,750 for 1,000). The floor
/// leans to the index, whose cost is bounded: the walk reads to the end of the tenant
/// when the matches after the cursor are fewer than a page (all in an early batch).
fn search_candidate_cap(limit: u32) -> u32 {
    (250 * limit.isqrt()).max(SEARCH_CANDIDATES)
}

/// One keyset page of the tenant's contacts in id order, filtered by `query`.
pub(super) async fn list_contacts(
    conn: &mut SqliteConnection,
    page: ContactPage<'_>,
) -> StoreResult<ContactRows> {
    let ContactPage {
        tenant,
        query,
        after,
        limit,
        max_bytes,
    } = page;
    let term = query.search.as_ref().map(|term| term.as_str());
    // The trigram index needs three characters; shorter terms scan the tenant's rows.
    let phrase = term
        .filter(|term| term.chars().count() >= 3)
        .map(|term| format!("\"{}\"", term.replace('"', "\"\"")));
    // A common term's matches cost more to read and sort by id than a walk of the
    // tenant in id order costs to find a page of them (`search_candidate_cap`). The
    // count covers all tenants (the index is global), so it only picks the plan: both
    // apply the same filters.
    let mut fts = None;
    if let Some(phrase) = phrase {
        let cap = search_candidate_cap(limit);
        let candidates: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM \
                 (SELECT 1 FROM contacts_fts WHERE contacts_fts MATCH ?1 LIMIT ?2)",
        )
        .bind(&phrase)
        .bind(i64::from(cap) + 1)
        .fetch_one(&mut *conn)
        .await
        .map_err(classify)?;
        if candidates <= i64::from(cap) {
            fts = Some(phrase);
        }
    }
    // Only the filters present appear in the SQL, so no MATCH runs on a NULL.
    // CROSS JOIN keeps the index the outer loop whatever ANALYZE has recorded.
    let mut sql = format!("SELECT {CONTACT_COLUMNS} FROM ");
    if fts.is_some() {
        sql.push_str(
            "contacts_fts CROSS JOIN contacts ON contacts.rid = contacts_fts.rowid \
                 WHERE contacts_fts MATCH ? AND ",
        );
    } else {
        sql.push_str("contacts WHERE ");
    }
    sql.push_str("tenant_id = ?");
    if after.is_some() {
        sql.push_str(" AND id > ?");
    }
    // Also checked after a MATCH: the index folds case more widely than
    // `to_lowercase` (`ſ` matches `s`), so it may yield rows without the term.
    if term.is_some() {
        sql.push_str(" AND instr(contacts.search_text, ?) > 0");
    }
    if query.suppressed.is_some() {
        sql.push_str(" AND suppressed = ?");
    }
    sql.push_str(" ORDER BY id LIMIT ?");
    let mut statement = sqlx::query(&sql);
    if let Some(fts) = fts {
        statement = statement.bind(fts);
    }
    statement = statement.bind(tenant.as_str());
    if let Some(after) = after {
        statement = statement.bind(after);
    }
    if let Some(term) = term {
        statement = statement.bind(term);
    }
    if let Some(suppressed) = query.suppressed {
        statement = statement.bind(suppressed);
    }
    let rows = statement.bind(i64::from(limit)).fetch(&mut *conn);
    collect_within(
        rows,
        max_bytes,
        view_from_row::<Sqlite>,
        contact_bytes,
        classify,
    )
    .await
}
