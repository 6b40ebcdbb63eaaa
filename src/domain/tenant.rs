use super::ValidationError;

/// Name of a tenant: 1-63 characters of `a-z`, `0-9`, `-` and `_`, starting with a
/// letter or digit. Every record of the service is keyed by it first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let ok = !raw.is_empty()
            && raw.len() <= 63
            && raw.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok {
            return Err(ValidationError::new(
                "tenant",
                "must be 1-63 characters of a-z, 0-9, `-` and `_`, starting with a letter or digit",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// Rebuilds a tenant id read back from a store.
    pub fn from_trusted(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_follow_the_documented_alphabet() {
        for ok in ["default", "acme-1", "a", "t_2"] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Acme", "-x", "a b", "é", &"a".repeat(64)] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }
}
