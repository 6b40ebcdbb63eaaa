//! A call that goes away stops its PostgreSQL work: the statement of an update whose
//! deadline passed while it waited on a row lock is cancelled, not left waiting for
//! the lock (the database would otherwise work on for a caller that is gone).

use std::time::{Duration, Instant};

use kraiter_contacts::api::pb;
use tonic::Code;

use crate::support::locks::{self, WriteLock};
use crate::support::{Backend, spawn_app};

/// Polls the sessions `lock` blocks until they are `want` or `within` passes; returns
/// the last count.
async fn wait_blocked(lock: &mut WriteLock, want: i64, within: Duration) -> i64 {
    let started = Instant::now();
    loop {
        let now = lock
            .waiters()
            .await
            .expect("a PostgreSQL lock shows its waiters");
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
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .id;
    let mut lock = locks::hold(&app, &id).await;

    let mut request = tonic::Request::new(pb::UpdateContactRequest {
        id: id.clone(),
        email: Some(format!("moved-{}@example.com", ulid::Ulid::new())),
        properties: None,
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(500));
    let mut updater = client.clone();
    let update = tokio::spawn(async move { updater.update_contact(request).await });
    assert_eq!(
        wait_blocked(&mut lock, 1, Duration::from_secs(20)).await,
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
    let left = wait_blocked(&mut lock, 0, Duration::from_secs(3)).await;
    assert_eq!(
        left, 0,
        "the abandoned update's statement still waits in PostgreSQL"
    );
    lock.release().await;
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
