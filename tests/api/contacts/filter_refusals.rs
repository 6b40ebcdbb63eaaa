//! Invalid and hostile filters (issue 16): too deep, too many, huge values, NUL,
//! unknown fields and operators, operands that do not fit. Each is INVALID_ARGUMENT
//! whose `BadRequest` names the offending part by its path, on ListContacts and
//! CountContacts alike, never INTERNAL.

use kraiter_contacts::api::pb::{self, FilterOperator as Op};
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

use super::filter_calls::{all, among, any, at, bare, cond, try_list};
use crate::conformance;
use crate::support::{Backend, assert_status, spawn_app};

fn nested(depth: usize) -> pb::ContactFilter {
    let mut filter = cond("properties.a", Op::Equals, json!(1));
    for _ in 1..depth {
        filter = all(vec![filter]);
    }
    filter
}

fn cases() -> Vec<(&'static str, pb::ContactFilter, &'static str)> {
    let eq = || cond("properties.a", Op::Equals, json!(1));
    let list_value = json!(["x"]);
    let micro = prost_types::Timestamp {
        seconds: 1,
        nanos: 1,
    };
    let whole = prost_types::Timestamp {
        seconds: 1,
        nanos: 0,
    };
    let too_far = prost_types::Timestamp {
        seconds: 300_000_000_000,
        nanos: 0,
    };
    vec![
        ("an empty filter", pb::ContactFilter::default(), "filter"),
        (
            "both all and field",
            pb::ContactFilter {
                all: vec![eq()],
                ..eq()
            },
            "filter",
        ),
        (
            "an unknown field",
            cond("name", Op::Equals, json!("x")),
            "filter.field",
        ),
        (
            "an empty key",
            cond("properties.a..b", Op::Equals, json!(1)),
            "filter.field",
        ),
        (
            "a quote in a key",
            cond("properties.a\"b", Op::Equals, json!(1)),
            "filter.field",
        ),
        (
            "a NUL in a key",
            cond("properties.a\0b", Op::Equals, json!(1)),
            "filter.field",
        ),
        (
            "a path of 17 keys",
            cond(
                &format!("properties{}", ".k".repeat(17)),
                Op::Exists,
                json!(null),
            ),
            "filter.field",
        ),
        (
            "no operator",
            cond("properties.a", Op::Unspecified, json!(1)),
            "filter.operator",
        ),
        (
            "an unknown operator",
            pb::ContactFilter {
                operator: 99,
                ..eq()
            },
            "filter.operator",
        ),
        (
            "a NUL in a value",
            cond("properties.a", Op::Equals, json!("a\0b")),
            "filter.value",
        ),
        (
            "a huge value",
            cond("properties.a", Op::Contains, json!("x".repeat(5000))),
            "filter.value",
        ),
        (
            "a list value",
            cond("properties.a", Op::Equals, list_value),
            "filter.value",
        ),
        (
            "a null order comparison",
            cond("properties.a", Op::LessThan, json!(null)),
            "filter.value",
        ),
        (
            "a boolean order comparison",
            cond("properties.a", Op::GreaterThan, json!(true)),
            "filter.value",
        ),
        (
            "an empty contains",
            cond("properties.a", Op::Contains, json!("")),
            "filter.value",
        ),
        (
            "a value with exists",
            cond("properties.a", Op::Exists, json!(1)),
            "filter.value",
        ),
        (
            "exists on email",
            bare("email", Op::Exists),
            "filter.operator",
        ),
        (
            "a number for email",
            cond("email", Op::Equals, json!(1)),
            "filter.value",
        ),
        (
            "a string for a flag",
            cond("suppressed", Op::Equals, json!("yes")),
            "filter.value",
        ),
        (
            "contains on a flag",
            cond("suppressed", Op::Contains, json!("x")),
            "filter.value",
        ),
        (
            "a value for a time",
            cond("created_at", Op::Equals, json!("2024-01-01")),
            "filter.timestamp",
        ),
        (
            "nanoseconds",
            at("created_at", Op::GreaterThan, micro),
            "filter.timestamp",
        ),
        (
            "past year 9999",
            at("created_at", Op::GreaterThan, too_far),
            "filter.timestamp",
        ),
        (
            "a timestamp on a property",
            at("properties.a", Op::GreaterThan, whole),
            "filter.timestamp",
        ),
        (
            "in without values",
            bare("properties.a", Op::In),
            "filter.values",
        ),
        (
            "in with 101 values",
            among("properties.a", (0..101).map(|i| json!(i)).collect()),
            "filter.values",
        ),
        (
            "in with a null",
            among("properties.a", vec![json!(1), json!(null)]),
            "filter.values",
        ),
        (
            "a NUL among values",
            among("email", vec![json!("a\0@b.c")]),
            "filter.values",
        ),
        (
            "the path of a nested mistake",
            all(vec![
                eq(),
                eq(),
                any(vec![cond("properties.a", Op::Equals, json!(["x"]))]),
            ]),
            "filter.all[2].any[0].value",
        ),
        (
            "6 levels",
            nested(6),
            "filter.all[0].all[0].all[0].all[0].all[0]",
        ),
        (
            "90 levels",
            nested(90),
            "filter.all[0].all[0].all[0].all[0].all[0]",
        ),
        (
            "65 filters",
            all((0..64).map(|_| eq()).collect()),
            "filter.all[63]",
        ),
        (
            "10,000 filters",
            any((0..10_000).map(|_| eq()).collect()),
            "filter.any[63]",
        ),
    ]
}

