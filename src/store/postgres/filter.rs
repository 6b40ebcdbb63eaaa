//! How PostgreSQL reads a property for a filter (`store::common::filter`): `jsonb`
//! operators on the stored document, equality as containment (`@>`) so the GIN
//! `jsonb_path_ops` index serves it, strings in byte order (`COLLATE "C"`, which also
//! makes `lower` fold ASCII letters only, as on SQLite).

use crate::domain::SearchTerm;
use crate::domain::filter::{PropertyPath, Scalar};
use crate::store::common::{Arg, Clause, JsonKind, containment, literal_key};

/// `(properties -> 'k1' -> ?)`: each key a literal when it may be, else bound.
fn value_at(out: &mut Clause, path: &PropertyPath) {
    out.push("(properties");
    for key in path.keys() {
        if literal_key(key) {
            out.push(&format!(" -> '{key}'"));
        } else {
            out.push(" -> ").arg(Arg::Text(key.clone()));
        }
    }
    out.push(")");
}

pub(super) fn search_condition(out: &mut Clause, term: &SearchTerm) {
    out.push("search_text LIKE ")
        .arg(Arg::Text(term.like_pattern()));
}

pub(super) fn json_exists(out: &mut Clause, path: &PropertyPath, present: bool) {
    value_at(out, path);
    out.push(if present { " IS NOT NULL" } else { " IS NULL" });
}

pub(super) fn json_equals(out: &mut Clause, path: &PropertyPath, value: &Scalar) {
    out.push("properties @> ")
        .arg(Arg::Json(containment(path, value)));
}

/// The value as `float8` or as text in byte order; NULL when absent or of another
/// type. `index create` builds its expression indexes on exactly these expressions.
pub(super) fn json_typed(out: &mut Clause, path: &PropertyPath, kind: JsonKind) {
    let (name, cast_open, cast_close) = match kind {
        JsonKind::Number => ("number", "(", ")::float8"),
        JsonKind::Text => ("string", "", " #>> '{}'"),
    };
    out.push("(CASE WHEN jsonb_typeof(");
    value_at(out, path);
    out.push(&format!(") = '{name}' THEN {cast_open}"));
    value_at(out, path);
    out.push(&format!("{cast_close} END)"));
    if kind == JsonKind::Text {
        out.push(" COLLATE \"C\"");
    }
}
