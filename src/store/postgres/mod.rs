//! PostgreSQL store: the production backend. The SQL it shares with SQLite is in
//! `store::common`; here are its pool, its dialect, and the calls it makes its own
//! way (`contacts.rs`, `lookups.rs`).

mod conns;
mod contacts;
mod filter;
mod lookups;
mod notify;
mod portal;
mod replicas;
mod rows;
pub(crate) mod sql;
mod write_tx;
mod writes;

use async_trait::async_trait;
use conns::{Conn, Conns};
use sqlx::Postgres;
use sqlx::postgres::{PgQueryResult, PgRow};

use super::common::{
    ChangeSql, Clause, ColumnKind, ConnSource, Dialect, JsonColumn, JsonKind, POSTGRES_CHANGES,
    SqlStore, SqlWriteTx,
};
use super::{
    Backend, ConnectOptions, ReadFrom, StoreCounters, StoreError, StoreResult, WriteTx, migrations,
};
use crate::domain::filter::{PropertyPath, Scalar};
use crate::domain::{ContactView, SearchTerm, TenantId, ValidationError};

pub struct PgStore {
    conns: Conns,
    /// Hot standbys for the heavy reads (`--database-read-url`), if any.
    replicas: Option<std::sync::Arc<replicas::Replicas>>,
    lookups: lookups::Lookups,
    creates: super::coalesce::Coalesced<writes::PgCreates>,
    bell: super::ChangeBell,
    /// Cursors held open for search streams (`portal.rs`).
    portals: portal::Portals,
}

impl PgStore {
    pub async fn connect(url: &str, options: &ConnectOptions) -> StoreResult<Self> {
        let conns = Conns::connect(url, options).await?;
        if conns.pooled() {
            check_migrated(&conns).await?;
        } else if options.migrate {
            let migrator = migrations::migrator(migrations::POSTGRES)
                .await
                .map_err(StoreError::internal)?;
            let mut conn = conns.get().await?;
            migrator
                .run(&mut *conn)
                .await
                .map_err(StoreError::internal)?;
            conn.done().await?;
        }
        // Coalesced point reads take at most a quarter of the pool (1 to 4 statements).
        let spare = (options.max_connections / 4).clamp(1, 4) as usize - 1;
        let lookups = lookups::Lookups::start(conns.clone(), spare);
        // One spare slot for creates queued behind a batch stuck on a lock.
        let creates = super::coalesce::Coalesced::start(
            writes::PgCreates(conns.clone()),
            usize::from(options.write_batches),
            1,
            options.acquire_timeout,
        );
        // LISTEN needs a session of its own, which a pooler in transaction mode does
        // not give: there, watchers of other replicas' writes wait for their poll.
        let bell = if conns.pooled() {
            super::ChangeBell::local()
        } else {
            let bell = super::ChangeBell::with_remote();
            notify::start(url, conns.clone(), &bell);
            bell
        };
        let replicas = replicas::Replicas::start(url, options).await?;
        Ok(Self {
            conns,
            replicas,
            lookups,
            creates,
            bell,
            portals: portal::Portals::new(options.max_connections),
        })
    }
}

#[async_trait]
impl Backend for PgStore {
    async fn purge_requests(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        batch: u32,
    ) -> StoreResult<u64> {
        super::common::purge_requests(self, before, batch).await
    }

    async fn fold_counts(&self, batch: u32) -> StoreResult<u64> {
        // Moving a row's `n` into shard 0 in one statement keeps every tenant's sum, so
        // any row may go, even one its process writes again later (it inserts a new
        // one). Rows locked by a writing transaction are skipped, not waited for; one
        // folder at a time (the advisory lock), so two cannot deadlock on shard 0 rows.
        let mut conn = self.conns.get().await?;
        let done = sqlx::query_scalar::<_, i64>(sql::FOLD_COUNTS)
            .bind(i64::from(batch))
            .fetch_one(&mut *conn)
            .await;
        Ok(u64::try_from(conn.finish(done).await?).unwrap_or(0))
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conns.get().await?;
        let done = sqlx::query("SELECT 1").execute(&mut *conn).await;
        conn.finish(done).await?;
        Ok(())
    }

    fn pool_usage(&self) -> super::PoolUsage {
        self.conns.usage()
    }

    fn counters(&self) -> StoreCounters {
        let (write_batches, writes) = self.creates.counters();
        StoreCounters {
            write_batches,
            writes,
            ..self.lookups.counters()
        }
    }

    fn multi_page_queries(&self) -> bool {
        true
    }

    fn replicas(&self) -> Vec<super::ReplicaState> {
        self.replicas
            .as_ref()
            .map(|replicas| replicas.states())
            .unwrap_or_default()
    }

    fn write_concurrency(&self) -> usize {
        self.conns.usage().max as usize
    }

    async fn begin_write(&self, tenant: &TenantId) -> StoreResult<Box<dyn WriteTx + '_>> {
        let tx = SqlWriteTx::new(self.begin_tx().await?, tenant).ringing(&self.bell);
        Ok(Box::new(tx))
    }
}

#[async_trait]
impl SqlStore for PgStore {
    type Db = Postgres;
    type Conns = Conns;
    type Tx = write_tx::PgTx;

    fn reads(&self) -> &Conns {
        &self.conns
    }

    fn writes(&self) -> &Conns {
        &self.conns
    }

    async fn read_heavy<T, F, Fut>(&self, from: ReadFrom, read: F) -> StoreResult<T>
    where
        T: Send,
        F: Fn(Conns) -> Fut + Send + Sync,
        Fut: std::future::Future<Output = StoreResult<T>> + Send,
    {
        if from == ReadFrom::Replica
            && let Some(replicas) = &self.replicas
        {
            for replica in replicas.usable() {
                match read(replica.conns.clone()).await {
                    Err(StoreError::Unavailable(err)) => replica.failed(&err),
                    done => return done,
                }
            }
        }
        read(self.conns.clone()).await
    }

