//! How a CSV cell becomes a property value. CSV has no types, so a cell is read as
//! the JSON value it plainly spells, and as a string otherwise:
//!
//! - an empty cell: the key is left out of the row (nothing changes);
//! - `true`, `false`: a boolean; `null`: null (an upsert removes the key);
//! - a number written as JSON writes it, without leading zeros or exponent (`42`,
//!   `-3.5`): a number; `007`, `+1`, `1e3`, `1,5` stay strings, so codes keep
//!   their zeros;
//! - a cell starting with `{` or `[` that parses as JSON: that object or array;
//! - anything else: the string, as it is.
//!
//! With `--strings` every non-empty cell is a string.

use serde_json::Value;

/// The value of a non-empty cell; `None` for an empty one.
pub fn value(cell: &str, strings: bool) -> Option<Value> {
    if cell.is_empty() {
        return None;
    }
    if strings {
        return Some(Value::String(cell.to_owned()));
    }
    let typed = match cell {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        "null" => Some(Value::Null),
        _ if is_plain_number(cell) => serde_json::from_str(cell).ok(),
        _ if cell.starts_with('{') || cell.starts_with('[') => serde_json::from_str(cell).ok(),
        _ => None,
    };
    Some(typed.unwrap_or_else(|| Value::String(cell.to_owned())))
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, short enough to stay exact.
fn is_plain_number(cell: &str) -> bool {
    let digits = cell.strip_prefix('-').unwrap_or(cell);
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (digits, None),
    };
    let int_ok = int == "0"
        || (!int.is_empty() && !int.starts_with('0') && int.bytes().all(|b| b.is_ascii_digit()));
    let frac_ok = frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    int_ok && frac_ok && digits.len() <= 15
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cells_are_read_as_the_value_they_plainly_spell() {
        let cases = [
            ("", None),
            ("pro", Some(json!("pro"))),
            ("true", Some(json!(true))),
            ("False", Some(json!("False"))),
            ("null", Some(json!(null))),
            ("42", Some(json!(42))),
            ("-3.5", Some(json!(-3.5))),
            ("0", Some(json!(0))),
            ("0.25", Some(json!(0.25))),
            ("007", Some(json!("007"))),
            ("+1", Some(json!("+1"))),
            ("1e3", Some(json!("1e3"))),
            ("1,5", Some(json!("1,5"))),
            ("1.", Some(json!("1."))),
            ("12345678901234567890", Some(json!("12345678901234567890"))),
            ("{\"a\":1}", Some(json!({"a": 1}))),
            ("[1,2]", Some(json!([1, 2]))),
            ("{not json", Some(json!("{not json"))),
            (" 42", Some(json!(" 42"))),
        ];
        for (cell, want) in cases {
            assert_eq!(value(cell, false), want, "cell `{cell}`");
        }
        assert_eq!(value("42", true), Some(json!("42")));
        assert_eq!(value("", true), None);
    }
}
