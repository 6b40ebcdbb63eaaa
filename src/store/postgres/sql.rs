//! The statements of the hot calls. The benchmark (`bench/src/baseline.rs`) compiles
//! this file into itself by path, so its pgbench baselines run exactly the SQL the
//! store runs without the statements being part of the library's API: keep it free of
//! `crate::` and `super::` paths.

macro_rules! contact_columns {
    () => {
        "id, email, properties, suppressed, unsubscribed, created_at, updated_at, revision"
    };
}

pub const CONTACT_COLUMNS: &str = contact_columns!();
/// How many columns `contact_columns!` names (a contact's columns come first).
pub const CONTACT_COLUMN_COUNT: usize = 8;

pub const GET_CONTACT: &str = concat!(
    "SELECT ",
    contact_columns!(),
    " FROM contacts WHERE tenant_id = $1 AND id = $2"
);

pub const GET_CONTACT_BY_EMAIL: &str = concat!(
    "SELECT ",
    contact_columns!(),
    " FROM contacts WHERE tenant_id = $1 AND email_key = $2"
);

/// The stamp of a change (see `store::common::changes` for why it is this).
macro_rules! change_stamp {
    () => {
        "greatest(pg_current_xact_id(), pg_snapshot_xmax(pg_current_snapshot()))"
    };
}

/// What a one-statement write returns of its contact, for its change.
macro_rules! changed_contact {
    () => {
        "RETURNING tenant_id, id, email, properties, suppressed, unsubscribed, created_at, \
         updated_at, revision"
    };
}

/// The change of a new contact, from the contact CTE `c`: the fields it was created
/// with, as `ContactChange::created` names them.
macro_rules! created_change {
    () => {
        concat!(
            " INSERT INTO contact_changes (tenant_id, xid, type, contact_id, changed_fields, \
             occurred_at, email, properties, suppressed, unsubscribed, created_at, updated_at, \
             revision) SELECT tenant_id, ",
            change_stamp!(),
            ", 'CREATED', id, (SELECT jsonb_agg(f)::text FROM (SELECT 'email' AS f UNION ALL \
             SELECT 'properties.' || k FROM jsonb_object_keys(c.properties) k) s), created_at, \
             email, properties, suppressed, unsubscribed, created_at, updated_at, revision FROM c"
        )
    };
}

/// One statement, so the contact, its timeline entry and its change commit together
/// in one round trip.
pub const CREATE_CONTACT: &str = concat!(
    "WITH c AS ( \
        INSERT INTO contacts (tenant_id, id, email, email_key, properties, search_text, created_at, updated_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ",
    changed_contact!(),
    "), t AS ( \
        INSERT INTO timeline_entries (tenant_id, contact_id, id, type, occurred_at, data) \
        SELECT tenant_id, id, $8, $9, $7, $10 FROM c)",
    created_change!()
);

// Statements under a caller's key (`Access::key_hash`): the key's liveness is read in the same snapshot as
// the data, so a revoked key is refused on its next call without a second round
// trip. No row at all means the key was rejected; a row of NULLs, no such contact.

macro_rules! checked_contact {
    ($extra:literal, $condition:literal) => {
        concat!(
            "SELECT c.id, c.email, c.properties, c.suppressed, c.unsubscribed, c.created_at, \
             c.updated_at, c.revision",
            $extra,
            " FROM api_keys k LEFT JOIN contacts c ON c.tenant_id = $1 AND ",
            $condition,
            " WHERE k.key_hash = $3 AND k.tenant_id = $1 AND k.revoked_at IS NULL"
        )
    };
}

/// Point reads, coalesced into one statement (`lookups.rs`): every listed contact
/// that exists, or one row of NULLs if none does.
pub const GET_CONTACTS_CHECKED: &str = checked_contact!("", "c.id = ANY($2)");

/// As `GET_CONTACTS_CHECKED` by email key, which comes after the contact's columns
/// to tell the rows apart.
pub const GET_CONTACTS_BY_EMAIL_CHECKED: &str =
    checked_contact!(", c.email_key", "c.email_key = ANY($2)");

pub const READ_FOR_UPDATE: &str = GET_CONTACT;

