use proptest::prelude::*;
use prost::Message;
use serde_json::json;

use super::*;
use crate::api::{convert, pb};

/// Through the generated types, as the server answered before.
fn generated(map: &Map<String, Value>) -> pb::Contact {
    pb::Contact {
        id: "con_1".into(),
        email: "a@example.com".into(),
        properties: Some(convert::to_struct(map.clone())),
        ..Default::default()
    }
}

fn decoded(properties: Vec<u8>) -> pb::Contact {
    let contact = Contact {
        id: "con_1".into(),
        email: "a@example.com".into(),
        properties: Some(properties),
        ..Default::default()
    };
    pb::Contact::decode(contact.encode_to_vec().as_slice()).expect("decodes as a Contact")
}

/// Both paths against the generated types: a map as it is, and stored text as the
/// store parsed it before (the same serde_json number parsing on both sides).
fn assert_same(value: Value) {
    let map = value.as_object().expect("an object").clone();
    assert_eq!(decoded(struct_from_map(&map)), generated(&map));
    let text = serde_json::to_string(&map).expect("serializes");
    let parsed: Map<String, Value> = serde_json::from_str(&text).expect("parses");
    let want = generated(&parsed);
    assert_eq!(decoded(struct_from_json(&text).expect("transcodes")), want);
}

#[test]
fn every_kind_of_value_reads_back_as_the_generated_encoding() {
    assert_same(json!({}));
    assert_same(
        json!({"": "", "s": "x", "n": -1.5, "i": 42, "big": u64::MAX, "t": true,
        "f": false, "z": null, "e": [], "o": {}, "deep": {"a": [1, {"b": [null, "é\n\"q\""]}]}}),
    );
    assert_same(json!({"long": "y".repeat(70_000), "many": (0..300).collect::<Vec<_>>()}));
    // Around the largest length `open`'s one byte holds (127), at every level.
    for n in 118..=134 {
        let s = "z".repeat(n);
        assert_same(json!({"s": s, "l": [s], "o": {"k": s}, "ll": [[s, s]]}));
    }
}

#[test]
fn empty_properties_are_present_and_empty() {
    let contact = decoded(struct_from_json("{}").expect("transcodes"));
    assert_eq!(contact.properties, Some(prost_types::Struct::default()));
}

#[test]
fn text_that_is_not_an_object_is_refused() {
    for text in ["[]", "1", "\"s\"", "{", "{} {}", ""] {
        assert!(struct_from_json(text).is_err(), "{text}");
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_object_reads_back_as_the_generated_encoding(
        map in prop::collection::btree_map(".{0,12}", json_value(), 0..10)
    ) {
        assert_same(Value::Object(map.into_iter().collect()));
    }
}
