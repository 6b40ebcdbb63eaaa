use crate::domain::{RuleError, ValidationError};

/// What can go wrong in a store, classified once (see `classify` in each backend)
/// so the gRPC edge maps kinds, not driver messages.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such record in the tenant; names what was looked for (`contact`, `send`, ...).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The caller's key, checked with the call (`Access::key_hash`), is not a live
    /// key of its tenant: nothing was read or written.
    #[error("api key rejected")]
    KeyRejected,
    /// The current state does not allow the change.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// A conditional write's etag names another version of the contact than the
    /// current one; nothing was written.
    #[error("the etag does not match the contact's current version")]
    EtagMismatch,
    /// Changes after a watch's resume position were purged by retention.
    #[error("the resume token is older than the retained changes")]
    ResumeTokenExpired,
    /// A unique key is taken; `field` names the request field it came from.
    #[error("`{field}` is already in use")]
    Conflict { field: &'static str },
    /// Input the database refused that the domain checks did not catch.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A bounded queue in front of the database is full; retrying later may help.
    #[error("too much {0} waiting")]
    Overloaded(&'static str),
    /// The database cannot be reached or is overloaded; retrying may help.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("database error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// A transaction lost a race for locks (PostgreSQL's deadlock detector or
    /// serialization failure chose it): nothing it did stays, and running it again
    /// may succeed.
    pub fn is_contention(&self) -> bool {
        match self {
            Self::Unavailable(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("40P01" | "40001"))
            }
            _ => false,
        }
    }

    /// The same error for another caller waiting on the same statement: the kind and
    /// message are kept; a driver error's cause survives as text only.
    pub fn duplicate(&self) -> Self {
        match self {
            Self::NotFound(what) => Self::NotFound(what),
            Self::KeyRejected => Self::KeyRejected,
            Self::Overloaded(what) => Self::Overloaded(what),
            Self::Rule(rule) => Self::Rule(rule.clone()),
            Self::Conflict { field } => Self::Conflict { field },
            Self::EtagMismatch => Self::EtagMismatch,
            Self::ResumeTokenExpired => Self::ResumeTokenExpired,
            Self::Invalid(invalid) => Self::Invalid(invalid.clone()),
            Self::Unavailable(cause) => {
                Self::Unavailable(sqlx::Error::Io(std::io::Error::other(cause.to_string())))
            }
            Self::Config(text) => Self::Config(text.clone()),
            Self::Internal(cause) => Self::internal(cause.to_string()),
        }
    }

    pub fn internal(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(err.into())
    }
}
