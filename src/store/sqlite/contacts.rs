//! Contacts on SQLite: every call is `store::common`'s portable one (a caller's key
//! checked with a lookup of its own, in-process, with no round trip to save; writes
//! in a write transaction) but the list, which searches SQLite's own index.

use async_trait::async_trait;

use super::{SqliteStore, classify, search};
use crate::store::common::{BackendContacts, ContactPage};
use crate::store::{ContactRows, StoreResult};

#[async_trait]
impl BackendContacts for SqliteStore {
    async fn list_contacts(&self, page: ContactPage<'_>) -> StoreResult<ContactRows> {
        let mut conn = self.reader.acquire().await.map_err(classify)?;
        search::list_contacts(&mut conn, page).await
    }
}
