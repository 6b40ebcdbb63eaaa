//! How SQLite reads a property for a filter (`store::common::filter`): `json_type`
//! for the type (NULL when absent) and `json_extract` for the value, the JSON path a
//! literal when every key may be one, so a hot property's index on
//! `json_extract(properties, '$."key"')` (`index create`) matches.

use crate::domain::SearchTerm;
use crate::domain::filter::{PropertyPath, Scalar};
use crate::store::common::{Arg, Clause, JsonKind, literal_key};

/// The JSON path of `path`, as SQL (a literal or a bound parameter).
fn json_path(out: &mut Clause, path: &PropertyPath) {
    let text: String = std::iter::once("$".to_owned())
        .chain(path.keys().iter().map(|key| format!(".\"{key}\"")))
        .collect();
    if path.keys().iter().all(|key| literal_key(key)) {
        out.push(&format!("'{text}'"));
    } else {
        out.arg(Arg::Text(text));
    }
}

fn call(out: &mut Clause, function: &str, path: &PropertyPath) {
    out.push(&format!("{function}(properties, "));
    json_path(out, path);
    out.push(")");
}

pub(super) fn search_condition(out: &mut Clause, term: &SearchTerm) {
    out.push("instr(search_text, ")
        .arg(Arg::Text(term.as_str().to_owned()))
        .push(") > 0");
}

pub(super) fn json_exists(out: &mut Clause, path: &PropertyPath, present: bool) {
    call(out, "json_type", path);
    out.push(if present { " IS NOT NULL" } else { " IS NULL" });
}

fn type_test(out: &mut Clause, path: &PropertyPath, kind: JsonKind) {
    call(out, "json_type", path);
    out.push(match kind {
        JsonKind::Number => " IN ('integer', 'real')",
        JsonKind::Text => " = 'text'",
    });
}

pub(super) fn json_equals(out: &mut Clause, path: &PropertyPath, value: &Scalar) {
    let (kind, arg) = match value {
        Scalar::Null | Scalar::Bool(_) => {
            let name = match value {
                Scalar::Bool(true) => "true",
                Scalar::Bool(false) => "false",
                _ => "null",
            };
            call(out, "json_type", path);
            out.push(&format!(" = '{name}'"));
            return;
        }
        Scalar::Number(n) => (JsonKind::Number, Arg::Float(*n)),
        Scalar::Text(text) => (JsonKind::Text, Arg::Text(text.clone())),
        Scalar::Time(time) => (JsonKind::Text, Arg::Text(time.to_rfc3339())),
    };
    json_compare(out, path, kind, "=", arg);
}

/// The type test and the raw `json_extract`, rather than one CASE expression, so an
/// index on `json_extract(properties, '$."key"')` serves the comparison.
pub(super) fn json_compare(
    out: &mut Clause,
    path: &PropertyPath,
    kind: JsonKind,
    op: &str,
    arg: Arg,
) {
    out.push("(");
    type_test(out, path, kind);
    out.push(" AND ");
    call(out, "json_extract", path);
    out.push(&format!(" {op} ")).arg(arg).push(")");
}

pub(super) fn json_typed(out: &mut Clause, path: &PropertyPath, kind: JsonKind) {
    out.push("(CASE WHEN ");
    type_test(out, path, kind);
    out.push(" THEN ");
    call(out, "json_extract", path);
    out.push(" END)");
}
