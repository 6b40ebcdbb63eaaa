//! Every SDK error code, provoked from a real server: the raw status carries it in
//! `ErrorInfo.reason`, with its gRPC code, and the crate's client decodes the same
//! failure to the same `ErrorReason`. `provoke` matches on the reason exhaustively,
//! so a reason added to `ErrorReason` does not compile here until it is provoked.

use std::time::Duration;

use kraiter_contacts::client::{self, ClientError, ErrorReason, RetryPolicy, pb};
use serde_json::json;
use sqlx::Connection;
use tonic::Status;

use crate::conformance;
use crate::support::locks;
use crate::support::{Backend, TestApp, assert_status, spawn_app, spawn_app_with};

/// One failure, seen twice: as the raw status of a generated client, and as the
/// error of the crate's client making the same call.
struct Seen {
    raw: Result<(), Status>,
    sdk: Result<(), ClientError>,
}

fn raw<T>(result: Result<tonic::Response<T>, Status>) -> Result<(), Status> {
    result.map(drop)
}

fn sdk<T>(result: Result<T, ClientError>) -> Result<(), ClientError> {
    result.map(drop)
}

/// A contact id in the right format that no tenant has.
const NO_SUCH_ID: &str = "con_01J00000000000000000000000";

/// Longest one reason's step may take.
const STEP: Duration = Duration::from_secs(120);

async fn every_reason_reaches_the_raw_status_and_the_client(backend: Backend) {
    for &reason in ErrorReason::ALL {
        let what = format!("{reason} on {backend:?}");
        // A hang fails with the step's name instead of stalling the suite.
        let Seen { raw, sdk } = tokio::time::timeout(STEP, provoke(reason, backend))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"));
        assert_status(raw, reason.code(), reason.as_str(), &what);
        let err = sdk.expect_err(&what);
        assert!(!matches!(err, ClientError::Rpc(_)), "{what}: {err:?}");
        assert_eq!(err.reason(), Some(reason), "{what}: {err:?}");
    }
}

async fn provoke(reason: ErrorReason, backend: Backend) -> Seen {
    match reason {
        ErrorReason::ValidationError => {
            let app = spawn_app(backend).await;
            let request = pb::GetContactRequest { id: "nope".into() };
            Seen {
                raw: raw(app.client().get_contact(request).await),
                sdk: sdk(app.sdk().contacts().get("nope").await),
            }
        }
        ErrorReason::Conflict => {
            let app = spawn_app(backend).await;
            let request = || pb::CreateContactRequest {
                email: "taken@example.com".into(),
                properties: None,
                ..Default::default()
            };
            let contacts = app.sdk().contacts();
            contacts.create(request()).await.expect("the first create");
            Seen {
                raw: raw(app.client().create_contact(request()).await),
                sdk: sdk(contacts.create(request()).await),
            }
        }
        ErrorReason::NotFound => {
            let app = spawn_app(backend).await;
            let request = pb::GetContactRequest {
                id: NO_SUCH_ID.into(),
            };
            Seen {
                raw: raw(app.client().get_contact(request).await),
                sdk: sdk(app.sdk().contacts().get(NO_SUCH_ID).await),
            }
        }
        ErrorReason::Unauthorised => {
            let app = spawn_app(backend).await;
            let request = pb::GetContactRequest {
                id: NO_SUCH_ID.into(),
            };
            let stranger = client::Client::new(app.channel.clone(), "kr_wrong").expect("a client");
            Seen {
                raw: raw(app
                    .client_with_key(Some("kr_wrong"))
                    .get_contact(request)
                    .await),
                sdk: sdk(stranger.contacts().get(NO_SUCH_ID).await),
            }
        }
        ErrorReason::Unavailable => unavailable(backend).await,
        ErrorReason::FailedPrecondition => failed_precondition(backend).await,
        ErrorReason::ResumeTokenExpired => resume_token_expired(backend).await,
        ErrorReason::EtagMismatch => {
            let app = spawn_app(backend).await;
            let contact = a_contact(&app).await;
            let request = || pb::UpdateContactRequest {
                id: contact.id.clone(),
                properties: Some(client::properties(json!({"v": 2}))),
                etag: format!("{}0", contact.etag),
                ..Default::default()
            };
            Seen {
                raw: raw(app.client().update_contact(request()).await),
                sdk: sdk(app.sdk().contacts().update(request()).await),
            }
        }
        ErrorReason::RateLimited => rate_limited(backend).await,
        ErrorReason::MessageTooLarge => {
            let app =
                spawn_app_with(backend, |args| args.limits.max_message_size = 100 * 1024).await;
            let request = || pb::CreateContactRequest {
                email: "big@example.com".into(),
                properties: Some(client::properties(json!({"a": "x".repeat(150_000)}))),
                ..Default::default()
            };
            Seen {
                raw: raw(app.client().create_contact(request()).await),
                sdk: sdk(app.sdk().contacts().create(request()).await),
            }
        }
        ErrorReason::DeadlineExceeded => deadline_exceeded(backend).await,
        ErrorReason::Internal => internal(backend).await,
    }
}

