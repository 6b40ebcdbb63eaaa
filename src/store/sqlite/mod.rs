//! SQLite store: the zero-setup default, in one local file.
//!
//! Writes go through a pool of one connection, so this process never contends for
//! SQLite's single write lock with itself; reads use a separate pool and see
//! committed data (WAL). Write transactions begin with `BEGIN IMMEDIATE`, which
//! takes the write lock before the first read, so the reads that decide a change see
//! the latest rows and no row locks are needed.

mod activity;
mod contacts;
mod keys;
mod rows;
mod search;
mod write_tx;

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use super::{Backend, ConnectOptions, StoreError, StoreResult, WriteTx, migrations};
use crate::domain::{TenantId, ValidationError};

pub use search::SEARCH_CANDIDATES;

pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str, options: &ConnectOptions) -> StoreResult<Self> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|err| StoreError::Config(format!("invalid sqlite url: {err}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(30));
        if let Some(dir) = connect.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|err| {
                StoreError::Config(format!("cannot create `{}`: {err}", dir.display()))
            })?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(classify)?;
        if options.migrate {
            let migrator = migrations::migrator(migrations::SQLITE)
                .await
                .map_err(StoreError::internal)?;
            migrator.run(&writer).await.map_err(StoreError::internal)?;
        }
        let reader = SqlitePoolOptions::new()
            .max_connections(options.max_connections.clamp(1, 8))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.read_only(true))
            .await
            .map_err(classify)?;
        Ok(Self { reader, writer })
    }
}

#[async_trait]
impl Backend for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(classify)?;
        Ok(())
    }

    fn pool_usage(&self) -> super::PoolUsage {
        let mut usage = super::PoolUsage::default();
        for pool in [&self.reader, &self.writer] {
            usage.max += pool.options().get_max_connections();
            usage.open += pool.size();
            usage.idle += pool.num_idle() as u32;
        }
        usage
    }

    async fn begin_write(&self, tenant: &TenantId) -> StoreResult<Box<dyn WriteTx + '_>> {
        Ok(Box::new(self.write_tx(tenant).await?))
    }
}

fn json_text(map: &Map<String, Value>) -> StoreResult<String> {
    serde_json::to_string(map).map_err(StoreError::internal)
}

fn json_map(row: &SqliteRow, column: &str) -> StoreResult<Map<String, Value>> {
    let text: String = row.try_get(column).map_err(classify)?;
    serde_json::from_str(&text).map_err(StoreError::internal)
}

fn time(micros: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::internal(format!("timestamp {micros} out of range")))
}

/// Sorts driver errors into the kinds the API maps to status codes.
fn classify(err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        // Extended result codes: 2067 UNIQUE, 1555 PRIMARY KEY; 5/6 and their
        // extended forms are BUSY/LOCKED; 18 TOOBIG.
        let code: i64 = db.code().and_then(|c| c.parse().ok()).unwrap_or(-1);
        match code {
            // SQLite names no constraint. Contact writes check the address inside
            // their write-locked transaction first (`write_tx.rs`, `contacts.rs`),
            // so a unique key that still collides is a record's id.
            2067 | 1555 => return StoreError::Conflict { field: "id" },
            // FOREIGN KEY: the referenced contact is gone.
            787 => return StoreError::NotFound("contact"),
            18 => {
                return StoreError::Invalid(ValidationError::new(
                    "request",
                    "contains a value the database cannot store",
                ));
            }
            c if c & 0xff == 5 || c & 0xff == 6 || c & 0xff == 10 || c & 0xff == 13 => {
                return StoreError::Unavailable(err);
            }
            _ => {}
        }
    }
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err),
        other => StoreError::Internal(Box::new(other)),
    }
}
