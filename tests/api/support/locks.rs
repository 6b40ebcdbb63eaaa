//! A database lock held from outside the service, to make calls block for as long
//! as a test needs: a row lock on one contact on PostgreSQL (other tests sharing the
//! database are not disturbed), the write lock of the app's own file on SQLite.

use sqlx::Connection;

use crate::support::TestApp;

pub enum WriteLock {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

/// Blocks updates of `contact` (and, on SQLite, every write) until released.
pub async fn hold(app: &TestApp, contact: &str) -> WriteLock {
    if app.database_url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&app.database_url)
            .await
            .expect("connect to lock");
        sqlx::query("BEGIN")
            .execute(&mut conn)
            .await
            .expect("begin");
        sqlx::query("SELECT 1 FROM contacts WHERE id = $1 FOR UPDATE")
            .bind(contact)
            .fetch_one(&mut conn)
            .await
            .expect("lock the contact row");
        WriteLock::Postgres(conn)
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&app.database_url)
            .await
            .expect("open the database file to lock");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .expect("take the write lock");
        WriteLock::Sqlite(conn)
    }
}

impl WriteLock {
    pub async fn release(self) {
        match self {
            Self::Postgres(mut conn) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("unlock");
            }
            Self::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("unlock");
            }
        }
    }
}

/// Waits until no database connection of the app is lent out, or panics after `within`.
pub async fn pool_goes_idle(app: &TestApp, within: std::time::Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let usage = app.store.pool_usage();
        if usage.open == usage.idle {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} connections still in use after {within:?}: {usage:?}",
            usage.open - usage.idle
        );
        // Polling: the pool has no event for "a connection came back".
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
