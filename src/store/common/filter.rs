//! Contact filters, orders and keyset positions as SQL, written once for both
//! databases (issue 16). What differs (how a property is read from the stored JSON,
//! byte-order collation, the substring function) comes from the `Dialect`. Every
//! operand is a bound parameter; a property key appears in the SQL text only when it
//! is a plain name (`literal_key`), so that a hot property's expression index
//! (`kraiter-contacts index create`) matches the queries' expressions.

use chrono::{DateTime, Utc};

use super::db::{SqlDb, SqlQuery};
use super::types::{DbTime, JsonText};
use super::{Dialect, Param};
use crate::domain::filter::{Cmp, Condition, Field, Filter, PropertyPath, Scalar, Test};
use crate::domain::{ContactKey, ContactOrder, ContactQuery, Direction, TenantId};

/// A statement parameter of a filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Text(String),
    Float(f64),
    Bool(bool),
    Time(DateTime<Utc>),
    /// JSON text, bound as `jsonb` on PostgreSQL.
    Json(String),
}

/// SQL text with `?` placeholders and their parameters, in order.
#[derive(Debug, Default)]
pub(crate) struct Clause {
    pub sql: String,
    pub args: Vec<Arg>,
}

impl Clause {
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Pushes a `?` bound to `arg`.
    pub fn arg(&mut self, arg: Arg) -> &mut Self {
        self.sql.push('?');
        self.args.push(arg);
        self
    }
}

/// The JSON type of a property value, as far as filters compare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonKind {
    Number,
    Text,
}

/// A key that may stand in the SQL text as a literal: letters, digits, `_` and `-`,
/// which need no quoting in a string literal or in either database's JSON path.
pub(crate) fn literal_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Binds `arg` to `query`.
pub(crate) fn bind_arg<'q, DB: SqlDb>(query: SqlQuery<'q, DB>, arg: &'q Arg) -> SqlQuery<'q, DB> {
    match arg {
        Arg::Text(text) => <DB as Param<'q, &'q str>>::push(query, text.as_str()),
        Arg::Float(n) => <DB as Param<'q, f64>>::push(query, *n),
        Arg::Bool(b) => <DB as Param<'q, bool>>::push(query, *b),
        Arg::Time(t) => <DB as Param<'q, DbTime>>::push(query, DbTime(*t)),
        Arg::Json(json) => <DB as Param<'q, JsonText<&'q str>>>::push(query, JsonText(json)),
    }
}

/// ` AND ...` for the query's `search`, `suppressed` and `filter` (not the tenant).
pub(crate) fn query_conditions<DB: Dialect>(out: &mut Clause, query: &ContactQuery) {
    if let Some(term) = &query.search {
        out.push(" AND ");
        DB::search_condition(out, term);
    }
    if let Some(suppressed) = query.suppressed {
        out.push(" AND suppressed = ").arg(Arg::Bool(suppressed));
    }
    filter_condition::<DB>(out, query);
}

/// ` AND (...)` for the query's filter, if any.
pub(crate) fn filter_condition<DB: Dialect>(out: &mut Clause, query: &ContactQuery) {
    if let Some(filter) = &query.filter {
        out.push(" AND ");
        filter_sql::<DB>(out, filter.root());
    }
}

/// ` AND id >= ...` for a list in id order whose filter bounds `created_at` from
/// below, so the walk of the tenant's ids starts where the range does rather than at
/// its first contact. Exact, not a guess: the service makes no id earlier than its
/// contact's `created_at` (`ContactId::generate_not_before`), and a row that breaks
/// this anyway (written by other means) is recorded in `contact_id_floors` by a
/// trigger (migrations `postgres/0009`, `sqlite/0007`); the walk starts at the
/// smaller of the range's floor and that record. The filter itself is still applied.
pub(crate) fn id_floor_condition(out: &mut Clause, tenant: &TenantId, query: &ContactQuery) {
    if query.order != ContactOrder::Id {
        return;
    }
    let Some(floor) = query.filter.as_ref().and_then(|f| created_floor(f.root())) else {
        return;
    };
    let Some(time) = ulid_time(floor) else {
        return;
    };
    let floor = format!("con_{time}");
    out.push(
        " AND id >= COALESCE((SELECT f.min_id FROM contact_id_floors f \
         WHERE f.tenant_id = ",
    )
    .arg(Arg::Text(tenant.as_str().to_owned()))
    .push(" AND f.min_id < ")
    .arg(Arg::Text(floor.clone()))
    .push("), ")
    .arg(Arg::Text(floor))
    .push(")");
}

