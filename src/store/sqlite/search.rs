//! Contact lists and search on SQLite: an FTS5 trigram index for terms it
//! answers well, a walk of the tenant in id order for the rest.

use sqlx::Sqlite;

use crate::store::common::{
    Arg, CONTACT_COLUMNS, Clause, ContactPage, filter_condition, keyset, order_by,
};

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

/// What the trigram index is asked for: the term's longest alphanumeric run when it
/// has three characters, else the whole term, if that has three. A phrase matches
/// only rows holding every trigram of it, and a trigram that is in nearly every row
/// (`cr-` of a customer reference, `@ex` of an address) costs a read of a posting
/// list of nearly every row, however rare the term; the run avoids the punctuation
/// that such trigrams straddle. Every row with the term has its run, and the
/// `instr` test after the MATCH keeps only the term's.
fn probe(term: &str) -> Option<&str> {
    let longest = term
        .split(|c: char| !c.is_alphanumeric())
        .max_by_key(|run| run.chars().count())
        .filter(|run| run.chars().count() >= 3);
    longest.or_else(|| (term.chars().count() >= 3).then_some(term))
}

/// Counts a phrase's trigram-index matches, in all tenants, up to `?2`.
const COUNT_MATCHES: &str =
    "SELECT count(*) FROM (SELECT 1 FROM contacts_fts WHERE contacts_fts MATCH ?1 LIMIT ?2)";

/// The statements one keyset page may run, and how one is chosen: each statement
/// that reads the trigram index, in the order they are tried, with the phrase whose
/// match count admits it, then the walk of the tenant. Built on the caller's task,
/// chosen where the page is read (`rows.rs`), so a search is one hand-over.
pub(super) struct ListPlan {
    indexed: Vec<(String, Clause)>,
    walk: Clause,
    cap: u32,
}

impl ListPlan {
    /// The first indexed statement whose phrase has at most `cap` matches, counted
    /// on `conn`; else the walk.
    pub fn choose(self, conn: &rusqlite::Connection) -> rusqlite::Result<Clause> {
        for (phrase, statement) in self.indexed {
            let mut count = conn.prepare_cached(COUNT_MATCHES)?;
            let candidates: i64 =
                count.query_row((phrase.as_str(), i64::from(self.cap) + 1), |row| row.get(0))?;
            if candidates <= i64::from(self.cap) {
                return Ok(statement);
            }
        }
        Ok(self.walk)
    }
}

/// The plan of one keyset page of the tenant's contacts in the query's order,
/// filtered by it, each statement up to its `LIMIT ?` (the page's limit, bound last).
pub(super) fn list_plan(page: &ContactPage<'_>) -> ListPlan {
    let term = page.query.search.as_ref().map(|term| term.as_str());
    // The trigram index needs three characters; shorter terms scan the tenant's rows.
    // The index is probed with the term's longest run first (`probe`), then with the
    // whole term when the run alone has too many matches.
    let mut phrases: Vec<&str> = term.and_then(probe).into_iter().collect();
    if let Some(term) = term
        && phrases.first().is_some_and(|run| *run != term)
    {
        phrases.push(term);
    }
    // A common term's matches cost more to read and sort by id than a walk of the
    // tenant in id order costs to find a page of them (`search_candidate_cap`). The
    // count covers all tenants (the index is global), so it only picks the plan: both
    // apply the same filters.
    let indexed = phrases
        .into_iter()
        .map(|probe| {
            let phrase = format!("\"{}\"", probe.replace('"', "\"\""));
            let statement = statement(page, Some(&phrase));
            (phrase, statement)
        })
        .collect();
    ListPlan {
        indexed,
        walk: statement(page, None),
        cap: search_candidate_cap(page.limit),
    }
}

/// The page's statement, through the trigram index for `fts` or walking the tenant.
fn statement(page: &ContactPage<'_>, fts: Option<&str>) -> Clause {
    let ContactPage {
        tenant,
        query,
        after,
        ..
    } = *page;
    let term = query.search.as_ref().map(|term| term.as_str());
    // Only the filters present appear in the SQL, so no MATCH runs on a NULL.
    // CROSS JOIN keeps the index the outer loop whatever ANALYZE has recorded.
    let mut sql = Clause::default();
    sql.push(&format!("SELECT {CONTACT_COLUMNS} FROM "));
    if let Some(fts) = fts {
        sql.push(
            "contacts_fts CROSS JOIN contacts ON contacts.rid = contacts_fts.rowid \
                 WHERE contacts_fts MATCH ",
        )
        .arg(Arg::Text(fts.to_owned()))
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
    sql
}

#[cfg(test)]
mod tests {
    use super::probe;

    #[test]
    fn the_index_is_probed_with_the_terms_longest_alphanumeric_run() {
        assert_eq!(probe("cr-qsfpetmz"), Some("qsfpetmz"));
        assert_eq!(probe("user12@gmail.com"), Some("user12"));
        assert_eq!(probe("gmail"), Some("gmail"));
        // No run of three: the whole term, as before.
        assert_eq!(probe("a-b-c"), Some("a-b-c"));
        assert_eq!(probe("ab"), None);
        assert_eq!(probe("zürich-1"), Some("zürich"));
    }
}