/// An update of a contact someone else holds locked waits in the database.
fn update(id: &str) -> pb::UpdateContactRequest {
    pb::UpdateContactRequest {
        id: id.to_owned(),
        email: None,
        properties: Some(client::properties(json!({"v": 2}))),
        ..Default::default()
    }
}

async fn a_contact(app: &TestApp) -> pb::Contact {
    app.sdk()
        .contacts()
        .create(pb::CreateContactRequest {
            email: "someone@example.com".into(),
            properties: None,
            ..Default::default()
        })
        .await
        .expect("create a contact")
}

/// The database's one connection is taken by an update waiting on a lock, so the
/// next call finds none within the acquire timeout.
async fn unavailable(backend: Backend) -> Seen {
    let app = spawn_app_with(backend, |args| {
        args.store.db_max_connections = 1;
        args.store.db_acquire_timeout = Duration::from_millis(500);
        // No health pings taking the connection while the test counts on it.
        args.health_interval = Duration::from_secs(3600);
    })
    .await;
    let contact = a_contact(&app).await;
    let lock = locks::hold(&app, &contact.id).await;
    let mut holder = app.client();
    let request = update(&contact.id);
    let holder = tokio::spawn(async move { holder.update_contact(request).await });
    // Polling: the pool has no event for "a connection was taken".
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while {
        let usage = app.store.pool_usage();
        usage.open == usage.idle
    } {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the update never took the connection"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = Seen {
        raw: raw(app.client().update_contact(update(&contact.id)).await),
        sdk: sdk(app.sdk().contacts().update(update(&contact.id)).await),
    };
    lock.release().await;
    let _ = holder.await.expect("the holder's task");
    seen
}