/// A time that every contact `filter` matches was created at or after, if the
/// filter implies one.
fn created_floor(filter: &Filter) -> Option<DateTime<Utc>> {
    match filter {
        // Any member's floor holds; the latest is the tightest.
        Filter::All(members) => members.iter().filter_map(created_floor).max(),
        // Only a floor that every branch has holds, the earliest of them.
        Filter::Any(members) => {
            let floors: Option<Vec<_>> = members.iter().map(created_floor).collect();
            floors?.into_iter().min()
        }
        Filter::Condition(condition) if *condition.field() == Field::CreatedAt => {
            let time = |scalar: &Scalar| match scalar {
                Scalar::Time(time) => Some(*time),
                _ => None,
            };
            match condition.test() {
                Test::Cmp(Cmp::Gt | Cmp::Ge, value) | Test::Eq(value) => time(value),
                Test::In(values) => {
                    let times: Option<Vec<_>> = values.iter().map(time).collect();
                    times?.into_iter().min()
                }
                _ => None,
            }
        }
        Filter::Condition(_) => None,
    }
}

/// The ULID time part (ten Crockford base32 characters) of the millisecond `at`
/// falls in: every id made at or after `at` sorts at or after `con_` + it. `None`
/// before the epoch or past the ULID range (no floor then).
pub(crate) fn ulid_time(at: DateTime<Utc>) -> Option<String> {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let ms = u64::try_from(at.timestamp_micros().div_euclid(1000)).ok()?;
    if ms >= 1 << 48 {
        return None;
    }
    Some(
        (0..10)
            .rev()
            .map(|i| ALPHABET[((ms >> (5 * i)) & 31) as usize] as char)
            .collect(),
    )
}

fn filter_sql<DB: Dialect>(out: &mut Clause, filter: &Filter) {
    let (members, joiner) = match filter {
        Filter::Condition(condition) => return condition_sql::<DB>(out, condition),
        Filter::All(members) => (members, " AND "),
        Filter::Any(members) => (members, " OR "),
    };
    out.push("(");
    for (i, member) in members.iter().enumerate() {
        if i > 0 {
            out.push(joiner);
        }
        filter_sql::<DB>(out, member);
    }
    out.push(")");
}

fn condition_sql<DB: Dialect>(out: &mut Clause, condition: &Condition) {
    let column = match condition.field() {
        Field::Property(path) => return property_sql::<DB>(out, path, condition.test()),
        Field::Email => "email_key",
        Field::CreatedAt => "created_at",
        Field::UpdatedAt => "updated_at",
        Field::Suppressed => "suppressed",
        Field::Unsubscribed => "unsubscribed",
    };
    column_sql::<DB>(out, column, condition.test());
}

fn scalar_arg(scalar: &Scalar) -> Arg {
    match scalar {
        Scalar::Bool(b) => Arg::Bool(*b),
        Scalar::Number(n) => Arg::Float(*n),
        Scalar::Text(text) => Arg::Text(text.clone()),
        Scalar::Time(time) => Arg::Time(*time),
        // Validation lets null only into EQUALS on a property (`json_equals`).
        Scalar::Null => Arg::Json("null".into()),
    }
}

/// A test of a system column; its operands are of the column's type (validation).
fn column_sql<DB: Dialect>(out: &mut Clause, column: &str, test: &Test) {
    let ordered = if column == "email_key" {
        format!("{column}{}", DB::BYTE_ORDER)
    } else {
        column.to_owned()
    };
    match test {
        Test::Eq(value) => {
            out.push(&format!("{column} = ")).arg(scalar_arg(value));
        }
        Test::Ne(value) => {
            out.push(&format!("{column} <> ")).arg(scalar_arg(value));
        }
        Test::Cmp(cmp, value) => {
            out.push(&format!("{ordered} {} ", cmp.sql()))
                .arg(scalar_arg(value));
        }
        Test::In(values) => any_of(out, values, |out, value| {
            out.push(&format!("{column} = ")).arg(scalar_arg(value));
        }),
        Test::Contains(needle) => {
            out.push(&format!("{}({column}, ", DB::FIND))
                .arg(Arg::Text(needle.clone()))
                .push(") > 0");
        }
        Test::StartsWith(prefix) => starts_with(out, column, prefix),
        // Validation refuses these on system fields.
        Test::Exists => {
            out.push("TRUE");
        }
        Test::NotExists => {
            out.push("FALSE");
        }
    }
}

fn starts_with(out: &mut Clause, expr: &str, prefix: &str) {
    out.push(&format!("substr({expr}, 1, length("))
        .arg(Arg::Text(prefix.to_owned()))
        .push(")) = ")
        .arg(Arg::Text(prefix.to_owned()));
}

fn any_of(out: &mut Clause, values: &[Scalar], each: impl Fn(&mut Clause, &Scalar)) {
    out.push("(");
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(" OR ");
        }
        each(out, value);
    }
    out.push(")");
}

fn kind_of(scalar: &Scalar) -> Option<JsonKind> {
    match scalar {
        Scalar::Number(_) => Some(JsonKind::Number),
        Scalar::Text(_) => Some(JsonKind::Text),
        _ => None,
    }
}

