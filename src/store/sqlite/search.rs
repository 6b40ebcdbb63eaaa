//! Contact lists and search on SQLite: an FTS5 trigram index for terms it
//! answers well, a walk of the tenant in id order for the rest.

use sqlx::{Sqlite, SqliteConnection};

use super::classify;
use crate::store::common::{
    Arg, CONTACT_COLUMNS, Clause, ContactPage, bind_arg, filter_condition, keyset, order_by,
    view_from_row,
};
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

/// One keyset page of the tenant's contacts in the query's order, filtered by it.
pub(super) async fn list_contacts(
    conn: &mut SqliteConnection,
    page: ContactPage<'_>,
) -> StoreResult<ContactRows> {
    let ContactPage {
        from: _,
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
    let mut sql = Clause::default();
    sql.push(&format!("SELECT {CONTACT_COLUMNS} FROM "));
    if let Some(fts) = fts {
        sql.push(
            "contacts_fts CROSS JOIN contacts ON contacts.rid = contacts_fts.rowid \
                 WHERE contacts_fts MATCH ",
        )
        .arg(Arg::Text(fts))
        .push(" AND ");
    } else {
        sql.push("contacts WHERE ");
    }
    sql.push("tenant_id = ")
        .arg(Arg::Text(tenant.as_str().to_owned()));
    if let Some(after) = after {
        keyset::<Sqlite>(&mut sql, query.order, after);
    }
    // Also checked after a MATCH: the index folds case more widely than
    // `to_lowercase` (`ſ` matches `s`), so it may yield rows without the term.
    if let Some(term) = term {
        sql.push(" AND instr(contacts.search_text, ")
            .arg(Arg::Text(term.to_owned()))
            .push(") > 0");
    }
    if let Some(suppressed) = query.suppressed {
        sql.push(" AND suppressed = ").arg(Arg::Bool(suppressed));
    }
    filter_condition::<Sqlite>(&mut sql, query);
    crate::store::common::id_floor_condition(&mut sql, tenant, query);
    sql.push(&format!(
        " ORDER BY {} LIMIT ?",
        order_by::<Sqlite>(query.order)
    ));
    let mut statement = sqlx::query(&sql.sql);
    for arg in &sql.args {
        statement = bind_arg(statement, arg);
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
