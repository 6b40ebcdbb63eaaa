use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{TenantId, ValidationError};

const VERSION: u8 = 2;
const FINGERPRINT_LEN: usize = 8;
/// Bytes of the HMAC-SHA-256 kept: 128 bits, beyond guessing.
const CHECKSUM_LEN: usize = 16;
/// Keyset keys are ids, timestamps and (the email order's) an id with an email key of
/// up to 254 characters of up to 4 bytes; anything longer is not one of ours.
const MAX_KEY_LEN: usize = 1100;

/// The deployment's secret for signing cursors: created once in the database by a
/// migration and shared by every replica, so a cursor from one replica resumes on any.
#[derive(Clone)]
pub struct CursorKey([u8; 32]);

impl CursorKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(<redacted>)")
    }
}

/// Which list a cursor belongs to; a cursor of one list is refused by the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CursorKind {
    Contacts = 1,
    Sends = 2,
    ScheduledSends = 3,
    Timeline = 4,
    /// A resume token of the change feed (WatchContacts).
    Changes = 5,
}

/// Opaque position in a streamed list: the keyset key of the last item delivered,
/// bound to the tenant and to the query (filters) it came from.
///
/// Layout before base64url: version, kind, fingerprint of the query, key, and a MAC
/// over the tenant and all of that, keyed with the deployment's `CursorKey`: a caller
/// cannot make a cursor, not even one into its own tenant, so every key a list
/// resumes from is one the service issued (and corruption and mix-ups are refused).
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

    pub fn encode(&self, tenant: &TenantId, signing: &CursorKey) -> String {
        signed(
            self.kind,
            &self.fingerprint,
            &self.key,
            keyed(signing, tenant),
        )
    }

    /// Decodes a cursor for this tenant, list and query, or explains why it does not fit.
    /// Returns the keyset key.
    pub fn decode(
        raw: &str,
        tenant: &TenantId,
        signing: &CursorKey,
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
        // `verify_truncated_left` compares in constant time.
        if !verifies(signing, tenant, body, sum) {
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

/// Signs the cursors of one list, query and tenant, as `PageCursor::encode` does,
/// byte for byte: the query's fingerprint and the MAC keyed for the tenant are made
/// once rather than per cursor (the change feed signs a token for every change).
#[derive(Clone)]
pub struct CursorSigner {
    kind: CursorKind,
    fingerprint: [u8; FINGERPRINT_LEN],
    mac: Hmac<Sha256>,
}

impl CursorSigner {
    pub fn new(signing: &CursorKey, tenant: &TenantId, kind: CursorKind, query: &[&str]) -> Self {
        Self {
            kind,
            fingerprint: fingerprint(query),
            mac: keyed(signing, tenant),
        }
    }

    /// The cursor of keyset key `key`.
    pub fn sign(&self, key: &str) -> String {
        signed(self.kind, &self.fingerprint, key, self.mac.clone())
    }
}

/// A cursor's bytes (version, list, query fingerprint, key) and their checksum by
/// `mac`, a tenant's MAC before any bytes (`keyed`), in base64.
fn signed(
    kind: CursorKind,
    fingerprint: &[u8; FINGERPRINT_LEN],
    key: &str,
    mut mac: Hmac<Sha256>,
) -> String {
    let mut bytes = Vec::with_capacity(2 + FINGERPRINT_LEN + key.len() + CHECKSUM_LEN);
    bytes.push(VERSION);
    bytes.push(kind as u8);
    bytes.extend_from_slice(fingerprint);
    bytes.extend_from_slice(key.as_bytes());
    mac.update(&bytes);
    let sum: [u8; CHECKSUM_LEN] = first_bytes(&mac.finalize().into_bytes());
    bytes.extend_from_slice(&sum);
    URL_SAFE_NO_PAD.encode(bytes)
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

/// The MAC of a tenant's cursors before their bytes.
fn keyed(signing: &CursorKey, tenant: &TenantId) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&signing.0).expect("HMAC takes a key of any length");
    mac.update(b"kraiter-contacts cursor\0");
    mac.update(tenant.as_str().as_bytes());
    mac.update(&[0]);
    mac
}

fn verifies(signing: &CursorKey, tenant: &TenantId, body: &[u8], sum: &[u8]) -> bool {
    let mut mac = keyed(signing, tenant);
    mac.update(body);
    mac.verify_truncated_left(sum).is_ok()
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

    fn signing() -> CursorKey {
        CursorKey::from_bytes([7; 32])
    }

    #[test]
    fn a_cursor_signed_with_another_key_is_refused() {
        let cursor = PageCursor::new(CursorKind::Contacts, &["q"], "con_X".into());
        let forged = cursor.encode(&tenant("a"), &CursorKey::from_bytes([0; 32]));
        let err = PageCursor::decode(
            &forged,
            &tenant("a"),
            &signing(),
            CursorKind::Contacts,
            &["q"],
        )
        .expect_err("a cursor the deployment did not sign");
        assert_eq!(err.field, "cursor");
        assert_eq!(format!("{:?}", signing()), "CursorKey(<redacted>)");
    }

    /// A signer made once per call signs what `PageCursor::encode` would, byte for
    /// byte, and its cursors decode for that tenant, list and query only.
    #[test]
    fn a_signer_signs_as_encode_does() {
        let signer = CursorSigner::new(&signing(), &tenant("a"), CursorKind::Changes, &["q"]);
        for key in ["", "9.41", "18446744073709551615.9223372036854775807", "é"] {
            let raw = signer.sign(key);
            let alone = PageCursor::new(CursorKind::Changes, &["q"], key.to_owned())
                .encode(&tenant("a"), &signing());
            assert_eq!(raw, alone, "{key:?}");
            if key.is_empty() {
                continue;
            }
            let decoded =
                PageCursor::decode(&raw, &tenant("a"), &signing(), CursorKind::Changes, &["q"]);
            assert_eq!(decoded.as_deref(), Ok(key));
            let other =
                PageCursor::decode(&raw, &tenant("b"), &signing(), CursorKind::Changes, &["q"]);
            assert!(other.is_err(), "another tenant's: {key:?}");
        }
    }

    #[test]
    fn round_trips_for_the_same_tenant_list_and_query() {
        let cursor = PageCursor::new(CursorKind::Contacts, &["alice", "1"], "con_X".into());
        let raw = cursor.encode(&tenant("a"), &signing());
        let key = PageCursor::decode(
            &raw,
            &tenant("a"),
            &signing(),
            CursorKind::Contacts,
            &["alice", "1"],
        );
        assert_eq!(key.as_deref(), Ok("con_X"));
    }

    #[test]
    fn refuses_foreign_tampered_and_garbage_cursors() {
        let cursor = PageCursor::new(CursorKind::Contacts, &["q"], "con_X".into());
        let raw = cursor.encode(&tenant("a"), &signing());
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
            let err =
                PageCursor::decode(&raw, &tenant(who), &signing(), kind, &[query]).expect_err(why);
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

    fn signing() -> CursorKey {
        CursorKey::from_bytes([7; 32])
    }

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
            let _ = PageCursor::decode(raw, &a, &signing(), CursorKind::Contacts, &[""]);
        }
    }

    // Keys are ids and `micros|id` time keys: printable ASCII, never empty.
    proptest! {
        #[test]
        fn any_string_decodes_or_is_refused(raw in ".{0,600}", tenant in tenant(), kind in kind()) {
            if let Err(err) = PageCursor::decode(&raw, &tenant, &signing(), kind, &["q"]) {
                prop_assert_eq!(err.field, "cursor");
            }
        }

        #[test]
        fn any_bytes_in_base64_decode_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let a = TenantId::parse("a").expect("valid");
            let raw = URL_SAFE_NO_PAD.encode(&bytes);
            let _ = PageCursor::decode(&raw, &a, &signing(), CursorKind::Timeline, &["x", "y"]);
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
            let raw = PageCursor::new(kind, &parts, key.clone()).encode(&owner, &signing());
            prop_assert_eq!(PageCursor::decode(&raw, &owner, &signing(), kind, &parts), Ok(key));
            if other != owner {
                prop_assert!(PageCursor::decode(&raw, &other, &signing(), kind, &parts).is_err());
            }
            let mut bytes = URL_SAFE_NO_PAD.decode(&raw).expect("own cursor");
            let i = flip.index(bytes.len());
            bytes[i] ^= 0x01;
            let altered = URL_SAFE_NO_PAD.encode(&bytes);
            prop_assert!(PageCursor::decode(&altered, &owner, &signing(), kind, &parts).is_err());
        }
    }
}
