//! WatchContacts with much to deliver: a paused watcher's memory, a long backlog,
//! reads cut at their byte budget, many watchers sharing reads.

use super::*;

/// A watcher that stops reading holds bounded server memory: the server reads the
/// outbox in batches bounded in bytes (512 KiB plus one change), holds at most the
/// batch it sends and one read ahead, keeps at most two chunks of them (64 KiB
/// encoded, plus one change, each) for the client, and HTTP/2 flow control stops it
/// sending. (On PostgreSQL this test found the feed skipping
/// changes once transaction ids gained a digit: its batch was sorted by the id as
/// text; then every change must still arrive.) 600 changes carrying contacts of ~48 KB (~29 MB) stand
/// behind a watcher that took one and paused; measured on the real binary.
async fn a_paused_watcher_holds_bounded_server_memory(backend: Backend) {
    let app = spawn_app(backend).await;
    let server = crate::support::replica::Replica::start(&app.database_url, &[]);
    let mut writer = app.client();
    let filler = "x".repeat(48_000);
    for n in 0..600 {
        create(
            &mut writer,
            &format!("big{n:03}@example.com"),
            json!({"filler": filler}),
        )
        .await;
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect to the server process");
    let mut watcher =
        kraiter_contacts::api::pb::contacts_service_client::ContactsServiceClient::new(channel)
            .max_decoding_message_size(1 << 20);
    let before = server.rss_kib();
    let mut request = tonic::Request::new(from_oldest(600));
    let value = format!("Bearer {}", app.key).parse().expect("metadata");
    request.metadata_mut().insert("authorization", value);
    let mut stream = watcher
        .watch_contacts(request)
        .await
        .expect("watch")
        .into_inner();
    stream
        .message()
        .await
        .expect("a change")
        .expect("the first change");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = server.rss_kib();
    let grown = during.saturating_sub(before);
    println!("paused watcher: the server grew by {grown} KiB while 599 changes of ~48 KB waited");
    assert!(
        grown < 24 * 1024,
        "{backend:?}: a paused watcher grew the server by {grown} KiB"
    );
    let mut seen = 1;
    while seen < 600 {
        match tokio::time::timeout(PATIENCE, stream.message()).await {
            Ok(Ok(Some(_))) => seen += 1,
            other => panic!("{backend:?}: after {seen} changes: {other:?}"),
        }
    }
}

/// A backlog of many batches (the feed reads the next batch while it sends one):
/// 1,000 imported contacts arrive once each, and a resume from a token inside the
/// backlog, where batches are cut elsewhere, gives exactly the same tail; a watch
/// that asks for fewer ends after them.
async fn a_long_backlog_arrives_whole_and_resumes_anywhere_in_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let created = import_numbered(&mut client, "backlog", 1000).await;
    assert_eq!(created, 1000, "{backend:?}");
    let all = collect(&mut client, from_oldest(1000)).await;
    let ids: std::collections::HashSet<&String> = all.iter().map(|c| &c.contact_id).collect();
    assert_eq!(
        (all.len(), ids.len()),
        (1000, 1000),
        "{backend:?}: once each"
    );
    resumes_give_the_tail(&mut client, &all, &[99, 100, 437], backend).await;
    let mut few = client
        .watch_contacts(from_oldest(150))
        .await
        .expect("watch")
        .into_inner();
    let mut last = None;
    let mut count = 0;
    while let Some(change) = tokio::time::timeout(PATIENCE, few.message())
        .await
        .expect("the watch ends after 150")
        .expect("a change")
    {
        count += 1;
        last = Some(change.token);
    }
    assert_eq!(count, 150, "{backend:?}");
    assert_eq!(last.as_ref(), Some(&all[149].token), "{backend:?}");
}

/// A backlog of small changes and then large ones: the feed sizes its reads to the
/// small ones (hundreds of rows), so the reads that meet the large ones stop at their
/// byte budget with rows still unread (the connection is given back only after
/// they are drained). Every change still arrives once, in order, and a resume from
/// inside the large ones, where reads are cut elsewhere, gives exactly the same tail.
async fn reads_cut_at_their_byte_budget_lose_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let created = import_numbered(&mut client, "small", 400).await;
    assert_eq!(created, 400, "{backend:?}");
    let filler = "y".repeat(30_000);
    for n in 0..60 {
        create(
            &mut client,
            &format!("large{n:02}@example.com"),
            json!({"n": n, "filler": filler}),
        )
        .await;
    }
    let all = collect(&mut client, from_oldest(460)).await;
    let emails: Vec<String> = all
        .iter()
        .map(|c| c.contact.as_ref().expect("a contact").email.clone())
        .collect();
    let expected: Vec<String> = (0..400)
        .map(|n| format!("small{n:03}@example.com"))
        .chain((0..60).map(|n| format!("large{n:02}@example.com")))
        .collect();
    assert_eq!(emails, expected, "{backend:?}: every change once, in order");
    resumes_give_the_tail(&mut client, &all, &[405, 431], backend).await;
}

/// Watchers of one tenant in one process share their reads of the feed when they
/// wait at the same position (`SharedReads`); each must still get every change once,
/// in order: 12 watchers beside 4 concurrent writers all see the sequence a watch
/// started afterwards reads from the database.
async fn many_watchers_sharing_reads_each_get_every_change_in_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let first = create(&mut client, "first@example.com", json!({})).await;
    let start = collect(&mut client, from_oldest(1)).await.remove(0).token;
    assert!(!first.id.is_empty());
    let watchers: Vec<_> = (0..12)
        .map(|_| {
            let mut client = app.client();
            let request = resume(&start, 60);
            tokio::spawn(async move { collect(&mut client, request).await })
        })
        .collect();
    // Every watch is open (and waiting at the start) before the writes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut client = app.client();
            tokio::spawn(async move {
                for i in 0..15 {
                    create(&mut client, &format!("s{w}-{i}@example.com"), json!({})).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("a writer");
    }
    let reference: Vec<String> = collect(&mut client, resume(&start, 60))
        .await
        .into_iter()
        .map(|c| c.token)
        .collect();
    assert_eq!(reference.len(), 60, "{backend:?}");
    for watcher in watchers {
        let got: Vec<String> = watcher
            .await
            .expect("a watcher")
            .into_iter()
            .map(|c| c.token)
            .collect();
        assert_eq!(got, reference, "{backend:?}: a watcher's sequence");
    }
}

conformance!(
    reads_cut_at_their_byte_budget_lose_nothing,
    many_watchers_sharing_reads_each_get_every_change_in_order,
    a_long_backlog_arrives_whole_and_resumes_anywhere_in_it,
    a_paused_watcher_holds_bounded_server_memory,
);
