//! The SDK error codes: the `reason` of the `google.rpc.ErrorInfo` on every error the
//! service returns, each with the one gRPC status code it comes with. The server's
//! status mapping (`api::ApiError`) and the client's decoding (`client::ClientError`)
//! both use this table, and a test holds the contract's comment and the README to it,
//! so no side can know a reason the others do not.

use tonic::Code;

/// `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "contacts.kraiter.dev";

/// Declares `ErrorReason` from one table, so a reason cannot be added without its
/// text and its code, nor be left out of `ALL`.
macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $variant:ident = $text:literal, $code:ident;)*) => {
        /// An SDK error code, as carried in `ErrorInfo.reason`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorReason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorReason {
            /// Every reason, in the order the contract and the README list them.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The text in `ErrorInfo.reason`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }

            /// The gRPC status code a status with this reason has.
            pub const fn code(self) -> Code {
                match self {
                    $(Self::$variant => Code::$code,)*
                }
            }
        }
    };
}

reasons! {
    /// `INVALID_ARGUMENT`: the request is invalid; a `google.rpc.BadRequest` names the
    /// field.
    ValidationError = "VALIDATION_ERROR", InvalidArgument;
    /// `ALREADY_EXISTS`: the email belongs to another contact of the tenant.
    Conflict = "CONFLICT", AlreadyExists;
    /// `NOT_FOUND`: no such record in the caller's tenant.
    NotFound = "NOT_FOUND", NotFound;
    /// `UNAUTHENTICATED`: a missing, unknown or revoked API key.
    Unauthorised = "UNAUTHORISED", Unauthenticated;
    /// `UNAVAILABLE`: the database cannot be reached, or no connection to it came free
    /// in time; `google.rpc.RetryInfo` says when to try again.
    Unavailable = "UNAVAILABLE", Unavailable;
    /// `FAILED_PRECONDITION`: the record's state does not allow the change (ingestion).
    FailedPrecondition = "FAILED_PRECONDITION", FailedPrecondition;
    /// `FAILED_PRECONDITION`: a WatchContacts `resume_token` is older than the changes
    /// the server retains (`--change-retention`); start again from a fresh read.
    ResumeTokenExpired = "RESUME_TOKEN_EXPIRED", FailedPrecondition;
    /// `ABORTED`: the `etag` of a conditional write is not the contact's current one;
    /// nothing changed. Read the contact again and retry.
    EtagMismatch = "ETAG_MISMATCH", Aborted;
    /// `RESOURCE_EXHAUSTED`: the tenant is over its rate limit; `google.rpc.RetryInfo`
    /// says when its next call is let in. Refused before any work, so a retry is safe.
    RateLimited = "RATE_LIMITED", ResourceExhausted;
    /// `RESOURCE_EXHAUSTED`: the request message is over the server's size limit; the
    /// same request is refused again.
    MessageTooLarge = "MESSAGE_TOO_LARGE", ResourceExhausted;
    /// `DEADLINE_EXCEEDED`: the caller's deadline or the server's request timeout
    /// passed; a write may or may not have landed.
    DeadlineExceeded = "DEADLINE_EXCEEDED", DeadlineExceeded;
    /// `INTERNAL`: a bug in the service; the details are in its log.
    Internal = "INTERNAL", Internal;
}

impl ErrorReason {
    /// The reason `ErrorInfo.reason` names; `None` for a text this build does not know
    /// (a newer server's reason).
    pub fn parse(reason: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|known| known.as_str() == reason)
    }
}

impl std::fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE_PROTO: &str = include_str!("../proto/kraiter/contacts/v1/contacts_service.proto");
    const README: &str = include_str!("../README.md");

    /// `Code::ResourceExhausted` as the gRPC spec spells it: `RESOURCE_EXHAUSTED`.
    fn spec_name(code: Code) -> String {
        let mut name = String::new();
        for (i, c) in format!("{code:?}").char_indices() {
            if c.is_ascii_uppercase() && i > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_uppercase());
        }
        name
    }

    fn table() -> Vec<(String, String)> {
        ErrorReason::ALL
            .iter()
            .map(|reason| (reason.as_str().to_owned(), spec_name(reason.code())))
            .collect()
    }

    /// `- REASON (CODE): ...` items of the comment above `service ContactsService`.
    fn proto_table() -> Vec<(String, String)> {
        let comment = SERVICE_PROTO
            .split("\nservice ContactsService")
            .next()
            .expect("the file declares ContactsService");
        let mut rows = Vec::new();
        for line in comment.lines() {
            let Some(item) = line.strip_prefix("// - ") else {
                continue;
            };
            let (reason, rest) = item.split_once(" (").expect("`- REASON (CODE)`");
            let (code, _) = rest.split_once(')').expect("`- REASON (CODE)`");
            rows.push((reason.to_owned(), code.to_owned()));
        }
        rows
    }

    /// `` | `REASON` | `CODE` | `` rows of the README's error model table.
    fn readme_table() -> Vec<(String, String)> {
        let section = README
            .split("\n## Error model")
            .nth(1)
            .expect("README has an Error model section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let mut rows = Vec::new();
        for line in section.lines() {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if cells.len() < 3 || !cells[0].starts_with('`') {
                continue;
            }
            let plain = |cell: &str| cell.trim_matches('`').to_owned();
            rows.push((plain(cells[0]), plain(cells[1])));
        }
        rows
    }

    #[test]
    fn the_contract_comment_lists_exactly_every_reason_with_its_code() {
        assert_eq!(
            proto_table(),
            table(),
            "contacts_service.proto vs ErrorReason::ALL"
        );
    }

    #[test]
    fn the_readme_lists_exactly_every_reason_with_its_code() {
        assert_eq!(
            readme_table(),
            table(),
            "README error model vs ErrorReason::ALL"
        );
    }

    #[test]
    fn every_reason_parses_back_from_its_text_and_nothing_else_does() {
        for &reason in ErrorReason::ALL {
            assert_eq!(
                ErrorReason::parse(reason.as_str()),
                Some(reason),
                "{reason}"
            );
        }
        for text in ["", "UNKNOWN", "not_found", "NOT_FOUND "] {
            assert_eq!(ErrorReason::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_spec_names_of_codes_are_the_grpc_spellings() {
        assert_eq!(spec_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(spec_name(Code::Internal), "INTERNAL");
    }
}
