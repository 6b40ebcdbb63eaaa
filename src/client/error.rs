//! Client errors: the SDK error code of a failed call, read from the
//! `google.rpc.ErrorInfo` the service attaches to every error.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::api::ERROR_DOMAIN;

/// The SDK error codes (`ErrorInfo.reason`), as in the README's error model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    ValidationError,
    Conflict,
    NotFound,
    Unauthorised,
    Unavailable,
    FailedPrecondition,
    Internal,
    /// A status without this service's `ErrorInfo`: the network, a proxy, or a
    /// newer server's code this client does not know.
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ValidationError => "VALIDATION_ERROR",
            Self::Conflict => "CONFLICT",
            Self::NotFound => "NOT_FOUND",
            Self::Unauthorised => "UNAUTHORISED",
            Self::Unavailable => "UNAVAILABLE",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Internal => "INTERNAL",
            Self::Unknown => "UNKNOWN",
        }
    }

    fn from_reason(reason: &str) -> Self {
        match reason {
            "VALIDATION_ERROR" => Self::ValidationError,
            "CONFLICT" => Self::Conflict,
            "NOT_FOUND" => Self::NotFound,
            "UNAUTHORISED" => Self::Unauthorised,
            "UNAVAILABLE" => Self::Unavailable,
            "FAILED_PRECONDITION" => Self::FailedPrecondition,
            "INTERNAL" => Self::Internal,
            _ => Self::Unknown,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request was invalid; `field` names the request field when the server said.
    #[error("VALIDATION_ERROR: {message}")]
    Validation {
        message: String,
        field: Option<String>,
    },
    /// The email belongs to another contact of the tenant.
    #[error("CONFLICT: {message}")]
    Conflict { message: String },
    /// No such contact (or send, enrolment, ...) in the caller's tenant.
    #[error("NOT_FOUND: {message}")]
    NotFound { message: String },
    /// Missing, unknown or revoked API key.
    #[error("UNAUTHORISED: {message}")]
    Unauthorised { message: String },
    /// The service or its database cannot be reached; retry after `retry_after`.
    #[error("UNAVAILABLE: {message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The record's state does not allow the change (ingestion).
    #[error("FAILED_PRECONDITION: {message}")]
    FailedPrecondition { message: String },
    /// A bug in the service; the details are in its log.
    #[error("INTERNAL: {message}")]
    Internal { message: String },
    /// A status that carries no SDK code (transport failures, proxies, deadlines).
    #[error("{}: {}", .0.code(), .0.message())]
    Rpc(Box<Status>),
    /// The endpoint could not be reached or configured.
    #[error("cannot connect")]
    Connect(#[from] tonic::transport::Error),
    /// A caller-side mistake caught before any call (an API key that is not valid
    /// header text, an endpoint that is not a URI).
    #[error("{0}")]
    InvalidInput(String),
}

impl ClientError {
    /// The SDK error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Validation { .. } | Self::InvalidInput(_) => ErrorCode::ValidationError,
            Self::Conflict { .. } => ErrorCode::Conflict,
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::Unauthorised { .. } => ErrorCode::Unauthorised,
            Self::Unavailable { .. } | Self::Connect(_) => ErrorCode::Unavailable,
            Self::FailedPrecondition { .. } => ErrorCode::FailedPrecondition,
            Self::Internal { .. } => ErrorCode::Internal,
            Self::Rpc(status) if status.code() == Code::Unavailable => ErrorCode::Unavailable,
            Self::Rpc(_) => ErrorCode::Unknown,
        }
    }
}

impl ClientError {
    /// Whether the same call may succeed if tried again: the service or its database
    /// was unavailable, or the connection broke.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::Connect(_) => true,
            Self::Rpc(status) => is_retryable(status),
            _ => false,
        }
    }
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        let details = status.get_error_details();
        let Some(info) = details
            .error_info()
            .filter(|info| info.domain == ERROR_DOMAIN)
        else {
            return Self::Rpc(Box::new(status));
        };
        let message = status.message().to_owned();
        match ErrorCode::from_reason(&info.reason) {
            ErrorCode::ValidationError => Self::Validation {
                message,
                field: details
                    .bad_request()
                    .and_then(|bad| bad.field_violations.first())
                    .map(|violation| violation.field.clone()),
            },
            ErrorCode::Conflict => Self::Conflict { message },
            ErrorCode::NotFound => Self::NotFound { message },
            ErrorCode::Unauthorised => Self::Unauthorised { message },
            ErrorCode::Unavailable => Self::Unavailable {
                message,
                retry_after: details.retry_info().and_then(|retry| retry.retry_delay),
            },
            ErrorCode::FailedPrecondition => Self::FailedPrecondition { message },
            ErrorCode::Internal => Self::Internal { message },
            ErrorCode::Unknown => Self::Rpc(Box::new(status)),
        }
    }
}

/// Whether a call (or the rest of a stream) may be tried again as it was: the
/// server said UNAVAILABLE, or the connection broke under the call. A broken
/// connection shows up as the transport's own error (it has a `source`), never as a
/// status the server sent, so a real INTERNAL from the service is not retried.
pub(crate) fn is_retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Internal | Code::Cancelled => {
            std::error::Error::source(status).is_some()
        }
        _ => false,
    }
}
