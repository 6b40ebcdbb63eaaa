//! A call that goes away stops its PostgreSQL work: the statement of an update whose
//! deadline passed while it waited on a row lock is cancelled, not left waiting for
//! the lock, and so is the query of a search stream whose client dropped it (the
//! database would otherwise work on for a caller that is gone). And a call that goes
//! away at any point of its transaction leaves its connection outside any
//! transaction, so the writes that reuse it are committed when answered.

use std::future::Future;
use std::time::{Duration, Instant};

use kraiter_contacts::api::pb;
use tonic::Code;

use crate::support::locks::{self, WriteLock};
use crate::support::storage::Storage;
use crate::support::{Backend, pgbouncer, postgres, spawn_app, spawn_app_with};

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
    abandoned_call_cancelled().await
}

/// Behind PgBouncer in transaction mode the cancel goes to the server process that
/// the call's transaction holds (`store/postgres/conns.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_call_has_its_statement_cancelled_through_pgbouncer() {
    pgbouncer::scope(abandoned_call_cancelled()).await
}

async fn abandoned_call_cancelled() {
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

/// Rows seeded for the slow search: each costs PostgreSQL a few milliseconds to reject
/// (below), so the search runs for several seconds unless it is cancelled.
const SLOW_ROWS: i64 = 3_000;
/// How long the statement may go on after its stream is dropped: the pool cancels it
/// when its connection is still busy 50 ms after the query was abandoned.
const STOP_WITHIN: Duration = Duration::from_secs(3);

/// The active statement, if any, of a search query (`search_text LIKE`) that has run
/// for at least `ran` on the app's database, other than this connection's: its
/// backend's pid and when the statement started (the two name one run of it).
async fn long_search(db: &mut sqlx::PgConnection, ran: Duration) -> Option<(i32, String)> {
    sqlx::query_as(
        "SELECT pid, query_start::text FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active' \
           AND query LIKE '%FROM contacts WHERE tenant_id = $1 AND search_text LIKE%' \
           AND query_start <= now() - make_interval(secs => $1) \
         ORDER BY query_start LIMIT 1",
    )
    .bind(ran.as_secs_f64())
    .fetch_optional(db)
    .await
    .expect("read pg_stat_activity")
}

/// Whether the statement run `(pid, started)` is still active.
async fn still_running(db: &mut sqlx::PgConnection, pid: i32, started: &str) -> bool {
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE pid = $1 AND state = 'active' AND query_start::text = $2",
    )
    .bind(pid)
    .bind(started)
    .fetch_one(db)
    .await
    .expect("read pg_stat_activity");
    active > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_search_stream_has_its_statement_cancelled() {
    dropped_search_cancelled().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_search_stream_has_its_statement_cancelled_through_pgbouncer() {
    pgbouncer::scope(dropped_search_cancelled()).await
}

async fn dropped_search_cancelled() {
    let app = spawn_app(Backend::Postgres).await;
    let mut client = app.client();
    let id = client
        .create_contact(pb::CreateContactRequest {
            email: format!("search-{}@example.com", ulid::Ulid::new()),
            properties: None,
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .id;
    let Storage::Postgres(mut db) = Storage::open(&app).await else {
        unreachable!("the app runs on PostgreSQL");
    };
    let tenant: String = sqlx::query_scalar("SELECT tenant_id FROM contacts WHERE id = $1")
        .bind(&id)
        .fetch_one(&mut db)
        .await
        .expect("the contact's tenant");
    // A deliberately slow search: every seeded row holds each trigram of the term (so
    // the trigram index cannot rule it out) but not the term, and rejecting a row
    // makes LIKE try the term's 255 leading `x` at each of 20,000 positions.
    sqlx::query(
        "INSERT INTO contacts (tenant_id, id, email, email_key, search_text, created_at, updated_at) \
         SELECT $1, 'con_slow' || lpad(i::text, 8, '0'), 's' || i || '@example.com', \
                's' || i || '@example.com', 'xxy ' || repeat('x', 20000), now(), now() \
         FROM generate_series(1, $2) AS i",
    )
    .bind(&tenant)
    .bind(SLOW_ROWS)
    .execute(&mut db)
    .await
    .expect("seed the slow rows");
    let term = format!("{}y", "x".repeat(255));

    let mut searcher = client.clone();
    let search = tokio::spawn(async move {
        let mut pages = searcher
            .list_contacts(pb::ListContactsRequest {
                search: term,
                limit: 20,
                ..Default::default()
            })
            .await?
            .into_inner();
        while pages.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    });
    // The search's statement is running, and has run long enough to be ours.
    let waited = Instant::now();
    let (pid, started) = loop {
        if let Some(found) = long_search(&mut db, Duration::from_millis(500)).await {
            break found;
        }
        assert!(
            !search.is_finished() && waited.elapsed() < Duration::from_secs(20),
            "the slow search never ran for 500 ms: {:?}",
            search.is_finished().then_some("it finished")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    search.abort();
    let dropped = Instant::now();
    let _ = search.await;
    let stopped = loop {
        if !still_running(&mut db, pid, &started).await {
            break dropped.elapsed();
        }
        if dropped.elapsed() > STOP_WITHIN {
            // Stop it, so a failing run does not leave it running for seconds.
            let _ = sqlx::query("SELECT pg_cancel_backend($1)")
                .bind(pid)
                .execute(&mut db)
                .await;
            panic!(
                "the dropped search's statement still runs {STOP_WITHIN:?} after the drop \
                 (uncancelled it reads {SLOW_ROWS} rows at a few ms each)"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!("the dropped search's statement stopped {stopped:?} after the drop");

    // The cancelled connection went back to the pool: the next search is answered.
    let mut pages = client
        .list_contacts(pb::ListContactsRequest {
            search: "search-".into(),
            limit: 20,
            ..Default::default()
        })
        .await
        .expect("search after the cancel")
        .into_inner();
    let mut found = 0;
    while let Some(page) = pages.message().await.expect("a page") {
        found += page.contacts.len();
    }
    assert_eq!(found, 1, "the contact made first is found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_abandoned_mid_transaction_leave_no_transaction_open() {
    abandoned_mid_transaction().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_abandoned_mid_transaction_leave_no_transaction_open_through_pgbouncer() {
    pgbouncer::scope(abandoned_mid_transaction()).await
}

/// Polls `call` for `micros`, then drops it: the client resets the stream and the
/// server drops the call wherever it stands.
async fn abandon_after<F: Future>(micros: u64, call: F) {
    let until = Instant::now() + Duration::from_micros(micros);
    let spin = async {
        while Instant::now() < until {
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        biased;
        _ = call => {}
        _ = spin => {}
    }
}

/// Service connections of the app's database inside a transaction.
async fn open_transactions(db: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()",
    )
    .fetch_one(db)
    .await
    .expect("read pg_stat_activity")
}

/// Upserts (each one transaction) abandoned at times spread over their length: some
/// go away while their `BEGIN` is in flight, which sqlx does not count as a
/// transaction yet. Then every service connection must be outside any transaction,
/// and creates (single statements, on those same few connections) must be
/// committed when answered, seen from a connection of the test's own.
async fn abandoned_mid_transaction() {
    // A database of its own: pg_stat_activity then shows only this server's sessions.
    let app = spawn_app_with(Backend::Postgres, |args| {
        args.store.database_url = postgres::own_database();
        args.store.db_max_connections = 2;
    })
    .await;
    let mut client = app.client();
    let email = format!("abandoned-{}@example.com", ulid::Ulid::new());
    client
        .upsert_contact(pb::UpsertContactRequest {
            email: email.clone(),
            ..Default::default()
        })
        .await
        .expect("the first upsert");
    let Storage::Postgres(mut db) = Storage::open(&app).await else {
        unreachable!("the app runs on PostgreSQL");
    };
    // A connection the call left inside a transaction is healed by the next call
    // that opens one on it (its COMMIT ends both), so each is looked for at once.
    for n in 0..600u64 {
        let mut caller = client.clone();
        let request = pb::UpsertContactRequest {
            email: email.clone(),
            ..Default::default()
        };
        abandon_after((n * 13) % 2_500, caller.upsert_contact(request)).await;
        let settled = Instant::now();
        let open = loop {
            let open = open_transactions(&mut db).await;
            if open == 0 || settled.elapsed() > Duration::from_secs(2) {
                break open;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(
            open,
            0,
            "a connection left inside a transaction by the call abandoned after {} us",
            (n * 13) % 2_500
        );
    }

    for n in 0..20 {
        let id = client
            .create_contact(pb::CreateContactRequest {
                email: format!("after-{n}-{}@example.com", ulid::Ulid::new()),
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner()
            .id;
        let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts WHERE id = $1")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .expect("count the contact");
        assert_eq!(committed, 1, "create {n} was answered but is not committed");
    }
}
