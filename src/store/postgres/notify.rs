//! Wake-ups across replicas: LISTEN/NOTIFY on the channel `kraiter_contact_changes`,
//! whose payload is a tenant. A commit that recorded changes rings the store's
//! `ChangeBell`; a task of its own sends the NOTIFYs after the commit, one statement
//! for every tenant rung since the last (PostgreSQL serialises committing
//! transactions that NOTIFY, so no write's transaction does). Another task listens
//! (on a connection of its own, outside the pool, opened once a watcher subscribes)
//! and wakes the watchers of this process. A lost notification (a dropped listener
//! connection, a failed NOTIFY) only delays a watcher until its next poll.

use std::time::Duration;

use sqlx::postgres::PgListener;

use super::conns::Conns;
use crate::domain::TenantId;
use crate::store::ChangeBell;

const CHANNEL: &str = "kraiter_contact_changes";
/// How long a task waits after a failure before it tries again.
const RETRY: Duration = Duration::from_secs(1);

/// Starts the NOTIFY sender and the listener of `bell`.
pub(super) fn start(url: &str, conns: Conns, bell: &ChangeBell) {
    // Outside a runtime (a unit test building a store), nothing to start.
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tokio::spawn(send(conns, bell.clone()));
    tokio::spawn(listen(url.to_owned(), bell.clone()));
}

async fn send(conns: Conns, bell: ChangeBell) {
    while let Some(tenants) = bell.next_remote().await {
        let names: Vec<String> = tenants.iter().map(|t| t.as_str().to_owned()).collect();
        let sent = async {
            let mut conn = conns.get().await?;
            let done = sqlx::query("SELECT pg_notify($1, t) FROM unnest($2::text[]) t")
                .bind(CHANNEL)
                .bind(&names)
                .execute(&mut *conn)
                .await;
            conn.finish(done).await.map(drop)
        };
        if let Err(err) = sent.await {
            tracing::debug!(error = %err, "change notification not sent; watchers will poll");
            tokio::time::sleep(RETRY).await;
        }
    }
}

async fn listen(url: String, bell: ChangeBell) {
    bell.watched().await;
    loop {
        let mut listener = match PgListener::connect(&url).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::debug!(error = %err, "cannot listen for change notifications yet");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if let Err(err) = listener.listen(CHANNEL).await {
            tracing::debug!(error = %err, "cannot listen for change notifications yet");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if let Ok(tenant) = TenantId::parse(notification.payload()) {
                        bell.ring_local(&tenant);
                    }
                }
                // The connection was lost and is opened again by the next call;
                // what was sent meanwhile is lost, so every watcher looks now.
                Ok(None) => bell.ring_all_local(),
                Err(err) => {
                    tracing::debug!(error = %err, "change notifications interrupted");
                    bell.ring_all_local();
                    tokio::time::sleep(RETRY).await;
                    break;
                }
            }
        }
    }
}
