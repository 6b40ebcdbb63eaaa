//! Typed contact filters (issue 16): what a caller may ask of a contact's system
//! fields and properties, checked once at the edge. A `ContactFilter` holds only
//! conditions whose operands fit their field and operator, within bounded depth and
//! size, so a store renders it without checks of its own, and `matches` states what
//! every store must return (the tests hold both backends to it).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::ValidationError;

/// Most levels of groups and conditions, the outermost filter being level 1.
pub const MAX_DEPTH: usize = 5;
/// Most filters (groups and conditions) in one request's filter.
pub const MAX_FILTERS: usize = 64;
/// Most values of an IN condition.
pub const MAX_IN_VALUES: usize = 100;
/// Most characters of a string operand.
pub const MAX_TEXT_CHARS: usize = 1024;
/// Most keys of a property path: properties nest at most 16 levels.
pub const MAX_PATH_KEYS: usize = 16;
const MAX_KEY_CHARS: usize = 256;

/// A filter of contacts: a condition, or a group of filters.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every member matches.
    All(Vec<Filter>),
    /// At least one member matches.
    Any(Vec<Filter>),
    Condition(Condition),
}

/// A whole filter, within `MAX_DEPTH` and `MAX_FILTERS`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactFilter(Filter);

impl ContactFilter {
    /// `field` names the request field for the error (`filter`).
    pub fn new(root: Filter, field: &str) -> Result<Self, ValidationError> {
        let (depth, count) = measure(&root);
        if depth > MAX_DEPTH {
            return Err(ValidationError::new(
                field,
                format!("nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        if count > MAX_FILTERS {
            return Err(ValidationError::new(
                field,
                format!("holds more than {MAX_FILTERS} filters"),
            ));
        }
        Ok(Self(root))
    }

    pub fn root(&self) -> &Filter {
        &self.0
    }

    /// A stable text of the filter, for binding cursors to it.
    pub fn fingerprint(&self) -> String {
        format!("{:?}", self.0)
    }

    /// Whether `contact` matches: the semantics every store implements.
    pub fn matches(&self, contact: &Subject<'_>) -> bool {
        self.0.matches(contact)
    }
}

fn measure(filter: &Filter) -> (usize, usize) {
    match filter {
        Filter::Condition(_) => (1, 1),
        Filter::All(members) | Filter::Any(members) => {
            let (mut depth, mut count) = (0, 1);
            for member in members {
                let (d, c) = measure(member);
                depth = depth.max(d);
                count += c;
            }
            (depth + 1, count)
        }
    }
}

/// What a filter reads of a contact.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The lowercased email (`Email::key`).
    pub email_key: &'a str,
    pub properties: &'a Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub suppressed: bool,
    pub unsubscribed: bool,
}

/// The field a condition tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Property(PropertyPath),
    Email,
    CreatedAt,
    UpdatedAt,
    Suppressed,
    Unsubscribed,
}

impl Field {
    /// `email`, `created_at`, `updated_at`, `suppressed`, `unsubscribed` or
    /// `properties.<key>[.<key>...]`.
    pub fn parse(raw: &str, field: &str) -> Result<Self, ValidationError> {
        Ok(match raw {
            "email" => Self::Email,
            "created_at" => Self::CreatedAt,
            "updated_at" => Self::UpdatedAt,
            "suppressed" => Self::Suppressed,
            "unsubscribed" => Self::Unsubscribed,
            _ => match raw.strip_prefix("properties.") {
                Some(path) => Self::Property(PropertyPath::parse(path, field)?),
                None => {
                    return Err(ValidationError::new(
                        field,
                        "must be `email`, `created_at`, `updated_at`, `suppressed`, \
                         `unsubscribed` or `properties.<key>`",
                    ));
                }
            },
        })
    }
}

/// The keys leading to a nested property, each 1-256 characters without `.`, `"`,
/// `\` or control characters (so a key is the same in every database's path syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyPath(Vec<String>);

impl PropertyPath {
    pub fn parse(raw: &str, field: &str) -> Result<Self, ValidationError> {
        let keys: Vec<String> = raw.split('.').map(str::to_owned).collect();
        if keys.len() > MAX_PATH_KEYS {
            return Err(ValidationError::new(
                field,
                format!("has more than {MAX_PATH_KEYS} keys"),
            ));
        }
        for key in &keys {
            let chars = key.chars().count();
            let bad = |c: char| c.is_control() || c == '"' || c == '\\';
            if chars == 0 || chars > MAX_KEY_CHARS || key.chars().any(bad) {
                return Err(ValidationError::new(
                    field,
                    "has a key that is empty, over 256 characters, or holds `\"`, `\\` \
                     or a control character",
                ));
            }
        }
        Ok(Self(keys))
    }

