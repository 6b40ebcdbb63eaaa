use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::{TenantId, ValidationError};

const VERSION: u8 = 1;
const FINGERPRINT_LEN: usize = 8;
const CHECKSUM_LEN: usize = 8;
/// Keyset keys are ids and timestamps; anything longer is not one of ours.
const MAX_KEY_LEN: usize = 256;

/// Which list a cursor belongs to; a cursor of one list is refused by the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CursorKind {
    Contacts = 1,
    Sends = 2,
    ScheduledSends = 3,
    Timeline = 4,
}

/// Opaque position in a streamed list: the keyset key of the last item delivered,
/// bound to the tenant and to the query (filters) it came from.
///
/// Layout before base64url: version, kind, fingerprint of the query, key, and a
/// checksum over the tenant and all of that. The checksum is not a secret MAC: a
/// forged cursor can only point into the caller's own tenant, since every query is
/// filtered by the tenant of the API key. It detects corruption and mix-ups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    kind: CursorKind,
    fingerprint: [u8; FINGERPRINT_LEN],
    key: String,
}

impl PageCursor {
    /// `query` lists the request's filters; a different filter makes a different cursor.
    pub fn new(kind: CursorKind, query: &[&str], key: String) -> Self {
        Self {
            kind,
            fingerprint: fingerprint(query),
            key,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn encode(&self, tenant: &TenantId) -> String {
        let mut bytes = Vec::with_capacity(2 + FINGERPRINT_LEN + self.key.len() + CHECKSUM_LEN);
        bytes.push(VERSION);
        bytes.push(self.kind as u8);
        bytes.extend_from_slice(&self.fingerprint);
        bytes.extend_from_slice(self.key.as_bytes());
        let sum = checksum(tenant, &bytes);
        bytes.extend_from_slice(&sum);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes a cursor for this tenant, list and query, or explains why it does not fit.
    /// Returns the keyset key.
    pub fn decode(
        raw: &str,
        tenant: &TenantId,
        kind: CursorKind,
        query: &[&str],
    ) -> Result<String, ValidationError> {
        let invalid = |why: &str| ValidationError::new("cursor", why);
        if raw.len() > 4 * (MAX_KEY_LEN + 32) / 3 {
            return Err(invalid("is too long to be a cursor of this service"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(raw.trim_end_matches('='))
            .map_err(|_| invalid("is not a cursor returned by this service"))?;
        let min = 2 + FINGERPRINT_LEN + CHECKSUM_LEN;
        if bytes.len() <= min {
            return Err(invalid("is not a cursor returned by this service"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if checksum(tenant, body) != sum {
            return Err(invalid("was not issued to this tenant or has been altered"));
        }
        if body[0] != VERSION || body[1] != kind as u8 {
            return Err(invalid("belongs to a different list"));
        }
        if body[2..2 + FINGERPRINT_LEN] != fingerprint(query) {
            return Err(invalid(
                "belongs to a query with different filters; start without a cursor",
            ));
        }
        String::from_utf8(body[2 + FINGERPRINT_LEN..].to_vec())
            .map_err(|_| invalid("is not a cursor returned by this service"))
    }
}

fn fingerprint(query: &[&str]) -> [u8; FINGERPRINT_LEN] {
    let mut hasher = Sha256::new();
    for part in query {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    first_bytes(hasher.finalize().as_slice())
}

fn checksum(tenant: &TenantId, body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut hasher = Sha256::new();
    hasher.update(b"kraiter-contacts cursor\0");
    hasher.update(tenant.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(body);
    first_bytes(hasher.finalize().as_slice())
}

fn first_bytes<const N: usize>(digest: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&digest[..N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).expect("valid tenant")
    }

    #[test]
    fn round_trips_for_the_same_tenant_list_and_query() {
        let cursor = PageCursor::new(CursorKind::Contacts, &["alice", "1"], "con_X".into());
        let raw = cursor.encode(&tenant("a"));
        let key = PageCursor::decode(&raw, &tenant("a"), CursorKind::Contacts, &["alice", "1"]);
        assert_eq!(key.as_deref(), Ok("con_X"));
    }

    #[test]
    fn refuses_foreign_tampered_and_garbage_cursors() {
        let cursor = PageCursor::new(CursorKind::Contacts, &["q"], "con_X".into());
        let raw = cursor.encode(&tenant("a"));
        let mut tampered = URL_SAFE_NO_PAD.decode(&raw).expect("own cursor decodes");
        tampered[11] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(tampered);
        let cases = [
            (raw.clone(), "b", CursorKind::Contacts, "q", "other tenant"),
            (raw.clone(), "a", CursorKind::Sends, "q", "other list"),
            (
                raw.clone(),
                "a",
                CursorKind::Contacts,
                "other",
                "other query",
            ),
            (tampered, "a", CursorKind::Contacts, "q", "tampered"),
            (
                raw[..raw.len() - 3].to_owned(),
                "a",
                CursorKind::Contacts,
                "q",
                "truncated",
            ),
            (
                "!!!".to_owned(),
                "a",
                CursorKind::Contacts,
                "q",
                "not base64",
            ),
            (
                "AAAA".to_owned(),
                "a",
                CursorKind::Contacts,
                "q",
                "too short",
            ),
            ("A".repeat(5000), "a", CursorKind::Contacts, "q", "too long"),
        ];
        for (raw, who, kind, query, why) in cases {
            let err = PageCursor::decode(&raw, &tenant(who), kind, &[query]).expect_err(why);
            assert_eq!(err.field, "cursor", "{why}");
        }
    }
}

/// Fuzzing of cursor decoding (issue 7): any string a caller sends is refused or
/// decoded, never a panic; what we encode decodes only for its tenant, list and query.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    fn tenant() -> impl Strategy<Value = TenantId> {
        "[a-z0-9][a-z0-9_-]{0,20}".prop_map(|name| TenantId::parse(&name).expect("valid"))
    }

    fn kind() -> impl Strategy<Value = CursorKind> {
        prop_oneof![
            Just(CursorKind::Contacts),
            Just(CursorKind::Sends),
            Just(CursorKind::ScheduledSends),
            Just(CursorKind::Timeline),
        ]
    }

    #[test]
    fn the_corpus_never_panics() {
        let a = TenantId::parse("a").expect("valid");
        for raw in include_str!("../../tests/corpus/cursors.txt").lines() {
            let _ = PageCursor::decode(raw, &a, CursorKind::Contacts, &[""]);
        }
    }

    // Keys are ids and `micros|id` time keys: printable ASCII, never empty.
    proptest! {
        #[test]
        fn any_string_decodes_or_is_refused(raw in ".{0,600}", tenant in tenant(), kind in kind()) {
            if let Err(err) = PageCursor::decode(&raw, &tenant, kind, &["q"]) {
                prop_assert_eq!(err.field, "cursor");
            }
        }

        #[test]
        fn any_bytes_in_base64_decode_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let a = TenantId::parse("a").expect("valid");
            let raw = URL_SAFE_NO_PAD.encode(&bytes);
            let _ = PageCursor::decode(&raw, &a, CursorKind::Timeline, &["x", "y"]);
        }

        #[test]
        fn a_cursor_round_trips_only_where_it_was_issued(
            key in "[ -~]{1,100}",
            query in prop::collection::vec(".{0,10}", 0..4),
            (owner, other) in (tenant(), tenant()),
            kind in kind(),
            flip in any::<prop::sample::Index>(),
        ) {
            let parts: Vec<&str> = query.iter().map(String::as_str).collect();
            let raw = PageCursor::new(kind, &parts, key.clone()).encode(&owner);
            prop_assert_eq!(PageCursor::decode(&raw, &owner, kind, &parts), Ok(key));
            if other != owner {
                prop_assert!(PageCursor::decode(&raw, &other, kind, &parts).is_err());
            }
            let mut bytes = URL_SAFE_NO_PAD.decode(&raw).expect("own cursor");
            let i = flip.index(bytes.len());
            bytes[i] ^= 0x01;
            let altered = URL_SAFE_NO_PAD.encode(&bytes);
            prop_assert!(PageCursor::decode(&altered, &owner, kind, &parts).is_err());
        }
    }
}