/// A watch resumed after a change whose successor retention purged.
async fn resume_token_expired(backend: Backend) -> Seen {
    use futures::StreamExt;
    let app = spawn_app_with(backend, |args| {
        // Short, so the resumed watch below expires within its deadline.
        args.limits.change_retention = Duration::from_secs(2);
        // The purge takes every tenant's old changes: not those of other tests.
        if backend == Backend::Postgres {
            args.store.database_url = crate::support::postgres::own_database();
        }
    })
    .await;
    let contacts = app.sdk().contacts();
    let oldest = pb::WatchContactsRequest {
        start: pb::WatchStart::OldestRetained as i32,
        max_changes: 1,
        ..Default::default()
    };
    // Opened before the creates: on a loaded machine the purge may take every change
    // made before the watch begins, and a watch of nothing waits for the next change.
    let mut watch = app
        .client()
        .watch_contacts(oldest)
        .await
        .expect("watch")
        .into_inner();
    // Three, so changes follow the first one watched.
    for email in ["one@example.com", "two@example.com", "three@example.com"] {
        contacts
            .create(pb::CreateContactRequest {
                email: email.into(),
                ..Default::default()
            })
            .await
            .expect("create");
    }
    let first = watch
        .message()
        .await
        .expect("a change")
        .expect("the first change");
    let request = || pb::WatchContactsRequest {
        resume_token: first.token.clone(),
        max_changes: 1,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.client().watch_contacts(request()).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Seen {
        raw: raw(app.client().watch_contacts(request()).await),
        sdk: match contacts.watch(request()).next().await {
            Some(result) => sdk(result),
            None => Ok(()),
        },
    }
}

/// A send that was sent cannot go back to queued.
async fn failed_precondition(backend: Backend) -> Seen {
    let app = spawn_app(backend).await;
    let contact = a_contact(&app).await;
    let mut activity = app.activity();
    let send = activity
        .record_send(pb::RecordSendRequest {
            recipient: Some(pb::record_send_request::Recipient::ContactId(contact.id)),
            template_id: "t".into(),
            template_name: "t name".into(),
            subject: "Hello".into(),
            source: pb::SendSource::Transactional as i32,
            status: pb::SendStatus::Sent as i32,
            ..Default::default()
        })
        .await
        .expect("record a sent send")
        .into_inner();
    let back = || pb::UpdateSendStatusRequest {
        send_id: send.id.clone(),
        status: pb::SendStatus::Queued as i32,
        ..Default::default()
    };
    // The ingestion client is the generated one; the crate's client reads its
    // statuses with `ClientError::from`.
    let sdk_result = app.sdk().activity().update_send_status(back()).await;
    Seen {
        raw: raw(activity.update_send_status(back()).await),
        sdk: sdk(sdk_result.map_err(ClientError::from)),
    }
}

/// One token, spent by the first call; a token a second comes back long after the
/// calls below.
async fn rate_limited(backend: Backend) -> Seen {
    let app = spawn_app_with(backend, |args| {
        args.limits.rate_limit_rps = Some(1);
        args.limits.rate_limit_burst = Some(1);
    })
    .await;
    let lookup = || pb::GetContactByEmailRequest {
        email: "nobody@example.com".into(),
    };
    let mut raw_client = app.client();
    raw_client
        .get_contact_by_email(lookup())
        .await
        .expect("the burst's one call");
    let raw_result = raw(raw_client.get_contact_by_email(lookup()).await);
    // Reads are retried after RetryInfo's delay unless the policy says no retries.
    let once = app.sdk().with_retry(RetryPolicy::none()).contacts();
    let sdk_result = once.get_by_email("nobody@example.com").await;
    if let Err(ClientError::RateLimited { retry_after, .. }) = &sdk_result {
        let retry_after = retry_after.expect("RetryInfo's delay");
        assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
    }
    // With the default policy, the same read waits for the token and succeeds.
    app.sdk()
        .contacts()
        .get_by_email("nobody@example.com")
        .await
        .expect("a rate-limited read is retried after RetryInfo's delay");
    Seen {
        raw: raw_result,
        sdk: sdk(sdk_result),
    }
}

/// An update waiting on a lock outlives the server's request timeout.
async fn deadline_exceeded(backend: Backend) -> Seen {
    let app = spawn_app_with(backend, |args| {
        // Long enough for the create below on a loaded machine.
        args.limits.request_timeout = Duration::from_millis(1500);
    })
    .await;
    let contact = a_contact(&app).await;
    let lock = locks::hold(&app, &contact.id).await;
    let seen = Seen {
        raw: raw(app.client().update_contact(update(&contact.id)).await),
        sdk: sdk(app.sdk().contacts().update(update(&contact.id)).await),
    };
    lock.release().await;
    seen
}

/// No valid request reaches INTERNAL (see `tests/api/hostile.rs`): the service answers
/// it only when it cannot read what its database holds. So the test writes what the
/// service never would, properties that are not a JSON object, straight into the
/// row, and reads the contact. The other causes of INTERNAL (an invalid store
/// configuration, a failed migration) stop the server at start-up instead; their
/// mapping is covered by the unit tests in `src/api/error.rs`.
async fn internal(backend: Backend) -> Seen {
    let app = spawn_app(backend).await;
    let contact = a_contact(&app).await;
    set_properties_text(&app, &contact.id, "[1]").await;
    let request = pb::GetContactRequest {
        id: contact.id.clone(),
    };
    let seen = Seen {
        raw: raw(app.client().get_contact(request).await),
        sdk: sdk(app.sdk().contacts().get(&contact.id).await),
    };
    // PostgreSQL is shared with other tests: leave nothing unreadable behind.
    set_properties_text(&app, &contact.id, "{}").await;
    seen
}

async fn set_properties_text(app: &TestApp, id: &str, json: &str) {
    if app.database_url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&app.database_url)
            .await
            .expect("connect to the database");
        sqlx::query("UPDATE contacts SET properties = $1::jsonb WHERE id = $2")
            .bind(json)
            .bind(id)
            .execute(&mut conn)
            .await
            .expect("set the properties");
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&app.database_url)
            .await
            .expect("open the database file");
        sqlx::query("UPDATE contacts SET properties = ?1 WHERE id = ?2")
            .bind(json)
            .bind(id)
            .execute(&mut conn)
            .await
            .expect("set the properties");
    }
}

conformance!(every_reason_reaches_the_raw_status_and_the_client);
