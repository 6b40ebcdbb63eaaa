//! CountContacts: one `count(*)` with the list's conditions, or the planner's
//! estimate of the same statement's rows where the database keeps statistics.
//!
//! An exact count reads every matching row (from an index where one serves the
//! conditions); its cost is bounded by the call's deadline, past which the
//! statement is cancelled (`store/postgres/conns.rs`), not by a limit of its own.
//! The whole tenant's count is kept instead where the database maintains it
//! (`Dialect::COUNTED`): triggers add each statement's inserted and deleted rows to
//! the writing process's row of `contact_counts`, in the writing transaction, so the
//! sum seen by any snapshot is exactly its number of contacts.

use super::db::ConnSource;
use super::filter::{Clause, bind_arg, query_conditions};
use super::{Dialect, Get, SqlStore, Stmt};
use crate::domain::{ContactQuery, TenantId};
use crate::store::{ContactCount, ReadFrom, StoreError, StoreResult};

pub(super) async fn count_contacts<S: SqlStore>(
    store: &S,
    from: ReadFrom,
    tenant: &TenantId,
    query: &ContactQuery,
    estimate: bool,
) -> StoreResult<ContactCount> {
    let mut conditions = Clause::default();
    query_conditions::<S::Db>(&mut conditions, query);
    if estimate && let Some(explain) = <S::Db as Dialect>::EXPLAIN {
        let sql = numbered(&format!(
            "{explain}SELECT 1 FROM contacts WHERE tenant_id = ?{}",
            conditions.sql
        ));
        let (sql, conditions) = (&sql, &conditions);
        let rows = store
            .read_heavy(from, |conns| async move {
                conns
                    .fetch_all(bind_all(Stmt::new(sql), tenant, conditions))
                    .await
            })
            .await?;
        let plan: Option<String> = match rows.first() {
            Some(row) => {
                Some(<S::Db as Get<String>>::get(row, "QUERY PLAN").map_err(S::Db::classify)?)
            }
            None => None,
        };
        let count = plan.as_deref().and_then(estimated_rows).ok_or_else(|| {
            StoreError::internal(std::io::Error::other("no row estimate in the plan"))
        })?;
        return Ok(ContactCount {
            count,
            exact: false,
        });
    }
    let sql = if <S::Db as Dialect>::COUNTED && conditions.sql.is_empty() {
        numbered(
            "SELECT CAST(coalesce(sum(n), 0) AS bigint) AS n FROM contact_counts WHERE tenant_id = ?",
        )
    } else {
        numbered(&format!(
            "SELECT count(*) AS n FROM contacts WHERE tenant_id = ?{}",
            conditions.sql
        ))
    };
    let (sql, conditions) = (&sql, &conditions);
    let row = store
        .read_heavy(from, |conns| async move {
            conns
                .fetch_optional(bind_all(Stmt::new(sql), tenant, conditions))
                .await
        })
        .await?
        .ok_or_else(|| StoreError::internal(std::io::Error::other("count returned no row")))?;
    let count = <S::Db as Get<i64>>::get(&row, "n").map_err(S::Db::classify)?;
    Ok(ContactCount { count, exact: true })
}

fn numbered(sql: &str) -> String {
    super::SqlText::new(sql).as_str().to_owned()
}

fn bind_all<'q, DB: super::SqlDb>(
    stmt: Stmt<'q, DB>,
    tenant: &'q TenantId,
    conditions: &'q Clause,
) -> Stmt<'q, DB> {
    let mut stmt = stmt.bind(tenant.as_str());
    for arg in &conditions.args {
        stmt = stmt.map(|query| bind_arg(query, arg));
    }
    stmt
}

/// The `rows=N` of a plan's first line (`Aggregate  (cost=... rows=N width=8)`).
fn estimated_rows(line: &str) -> Option<i64> {
    let rest = &line[line.find(" rows=")? + 6..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_row_estimate_of_a_plan_line() {
        let line = "Bitmap Heap Scan on contacts  (cost=12.01..345.67 rows=9876 width=0)";
        assert_eq!(super::estimated_rows(line), Some(9876));
        assert_eq!(super::estimated_rows("Result"), None);
    }
}
