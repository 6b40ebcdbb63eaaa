//! The statements of SQLite's hot calls. The benchmark (`bench/src/sqlite_baseline.rs`)
//! compiles this file into itself by path, so its baseline runs exactly the SQL the
//! store runs: keep it free of `crate::` and `super::` paths. The statements the
//! backends share are pinned to these copies by tests in `store::common`.

macro_rules! checked_contact {
    ($condition:literal) => {
        concat!(
            "SELECT c.id, c.email, c.properties, c.suppressed, c.unsubscribed, c.created_at, \
             c.updated_at, c.revision FROM api_keys k LEFT JOIN contacts c \
             ON c.tenant_id = $1 AND ",
            $condition,
            " WHERE k.key_hash = $3 AND k.tenant_id = $1 AND k.revoked_at IS NULL"
        )
    };
}

/// A contact by id under a caller's key, in one statement: no row means the key was
/// rejected, a row of NULLs that the key is live and there is no such contact.
/// (PostgreSQL's `GET_CONTACTS_CHECKED` for one id, word for word.)
pub const GET_CONTACT_CHECKED: &str = checked_contact!("c.id = $2");

/// As `GET_CONTACT_CHECKED`, by email key.
pub const GET_CONTACT_BY_EMAIL_CHECKED: &str = checked_contact!("c.email_key = $2");

/// A contact by id, without a key to check (the service's own reads).
pub const GET_CONTACT: &str = "SELECT id, email, properties, suppressed, unsubscribed, \
     created_at, updated_at, revision FROM contacts WHERE tenant_id = $1 AND id = $2";

/// As `GET_CONTACT`, by email key.
pub const GET_CONTACT_BY_EMAIL: &str = "SELECT id, email, properties, suppressed, \
     unsubscribed, created_at, updated_at, revision FROM contacts \
     WHERE tenant_id = $1 AND email_key = $2";

/// The tenant of a live key (`store::common::keys`), a write's key check.
pub const TENANT_FOR_KEY: &str =
    "SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL";

/// The statements of a CreateContact's write transaction, in order, between
/// `BEGIN IMMEDIATE` and `COMMIT` (`store::common::write_tx`, `changes`).
pub const INSERT_CONTACT: &str = "INSERT INTO contacts (tenant_id, id, email, email_key, \
        properties, search_text, suppressed, unsubscribed, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (tenant_id, email_key) DO NOTHING";

pub const INSERT_CHANGE: &str = "INSERT INTO contact_changes (tenant_id, type, contact_id, \
     changed_fields, occurred_at, email, properties, suppressed, unsubscribed, created_at, \
     updated_at, revision, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
     $12, $13)";

pub const INSERT_TIMELINE_ENTRY: &str = "INSERT INTO timeline_entries \
        (tenant_id, contact_id, id, type, occurred_at, data) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// An UpdateContact's write, after its read (`GET_CONTACT_CHECKED`): the
/// compare-and-set (an address another contact has fails it on the unique key),
/// its change and its timeline entry.
pub const UPDATE_CONTACT_IF_REVISION: &str = "UPDATE contacts SET email = $3, email_key = $4, \
        properties = $5, search_text = $6, updated_at = $7, revision = revision + 1 \
     WHERE tenant_id = $1 AND id = $2 AND revision = $8";

/// The export's rows, in the stream's order, without its pages: the baseline of
/// the full ListContacts stream.
pub const EXPORT: &str = "SELECT id, email, properties, suppressed, unsubscribed, created_at, \
     updated_at, revision FROM contacts WHERE tenant_id = $1 ORDER BY id";
