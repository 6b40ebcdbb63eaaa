//! A standby that stops mid-stream, and one whose replay lags past the limit.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_standby_stops_finishes_from_the_primary_exactly_once() {
    const CONTACTS: usize = 250;
    let pair = replica_pair().await;
    let _turn = pair.lock.lock().await;
    let tenant = unique_tenant().to_string();
    // No periodic check after the first: only the failed read can send the stream
    // elsewhere.
    let app = app_on(pair, &tenant, |args| {
        args.replicas.replica_check_interval = Duration::from_secs(3600);
    })
    .await;
    let mut client = app.client();
    // Large contacts, so the stream's read-ahead (a few MB) holds a small part of it
    // when the standby stops.
    let filler = "x".repeat(40_000);
    let mut expected = Vec::new();
    for i in 0..CONTACTS {
        let email = format!("s{i:03}@example.com");
        create(&mut client, &email, json!({"i": i, "notes": filler})).await;
        expected.push(email);
    }
    wait_on_standby(pair, &tenant, CONTACTS as i64).await;
    let list0 = ran(pair, LIST).await;

    let mut stream = client
        .list_contacts(pb::ListContactsRequest {
            limit: 5,
            ..Default::default()
        })
        .await
        .expect("the list starts")
        .into_inner();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let page = stream.message().await.expect("a page").expect("more pages");
        seen.extend(page.contacts.into_iter().map(|c| c.email));
    }
    let before_stop = ran(pair, LIST).await - list0;
    assert!(
        before_stop.standby >= 1,
        "started on the standby: {before_stop:?}"
    );
    assert_eq!(before_stop.primary, 0, "{before_stop:?}");
    tokio::task::spawn_blocking(move || pair.standby.stop())
        .await
        .expect("stop the standby");
    while let Some(page) = stream
        .message()
        .await
        .expect("no error after the standby stopped")
    {
        seen.extend(page.contacts.into_iter().map(|c| c.email));
    }
    assert_eq!(seen.len(), expected.len(), "no duplicate, no gap");
    assert_eq!(seen, expected, "every contact once, in order");
    let primary_lists = statement_calls(&pair.primary_url(), LIST).await - list0.primary;
    assert!(
        primary_lists >= 1,
        "the rest of the stream came from the primary: {primary_lists}"
    );
    // A new stream goes straight to the primary while the standby is down.
    let again = emails(
        &mut client,
        Request::new(pb::ListContactsRequest::default()),
    )
    .await;
    assert_eq!(again, expected);
    let body = scrape(app.metrics_addr.expect("metrics")).await;
    let name = format!(
        "kraiter_db_replica_usable{{replica=\"127.0.0.1:{}/kraiter\"}}",
        pair.standby.port()
    );
    assert_eq!(try_sample(&body, &name), Some(0.0), "{body}");

    tokio::task::spawn_blocking(move || pair.standby.start())
        .await
        .expect("start the standby again");
    wait_on_standby(pair, &tenant, CONTACTS as i64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_lagging_past_the_limit_is_skipped_until_it_catches_up() {
    let pair = replica_pair().await;
    let _turn = pair.lock.lock().await;
    let tenant = unique_tenant().to_string();
    let app = app_on(pair, &tenant, |args| {
        args.replicas.max_replica_lag = Duration::from_secs(2);
    })
    .await;
    let mut client = app.client();
    create(&mut client, "first@example.com", json!({})).await;
    wait_on_standby(pair, &tenant, 1).await;
    let mut standby = connect(&pair.standby_url()).await;
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&mut standby)
        .await
        .expect("pause the standby's replay");
    let resume = ResumeReplay(pair.standby_url());

    create(&mut client, "second@example.com", json!({})).await;
    let fresh = emails(&mut client, primary(pb::ListContactsRequest::default())).await;
    assert_eq!(
        fresh,
        ["first@example.com", "second@example.com"],
        "from the primary"
    );
    // Within the lag allowed, the standby still serves the list, as it stands.
    let lagging = emails(
        &mut client,
        Request::new(pb::ListContactsRequest::default()),
    )
    .await;
    assert_eq!(
        lagging,
        ["first@example.com"],
        "the standby, behind by its lag"
    );
    // The Rust client asks for the primary's freshness for all its calls.
    let sdk_emails = |sdk: kraiter_contacts::client::Client| async move {
        use futures_util::TryStreamExt;
        let listed: Vec<pb::Contact> = sdk
            .contacts()
            .list(pb::ListContactsRequest::default())
            .try_collect()
            .await
            .expect("the client's list");
        listed.into_iter().map(|c| c.email).collect::<Vec<_>>()
    };
    assert_eq!(
        sdk_emails(app.sdk().with_primary_reads()).await,
        ["first@example.com", "second@example.com"],
        "the client's primary reads"
    );
    assert_eq!(
        sdk_emails(app.sdk()).await,
        ["first@example.com"],
        "the client's default reads"
    );

    let metrics = app.metrics_addr.expect("metrics");
    let usable = format!(
        "kraiter_db_replica_usable{{replica=\"127.0.0.1:{}/kraiter\"}}",
        pair.standby.port()
    );
    eventually(PATIENCE, "the lagging standby skipped", || {
        let usable = usable.clone();
        async move { (try_sample(&scrape(metrics).await, &usable) == Some(0.0)).then_some(()) }
    })
    .await;
    let lag = format!(
        "kraiter_db_replica_lag_seconds{{replica=\"127.0.0.1:{}/kraiter\"}}",
        pair.standby.port()
    );
    let seconds = try_sample(&scrape(metrics).await, &lag).expect("a lag sample");
    assert!(seconds > 2.0, "lag past the limit: {seconds}");
    let list0 = ran(pair, LIST).await;
    let skipped = emails(
        &mut client,
        Request::new(pb::ListContactsRequest::default()),
    )
    .await;
    assert_eq!(
        skipped,
        ["first@example.com", "second@example.com"],
        "the primary, once the standby lags past the limit"
    );
    let lists = ran(pair, LIST).await - list0;
    assert_eq!(
        lists,
        Ran {
            primary: 1,
            standby: 0
        },
        "skipped: {lists:?}"
    );

    drop(resume);
    wait_on_standby(pair, &tenant, 2).await;
    eventually(PATIENCE, "the standby usable again", || {
        let usable = usable.clone();
        async move { (try_sample(&scrape(metrics).await, &usable) == Some(1.0)).then_some(()) }
    })
    .await;
    let list0 = ran(pair, LIST).await;
    let caught_up = emails(
        &mut client,
        Request::new(pb::ListContactsRequest::default()),
    )
    .await;
    assert_eq!(caught_up, ["first@example.com", "second@example.com"]);
    let lists = ran(pair, LIST).await - list0;
    assert_eq!(
        lists,
        Ran {
            primary: 0,
            standby: 1
        },
        "back on the standby"
    );
}

/// Resumes the standby's replay when dropped, so a failed assertion leaves the
/// shared standby replaying for the next test.
struct ResumeReplay(String);

impl Drop for ResumeReplay {
    fn drop(&mut self) {
        let url = self.0.clone();
        let _ = std::thread::spawn(move || {
            let _ = std::process::Command::new("psql")
                .args(["-q", &url, "-c", "SELECT pg_wal_replay_resume()"])
                .status();
        })
        .join();
    }
}
