use serde_json::{Map, Value};

use super::ValidationError;

/// A valid request that the current state does not allow (a send moving backwards,
/// cancelling a send that already went out): FAILED_PRECONDITION at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(pub String);

/// Checks a free-text field from another service: at most `max` characters, no
/// control characters (NUL included, which PostgreSQL cannot store).
pub fn text(raw: &str, field: &str, max: usize, required: bool) -> Result<String, ValidationError> {
    if required && raw.trim().is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if raw.chars().count() > max {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(raw.to_owned())
}

/// Builds a JSON object from `(key, value)` pairs, for timeline data.
pub fn object<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
