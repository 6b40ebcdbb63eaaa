//! The cursors of one streamed list call: what a cursor binds (the deployment's
//! key, the caller's tenant, the list, the query's filters) is fixed once per call,
//! so resuming and issuing cannot disagree.

use crate::domain::{CursorKey, CursorKind, CursorSigner, PageCursor, TenantId, ValidationError};

#[derive(Clone)]
pub(super) struct ListCursors {
    signing: CursorKey,
    tenant: TenantId,
    kind: CursorKind,
    query: Vec<String>,
    signer: CursorSigner,
}

impl ListCursors {
    pub fn new(signing: &CursorKey, tenant: &TenantId, kind: CursorKind, query: &[&str]) -> Self {
        Self {
            signing: signing.clone(),
            tenant: tenant.clone(),
            kind,
            query: query.iter().map(|part| (*part).to_owned()).collect(),
            signer: CursorSigner::new(signing, tenant, kind, query),
        }
    }

    fn parts(&self) -> Vec<&str> {
        self.query.iter().map(String::as_str).collect()
    }

    /// The keyset key a request's cursor resumes after; `None` without a cursor.
    pub fn resume(&self, raw: &str) -> Result<Option<String>, ValidationError> {
        if raw.is_empty() {
            return Ok(None);
        }
        PageCursor::decode(raw, &self.tenant, &self.signing, self.kind, &self.parts()).map(Some)
    }

    /// The cursor of the page that ends at `next`; empty on the last page.
    pub fn next(&self, next: Option<String>) -> String {
        next.map(|key| self.signer.sign(&key)).unwrap_or_default()
    }
}
