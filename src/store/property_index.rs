//! Indexes of hot properties (`kraiter-contacts index create|list|drop`, issue 16).
//!
//! The index expressions are the filters' own (`Dialect::json_typed`, the SQLite
//! `json_extract` path), rendered for a path of plain keys, which filters write as
//! literals: so the planner matches the index to the queries. DDL cannot bind
//! parameters, so the property and tenant appear in its text; both are checked to
//! characters that need no quoting (`literal_key`, `TenantId`).

use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection, Postgres, Sqlite, SqliteConnection};

use super::common::{Clause, Dialect, JsonKind, literal_key};
use super::{StoreError, StoreResult};
use crate::domain::filter::PropertyPath;
use crate::domain::{TenantId, ValidationError};

const PREFIX: &str = "contacts_prop_";

/// An index `create` made, as `list` finds it.
#[derive(Debug, Clone)]
pub struct PropertyIndex {
    pub name: String,
    pub definition: String,
}

/// A property path of plain keys (letters, digits, `_`, `-`) joined by `.`.
pub fn parse_property(raw: &str) -> Result<PropertyPath, ValidationError> {
    let path = PropertyPath::parse(raw, "property")?;
    if !path.keys().iter().all(|key| literal_key(key)) {
        return Err(ValidationError::new(
            "property",
            "must be keys of letters, digits, `_` and `-` (at most 64 each) joined by `.`",
        ));
    }
    Ok(path)
}

/// Index names for `tenant` and `path`: PostgreSQL's 63 bytes hold no long key, so a
/// hash stands for them (`list` shows the definitions).
fn base_name(tenant: Option<&TenantId>, path: &PropertyPath) -> String {
    let mut hasher = Sha256::new();
    hasher.update(tenant.map_or("", TenantId::as_str));
    hasher.update([0]);
    hasher.update(path.keys().join(".").as_bytes());
    let digest: String = hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{PREFIX}{digest}")
}

fn typed<DB: Dialect>(path: &PropertyPath, kind: JsonKind) -> String {
    let mut out = Clause::default();
    DB::json_typed(&mut out, path, kind);
    debug_assert!(out.args.is_empty(), "plain keys render as literals");
    out.sql
}

/// The statements that build the indexes of `tenant`'s `path`, each with the name
/// of the index it builds on PostgreSQL.
fn create_statements(
    url: &str,
    tenant: &TenantId,
    path: &PropertyPath,
) -> Vec<(Option<String>, String)> {
    if is_postgres(url) {
        let name = base_name(Some(tenant), path);
        let tenant = tenant.as_str();
        [("n", JsonKind::Number), ("s", JsonKind::Text)]
            .into_iter()
            .map(|(suffix, kind)| {
                let index = format!("{name}_{suffix}");
                let sql = format!(
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} ON contacts \
                     (({}), id) WHERE tenant_id = '{tenant}'",
                    typed::<Postgres>(path, kind)
                );
                (Some(index), sql)
            })
            .collect()
    } else {
        // One index for every tenant: queries bind the tenant, which a partial index
        // of one tenant could not be matched to.
        let name = base_name(None, path);
        let expr = typed::<Sqlite>(path, JsonKind::Text);
        // `json_typed` wraps `json_extract(...)` in a CASE; the index takes the call.
        let start = expr.find("json_extract").unwrap_or(0);
        let call = &expr[start..expr.rfind(" END)").unwrap_or(expr.len())];
        vec![(
            None,
            format!("CREATE INDEX IF NOT EXISTS {name} ON contacts (tenant_id, {call}, id)"),
        )]
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn failed(err: sqlx::Error) -> StoreError {
    StoreError::Internal(Box::new(err))
}

/// Attempts at a PostgreSQL statement that deadlocked: a concurrent build or drop of
/// another index waits for this one's transaction as this one waits for its
/// (`CONCURRENTLY` waits for every older transaction), and PostgreSQL aborts one
/// of the two; run again, it waits for the other to finish.
const DEADLOCK_ATTEMPTS: u32 = 5;

/// An index that a failed or interrupted `CREATE INDEX CONCURRENTLY` left behind:
/// present but invalid, maintained by every write and used by no query, and
/// `IF NOT EXISTS` would leave it so.
const INVALID_INDEX: &str = "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
     WHERE c.relname = $1 AND NOT i.indisvalid";

/// Runs `statements` in order; on PostgreSQL each statement that builds the index
/// named beside it first drops an invalid leftover of that name, and a deadlock is
/// run again.
async fn run(url: &str, statements: &[(Option<String>, String)]) -> StoreResult<()> {
    if !is_postgres(url) {
        let mut conn = SqliteConnection::connect(url).await.map_err(failed)?;
        for (_, sql) in statements {
            sqlx::raw_sql(sql)
                .execute(&mut conn)
                .await
                .map_err(failed)?;
        }
        return Ok(());
    }
    let mut conn = PgConnection::connect(url).await.map_err(failed)?;
    for (builds, sql) in statements {
        let mut attempt = 1;
        loop {
            let ran = async {
                if let Some(name) = builds {
                    drop_invalid(&mut conn, name).await?;
                }
                sqlx::raw_sql(sql).execute(&mut conn).await
            }
            .await;
            match ran {
                Ok(_) => break,
                Err(err) if is_deadlock(&err) && attempt < DEADLOCK_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)))
                        .await;
                    attempt += 1;
                }
                Err(err) => return Err(failed(err)),
            }
        }
    }
    Ok(())
}

