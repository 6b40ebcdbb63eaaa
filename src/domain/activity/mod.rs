//! Records other services write about a contact: sends, scheduled sends, sequence
//! enrolments, segment memberships and events; their lifecycle rules and the timeline
//! entries each change leaves.

use super::{ContactId, Email};

/// Who an ingestion call is about: an existing contact, or an address that is
/// created as a contact when the tenant has none.
#[derive(Debug, Clone)]
pub enum ContactRef {
    Id(ContactId),
    Email(Email),
}

/// AIP-155 request id: a retry with the same id returns the first result and
/// writes nothing again; `fingerprint` tells a retry from a different request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub request_id: String,
    pub method: &'static str,
    pub fingerprint: [u8; 32],
}

impl Idempotency {
    /// SHA-256 of the request id: what is kept of it once its contact is erased (a
    /// caller's request id may name the person).
    pub fn request_hash(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(self.request_id.as_bytes()).into()
    }
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name { $($variant),* }

        impl $name {
            /// The spelling stored in the database and shown in timeline data.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }

            /// Parses a stored spelling.
            pub fn from_db(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)* _ => None }
            }
        }
    };
}

// After the macro: `macro_rules!` is visible only to code that follows it.
mod enrolment;
mod events;
mod scheduled;
mod segments;
mod sends;

pub use enrolment::{Enrolment, EnrolmentChange, EnrolmentStatus, NewEnrolment};
pub use events::{NewEvent, TrackedEvent, UNSUBSCRIBE_EVENT, contact_unsubscribed};
pub use scheduled::{NewScheduledSend, ScheduledSend, ScheduledStatus};
pub use segments::{Membership, MembershipChange, MembershipOutcome, segment_entry};
pub use sends::{
    Engagement, NewSend, SendEngagement, SendRecord, SendSource, SendStatus, SendStatusChange,
    contact_suppressed,
};