    async fn begin_tx(&self) -> StoreResult<write_tx::PgTx> {
        write_tx::PgTx::begin(self.conns.get().await?).await
    }

    fn bell(&self) -> &super::ChangeBell {
        &self.bell
    }
}

#[async_trait]
impl ConnSource for Conns {
    type Db = Postgres;
    type Conn = Conn;

    async fn acquire(&self) -> StoreResult<Conn> {
        self.get().await
    }

    async fn release<T: Send>(conn: Conn, result: Result<T, sqlx::Error>) -> StoreResult<T> {
        conn.finish(result).await
    }
}

impl Dialect for Postgres {
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const CHANGES: &'static ChangeSql = &POSTGRES_CHANGES;
    const ROW_ID: &'static str = "ctid";
    const GREATEST: &'static str = "greatest";
    // The default of the `created_at` columns, so rows stamped either way agree.
    const NOW: Option<&'static str> = Some("now()");
    // Kept by triggers (migrations/postgres/0009).
    const COUNTED: bool = true;

    fn any_of(column: &str) -> String {
        format!("{column} = ANY(?)")
    }

    fn json_rows(columns: &[JsonColumn]) -> String {
        let mut select = Vec::with_capacity(columns.len());
        let mut types = Vec::with_capacity(columns.len());
        for &JsonColumn(name, kind) in columns {
            let (expr, ty) = match kind {
                ColumnKind::Text => (format!("x.{name}"), "text"),
                ColumnKind::Json => (format!("x.{name}::jsonb"), "text"),
                ColumnKind::Int => (format!("x.{name}"), "bigint"),
                ColumnKind::Bool => (format!("x.{name}"), "boolean"),
                // Exact: an interval counts whole microseconds.
                ColumnKind::Micros => (
                    format!("timestamptz 'epoch' + x.{name} * interval '1 microsecond'"),
                    "bigint",
                ),
            };
            select.push(format!("{expr} AS {name}"));
            types.push(format!("{name} {ty}"));
        }
        format!(
            "(SELECT {} FROM jsonb_to_recordset(?) AS x({})) AS r",
            select.join(", "),
            types.join(", ")
        )
    }

    fn classify(err: sqlx::Error) -> StoreError {
        classify(err)
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    fn contact_view(row: &PgRow) -> StoreResult<ContactView> {
        rows::view_from_row(row)
    }

    const BYTE_ORDER: &'static str = " COLLATE \"C\"";
    const FIND: &'static str = "strpos";
    const EXPLAIN: Option<&'static str> = Some("EXPLAIN ");

    fn search_condition(out: &mut Clause, term: &SearchTerm) {
        filter::search_condition(out, term);
    }

    fn json_exists(out: &mut Clause, path: &PropertyPath, present: bool) {
        filter::json_exists(out, path, present);
    }

    fn json_equals(out: &mut Clause, path: &PropertyPath, value: &Scalar) {
        filter::json_equals(out, path, value);
    }

    fn json_typed(out: &mut Clause, path: &PropertyPath, kind: JsonKind) {
        filter::json_typed(out, path, kind);
    }
}

/// Behind a pooler in transaction mode migrations are not run: sqlx's migrator holds
/// a session-level advisory lock and runs statements outside transactions, which such
/// a pooler spreads over server connections. A schema missing a migration is refused.
async fn check_migrated(conns: &Conns) -> StoreResult<()> {
    use sqlx::{Executor, Row};
    let mut conn = conns.get().await?;
    // No parameters: one simple-protocol message.
    let rows = (&mut *conn)
        .fetch_all("SELECT version FROM _sqlx_migrations WHERE success")
        .await;
    // No migrations table (42P01): nothing applied yet.
    let rows = match rows {
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => {
            drop(conn);
            Vec::new()
        }
        rows => conn.finish(rows).await?,
    };
    let applied: Vec<i64> = rows.iter().filter_map(|row| row.try_get(0).ok()).collect();
    let missing: Vec<i64> = migrations::POSTGRES
        .iter()
        .map(|&(version, _, _)| version)
        .filter(|version| !applied.contains(version))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(StoreError::Config(format!(
        "the database lacks migrations {missing:?}; with --database-pooler transaction \
         they are not run: run `kraiter-contacts migrate` with DATABASE_URL pointing at \
         PostgreSQL itself, not the pooler"
    )))
}

/// Sorts driver errors into the kinds the API maps to status codes.
fn classify(err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        let code = db.code().unwrap_or_default();
        match code.as_ref() {
            "23505" => {
                return match db.constraint() {
                    Some("contacts_tenant_email_key") => StoreError::Conflict { field: "email" },
                    _ => StoreError::Conflict { field: "id" },
                };
            }
            // A referenced contact vanished mid-transaction (deleted concurrently).
            "23503" => return StoreError::NotFound("contact"),
            // Bytes PostgreSQL cannot store (e.g. NUL in text) or values past its limits.
            "22P05" | "22021" | "54000" | "22001" => {
                return StoreError::Invalid(ValidationError::new(
                    "request",
                    "contains a value the database cannot store",
                ));
            }
            // Connection exceptions, shutdown, too many connections, recovery.
            c if c.starts_with("08")
                || c.starts_with("57P")
                || c == "53300"
                || c == "40001"
                || c == "40P01" =>
            {
                return StoreError::Unavailable(err);
            }
            _ => {}
        }
    }
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err),
        other => StoreError::Internal(Box::new(other)),
    }
}
