//! Random filters over random contacts (issue 16): each store lists and counts
//! exactly the contacts that the domain's reference semantics (`matches`) select.
//! Values come from small pools, so that equalities, ties and type mismatches are
//! common rather than rare.

use kraiter_contacts::api::pb::{self, ContactOrder, FilterOperator as Op};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use super::filter_calls::{all, any as either, cond, count, list, reference};
use crate::conformance;
use crate::support::{Backend, spawn_app};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..4).prop_map(|n| json!(n)),
        prop::sample::select(vec![json!(0.5), json!(-1.5), json!(2.0)]),
        prop::sample::select(vec!["a", "A", "ab", "b", "Ba", "ä", "a%_"]).prop_map(|s| json!(s)),
        prop::bool::ANY.prop_map(|b| json!(b)),
    ]
}

fn properties() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec!["x", "y", "z"]);
    let nested =
        prop::collection::btree_map(key.clone(), prop_oneof![scalar(), Just(Value::Null)], 0..3)
            .prop_map(|map| json!(map));
    let value = prop_oneof![4 => scalar(), 1 => nested];
    prop::collection::btree_map(key, value, 0..4).prop_map(|map| json!(map))
}

fn path() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "properties.x",
        "properties.y",
        "properties.z",
        "properties.x.y",
        "properties.y.z",
    ])
    .prop_map(str::to_owned)
}

fn condition() -> impl Strategy<Value = pb::ContactFilter> {
    let ops = vec![
        Op::Equals,
        Op::NotEquals,
        Op::LessThan,
        Op::LessThanOrEqual,
        Op::GreaterThan,
        Op::GreaterThanOrEqual,
    ];
    let compare = (path(), prop::sample::select(ops), scalar()).prop_filter_map(
        "order comparisons take numbers and strings",
        |(path, op, value)| {
            let ordered = matches!(op, Op::Equals | Op::NotEquals) || !value.is_boolean();
            ordered.then(|| cond(&path, op, value))
        },
    );
    let text = (
        path(),
        prop::sample::select(vec![Op::Contains, Op::StartsWith]),
        prop::sample::select(vec!["a", "A", "b", "%"]),
    )
        .prop_map(|(path, op, s)| cond(&path, op, json!(s)));
    let exists = (path(), prop::bool::ANY).prop_map(|(path, yes)| {
        let op = if yes { Op::Exists } else { Op::NotExists };
        super::filter_calls::bare(&path, op)
    });
    let within = (path(), prop::collection::vec(scalar(), 1..4))
        .prop_map(|(path, values)| super::filter_calls::among(&path, values));
    prop_oneof![4 => compare, 2 => text, 1 => exists, 1 => within]
}

fn filter() -> impl Strategy<Value = pb::ContactFilter> {
    condition().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(all),
            prop::collection::vec(inner, 1..4).prop_map(either),
        ]
    })
}

fn draw<S: Strategy>(runner: &mut TestRunner, strategy: &S) -> S::Value {
    strategy.new_tree(runner).expect("a value").current()
}

async fn random_filters_list_and_count_what_the_reference_selects(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let mut runner = TestRunner::deterministic();
    for i in 0..40 {
        let props = draw(&mut runner, &properties());
        crate::support::create(&mut client, &format!("p{i:02}@example.com"), props).await;
    }
    let stored = list(&mut client, None, ContactOrder::Unspecified, 1000).await;
    let mut selective = 0;
    for round in 0..60 {
        let filter = draw(&mut runner, &filter());
        let mut expected: Vec<String> = stored
            .iter()
            .filter(|c| reference(&filter, c))
            .map(|c| c.id.clone())
            .collect();
        expected.sort();
        let listed = list(
            &mut client,
            Some(filter.clone()),
            ContactOrder::Unspecified,
            7,
        )
        .await;
        let ids: Vec<String> = listed.into_iter().map(|c| c.id).collect();
        assert_eq!(ids, expected, "round {round}: list of {filter:?}");
        selective += usize::from(!expected.is_empty() && expected.len() < stored.len());
        let counted = count(&mut client, Some(filter.clone())).await;
        assert_eq!(
            counted,
            expected.len() as i64,
            "round {round}: count of {filter:?}"
        );
    }
    assert!(
        selective >= 15,
        "only {selective} of 60 filters selected some but not all"
    );
}

conformance!(random_filters_list_and_count_what_the_reference_selects; replicated);
