//! Types and rules of the contacts domain. No I/O, no protobuf, no SQL: values here
//! are parsed at the edge, so invalid data cannot exist past it.

mod activity;
mod api_key;
mod change;
mod contact;
mod cursor;
mod email;
mod error;
mod etag;
pub mod filter;
mod filter_rules;
mod ids;
mod order;
mod page;
mod properties;
mod rules;
mod tenant;
mod timeline;

pub use activity::{
    ContactRef, Engagement, Enrolment, EnrolmentChange, EnrolmentStatus, Idempotency, Membership,
    MembershipChange, MembershipOutcome, NewEnrolment, NewEvent, NewScheduledSend, NewSend,
    ScheduledSend, ScheduledStatus, SendEngagement, SendRecord, SendSource, SendStatus,
    SendStatusChange, TrackedEvent, UNSUBSCRIBE_EVENT, contact_suppressed, contact_unsubscribed,
    segment_entry,
};
pub use api_key::{NewApiKey, hash as hash_api_key};
pub use change::{
    ChangeKind, ChangePosition, ChangeRecord, ContactChange, WatchStart, changed_fields,
};
pub use contact::{
    Contact, ContactQuery, ContactRow, ContactUpdate, ContactUpsert, ContactView, NewContact,
    SearchTerm,
};
pub use cursor::{CursorKey, CursorKind, CursorSigner, PageCursor};
pub use email::Email;
pub use error::ValidationError;
pub use etag::Etag;
pub use filter::ContactFilter;
pub use ids::{ContactId, new_id, parse_prefixed_id};
pub use order::{ContactKey, ContactOrder, Direction};
pub use page::{PageSize, parse_max_pages};
pub use properties::{Properties, PropertiesJson, PropertiesPatch, search_text};
pub use rules::{RuleError, text};
pub use tenant::TenantId;
pub use timeline::{
    TimeKey, TimelineEntry, TimelineOrder, TimelineQuery, contact_created, contact_updated,
    types as timeline_types,
};

/// Current time at the precision both stores keep (microseconds), so a value read
/// back equals the value written.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    let micros = now.timestamp_micros();
    chrono::DateTime::from_timestamp_micros(micros).expect("current time is within chrono's range")
}
