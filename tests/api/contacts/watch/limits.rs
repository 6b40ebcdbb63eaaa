//! Watchers past the tenant's limit, or the server's, are refused with
//! RESOURCE_EXHAUSTED, and a place frees when its watch ends: before the watch's
//! end reaches its client.

use super::*;

async fn watchers_past_the_tenant_limit_are_refused(backend: Backend) {
    let app = spawn_app_with(backend, |args| args.limits.max_watchers_per_tenant = 1).await;
    let first = app
        .client()
        .watch_contacts(pb::WatchContactsRequest::default())
        .await
        .expect("the first watcher");
    let second = app
        .client()
        .watch_contacts(pb::WatchContactsRequest::default())
        .await;
    assert_status(
        second.map(drop),
        Code::ResourceExhausted,
        "RATE_LIMITED",
        "second",
    );
    // Another tenant has places of its own; a list is not a watcher.
    let mut other = app.other_tenant_client().await;
    other
        .watch_contacts(pb::WatchContactsRequest::default())
        .await
        .expect("another tenant's watcher");
    drop(first);
    crate::support::wait::eventually(PATIENCE, "a place given back", || {
        let mut client = app.client();
        async move {
            client
                .watch_contacts(pb::WatchContactsRequest::default())
                .await
                .ok()
        }
    })
    .await;
}

async fn watchers_past_the_server_limit_are_refused_whatever_the_tenant(backend: Backend) {
    let app = spawn_app_with(backend, |args| {
        args.limits.max_watchers = 2;
        args.limits.max_watchers_per_tenant = 2;
    })
    .await;
    let watch = || pb::WatchContactsRequest::default();
    let mut a = app.client();
    let mut b = app.other_tenant_client().await;
    let mut c = app.other_tenant_client().await;
    let first = a.watch_contacts(watch()).await.expect("A's watcher");
    let second = b.watch_contacts(watch()).await.expect("B's watcher");
    let third = c.watch_contacts(watch()).await;
    let status = assert_status(
        third.map(drop),
        Code::ResourceExhausted,
        "RATE_LIMITED",
        "a third tenant past the server's two watchers",
    );
    assert!(
        tonic_types::StatusExt::get_details_retry_info(&status).is_some(),
        "with RetryInfo: {status:?}"
    );
    // Lists are counted apart: C still lists.
    let listed = c.list_contacts(pb::ListContactsRequest::default()).await;
    assert!(listed.is_ok(), "a list is not a watcher: {listed:?}");
    drop((first, second));
    crate::support::wait::eventually(PATIENCE, "places given back", || {
        let mut c = c.clone();
        async move { c.watch_contacts(watch()).await.ok() }
    })
    .await;
}

/// At a limit of one watcher, 50 watches in a row, each read to its `max_changes`
/// before the next opens, are each let in at once.
async fn a_watch_read_to_its_end_has_given_its_place_back(backend: Backend) {
    let app = spawn_app_with(backend, |args| args.limits.max_watchers_per_tenant = 1).await;
    let mut client = app.client();
    create(&mut client, "w@example.com", json!({})).await;
    for round in 0..50 {
        let request = pb::WatchContactsRequest {
            start: pb::WatchStart::OldestRetained as i32,
            max_changes: 1,
            ..Default::default()
        };
        let mut stream = client
            .watch_contacts(request)
            .await
            .unwrap_or_else(|status| panic!("round {round}: the watch is let in: {status:?}"))
            .into_inner();
        let mut seen = 0;
        loop {
            let next = tokio::time::timeout(PATIENCE, stream.message())
                .await
                .unwrap_or_else(|_| panic!("round {round}: the watch ends within {PATIENCE:?}"))
                .unwrap_or_else(|status| panic!("round {round}: a change: {status:?}"));
            match next {
                Some(_) => seen += 1,
                None => break,
            }
        }
        assert_eq!(seen, 1, "round {round}: its one change, then the end");
    }
}

conformance!(
    a_watch_read_to_its_end_has_given_its_place_back,
    watchers_past_the_tenant_limit_are_refused,
    watchers_past_the_server_limit_are_refused_whatever_the_tenant,
);
