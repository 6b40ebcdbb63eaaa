//! PostgreSQL store: the production backend.

mod activity;
mod conns;
mod contacts;
mod keys;
mod lookups;
mod rows;
mod sql;
mod write_tx;

use async_trait::async_trait;
use conns::Conns;

use super::{Backend, ConnectOptions, StoreCounters, StoreError, StoreResult, WriteTx, migrations};
use crate::domain::{TenantId, ValidationError};

pub struct PgStore {
    conns: Conns,
    lookups: lookups::Lookups,
}

impl PgStore {
    pub async fn connect(url: &str, options: &ConnectOptions) -> StoreResult<Self> {
        let conns = Conns::connect(url, options).await?;
        if options.migrate {
            let migrator = migrations::migrator(migrations::POSTGRES)
                .await
                .map_err(StoreError::internal)?;
            let mut conn = conns.get().await?;
            migrator
                .run(&mut *conn)
                .await
                .map_err(StoreError::internal)?;
            conn.done();
        }
        // Coalesced point reads take at most a quarter of the pool (1 to 4 statements).
        let spare = (options.max_connections / 4).clamp(1, 4) as usize - 1;
        let lookups = lookups::Lookups::start(conns.clone(), spare);
        Ok(Self { conns, lookups })
    }
}

#[async_trait]
impl Backend for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conns.get().await?;
        let done = sqlx::query("SELECT 1").execute(&mut *conn).await;
        conn.finish(done)?;
        Ok(())
    }

    fn pool_usage(&self) -> super::PoolUsage {
        self.conns.usage()
    }

    fn counters(&self) -> StoreCounters {
        self.lookups.counters()
    }

    fn multi_page_queries(&self) -> bool {
        true
    }

    async fn begin_write(&self, tenant: &TenantId) -> StoreResult<Box<dyn WriteTx + '_>> {
        let conn = self.conns.get().await?;
        Ok(Box::new(write_tx::PgWriteTx::begin(conn, tenant).await?))
    }
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
