//! Calls whose API key the store checks in the same statement as the data, so a
//! revoked key fails on its next call without a lookup round trip of its own.

use crate::domain::TenantId;

/// A caller's key hash and the tenant it was issued to (a fact that never changes,
/// so the API may cache it); whether the key is still live is for the store to check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyClaim {
    pub tenant: TenantId,
    pub key_hash: [u8; 32],
}

/// The outcome of a call made under a `KeyClaim`.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked<T> {
    /// The key was live when the call ran: its result.
    Live(T),
    /// No live key of the tenant has that hash (revoked, or never issued): nothing
    /// was read or written.
    KeyRejected,
}

impl<T> Checked<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Checked<U> {
        match self {
            Checked::Live(value) => Checked::Live(f(value)),
            Checked::KeyRejected => Checked::KeyRejected,
        }
    }

    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Checked<U>, E> {
        match self {
            Checked::Live(value) => f(value).map(Checked::Live),
            Checked::KeyRejected => Ok(Checked::KeyRejected),
        }
    }
}
