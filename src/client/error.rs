//! Client errors: the SDK error code of a failed call, read from the
//! `google.rpc.ErrorInfo` the service attaches to every error.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error_reason::{ERROR_DOMAIN, ErrorReason};

/// Why a client call failed. A status from this service becomes the variant of its
/// `ErrorInfo.reason` (one per `ErrorReason`); anything else is `Rpc`.
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
    /// A watch's resume token is older than the changes the server retains.
    #[error("RESUME_TOKEN_EXPIRED: {message}")]
    ResumeTokenExpired { message: String },
    /// A conditional write's etag is not the contact's current one; nothing changed.
    #[error("ETAG_MISMATCH: {message}")]
    EtagMismatch { message: String },
    /// The tenant is over its rate limit; its next call is let in after `retry_after`.
    /// The call was refused before it did anything, so even a write may be repeated.
    #[error("RATE_LIMITED: {message}")]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The request message is over the server's size limit; sending it again fails
    /// again.
    #[error("MESSAGE_TOO_LARGE: {message}")]
    MessageTooLarge { message: String },
    /// The call's deadline or the server's request timeout passed. A write may or may
    /// not have landed, so it is not retried for the caller.
    #[error("DEADLINE_EXCEEDED: {message}")]
    DeadlineExceeded { message: String },
    /// A bug in the service; the details are in its log.
    #[error("INTERNAL: {message}")]
    Internal { message: String },
    /// A status without this service's `ErrorInfo`: the transport, a proxy, the
    /// client's own deadline, or a reason from a newer server this build does not know.
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
    /// The SDK error code; `None` for a status that carries none (see `Rpc`). A failure
    /// to connect counts as UNAVAILABLE, and a caller-side mistake as VALIDATION_ERROR.
    pub fn reason(&self) -> Option<ErrorReason> {
        let reason = match self {
            Self::Validation { .. } | Self::InvalidInput(_) => ErrorReason::ValidationError,
            Self::Conflict { .. } => ErrorReason::Conflict,
            Self::NotFound { .. } => ErrorReason::NotFound,
            Self::Unauthorised { .. } => ErrorReason::Unauthorised,
            Self::Unavailable { .. } | Self::Connect(_) => ErrorReason::Unavailable,
            Self::FailedPrecondition { .. } => ErrorReason::FailedPrecondition,
            Self::ResumeTokenExpired { .. } => ErrorReason::ResumeTokenExpired,
            Self::EtagMismatch { .. } => ErrorReason::EtagMismatch,
            Self::RateLimited { .. } => ErrorReason::RateLimited,
            Self::MessageTooLarge { .. } => ErrorReason::MessageTooLarge,
            Self::DeadlineExceeded { .. } => ErrorReason::DeadlineExceeded,
            Self::Internal { .. } => ErrorReason::Internal,
            Self::Rpc(status) if status.code() == Code::Unavailable => ErrorReason::Unavailable,
            Self::Rpc(_) => return None,
        };
        Some(reason)
    }

    /// Whether the same call may succeed if tried again: the service or its database
    /// was unavailable, the connection broke, or the tenant was rate limited and the
    /// server said when to come back (wait `retry_after` first). The client retries
    /// reads by itself (`RetryPolicy`); this is for the caller's own writes.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::Connect(_) => true,
            Self::RateLimited { retry_after, .. } => retry_after.is_some(),
            Self::Rpc(status) => retry_wait(status).is_some(),
            _ => false,
        }
    }
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        let details = status.get_error_details();
        let Some(reason) = reason_of(&details) else {
            return Self::Rpc(Box::new(status));
        };
        let message = status.message().to_owned();
        let retry_after = || details.retry_info().and_then(|retry| retry.retry_delay);
        // Exhaustive: a reason added to `ErrorReason` does not compile until the client
        // has a variant for it.
        match reason {
            ErrorReason::ValidationError => Self::Validation {
                message,
                field: details
                    .bad_request()
                    .and_then(|bad| bad.field_violations.first())
                    .map(|violation| violation.field.clone()),
            },
            ErrorReason::Conflict => Self::Conflict { message },
            ErrorReason::NotFound => Self::NotFound { message },
            ErrorReason::Unauthorised => Self::Unauthorised { message },
            ErrorReason::Unavailable => Self::Unavailable {
                message,
                retry_after: retry_after(),
            },
            ErrorReason::FailedPrecondition => Self::FailedPrecondition { message },
            ErrorReason::ResumeTokenExpired => Self::ResumeTokenExpired { message },
            ErrorReason::EtagMismatch => Self::EtagMismatch { message },
            ErrorReason::RateLimited => Self::RateLimited {
                message,
                retry_after: retry_after(),
            },
            ErrorReason::MessageTooLarge => Self::MessageTooLarge { message },
            ErrorReason::DeadlineExceeded => Self::DeadlineExceeded { message },
            ErrorReason::Internal => Self::Internal { message },
        }
    }
}

/// The reason in this service's `ErrorInfo`, if the status has one this build knows.
fn reason_of(details: &ErrorDetails) -> Option<ErrorReason> {
    let info = details
        .error_info()
        .filter(|info| info.domain == ERROR_DOMAIN)?;
    ErrorReason::parse(&info.reason)
}

