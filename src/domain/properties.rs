use serde_json::{Map, Value};

use super::ValidationError;

/// Largest property set, as JSON the way either store gives it back (see
/// `stored_len`).
pub const MAX_BYTES: usize = 64 * 1024;
/// Deepest nesting of a property value (a scalar directly under a key is depth 1).
pub const MAX_DEPTH: usize = 16;
/// Longest property key, in characters.
pub const MAX_KEY_CHARS: usize = 256;

/// A contact's custom properties: a JSON object that fits the limits above, with no
/// NUL characters (PostgreSQL's jsonb cannot store them) and no top-level nulls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties(Map<String, Value>);

/// Stored properties as the store hands them back: the text of a JSON object that was
/// a valid `Properties` when written. Reads pass it on as it is, so a read that only
/// forwards the properties never builds a JSON tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertiesJson(String);

impl PropertiesJson {
    /// Text read back from the store (only `Properties` are ever written).
    pub fn from_trusted(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Keys to set or, where the value is null, to remove.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PropertiesPatch(Map<String, Value>);

impl Properties {
    /// Validates a property set given at creation; top-level nulls mean "absent" and
    /// are dropped, as they are in an update.
    pub fn parse(mut map: Map<String, Value>, field: &str) -> Result<Self, ValidationError> {
        map.retain(|_, value| !value.is_null());
        validate(&map, field)?;
        Ok(Self(map))
    }

    /// Rebuilds properties read back from a store.
    pub fn from_trusted(map: Map<String, Value>) -> Self {
        Self(map)
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    /// Applies `patch` and returns the result with the keys that really changed,
    /// as `(key, before, after)`; absent means the key did not exist.
    #[allow(clippy::type_complexity)]
    pub fn merge(
        &self,
        patch: &PropertiesPatch,
        field: &str,
    ) -> Result<(Self, Vec<(String, Option<Value>, Option<Value>)>), ValidationError> {
        let mut merged = self.0.clone();
        let mut changes = Vec::new();
        for (key, value) in &patch.0 {
            let before = merged.get(key).cloned();
            let after = if value.is_null() {
                merged.remove(key);
                None
            } else {
                merged.insert(key.clone(), value.clone());
                Some(value.clone())
            };
            if before != after {
                changes.push((key.clone(), before, after));
            }
        }
        if serialized_len(&merged) > MAX_BYTES {
            return Err(ValidationError::new(
                field,
                format!("merged properties must be at most {MAX_BYTES} bytes as JSON"),
            ));
        }
        Ok((Self(merged), changes))
    }
}

impl PropertiesPatch {
    pub fn parse(map: Map<String, Value>, field: &str) -> Result<Self, ValidationError> {
        validate(&map, field)?;
        Ok(Self(map))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

fn validate(map: &Map<String, Value>, field: &str) -> Result<(), ValidationError> {
    for (key, value) in map {
        if key.is_empty() {
            return Err(ValidationError::new(field, "keys must not be empty"));
        }
        if key.chars().count() > MAX_KEY_CHARS {
            return Err(ValidationError::new(
                format!("{field}.{}", truncate(key)),
                format!("keys must be at most {MAX_KEY_CHARS} characters"),
            ));
        }
        if key.chars().any(char::is_control) {
            return Err(ValidationError::new(
                field,
                "keys must not contain control characters",
            ));
        }
        check_value(value, 1, &format!("{field}.{key}"))?;
    }
    if serialized_len(map) > MAX_BYTES {
        return Err(ValidationError::new(
            field,
            format!(
                "must be at most {MAX_BYTES} bytes as JSON (numbers counted written out, as \
                 they are stored)"
            ),
        ));
    }
    Ok(())
}

fn check_value(value: &Value, depth: usize, path: &str) -> Result<(), ValidationError> {
    if depth > MAX_DEPTH {
        return Err(ValidationError::new(
            truncate(path),
            format!("must not be nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    match value {
        Value::String(s) if s.contains('\0') => Err(ValidationError::new(
            truncate(path),
            "strings must not contain NUL characters",
        )),
        Value::Array(items) => {
            for item in items {
                check_value(item, depth + 1, path)?;
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map {
                if key.contains('\0') {
                    return Err(ValidationError::new(
                        truncate(path),
                        "keys must not contain NUL characters",
                    ));
                }
                check_value(item, depth + 1, path)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Field paths echo caller keys; keep error messages short whatever the key.
fn truncate(path: &str) -> String {
    match path.char_indices().nth(80) {
        Some((end, _)) => format!("{}...", &path[..end]),
        None => path.to_owned(),
    }
}

/// The size of the property set as JSON when a store reads it back. SQLite returns
/// the text as written; PostgreSQL's jsonb keeps a number's digits and prints them
/// without an exponent, so `1e308` (5 bytes written) comes back as 309 digits. The
/// larger counts, so one limit holds for what every store returns.
fn serialized_len(map: &Map<String, Value>) -> usize {
    let written = serde_json::to_vec(map).map_or(usize::MAX, |bytes| bytes.len());
    map.values()
        .fold(written, |len, value| len.saturating_add(expansion(value)))
}

/// How many bytes longer the numbers in `value` read back than they were written.
fn expansion(value: &Value) -> usize {
    match value {
        Value::Number(number) => rendered_number_len(number) - number.to_string().len(),
        Value::Array(items) => items.iter().map(expansion).sum(),
        Value::Object(map) => map.values().map(expansion).sum(),
        _ => 0,
    }
}

/// The length of `number` as written (serde_json's shortest form) or as PostgreSQL's
/// numeric prints the same digits in positional notation, whichever is longer.
fn rendered_number_len(number: &serde_json::Number) -> usize {
    let written = number.to_string().len();
    let Some(float) = number.as_f64().filter(|_| number.is_f64()) else {
        return written;
    };
    // Shortest round-trip digits with an exponent, as serde_json writes them.
    let scientific = format!("{:e}", float.abs());
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return written;
    };
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).count() as i64;
    let Ok(exponent) = exponent.parse::<i64>() else {
        return written;
    };
    let positional = if exponent >= digits - 1 {
        exponent + 1 // all digits before the point, then zeros: 1e308 -> 309
    } else if exponent >= 0 {
        digits + 1 // digits around a point: 123.45
    } else {
        digits - exponent + 1 // "0.", zeros, digits: 5e-324 -> 326
    };
    let sign = usize::from(float.is_sign_negative());
    written.max(positional as usize + sign)
}

/// The text that `search` matches against: the email and every scalar property
/// value, lowercased, one per line. Computed here so both stores index the same text.
pub fn search_text(email: &str, properties: &Properties) -> String {
    let mut text = email.to_lowercase();
    for value in properties.0.values() {
        push_values(value, &mut text);
    }
    text
}

fn push_values(value: &Value, text: &mut String) {
    match value {
        Value::Null => {}
        Value::String(s) => {
            text.push('\n');
            text.push_str(&s.to_lowercase());
        }
        Value::Bool(_) | Value::Number(_) => {
            text.push('\n');
            text.push_str(&value.to_string());
        }
        Value::Array(items) => items.iter().for_each(|item| push_values(item, text)),
        Value::Object(map) => map.values().for_each(|item| push_values(item, text)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn numbers_count_as_postgresql_prints_them() {
        let cases = [
            (json!(1e308), 309, "1 and 308 zeros"),
            (json!(-1e308), 310, "with its sign"),
            (json!(5e-324), 326, "0., 323 zeros, 5"),
            (json!(1.5e-5), 8, "0.000015"),
            (json!(123.45), 6, "as written"),
            (json!(1e21), 22, "integral float past i64"),
            (json!(42), 2, "an integer as written"),
            (json!(-7), 2, "a negative integer as written"),
        ];
        for (value, expected, case) in cases {
            let Value::Number(number) = &value else {
                panic!("{case}: a number")
            };
            assert_eq!(rendered_number_len(number), expected, "{case}");
        }
    }

    #[test]
    fn numbers_that_read_back_longer_count_against_the_limit() {
        // 42 KB as written, 2 MB as PostgreSQL returns it.
        let huge: Map<String, Value> = [("many".to_owned(), json!(vec![1e308; 7_000]))]
            .into_iter()
            .collect();
        assert!(serde_json::to_vec(&huge).expect("json").len() < MAX_BYTES);
        let err = Properties::parse(huge, "properties").expect_err("over the limit as stored");
        assert_eq!(err.field, "properties");
        // 190 of them, written out, still fit.
        let fits: Map<String, Value> = (0..190).map(|i| (format!("k{i}"), json!(1e308))).collect();
        assert!(Properties::parse(fits, "properties").is_ok());
    }

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("test input is an object")
    }

    #[test]
    fn merge_sets_overwrites_removes_and_reports_changes() {
        let props = Properties::parse(map(json!({"a": 1, "b": "x", "c": true})), "properties")
            .expect("valid");
        let patch = PropertiesPatch::parse(
            map(json!({"a": 2, "b": null, "d": [1], "c": true})),
            "properties",
        )
        .expect("valid");
        let (merged, changes) = props.merge(&patch, "properties").expect("fits");
        assert_eq!(merged.as_map(), &map(json!({"a": 2, "c": true, "d": [1]})));
        assert_eq!(
            changes,
            vec![
                ("a".into(), Some(json!(1)), Some(json!(2))),
                ("b".into(), Some(json!("x")), None),
                ("d".into(), None, Some(json!([1]))),
            ]
        );
    }

    #[test]
    fn rejects_input_postgres_cannot_store_or_that_is_too_big() {
        let deep = (0..MAX_DEPTH).fold(json!(1), |inner, _| json!([inner]));
        let cases = [
            (json!({"": 1}), "empty key"),
            (json!({"a": "x\u{0}y"}), "nul in value"),
            (json!({"a": {"k\u{0}": 1}}), "nul in nested key"),
            (json!({"a\u{1}": 1}), "control char in key"),
            (json!({"a": deep}), "too deep"),
            (json!({"a": "x".repeat(MAX_BYTES)}), "too big"),
            (json!({"k".repeat(MAX_KEY_CHARS + 1): 1}), "key too long"),
        ];
        for (value, why) in cases {
            let err = Properties::parse(map(value), "properties").expect_err(why);
            assert!(err.field.starts_with("properties"), "{why}: {err}");
        }
    }

    #[test]
    fn top_level_nulls_are_dropped_on_create() {
        let props =
            Properties::parse(map(json!({"a": null, "b": 1})), "properties").expect("valid");
        assert_eq!(props.as_map(), &map(json!({"b": 1})));
    }

    #[test]
    fn search_text_holds_email_and_nested_values_lowercased() {
        let props = Properties::parse(
            map(json!({"name": "Ålice", "n": 42, "tags": ["VIP", {"x": "Deep"}]})),
            "properties",
        )
        .expect("valid");
        let text = search_text("Alice@Example.com", &props);
        // serde_json keeps keys sorted: `n`, `name`, `tags`.
        assert_eq!(text, "alice@example.com\n42\nålice\nvip\ndeep");
    }
}

/// Fuzzing of property validation (issue 7): any JSON object is accepted within the
/// limits or refused naming the field, never a panic; merges keep the size limit.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::*;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(24, 400, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(".{0,12}", inner, 0..8)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    fn object() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::btree_map(".{0,300}", json(), 0..12)
            .prop_map(|map| map.into_iter().collect())
    }

    fn depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 1,
        }
    }

    fn holds_nul(value: &Value) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(holds_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
            _ => false,
        }
    }

    fn check_valid(map: &Map<String, Value>) {
        assert!(serialized_len(map) <= MAX_BYTES);
        for (key, value) in map {
            assert!(!key.is_empty() && key.chars().count() <= MAX_KEY_CHARS);
            assert!(!key.chars().any(char::is_control));
            assert!(depth(value) <= MAX_DEPTH, "{key}");
            assert!(!holds_nul(value), "{key}");
        }
    }

    #[test]
    fn the_corpus_keeps_the_rules() {
        for line in include_str!("../../tests/corpus/properties.jsonl").lines() {
            let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
                panic!("corpus line is a JSON object: {line}");
            };
            if let Ok(props) = Properties::parse(map.clone(), "properties") {
                check_valid(props.as_map());
            }
            let _ = PropertiesPatch::parse(map, "properties");
        }
    }

    proptest! {
        #[test]
        fn any_object_is_accepted_within_the_limits_or_refused(map in object()) {
            match Properties::parse(map, "properties") {
                Ok(props) => check_valid(props.as_map()),
                Err(err) => prop_assert!(err.field.starts_with("properties"), "{}", err.field),
            }
        }

        #[test]
        fn merges_stay_within_the_limits(base in object(), patch in object()) {
            let (Ok(base), Ok(patch)) = (
                Properties::parse(base, "properties"),
                PropertiesPatch::parse(patch, "properties"),
            ) else {
                return Ok(());
            };
            if let Ok((merged, changes)) = base.merge(&patch, "properties") {
                prop_assert!(serialized_len(merged.as_map()) <= MAX_BYTES);
                prop_assert!(changes.len() <= patch.as_map().len());
                let _ = search_text("a@example.com", &merged);
            }
        }
    }
}