    pub fn keys(&self) -> &[String] {
        &self.0
    }

    /// The value at the path, if every key leads through an object to it.
    pub fn lookup<'a>(&self, properties: &'a Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.0.split_first()?;
        let mut value = properties.get(first)?;
        for key in rest {
            value = value.as_object()?.get(key)?;
        }
        Some(value)
    }
}

/// What a condition of the request tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equals,
    NotEquals,
    LessThan,
    LessOrEqual,
    GreaterThan,
    GreaterOrEqual,
    Exists,
    NotExists,
    In,
    Contains,
    StartsWith,
}

/// A condition's operand as the request gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    None,
    Value(Scalar),
    Values(Vec<Scalar>),
    Time(DateTime<Utc>),
}

/// A JSON scalar, or a time for the system time fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
    Time(DateTime<Utc>),
}

/// An order comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    pub fn sql(self) -> &'static str {
        match self {
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }

    fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Greater, Less};
        match self {
            Self::Lt => ordering == Less,
            Self::Le => ordering != Greater,
            Self::Gt => ordering == Greater,
            Self::Ge => ordering != Less,
        }
    }
}

/// What a valid condition tests, its operand fitted to its field: email operands
/// lowercased, CONTAINS and STARTS_WITH operands folded (ASCII letters on
/// properties), a NOT_EQUALS on a flag turned into an EQUALS.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Exists,
    NotExists,
    Eq(Scalar),
    Ne(Scalar),
    In(Vec<Scalar>),
    Cmp(Cmp, Scalar),
    Contains(String),
    StartsWith(String),
}

/// A condition whose operand fits its field and operator.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    field: Field,
    test: Test,
}

impl Condition {
    /// Checks the operand against the field and operator. Errors name the part of
    /// the condition at fault (`operator`, `value`, `values`, `timestamp`).
    pub fn new(field: Field, op: Operator, operand: Operand) -> Result<Self, ValidationError> {
        let test = super::filter_rules::test_for(&field, op, operand)?;
        Ok(Self { field, test })
    }

    pub fn field(&self) -> &Field {
        &self.field
    }

    pub fn test(&self) -> &Test {
        &self.test
    }

    fn matches(&self, contact: &Subject<'_>) -> bool {
        let value = match &self.field {
            Field::Property(path) => {
                let found = path.lookup(contact.properties);
                return match &self.test {
                    Test::Exists => found.is_some(),
                    Test::NotExists => found.is_none(),
                    test => found.is_some_and(|value| json_test(test, value)),
                };
            }
            Field::Email => Scalar::Text(contact.email_key.to_owned()),
            Field::CreatedAt => Scalar::Time(contact.created_at),
            Field::UpdatedAt => Scalar::Time(contact.updated_at),
            Field::Suppressed => Scalar::Bool(contact.suppressed),
            Field::Unsubscribed => Scalar::Bool(contact.unsubscribed),
        };
        scalar_test(&self.test, &value, |text| text.to_owned())
    }
}

impl Filter {
    fn matches(&self, contact: &Subject<'_>) -> bool {
        match self {
            Self::All(members) => members.iter().all(|m| m.matches(contact)),
            Self::Any(members) => members.iter().any(|m| m.matches(contact)),
            Self::Condition(condition) => condition.matches(contact),
        }
    }
}

fn json_test(test: &Test, value: &Value) -> bool {
    let scalar = match value {
        Value::Null => Scalar::Null,
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Number(n) => match n.as_f64() {
            Some(n) => Scalar::Number(n),
            None => return false,
        },
        Value::String(s) => Scalar::Text(s.clone()),
        Value::Array(_) | Value::Object(_) => return false,
    };
    scalar_test(test, &scalar, |text| text.to_ascii_lowercase())
}

/// `value` against `test`; `fold` folds a string value for CONTAINS and STARTS_WITH.
fn scalar_test(test: &Test, value: &Scalar, fold: impl Fn(&str) -> String) -> bool {
    match test {
        Test::Exists => true,
        Test::NotExists => false,
        Test::Eq(operand) => same(value, operand) == Some(std::cmp::Ordering::Equal),
        Test::Ne(operand) => same(value, operand).is_some_and(|o| o.is_ne()),
        Test::In(operands) => operands
            .iter()
            .any(|operand| same(value, operand) == Some(std::cmp::Ordering::Equal)),
        Test::Cmp(cmp, operand) => same(value, operand).is_some_and(|o| cmp.holds(o)),
        Test::Contains(needle) => match value {
            Scalar::Text(text) => fold(text).contains(needle.as_str()),
            _ => false,
        },
        Test::StartsWith(prefix) => match value {
            Scalar::Text(text) => fold(text).starts_with(prefix.as_str()),
            _ => false,
        },
    }
}