/// Whether a call (or the rest of a stream) may be tried again as it was, and the
/// least wait before it (the retry policy's backoff applies on top):
/// - UNAVAILABLE from the server: at once (its `RetryInfo` is not waited for, as
///   before; the policy's backoff spaces the attempts).
/// - a broken connection under the call: at once. It shows up as the transport's own
///   error (it has a `source`), never as a status the server sent, so a real INTERNAL
///   from the service is not retried.
/// - RATE_LIMITED with `RetryInfo`: after its delay. The call was refused before it
///   did anything; without a delay the server gave no promise, so it is not retried.
///   Every other RESOURCE_EXHAUSTED (MESSAGE_TOO_LARGE, the codec's own limits) would
///   fail again and is not retried.
pub(crate) fn retry_wait(status: &Status) -> Option<Duration> {
    match status.code() {
        Code::Unavailable => Some(Duration::ZERO),
        Code::Unknown | Code::Internal | Code::Cancelled => {
            std::error::Error::source(status).map(|_| Duration::ZERO)
        }
        Code::ResourceExhausted => {
            let details = status.get_error_details();
            match reason_of(&details) {
                Some(ErrorReason::RateLimited) => details.retry_info()?.retry_delay,
                _ => None,
            }
        }
        _ => None,
    }
}

/// How long to wait before retry number `attempt` of a call that failed with
/// `status`, or `None` when it is not retried: not retryable, out of attempts, or the
/// server asks for a longer wait than the policy's `max_backoff` allows.
pub(crate) fn retry_after(
    status: &Status,
    attempt: u32,
    policy: &super::RetryPolicy,
) -> Option<Duration> {
    if attempt > policy.max_retries {
        return None;
    }
    let least = retry_wait(status)?;
    if least > policy.max_backoff {
        return None;
    }
    Some(least.max(policy.backoff(attempt)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::client::RetryPolicy;

    /// A status as the service builds it: the reason's code, its `ErrorInfo`, and
    /// `RetryInfo` when given.
    fn status(reason: ErrorReason, retry: Option<Duration>) -> Status {
        let mut details = ErrorDetails::new();
        details.set_error_info(reason.as_str(), ERROR_DOMAIN, HashMap::new());
        if retry.is_some() {
            details.set_retry_info(retry);
        }
        Status::with_error_details(reason.code(), "m", details)
    }

    #[test]
    fn every_reason_the_server_sends_decodes_to_its_own_variant() {
        for &reason in ErrorReason::ALL {
            let err = ClientError::from(status(reason, None));
            assert_eq!(err.reason(), Some(reason), "{reason}: {err:?}");
            assert!(!matches!(err, ClientError::Rpc(_)), "{reason}: {err:?}");
            assert_eq!(err.to_string(), format!("{reason}: m"));
        }
    }

    #[test]
    fn a_status_without_a_known_reason_of_this_service_is_rpc() {
        let mut foreign = ErrorDetails::new();
        foreign.set_error_info("NOT_FOUND", "example.com", HashMap::new());
        let mut newer = ErrorDetails::new();
        newer.set_error_info("QUOTA_GONE", ERROR_DOMAIN, HashMap::new());
        for (what, status) in [
            ("no details", Status::not_found("m")),
            (
                "other domain",
                Status::with_error_details(Code::NotFound, "m", foreign),
            ),
            (
                "unknown reason",
                Status::with_error_details(Code::Aborted, "m", newer),
            ),
        ] {
            let err = ClientError::from(status);
            assert!(matches!(err, ClientError::Rpc(_)), "{what}: {err:?}");
            assert_eq!(err.reason(), None, "{what}");
        }
    }

    #[test]
    fn only_unavailable_and_rate_limited_with_a_delay_are_retried() {
        let delay = Duration::from_millis(300);
        let cases = [
            (
                "unavailable",
                status(ErrorReason::Unavailable, Some(delay)),
                Some(Duration::ZERO),
            ),
            (
                "rate limited",
                status(ErrorReason::RateLimited, Some(delay)),
                Some(delay),
            ),
            (
                "rate limited, no delay",
                status(ErrorReason::RateLimited, None),
                None,
            ),
            (
                "too large",
                status(ErrorReason::MessageTooLarge, None),
                None,
            ),
            ("codec limit", Status::resource_exhausted("m"), None),
            (
                "deadline",
                status(ErrorReason::DeadlineExceeded, None),
                None,
            ),
            ("internal", status(ErrorReason::Internal, None), None),
            ("conflict", status(ErrorReason::Conflict, None), None),
        ];
        for (what, status, want) in cases {
            assert_eq!(retry_wait(&status), want, "{what}");
            let err = ClientError::from(status);
            assert_eq!(err.is_retryable(), want.is_some(), "{what}: {err:?}");
        }
    }

    #[test]
    fn a_retry_waits_for_retry_info_within_the_policy() {
        let policy = RetryPolicy::default();
        let limited = |ms| status(ErrorReason::RateLimited, Some(Duration::from_millis(ms)));
        // The server's delay, or the backoff when that is longer.
        assert_eq!(
            retry_after(&limited(300), 1, &policy),
            Some(Duration::from_millis(300))
        );
        assert_eq!(
            retry_after(&limited(1), 2, &policy),
            Some(policy.backoff(2))
        );
        // Out of attempts, or asked to wait longer than the policy allows.
        let last = policy.max_retries;
        assert!(retry_after(&limited(1), last, &policy).is_some());
        assert_eq!(retry_after(&limited(1), last + 1, &policy), None);
        assert_eq!(retry_after(&limited(60_000), 1, &policy), None);
        assert_eq!(retry_after(&limited(1), 1, &RetryPolicy::none()), None);
    }
}
