//! The one place where errors become gRPC statuses. Causes go to the log; the
//! caller gets a code, a short message, and the SDK error code in `ErrorInfo`.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::ValidationError;
use crate::store::StoreError;

/// `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "contacts.kraiter.dev";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The tenant is over its rate limit; it may call again after `retry_after`.
    #[error("rate limit exceeded")]
    RateLimited { retry_after: std::time::Duration },
    /// The client's deadline or `--request-timeout` passed before the call finished.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The request message is larger than `--max-message-size`.
    #[error("request message too large")]
    MessageTooLarge { limit: usize },
}

impl ApiError {
    /// The SDK error code, carried as `ErrorInfo.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Validation(_) | Self::Store(StoreError::Invalid(_)) => "VALIDATION_ERROR",
            Self::Store(StoreError::Conflict { .. }) => "CONFLICT",
            Self::Store(StoreError::NotFound(_)) => "NOT_FOUND",
            Self::Unauthenticated(_) | Self::Store(StoreError::KeyRejected) => "UNAUTHORISED",
            Self::Store(StoreError::Unavailable(_)) => "UNAVAILABLE",
            Self::FailedPrecondition(_) | Self::Store(StoreError::Rule(_)) => "FAILED_PRECONDITION",
            Self::Store(StoreError::Config(_) | StoreError::Internal(_)) => "INTERNAL",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::MessageTooLarge { .. } => "MESSAGE_TOO_LARGE",
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Self::Validation(_) | Self::Store(StoreError::Invalid(_)) => Code::InvalidArgument,
            Self::Store(StoreError::Conflict { .. }) => Code::AlreadyExists,
            Self::Store(StoreError::NotFound(_)) => Code::NotFound,
            Self::Unauthenticated(_) | Self::Store(StoreError::KeyRejected) => {
                Code::Unauthenticated
            }
            Self::Store(StoreError::Unavailable(_)) => Code::Unavailable,
            Self::FailedPrecondition(_) | Self::Store(StoreError::Rule(_)) => {
                Code::FailedPrecondition
            }
            Self::Store(StoreError::Config(_) | StoreError::Internal(_)) => Code::Internal,
            Self::RateLimited { .. } | Self::MessageTooLarge { .. } => Code::ResourceExhausted,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let code = err.code();
        let mut details = ErrorDetails::new();
        details.set_error_info(err.reason(), ERROR_DOMAIN, std::collections::HashMap::new());
        let message = match &err {
            ApiError::Validation(v) | ApiError::Store(StoreError::Invalid(v)) => {
                details.add_bad_request_violation(&v.field, &v.description);
                v.to_string()
            }
            ApiError::Store(StoreError::Conflict { field }) => {
                format!("a contact with this `{field}` already exists")
            }
            ApiError::Store(StoreError::NotFound(what)) => format!("{what} not found"),
            ApiError::Unauthenticated(why) => (*why).to_owned(),
            ApiError::Store(StoreError::KeyRejected) => "invalid or revoked api key".to_owned(),
            ApiError::FailedPrecondition(why) => why.clone(),
            ApiError::Store(StoreError::Rule(rule)) => rule.to_string(),
            ApiError::Store(StoreError::Unavailable(_)) => {
                details.set_retry_info(Some(std::time::Duration::from_secs(1)));
                "the database is unavailable; retry later".to_owned()
            }
            ApiError::Store(StoreError::Config(_) | StoreError::Internal(_)) => {
                "internal error".to_owned()
            }
            ApiError::RateLimited { retry_after } => {
                details.set_retry_info(Some(*retry_after));
                "rate limit exceeded; retry later".to_owned()
            }
            ApiError::DeadlineExceeded => "deadline exceeded".to_owned(),
            ApiError::MessageTooLarge { limit } => {
                format!("request message larger than the limit of {limit} bytes")
            }
        };
        if matches!(code, Code::Internal | Code::Unavailable) {
            // The cause chain stays in the log; the caller never sees driver text.
            tracing::error!(error = %error_chain(&err), "request failed");
        }
        Status::with_error_details(code, message, details)
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