/// The order of two values of the same type; `None` across types.
fn same(a: &Scalar, b: &Scalar) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Scalar::Null, Scalar::Null) => Some(std::cmp::Ordering::Equal),
        (Scalar::Bool(a), Scalar::Bool(b)) => Some(a.cmp(b)),
        (Scalar::Number(a), Scalar::Number(b)) => a.partial_cmp(b),
        (Scalar::Text(a), Scalar::Text(b)) => Some(a.as_str().cmp(b.as_str())),
        (Scalar::Time(a), Scalar::Time(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn subject(properties: &Map<String, Value>) -> Subject<'_> {
        let at = Utc.timestamp_opt(1_700_000_000, 0).single().expect("valid");
        Subject {
            email_key: "ann@example.com",
            properties,
            created_at: at,
            updated_at: at,
            suppressed: false,
            unsubscribed: true,
        }
    }

    fn property(path: &str, op: Operator, operand: Operand) -> Filter {
        let field = Field::parse(&format!("properties.{path}"), "field").expect("valid path");
        Filter::Condition(Condition::new(field, op, operand).expect("valid condition"))
    }

    #[test]
    fn comparisons_match_only_values_of_the_operands_type() {
        let props = json!({"n": 5, "s": "5", "nested": {"b": true}});
        let props = props.as_object().expect("object");
        let cases = [
            ("n", Operator::GreaterThan, Scalar::Number(4.0), true),
            ("s", Operator::GreaterThan, Scalar::Number(4.0), false),
            ("n", Operator::NotEquals, Scalar::Text("x".into()), false),
            ("s", Operator::NotEquals, Scalar::Text("x".into()), true),
            ("missing", Operator::NotEquals, Scalar::Number(1.0), false),
            ("nested.b", Operator::Equals, Scalar::Bool(true), true),
            ("nested.b", Operator::NotEquals, Scalar::Bool(true), false),
        ];
        for (path, op, operand, expected) in cases {
            let root = property(path, op, Operand::Value(operand.clone()));
            let filter = ContactFilter::new(root, "filter").expect("small");
            assert_eq!(
                filter.matches(&subject(props)),
                expected,
                "{path} {op:?} {operand:?}"
            );
        }
    }

    #[test]
    fn depth_and_size_are_bounded() {
        let leaf = || property("a", Operator::Exists, Operand::None);
        let mut deep = leaf();
        for _ in 0..MAX_DEPTH {
            deep = Filter::All(vec![deep]);
        }
        assert!(ContactFilter::new(deep, "filter").is_err(), "too deep");
        let wide = Filter::Any((0..MAX_FILTERS).map(|_| leaf()).collect());
        assert!(ContactFilter::new(wide, "filter").is_err(), "too many");
        let fits = Filter::Any((1..MAX_FILTERS).map(|_| leaf()).collect());
        assert!(ContactFilter::new(fits, "filter").is_ok());
    }

    #[test]
    fn operands_that_do_not_fit_name_their_part() {
        let cases = [
            (Field::Email, Operator::Exists, Operand::None, "operator"),
            (
                Field::CreatedAt,
                Operator::Equals,
                Operand::Value(Scalar::Number(1.0)),
                "timestamp",
            ),
            (
                Field::Suppressed,
                Operator::LessThan,
                Operand::Value(Scalar::Bool(true)),
                "operator",
            ),
            (
                Field::Email,
                Operator::In,
                Operand::Values(vec![]),
                "values",
            ),
            (
                Field::Email,
                Operator::Equals,
                Operand::Value(Scalar::Text("a\0".into())),
                "value",
            ),
        ];
        for (field, op, operand, part) in cases {
            let err = Condition::new(field.clone(), op, operand).expect_err("refused");
            assert_eq!(err.field, part, "{field:?} {op:?}");
        }
    }
}

/// Property paths come from callers: any string parses or is refused, never panics,
/// and what parses is keys without separators or quoting characters.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_path_parses_to_plain_keys_or_is_refused(raw in ".{0,300}") {
            if let Ok(path) = PropertyPath::parse(&raw, "field") {
                prop_assert!(path.keys().len() <= MAX_PATH_KEYS);
                for key in path.keys() {
                    prop_assert!(!key.is_empty() && !key.contains(['.', '"', '\\']));
                    prop_assert!(!key.chars().any(char::is_control));
                }
            }
        }
    }
}
