//! A stream's place is free once its end reaches the client: at a limit of one
//! stream a tenant, a client that reads each list to its end opens the next at
//! once, every time, with no wait and no retry.

use kraiter_contacts::api::pb;
use serde_json::json;

use crate::conformance;
use crate::support::{Backend, create, pages, spawn_app_with};

async fn a_list_read_to_its_end_has_given_its_place_back(backend: Backend) {
    let app = spawn_app_with(backend, |args| args.limits.max_streams_per_tenant = 1).await;
    let mut client = app.client();
    for i in 0..3 {
        create(&mut client, &format!("s{i}@example.com"), json!({})).await;
    }
    for round in 0..100 {
        let request = pb::ListContactsRequest {
            limit: 2,
            ..Default::default()
        };
        let pages = pages(&mut client, request).await;
        let sizes: Vec<usize> = pages.iter().map(|page| page.contacts.len()).collect();
        assert_eq!(sizes, [2, 1], "round {round}: every contact, in two pages");
    }
}

conformance!(a_list_read_to_its_end_has_given_its_place_back);
