use std::sync::Mutex;
use std::time::SystemTime;

use ulid::{Generator, Ulid};

use super::ValidationError;

/// Ids are `prefix_` + a ULID. One monotonic generator per process, so ids made in
/// the same millisecond still sort in creation order.
static GENERATOR: Mutex<Generator> = Mutex::new(Generator::new());

/// A new time-ordered id such as `con_01JD...`.
pub fn new_id(prefix: &str) -> String {
    new_id_not_before(prefix, SystemTime::UNIX_EPOCH)
}

/// A new time-ordered id whose time part is no earlier than `at` (nor than now):
/// a contact's id is never earlier than its `created_at`, which lets a `created_at`
/// range bound a walk in id order (`store/common/filter.rs`, `id_floor`).
pub fn new_id_not_before(prefix: &str, at: SystemTime) -> String {
    let at = at.max(SystemTime::now());
    let ulid = next_ulid(&mut lock_generator(), at);
    format!("{prefix}_{ulid}")
}

/// `n` new ids, increasing, each with a time part no earlier than `at` (nor than
/// now), taken from the generator in one go: ids made afterwards sort after all of
/// them.
pub fn new_ids_not_before(prefix: &str, at: SystemTime, n: usize) -> Vec<String> {
    let at = at.max(SystemTime::now());
    let mut generator = lock_generator();
    (0..n)
        .map(|_| format!("{prefix}_{}", next_ulid(&mut generator, at)))
        .collect()
}

fn lock_generator() -> std::sync::MutexGuard<'static, Generator> {
    GENERATOR
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}

/// The generator never goes below its last id's time, so the id's time is at least
/// `at`. Overflow needs 2^80 ids in one millisecond; fall back to a fresh random
/// ULID of that time.
fn next_ulid(generator: &mut Generator, at: SystemTime) -> Ulid {
    generator
        .generate_from_datetime(at)
        .unwrap_or_else(|_| Ulid::from_datetime(at))
}

/// Checks that `raw` is `prefix_` followed by a ULID, naming `field` when it is not.
pub fn parse_prefixed_id(raw: &str, prefix: &str, field: &str) -> Result<String, ValidationError> {
    if raw.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    let ulid = raw
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .filter(|ulid| ulid.len() == 26 && Ulid::from_string(ulid).is_ok());
    match ulid {
        // Crockford base32 is case-insensitive; keep one spelling so ids compare equal.
        Some(ulid) => Ok(format!("{prefix}_{}", ulid.to_ascii_uppercase())),
        None => Err(ValidationError::new(
            field,
            format!("must be an id of the form `{prefix}_<ulid>`"),
        )),
    }
}

/// Id of a contact: `con_` + ULID.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct ContactId(String);

impl ContactId {
    pub const PREFIX: &'static str = "con";

    pub fn generate() -> Self {
        Self(new_id(Self::PREFIX))
    }

    /// A new id whose time part is no earlier than `created_at` (see `new_id_not_before`).
    pub fn generate_not_before(created_at: chrono::DateTime<chrono::Utc>) -> Self {
        Self(new_id_not_before(Self::PREFIX, created_at.into()))
    }

    /// `n` new ids in increasing order, each no earlier than `created_at`.
    pub fn generate_many_not_before(
        created_at: chrono::DateTime<chrono::Utc>,
        n: usize,
    ) -> Vec<Self> {
        new_ids_not_before(Self::PREFIX, created_at.into(), n)
            .into_iter()
            .map(Self)
            .collect()
    }

    pub fn parse(raw: &str, field: &str) -> Result<Self, ValidationError> {
        parse_prefixed_id(raw, Self::PREFIX, field).map(Self)
    }

    /// Rebuilds an id read back from a store.
    pub fn from_trusted(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_sort_by_creation() {
        let ids: Vec<ContactId> = (0..1000).map(|_| ContactId::generate()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{:?} !< {:?}", pair[0], pair[1]);
        }
        let parsed = ContactId::parse(ids[0].as_str(), "id").expect("own id parses");
        assert_eq!(parsed, ids[0]);
    }

    #[test]
    fn an_id_is_never_earlier_than_the_time_it_is_made_for() {
        let time_ms = |id: &ContactId| {
            Ulid::from_string(&id.as_str()[4..])
                .expect("a ulid")
                .timestamp_ms()
        };
        let past = chrono::Utc::now() - chrono::Duration::days(3);
        let id = ContactId::generate_not_before(past);
        assert!(time_ms(&id) >= chrono::Utc::now().timestamp_millis() as u64 - 60_000);
        // A time ahead of the clock (and of the generator's last id) wins.
        let ahead = chrono::Utc::now() + chrono::Duration::milliseconds(500);
        let id = ContactId::generate_not_before(ahead);
        assert!(time_ms(&id) >= ahead.timestamp_millis() as u64);
        // Ids made afterwards still sort after it.
        assert!(ContactId::generate() > id);
        assert!(ContactId::generate_not_before(past) > id);
    }

    #[test]
    fn ids_made_together_increase_and_precede_later_ones() {
        let past = chrono::Utc::now() - chrono::Duration::days(3);
        let ids = ContactId::generate_many_not_before(past, 500);
        assert_eq!(ids.len(), 500);
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{:?} !< {:?}", pair[0], pair[1]);
        }
        let later = ContactId::generate_not_before(past);
        assert!(ids.last().is_some_and(|last| *last < later));
    }

    #[test]
    fn lowercase_ulid_is_normalised() {
        let id = ContactId::generate();
        let lower = id.as_str().to_ascii_lowercase();
        assert_eq!(ContactId::parse(&lower, "id").expect("parses"), id);
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "con_",
            "con_123",
            "snd_01JD0000000000000000000000",
            "01JD0000000000000000000000",
            "con_01JD000000000000000000000!",
        ] {
            let err = ContactId::parse(bad, "id").expect_err(bad);
            assert_eq!(err.field, "id");
        }
    }
}

/// Fuzzing of id parsing (issue 7).
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_string_parses_to_a_canonical_id_or_is_refused(raw in "(con_)?[0-9A-Za-z!_\u{e9}]{0,40}") {
            if let Ok(id) = ContactId::parse(&raw, "id") {
                prop_assert_eq!(id.as_str().len(), 30);
                prop_assert_eq!(ContactId::parse(id.as_str(), "id"), Ok(id.clone()));
            }
        }

        #[test]
        fn any_text_is_refused_or_kept(raw in ".{0,100}") {
            let _ = parse_prefixed_id(&raw, "snd", "send_id");
            let _ = crate::domain::TimeKey::decode(&raw);
            let _ = crate::domain::SearchTerm::parse(&raw);
            let _ = crate::domain::TenantId::parse(&raw);
            if let Ok(kept) = crate::domain::text(&raw, "name", 50, true) {
                prop_assert!(kept.chars().count() <= 50);
                prop_assert!(!kept.chars().any(char::is_control));
            }
        }
    }
}
