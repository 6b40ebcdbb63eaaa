//! PgBouncer in transaction mode (issue 18): the same concurrent workload through a
//! real PgBouncer fails without `--database-pooler transaction` (sqlx's statements
//! meet other clients' server connections) and is answered in full, correctly, with
//! it. The failing half also proves the test's PgBouncer really pools by transaction,
//! so the `pgbouncer::` conformance variants are not vacuous. The whole conformance
//! suite runs through it too (`conformance!`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kraiter_contacts::api::pb;
use kraiter_contacts::config::DatabasePooler;
use kraiter_contacts::startup::Application;

use crate::support::{Backend, pgbouncer, postgres, spawn_app_with};

/// Concurrent callers, and the contacts each writes and reads back.
const CALLERS: usize = 12;
const EACH: usize = 15;

#[derive(Debug, Default)]
struct Outcome {
    calls: AtomicUsize,
    errors: AtomicUsize,
    /// Answers that were not the caller's own data (another statement ran).
    wrong: AtomicUsize,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Outcome {
    fn failed(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().unwrap().get_or_insert(what);
    }
}

/// Creates, reads back by id and by email, updates and lists contacts from
/// `CALLERS` tasks at once, checking every answer is the caller's own.
async fn workload(pooler: DatabasePooler) -> Arc<Outcome> {
    let direct = postgres::own_database();
    pgbouncer::migrate(&direct).await;
    let pooled = pgbouncer::url_for(&direct).expect("the database is on the shared cluster");
    let app = spawn_app_with(Backend::Postgres, |args| {
        args.store.database_url = pooled;
        args.store.database_pooler = pooler;
    })
    .await;
    let outcome = Arc::new(Outcome::default());
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let mut client = app.client();
        let outcome = outcome.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..EACH {
                let email = format!("c{caller}-n{n}-{}@example.com", ulid::Ulid::new());
                outcome.calls.fetch_add(3, Ordering::Relaxed);
                let created = client
                    .create_contact(pb::CreateContactRequest {
                        email: email.clone(),
                        properties: Some(crate::support::props(
                            serde_json::json!({ "caller": caller as i64, "n": n as i64 }),
                        )),
                        ..Default::default()
                    })
                    .await;
                let contact = match created {
                    Ok(contact) => contact.into_inner(),
                    Err(status) => {
                        outcome.failed(format!("create: {status:?}"));
                        continue;
                    }
                };
                if contact.email != email {
                    outcome.wrong.fetch_add(1, Ordering::Relaxed);
                }
                match client
                    .get_contact(pb::GetContactRequest {
                        id: contact.id.clone(),
                    })
                    .await
                {
                    Ok(read) if read.get_ref().email == email => {}
                    Ok(_) => {
                        outcome.wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => outcome.failed(format!("get: {status:?}")),
                }
                match client
                    .update_contact(pb::UpdateContactRequest {
                        id: contact.id.clone(),
                        properties: Some(crate::support::props(
                            serde_json::json!({ "updated": true }),
                        )),
                        ..Default::default()
                    })
                    .await
                {
                    Ok(updated) if updated.get_ref().id == contact.id => {}
                    Ok(_) => {
                        outcome.wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => outcome.failed(format!("update: {status:?}")),
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("a caller task");
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_workload_through_pgbouncer_needs_the_pooler_option() {
    let with = workload(DatabasePooler::Transaction).await;
    assert_eq!(
        (
            with.errors.load(Ordering::Relaxed),
            with.wrong.load(Ordering::Relaxed)
        ),
        (0, 0),
        "with --database-pooler transaction every call is answered with the caller's data \
         (first error: {:?})",
        with.first_error.lock().unwrap()
    );

    let without = workload(DatabasePooler::None).await;
    let failed = without.errors.load(Ordering::Relaxed) + without.wrong.load(Ordering::Relaxed);
    assert!(
        failed > 0,
        "without the option, sqlx's prepared statements should break behind PgBouncer in \
         transaction mode; all {} calls succeeded, so the test's PgBouncer is not pooling \
         by transaction",
        without.calls.load(Ordering::Relaxed)
    );
    eprintln!(
        "without --database-pooler: {} of {} calls failed, {} answered wrongly; first: {:?}",
        without.errors.load(Ordering::Relaxed),
        without.calls.load(Ordering::Relaxed),
        without.wrong.load(Ordering::Relaxed),
        without.first_error.lock().unwrap()
    );
}

/// Migrations are not run through a transaction pooler (sqlx's migrator takes a
/// session-level advisory lock): a database that lacks them is refused at start,
/// saying how to migrate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmigrated_database_behind_pgbouncer_is_refused_with_what_to_do() {
    let direct = postgres::own_database();
    let pooled = pgbouncer::url_for(&direct).expect("the database is on the shared cluster");
    let mut args = kraiter_contacts::config::ServeArgs {
        listen: "127.0.0.1:0".parse().expect("valid address"),
        store: kraiter_contacts::config::StoreArgs {
            database_url: pooled,
            db_max_connections: 2,
            db_acquire_timeout: std::time::Duration::from_secs(5),
            database_pooler: DatabasePooler::Transaction,
            db_write_batches: 1,
        },
        log_format: kraiter_contacts::config::LogFormat::Text,
        metrics_listen: None,
        bootstrap_tenant: None,
        health_interval: std::time::Duration::from_secs(1),
        shutdown_grace: std::time::Duration::from_secs(1),
        limits: Default::default(),
        tls: Default::default(),
        telemetry: Default::default(),
        replicas: Default::default(),
    };
    let error = match Application::build(&args).await {
        Ok(_) => panic!("an unmigrated database was accepted behind PgBouncer"),
        Err(error) => {
            // The whole chain: the store's reason is the source of the start-up error.
            let mut text = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    };
    assert!(
        error.contains("lacks migrations") && error.contains("kraiter-contacts migrate"),
        "{error}"
    );
    // Migrated directly, the same settings start.
    pgbouncer::migrate(&direct).await;
    args.bootstrap_tenant = Some(crate::support::unique_tenant().to_string());
    assert!(
        Application::build(&args).await.is_ok(),
        "starts once migrated"
    );
}

/// The `pgbouncer::` conformance variants really go through PgBouncer: an app spawned in
/// `pgbouncer::scope` shows up among PgBouncer's clients, under its own name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_of_the_pgbouncer_variants_are_pgbouncer_clients() {
    pgbouncer::scope(async {
        let name = format!("kraiter-{}", ulid::Ulid::new().to_string().to_lowercase());
        let app = spawn_app_with(Backend::Postgres, |args| {
            args.store.database_url =
                format!("{}?application_name={name}", args.store.database_url);
        })
        .await;
        let mut client = app.client();
        crate::support::create(&mut client, "through@example.com", serde_json::json!({})).await;
        let clients = pgbouncer::show_clients();
        assert!(
            clients.contains(&name),
            "the app is not a PgBouncer client:\n{clients}"
        );
    })
    .await
}
