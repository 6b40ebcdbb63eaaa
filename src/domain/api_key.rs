use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Every key starts with this, so leaked keys are easy to spot and scan for.
pub const PREFIX: &str = "kr_";

/// A newly minted API key: the secret is shown once, only the hash is stored.
pub struct NewApiKey {
    pub key_id: String,
    pub secret: String,
    pub hash: [u8; 32],
}

impl NewApiKey {
    /// 256 random bits from the operating system.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        Ok(Self {
            key_id: super::new_id("key"),
            hash: hash(&secret),
            secret,
        })
    }
}

/// Keys carry 256 bits of entropy, so a fast unsalted hash is enough to make a
/// stolen table useless; lookups go by this hash, never by the secret.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_hashed() {
        let a = NewApiKey::generate().expect("os randomness");
        let b = NewApiKey::generate().expect("os randomness");
        assert!(a.secret.starts_with(PREFIX));
        assert_eq!(a.secret.len(), PREFIX.len() + 43);
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.hash, hash(&a.secret));
        assert_ne!(a.hash, b.hash);
    }
}
