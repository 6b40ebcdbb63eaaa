//! A call that goes away stops its PostgreSQL work: the statement of an update whose
//! deadline passed while it waited on a row lock is cancelled, not left waiting for
//! the lock (the database would otherwise work on for a caller that is gone).

use std::time::{Duration, Instant};

use kraiter_contacts::api::pb;
use sqlx::{Connection, PgConnection};
use tonic::Code;

use crate::support::{Backend, spawn_app};

/// Server processes waiting on a lock held by process `pid`.
async fn blocked_by(conn: &mut PgConnection, pid: i32) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
    )
    .bind(pid)
    .fetch_one(conn)
    .await
    .expect("read pg_stat_activity")
}

/// Polls `blocked_by` until it is `want` or `within` passes; returns the last count.
async fn wait_blocked(conn: &mut PgConnection, pid: i32, want: i64, within: Duration) -> i64 {
    let started = Instant::now();
    loop {
        let now = blocked_by(conn, pid).await;
        if now == want || started.elapsed() > within {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_call_has_its_statement_cancelled() {
    let app = spawn_app(Backend::Postgres).await;
    let mut client = app.client();
    let id = client
        .create_contact(pb::CreateContactRequest {
            email: format!("cancel-{}@example.com", ulid::Ulid::new()),
            properties: None,
        })
        .await
        .expect("create")
        .into_inner()
        .id;
    let mut lock = PgConnection::connect(&app.database_url)
        .await
        .expect("connect to the test database");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut lock)
        .await
        .expect("backend pid");
    sqlx::query("BEGIN")
        .execute(&mut lock)
        .await
        .expect("begin");
    sqlx::query("SELECT 1 FROM contacts WHERE id = $1 FOR UPDATE")
        .bind(&id)
        .execute(&mut lock)
        .await
        .expect("lock the row");

    let mut request = tonic::Request::new(pb::UpdateContactRequest {
        id: id.clone(),
        email: Some(format!("moved-{}@example.com", ulid::Ulid::new())),
        properties: None,
    });
    request.set_timeout(Duration::from_millis(500));
    let mut updater = client.clone();
    let update = tokio::spawn(async move { updater.update_contact(request).await });
    assert_eq!(
        wait_blocked(&mut lock, pid, 1, Duration::from_secs(20)).await,
        1,
        "the update waits on the lock"
    );
    let status = update
        .await
        .expect("the update task")
        .expect_err("the deadline passes while the update waits");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    // The lock is still held: only a cancel ends the server's wait.
    let left = wait_blocked(&mut lock, pid, 0, Duration::from_secs(3)).await;
    assert_eq!(
        left, 0,
        "the abandoned update's statement still waits in PostgreSQL"
    );
    sqlx::query("ROLLBACK")
        .execute(&mut lock)
        .await
        .expect("release");
    // The connection is usable again: the next call is answered.
    let read = client
        .get_contact(pb::GetContactRequest { id })
        .await
        .expect("read after the cancel")
        .into_inner();
    assert!(
        read.email.starts_with("cancel-"),
        "the cancelled update wrote nothing"
    );
}
