/// Caller input that breaks a rule of the domain. `field` names the request field
/// (as in `google.rpc.BadRequest.FieldViolation.field`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {description}")]
pub struct ValidationError {
    pub field: String,
    pub description: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}