async fn invalid_filters_are_invalid_argument_naming_the_offending_path(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    for (what, filter, path) in cases() {
        let list = pb::ListContactsRequest {
            filter: Some(filter.clone()),
            ..Default::default()
        };
        let count = pb::CountContactsRequest {
            filter: Some(filter),
            ..Default::default()
        };
        let statuses = [
            assert_status(
                try_list(&mut client, list).await,
                Code::InvalidArgument,
                "VALIDATION_ERROR",
                what,
            ),
            assert_status(
                client.count_contacts(count).await,
                Code::InvalidArgument,
                "VALIDATION_ERROR",
                what,
            ),
        ];
        for status in statuses {
            let violations = status
                .get_details_bad_request()
                .unwrap_or_else(|| panic!("{what}: no BadRequest in {status:?}"))
                .field_violations;
            assert_eq!(
                violations[0].field, path,
                "{what}: {}",
                violations[0].description
            );
        }
    }
    let unknown_order = pb::ListContactsRequest {
        order_by: 42,
        ..Default::default()
    };
    let status = assert_status(
        try_list(&mut client, unknown_order).await,
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "an unknown order",
    );
    let field = &status
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations[0]
        .field;
    assert_eq!(field, "order_by");
}

async fn the_largest_valid_filter_is_served(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    crate::support::create(&mut client, "a@example.com", json!({"a": 1})).await;
    // 5 levels, and 64 filters in all: 1 + 1 + 1 + 1 + 60 conditions.
    let mut leaves: Vec<_> = (0..60)
        .map(|i| {
            let values = (0..100).map(|v| json!(format!("v{v}"))).collect();
            among(&format!("properties.k{i}"), values)
        })
        .collect();
    leaves[0] = cond("properties.a", Op::Equals, json!(1));
    let filter = all(vec![any(vec![all(vec![any(leaves)])])]);
    let request = pb::ListContactsRequest {
        filter: Some(filter),
        ..Default::default()
    };
    let listed = try_list(&mut client, request)
        .await
        .expect("within every bound");
    assert_eq!(listed.len(), 1);
}

conformance!(
    invalid_filters_are_invalid_argument_naming_the_offending_path,
    the_largest_valid_filter_is_served,
);