async fn drop_invalid(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    let invalid = sqlx::query(INVALID_INDEX)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    if invalid.is_some() {
        // The name is ours (`base_name`): no quoting needed.
        let sql = format!("DROP INDEX CONCURRENTLY IF EXISTS {name}");
        sqlx::raw_sql(&sql).execute(&mut *conn).await?;
    }
    Ok(())
}

fn is_deadlock(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("40P01"))
}

/// Builds the indexes (PostgreSQL: without blocking writes, and rebuilding one a
/// failed build left invalid); returns their statements.
pub async fn create(url: &str, tenant: &TenantId, path: &PropertyPath) -> StoreResult<Vec<String>> {
    let statements = create_statements(url, tenant, path);
    run(url, &statements).await?;
    Ok(statements.into_iter().map(|(_, sql)| sql).collect())
}

/// Drops the indexes `create` made for `tenant` and `path`.
pub async fn drop(url: &str, tenant: &TenantId, path: &PropertyPath) -> StoreResult<()> {
    let statements: Vec<(Option<String>, String)> = if is_postgres(url) {
        let name = base_name(Some(tenant), path);
        ["n", "s"]
            .iter()
            .map(|s| {
                (
                    None,
                    format!("DROP INDEX CONCURRENTLY IF EXISTS {name}_{s}"),
                )
            })
            .collect()
    } else {
        vec![(
            None,
            format!("DROP INDEX IF EXISTS {}", base_name(None, path)),
        )]
    };
    run(url, &statements).await
}

/// The property indexes of the database.
pub async fn list(url: &str) -> StoreResult<Vec<PropertyIndex>> {
    // `_` is a LIKE wildcard (and `contacts_properties_tenant` would match).
    let pattern = format!("{}%", PREFIX.replace('_', "\\_"));
    let rows: Vec<(String, String)> = if is_postgres(url) {
        let mut conn = PgConnection::connect(url).await.map_err(failed)?;
        sqlx::query_as(
            "SELECT indexname, indexdef FROM pg_indexes \
             WHERE tablename = 'contacts' AND indexname LIKE $1 ESCAPE '\\' ORDER BY indexname",
        )
        .bind(pattern)
        .fetch_all(&mut conn)
        .await
        .map_err(failed)?
    } else {
        let mut conn = SqliteConnection::connect(url).await.map_err(failed)?;
        sqlx::query_as(
            "SELECT name, sql FROM sqlite_master \
             WHERE type = 'index' AND tbl_name = 'contacts' AND name LIKE ?1 ESCAPE '\\' \
             ORDER BY name",
        )
        .bind(pattern)
        .fetch_all(&mut conn)
        .await
        .map_err(failed)?
    };
    Ok(rows
        .into_iter()
        .map(|(name, definition)| PropertyIndex { name, definition })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_expressions_are_the_filters_expressions() {
        let tenant = TenantId::parse("acme").expect("valid");
        let path = parse_property("address.city").expect("plain keys");
        let pg = create_statements("postgres://x/y", &tenant, &path);
        let (name, pg) = (&pg[1].0, &pg[1].1);
        assert!(
            pg.contains(&typed::<Postgres>(&path, JsonKind::Text)),
            "{pg}"
        );
        assert!(pg.ends_with("WHERE tenant_id = 'acme'"), "{pg}");
        assert!(pg.contains(&format!(
            "IF NOT EXISTS {} ON",
            name.as_deref().unwrap_or("?")
        )));
        let lite = create_statements("sqlite://x.db", &tenant, &path);
        assert!(
            lite[0]
                .1
                .contains("(tenant_id, json_extract(properties, '$.\"address\".\"city\"'), id)"),
            "{}",
            lite[0].1
        );
        assert!(parse_property("a b").is_err());
        assert!(parse_property("a'b").is_err());
    }
}