/// `CREATE_CONTACT` that inserts nothing unless `$11` is a live key of tenant `$1`.
pub const CREATE_CONTACT_CHECKED: &str = concat!(
    "WITH k AS ( \
        SELECT tenant_id FROM api_keys WHERE key_hash = $11 AND tenant_id = $1 AND revoked_at IS NULL), \
     c AS ( \
        INSERT INTO contacts (tenant_id, id, email, email_key, properties, search_text, created_at, updated_at) \
        SELECT tenant_id, $2, $3, $4, $5, $6, $7, $7 FROM k ",
    changed_contact!(),
    "), t AS ( \
        INSERT INTO timeline_entries (tenant_id, contact_id, id, type, occurred_at, data) \
        SELECT tenant_id, id, $8, $9, $7, $10 FROM c)",
    created_change!()
);

/// A merged contact with its `contact.updated` entry and its change, written only if
/// the row is still at revision `$11`: a compare-and-set, so a merge computed from
/// that revision loses nothing written since. The change names the fields the entry
/// records (`domain::changed_fields`).
pub const UPDATE_CONTACT_IF_REVISION: &str = concat!(
    "WITH u AS ( \
        UPDATE contacts SET email = $3, email_key = $4, properties = $5, search_text = $6, \
            updated_at = $7, revision = revision + 1 \
        WHERE tenant_id = $1 AND id = $2 AND revision = $11 ",
    changed_contact!(),
    "), t AS ( \
        INSERT INTO timeline_entries (tenant_id, contact_id, id, type, occurred_at, data) \
        SELECT tenant_id, id, $8, $9, $7, $10 FROM u) \
     INSERT INTO contact_changes (tenant_id, xid, type, contact_id, changed_fields, \
        occurred_at, email, properties, suppressed, unsubscribed, created_at, updated_at, \
        revision) SELECT tenant_id, ",
    change_stamp!(),
    ", 'UPDATED', id, (SELECT coalesce(jsonb_agg(f), '[]')::text FROM (SELECT 'email' AS f \
        WHERE jsonb_exists($10::jsonb, 'email') UNION ALL SELECT 'properties.' || k \
        FROM jsonb_object_keys(coalesce($10::jsonb -> 'properties', '{}')) k) s), updated_at, \
        email, properties, suppressed, unsubscribed, created_at, updated_at, revision FROM u"
);

/// BatchGetContacts of ids only, under a key: `store::common`'s statement on
/// PostgreSQL for such a call (a test there pins it to this text), for the
/// benchmark's baseline. No row at all means the key was rejected.
#[allow(dead_code)] // the benchmark's baseline; a test pins it to the store's
pub const BATCH_GET_CHECKED: &str = "SELECT c.id, c.email, c.properties, c.suppressed, \
     c.unsubscribed, c.created_at, c.updated_at, c.revision FROM api_keys k \
     LEFT JOIN contacts c ON c.tenant_id = $1 AND c.id = ANY($3) \
     WHERE k.key_hash = $2 AND k.tenant_id = $1 AND k.revoked_at IS NULL";

// The statements of an UpsertContact that merges into an existing contact, as the
// shared write transaction runs them on PostgreSQL (`store::common`; tests there pin
// them to these texts), for the benchmark's baseline: the key check, then in one
// transaction the lock by email, the update and its timeline entry.

/// The tenant of a live key (`KeyStore::tenant_for_key`).
#[allow(dead_code)] // the benchmark's baseline; a test pins it to the store's
pub const TENANT_FOR_KEY: &str =
    "SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL";

/// The contact with an email key, locked for the transaction.
#[allow(dead_code)] // the benchmark's baseline; a test pins it to the store's
pub const LOCK_CONTACT_BY_EMAIL: &str = concat!(
    "SELECT ",
    contact_columns!(),
    " FROM contacts WHERE tenant_id = $1 AND email_key = $2 FOR UPDATE"
);

/// A contact written whole, inside a transaction that holds its lock.
#[allow(dead_code)] // the benchmark's baseline; a test pins it to the store's
pub const UPDATE_CONTACT: &str = "UPDATE contacts SET email = $3, email_key = $4, properties = $5, \
        search_text = $6, updated_at = $7, revision = revision + 1 \
     WHERE tenant_id = $1 AND id = $2";

