//! The one place where errors become gRPC statuses. Causes go to the log; the
//! caller gets a code, a short message, and the SDK error code in `ErrorInfo`.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::ValidationError;
pub use crate::error_reason::ERROR_DOMAIN;
use crate::error_reason::ErrorReason;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The tenant is over its rate limit; it may call again after `retry_after`.
    #[error("rate limit exceeded")]
    RateLimited { retry_after: std::time::Duration },
    /// The client's deadline or `--request-timeout` passed before the call finished.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The request message is larger than `--max-message-size`.
    #[error("request message too large")]
    MessageTooLarge { limit: usize },
    /// The answer would be larger than `limit` bytes encoded (BatchGetContacts).
    #[error("response message too large")]
    ResponseTooLarge { limit: usize },
}

impl ApiError {
    /// The SDK error code, carried as `ErrorInfo.reason`. Exhaustive over `StoreError`
    /// on purpose: a new kind of store error does not compile until it has a reason.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Self::Validation(_) => ErrorReason::ValidationError,
            Self::Store(store) => match store {
                StoreError::Invalid(_) => ErrorReason::ValidationError,
                StoreError::Conflict { .. } => ErrorReason::Conflict,
                StoreError::NotFound(_) => ErrorReason::NotFound,
                StoreError::KeyRejected => ErrorReason::Unauthorised,
                StoreError::Unavailable(_) | StoreError::Overloaded(_) => ErrorReason::Unavailable,
                StoreError::Rule(_) => ErrorReason::FailedPrecondition,
                StoreError::EtagMismatch => ErrorReason::EtagMismatch,
                StoreError::ResumeTokenExpired => ErrorReason::ResumeTokenExpired,
                StoreError::Config(_) | StoreError::Internal(_) => ErrorReason::Internal,
            },
            Self::Unauthenticated(_) => ErrorReason::Unauthorised,
            Self::RateLimited { .. } => ErrorReason::RateLimited,
            Self::DeadlineExceeded => ErrorReason::DeadlineExceeded,
            Self::MessageTooLarge { .. } | Self::ResponseTooLarge { .. } => {
                ErrorReason::MessageTooLarge
            }
        }
    }

    /// The gRPC status code: the reason's, so the two cannot disagree.
    pub fn code(&self) -> Code {
        self.reason().code()
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let code = err.code();
        let mut details = ErrorDetails::new();
        details.set_error_info(
            err.reason().as_str(),
            ERROR_DOMAIN,
            std::collections::HashMap::new(),
        );
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
            ApiError::Store(StoreError::Rule(rule)) => rule.to_string(),
            ApiError::Store(StoreError::EtagMismatch) => {
                "`etag` is not the contact's current etag; read it again".to_owned()
            }
            ApiError::Store(StoreError::ResumeTokenExpired) => {
                "`resume_token` is older than the retained changes; start again".to_owned()
            }
            ApiError::Store(StoreError::Overloaded(_)) => {
                details.set_retry_info(Some(std::time::Duration::from_secs(1)));
                "the server is overloaded; retry later".to_owned()
            }
            ApiError::Store(StoreError::Unavailable(cause)) => {
                details.set_retry_info(Some(std::time::Duration::from_secs(1)));
                match cause {
                    // Usually every connection busy (long counts or streams holding them
                    // all), rarely a database too slow to accept a new one: said so, so
                    // that an operator looks at load before the database.
                    sqlx::Error::PoolTimedOut => {
                        "no database connection came free within the acquire timeout; retry later"
                    }
                    _ => "the database is unavailable; retry later",
                }
                .to_owned()
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
            ApiError::ResponseTooLarge { limit } => format!(
                "the contacts asked for take more than {limit} bytes encoded; ask for fewer"
            ),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::RuleError;

    /// One error of each kind the service raises, with the reason it must carry.
    fn cases() -> Vec<(&'static str, ApiError, ErrorReason)> {
        let invalid = || ValidationError::new("email", "must not be empty");
        vec![
            ("validation", invalid().into(), ErrorReason::ValidationError),
            (
                "store refused input",
                StoreError::Invalid(invalid()).into(),
                ErrorReason::ValidationError,
            ),
            (
                "conflict",
                StoreError::Conflict { field: "email" }.into(),
                ErrorReason::Conflict,
            ),
            (
                "not found",
                StoreError::NotFound("contact").into(),
                ErrorReason::NotFound,
            ),
            (
                "no key",
                ApiError::Unauthenticated("missing api key"),
                ErrorReason::Unauthorised,
            ),
            (
                "database down",
                StoreError::Unavailable(sqlx::Error::PoolTimedOut).into(),
                ErrorReason::Unavailable,
            ),
            (
                "rule",
                StoreError::Rule(RuleError("a send cannot move backwards".into())).into(),
                ErrorReason::FailedPrecondition,
            ),
            (
                "stale etag",
                StoreError::EtagMismatch.into(),
                ErrorReason::EtagMismatch,
            ),
            (
                "expired token",
                StoreError::ResumeTokenExpired.into(),
                ErrorReason::ResumeTokenExpired,
            ),
            (
                "rate limited",
                ApiError::RateLimited {
                    retry_after: Duration::from_millis(300),
                },
                ErrorReason::RateLimited,
            ),
            (
                "too large",
                ApiError::MessageTooLarge { limit: 1024 },
                ErrorReason::MessageTooLarge,
            ),
            (
                "answer too large",
                ApiError::ResponseTooLarge { limit: 4096 },
                ErrorReason::MessageTooLarge,
            ),
            (
                "deadline",
                ApiError::DeadlineExceeded,
                ErrorReason::DeadlineExceeded,
            ),
            (
                "config",
                StoreError::Config("bad url".into()).into(),
                ErrorReason::Internal,
            ),
            (
                "store bug",
                StoreError::internal("unknown jsonb format version").into(),
                ErrorReason::Internal,
            ),
        ]
    }

    /// INTERNAL is only provoked end to end by a database row the service cannot read
    /// (`tests/api/contacts/reasons.rs`); the config and other store bugs are covered here.
    #[test]
    fn every_error_becomes_a_status_with_its_reason_code_and_domain() {
        let cases = cases();
        for &reason in ErrorReason::ALL {
            assert!(
                cases.iter().any(|(_, _, r)| *r == reason),
                "no case for {reason}"
            );
        }
        for (what, err, reason) in cases {
            assert_eq!(err.reason(), reason, "{what}");
            let status = Status::from(err);
            assert_eq!(status.code(), reason.code(), "{what}");
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(info.reason, reason.as_str(), "{what}");
            assert_eq!(info.domain, ERROR_DOMAIN, "{what}");
        }
    }

    #[test]
    fn internal_and_unavailable_statuses_carry_no_cause_text() {
        let cause = "password authentication failed for user \"kraiter\"";
        let internal = Status::from(ApiError::from(StoreError::internal(cause)));
        assert_eq!(internal.message(), "internal error");
        let io = std::io::Error::other(cause);
        let unavailable = Status::from(ApiError::from(StoreError::Unavailable(io.into())));
        assert!(
            !unavailable.message().contains("password"),
            "{unavailable:?}"
        );
        assert_eq!(
            unavailable
                .get_details_retry_info()
                .and_then(|r| r.retry_delay),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            unavailable.message(),
            "the database is unavailable; retry later"
        );
    }

    #[test]
    fn a_connection_wait_past_the_acquire_timeout_is_not_called_a_database_outage() {
        let busy = Status::from(ApiError::from(StoreError::Unavailable(
            sqlx::Error::PoolTimedOut,
        )));
        assert_eq!(busy.code(), Code::Unavailable);
        assert_eq!(
            busy.message(),
            "no database connection came free within the acquire timeout; retry later"
        );
        assert!(busy.get_details_retry_info().is_some(), "{busy:?}");
    }
}
