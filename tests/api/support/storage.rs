//! The app's database opened directly, for what a test must check below the API:
//! rows that a delete has to erase, locks a call waits on, acknowledged writes after
//! the server is gone. Queries use `$1`, `$2`... in order, which both backends read.

use sqlx::Connection;

use super::TestApp;

pub enum Storage {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl Storage {
    /// A connection of its own to the database `app` runs on.
    pub async fn open(app: &TestApp) -> Self {
        Self::open_url(&app.database_url).await
    }

    pub async fn open_url(database_url: &str) -> Self {
        if database_url.starts_with("postgres") {
            let conn = sqlx::PgConnection::connect(database_url)
                .await
                .expect("connect to PostgreSQL");
            Self::Postgres(conn)
        } else {
            let conn = sqlx::SqliteConnection::connect(database_url)
                .await
                .expect("open the SQLite file");
            Self::Sqlite(conn)
        }
    }

    /// The one `bigint` a query such as `SELECT count(*) ...` returns, with `binds`
    /// as its text parameters.
    pub async fn count(&mut self, sql: &str, binds: &[&str]) -> i64 {
        match self {
            Self::Postgres(conn) => {
                let mut query = sqlx::query_scalar(sql);
                for bind in binds {
                    query = query.bind(*bind);
                }
                query.fetch_one(conn).await
            }
            Self::Sqlite(conn) => {
                let mut query = sqlx::query_scalar(sql);
                for bind in binds {
                    query = query.bind(*bind);
                }
                query.fetch_one(conn).await
            }
        }
        .unwrap_or_else(|err| panic!("`{sql}` with {binds:?}: {err}"))
    }

    /// `count` with one binary parameter (a hash, a key).
    pub async fn count_bytes(&mut self, sql: &str, bytes: &[u8]) -> i64 {
        match self {
            Self::Postgres(conn) => sqlx::query_scalar(sql).bind(bytes).fetch_one(conn).await,
            Self::Sqlite(conn) => sqlx::query_scalar(sql).bind(bytes).fetch_one(conn).await,
        }
        .unwrap_or_else(|err| panic!("`{sql}` with {} bytes: {err}", bytes.len()))
    }

    /// The one text value a query returns, if it returns a row.
    pub async fn text(&mut self, sql: &str, binds: &[&str]) -> Option<String> {
        match self {
            Self::Postgres(conn) => {
                let mut query = sqlx::query_scalar(sql);
                for bind in binds {
                    query = query.bind(*bind);
                }
                query.fetch_optional(conn).await
            }
            Self::Sqlite(conn) => {
                let mut query = sqlx::query_scalar(sql);
                for bind in binds {
                    query = query.bind(*bind);
                }
                query.fetch_optional(conn).await
            }
        }
        .unwrap_or_else(|err| panic!("`{sql}` with {binds:?}: {err}"))
    }

    /// The deployment's cursor-signing secret, as the server reads it at start-up:
    /// for tests that must sign a cursor the server will take.
    pub async fn cursor_key(&mut self) -> kraiter_contacts::domain::CursorKey {
        let sql = "SELECT secret FROM deployment_secrets WHERE name = 'cursor'";
        let secret: Vec<u8> = match self {
            Self::Postgres(conn) => sqlx::query_scalar(sql).fetch_one(conn).await,
            Self::Sqlite(conn) => sqlx::query_scalar(sql).fetch_one(conn).await,
        }
        .expect("the cursor secret");
        kraiter_contacts::domain::CursorKey::from_bytes(
            secret.try_into().expect("a secret of 32 bytes"),
        )
    }
}