/// One timeline entry.
#[allow(dead_code)] // the benchmark's baseline; a test pins it to the store's
pub const INSERT_TIMELINE_ENTRY: &str = "INSERT INTO timeline_entries \
        (tenant_id, contact_id, id, type, occurred_at, data) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// A change recorded inside a write transaction (`store::common::changes::record`; a
/// test there pins it to this text), for the UpsertContact baseline.
#[allow(dead_code)] // the benchmark's baseline; a test pins it to the store's
pub const INSERT_CHANGE: &str = concat!(
    "INSERT INTO contact_changes (tenant_id, type, contact_id, changed_fields, occurred_at, \
     email, properties, suppressed, unsubscribed, created_at, updated_at, revision, \
     recorded_at, xid) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now(), ",
    change_stamp!(),
    ")"
);

/// `Backend::fold_counts`: per-process rows of `contact_counts` (migration 0009) into
/// each tenant's shard 0, at most `$1` rows, skipping rows a transaction holds;
/// nothing when another process is folding. Returns the rows folded.
pub const FOLD_COUNTS: &str = "\
WITH lock AS (SELECT pg_try_advisory_xact_lock(hashtext('kraiter.contact_counts.fold')) AS held), \
picked AS ( \
    SELECT tenant_id, shard FROM contact_counts \
    WHERE shard <> 0 AND (SELECT held FROM lock) \
    ORDER BY tenant_id, shard LIMIT $1 FOR UPDATE SKIP LOCKED), \
gone AS ( \
    DELETE FROM contact_counts c USING picked p \
    WHERE c.tenant_id = p.tenant_id AND c.shard = p.shard \
    RETURNING c.tenant_id, c.n), \
folded AS ( \
    INSERT INTO contact_counts (tenant_id, shard, n) \
    SELECT tenant_id, 0, sum(n) FROM gone GROUP BY tenant_id \
    ON CONFLICT (tenant_id, shard) DO UPDATE SET n = contact_counts.n + excluded.n) \
SELECT count(*) FROM gone";

// Coalesced writes (`writes.rs`): the calls that queued behind a write in flight, in
// one statement and so one commit. Each row is the one-call statement's, bound as
// arrays; its change is stamped by the same expression, after its row is written.

/// `CREATE_CONTACT_CHECKED` for many contacts of one caller (`$1` tenant, `$2` key
/// hash; `$3`... the columns, see `writes.rs`). An address already taken, in the
/// table or by a concurrent insert that commits, inserts nothing for that row.
/// Returns one NULL row if the key is live, then the id of each contact written.
pub const CREATE_CONTACTS_CHECKED: &str = concat!(
    "WITH k AS ( \
        SELECT tenant_id FROM api_keys WHERE key_hash = $2 AND tenant_id = $1 AND revoked_at IS NULL), \
     r AS (SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
        $8::timestamptz[], $9::text[], $10::text[], $11::text[]) AS r(r_id, r_email, \
        r_email_key, r_properties, r_search_text, r_at, r_entry_id, r_entry_type, r_entry_data)), \
     c AS ( \
        INSERT INTO contacts (tenant_id, id, email, email_key, properties, search_text, created_at, updated_at) \
        SELECT k.tenant_id, r_id, r_email, r_email_key, r_properties::jsonb, r_search_text, r_at, r_at \
        FROM k CROSS JOIN r ORDER BY r_id \
        ON CONFLICT (tenant_id, email_key) DO NOTHING ",
    changed_contact!(),
    "), t AS ( \
        INSERT INTO timeline_entries (tenant_id, contact_id, id, type, occurred_at, data) \
        SELECT c.tenant_id, c.id, r_entry_id, r_entry_type, c.created_at, r_entry_data::jsonb \
        FROM c JOIN r ON r_id = c.id), \
     ch AS (",
    created_change!(),
    " RETURNING contact_id) \
     SELECT NULL::text AS id FROM k UNION ALL SELECT contact_id FROM ch"
);