fn property_sql<DB: Dialect>(out: &mut Clause, path: &PropertyPath, test: &Test) {
    match test {
        Test::Exists => DB::json_exists(out, path, true),
        Test::NotExists => DB::json_exists(out, path, false),
        Test::Eq(value) => DB::json_equals(out, path, value),
        Test::In(values) => any_of(out, values, |out, value| DB::json_equals(out, path, value)),
        Test::Ne(value) | Test::Cmp(_, value) => {
            let op = match test {
                Test::Cmp(cmp, _) => cmp.sql(),
                _ => "<>",
            };
            // Validation lets only numbers and strings (booleans become EQUALS) here.
            let kind = kind_of(value).unwrap_or(JsonKind::Text);
            DB::json_compare(out, path, kind, op, scalar_arg(value));
        }
        Test::Contains(needle) => {
            out.push(&format!("{}(lower(", DB::FIND));
            DB::json_typed(out, path, JsonKind::Text);
            out.push("), ").arg(Arg::Text(needle.clone())).push(") > 0");
        }
        Test::StartsWith(prefix) => {
            let mut typed = Clause::default();
            DB::json_typed(&mut typed, path, JsonKind::Text);
            out.args.extend(typed.args);
            starts_with(out, &format!("lower({})", typed.sql), prefix);
        }
    }
}

/// The JSON document `{"k1": {"k2": value}}` that holds `value` at `path`, for
/// containment (`@>`) on PostgreSQL.
pub(crate) fn containment(path: &PropertyPath, value: &Scalar) -> String {
    let mut doc = match value {
        Scalar::Null => serde_json::Value::Null,
        Scalar::Bool(b) => serde_json::Value::Bool(*b),
        Scalar::Number(n) => serde_json::Number::from_f64(*n)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Scalar::Text(text) => serde_json::Value::String(text.clone()),
        Scalar::Time(time) => serde_json::Value::String(time.to_rfc3339()),
    };
    for key in path.keys().iter().rev() {
        let mut map = serde_json::Map::new();
        map.insert(key.clone(), doc);
        doc = serde_json::Value::Object(map);
    }
    doc.to_string()
}

/// ` AND ...` resuming after `after` in `order`.
pub(crate) fn keyset<DB: Dialect>(out: &mut Clause, order: ContactOrder, after: &ContactKey) {
    let cmp = match order.direction() {
        Direction::Asc => ">",
        Direction::Desc => "<",
    };
    match after {
        ContactKey::Id(id) => {
            out.push(&format!(" AND id {cmp} "))
                .arg(Arg::Text(id.clone()));
        }
        ContactKey::Time(key) => {
            let column = match order {
                ContactOrder::UpdatedAt(_) => "updated_at",
                _ => "created_at",
            };
            // A signed cursor's time is within range (`TimeKey::decode`).
            let time = DateTime::from_timestamp_micros(key.timestamp_micros).unwrap_or_default();
            out.push(&format!(" AND ({column}, id) {cmp} ("))
                .arg(Arg::Time(time))
                .push(", ")
                .arg(Arg::Text(key.id.clone()))
                .push(")");
        }
        ContactKey::Email { key, id } => {
            out.push(&format!(" AND (email_key{}, id) {cmp} (", DB::BYTE_ORDER))
                .arg(Arg::Text(key.clone()))
                .push(", ")
                .arg(Arg::Text(id.clone()))
                .push(")");
        }
    }
}

/// The `ORDER BY` list of `order`, ties broken by id.
pub(crate) fn order_by<DB: Dialect>(order: ContactOrder) -> String {
    let dir = match order.direction() {
        Direction::Asc => "",
        Direction::Desc => " DESC",
    };
    match order {
        ContactOrder::Id => "id".to_owned(),
        ContactOrder::CreatedAt(_) => format!("created_at{dir}, id{dir}"),
        ContactOrder::UpdatedAt(_) => format!("updated_at{dir}, id{dir}"),
        ContactOrder::Email(_) => format!("email_key{}{dir}, id{dir}", DB::BYTE_ORDER),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::ulid_time;
    use crate::domain::ContactId;

    #[test]
    fn the_floor_of_a_time_is_the_time_part_of_ids_made_then() {
        for micros in [0, 999, 1_000, 1_733_400_000_123_456, (1 << 48) * 1000 - 1] {
            let at = DateTime::<Utc>::from_timestamp_micros(micros).expect("in range");
            let ms = u64::try_from(micros / 1000).expect("positive");
            let ulid = ulid::Ulid::from_parts(ms, 0).to_string();
            assert_eq!(ulid_time(at).as_deref(), Some(&ulid[..10]), "{micros}");
        }
        let before = DateTime::<Utc>::from_timestamp_micros(-1).expect("in range");
        assert_eq!(ulid_time(before), None);
        let past = DateTime::<Utc>::from_timestamp_micros((1 << 48) * 1000).expect("in range");
        assert_eq!(ulid_time(past), None);
        let now = crate::domain::now();
        let id = ContactId::generate_not_before(now);
        assert!(id.as_str() >= format!("con_{}", ulid_time(now).expect("now")).as_str());
    }
}
