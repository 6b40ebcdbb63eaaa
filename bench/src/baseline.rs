//! Same-run baselines: pgbench running the store's own statements, COPY TO for the
//! full export, COPY FROM for an import.

use std::time::Duration;

use anyhow::bail;
use kraiter_contacts::domain::{Contact, Properties, search_text};
use sqlx::postgres::PgPool;

use crate::data::{Dataset, splitmix};

// The store's statements, compiled from the store's own source file rather than taken
// from the library (which keeps them private): the baselines run exactly the SQL the
// store runs, and cannot drift from it. Not every statement has a baseline.
#[allow(dead_code)]
#[path = "../../src/store/postgres/sql.rs"]
mod sql;

#[derive(Debug, Clone, Default)]
pub struct Pgbench {
    pub tps: f64,
    pub latency_ms: f64,
    pub clients: usize,
    /// Whether its sessions planned each statement once (`plan_cache_mode`).
    pub generic_plans: bool,
    /// The (first) script, for the report.
    pub script: String,
    /// How many scripts the run picked from.
    pub scripts: usize,
    /// PostgreSQL's CPU per transaction (backends, exited ones included), for a
    /// cluster this run started.
    pub postgres_cpu_per_tx: Option<Duration>,
}

/// One statement of a pgbench script: the store's SQL and, for each `$n`, the
/// pgbench expression that stands in for the bound value.
pub struct Statement<'a> {
    pub sql: &'a str,
    pub params: Vec<String>,
}

impl Statement<'_> {
    fn render(&self) -> String {
        let mut text = self.sql.to_owned();
        // Highest first, so `$1` does not eat the start of `$10`.
        for (i, param) in self.params.iter().enumerate().rev() {
            text = text.replace(&format!("${}", i + 1), param);
        }
        text
    }
}

/// The pgbench variables every script may use; `key` is the API key the service's
/// calls use, whose hash the checked statements look up.
pub fn variables(data: &Dataset, key: &str) -> Vec<(String, String)> {
    let hash = kraiter_contacts::domain::hash_api_key(key);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        ("tenant".into(), data.tenant.as_str().into()),
        ("idprefix".into(), data.time_prefix()),
        ("ncontacts".into(), data.contacts.to_string()),
        ("seq".into(), "0".into()),
        ("keyhash".into(), format!("\\x{hex}")),
    ]
}

/// `:n` picks a seeded contact; the expressions compute its id and email.
const PICK: &str = "\\set n random(0, :ncontacts - 1)\n";
/// `Dataset::id`.
const ID_SQL: &str = "('con_' || :idprefix || lpad(:n::text, 7, '0') || lpad(:n::text, 16, '0'))";
/// Fails unless the scripts' `ID_SQL` finds the seeded contacts it stands for: a
/// script whose ids missed would measure lookups of nothing and still succeed.
pub async fn check_ids(pool: &PgPool, data: &Dataset) -> anyhow::Result<()> {
    for n in [0, data.contacts / 2, data.contacts.saturating_sub(1)] {
        let sql = ID_SQL
            .replace(":idprefix", &format!("'{}'", data.time_prefix()))
            .replace(":n", &n.to_string());
        let (id, found): (String, i64) = sqlx::query_as(&format!(
            "SELECT {sql}, (SELECT count(*) FROM contacts WHERE tenant_id = $1 AND id = {sql})"
        ))
        .bind(data.tenant.as_str())
        .fetch_one(pool)
        .await?;
        if id != data.id(n) || found != 1 {
            bail!(
                "pgbench's id of contact {n} is {id} ({found} found), the seeded id {}",
                data.id(n)
            );
        }
    }
    Ok(())
}

/// A fresh, per-client increasing number for rows a script creates.
const NEXT: &str = "\\set seq :seq + 1\n\\set k :client_id * 1000000000 + :seq\n";
/// The key of a new row: the transaction's start in microseconds, then the client, so
/// keys ascend with time across all clients as the service's ULIDs do (the contract
/// says ids sort by creation time) and every insert lands at the right edge of the
/// id indexes, where the inserts of all clients meet.
const NEW_KEY_SQL: &str = "lpad(((extract(epoch from now()) * 1000000)::bigint % 10000000000000 * 1000 + :client_id)::text, 16, '0')";
/// A key from a range of its own per client: inserts spread over 32 places in each
/// index. Not what the service can do; reported to show what time order costs.
const PER_CLIENT_KEY_SQL: &str = "lpad(:k::text, 16, '0')";

/// The store's coalesced lookup with one key: the statement a GetContact runs when it
/// goes alone, run once per call (what the service would cost without coalescing).
pub fn get_contact() -> String {
    let stmt = Statement {
        sql: sql::GET_CONTACTS_CHECKED,
        params: vec![
            ":tenant".into(),
            format!("ARRAY[{ID_SQL}]"),
            ":keyhash".into(),
        ],
    };
    format!("{PICK}{};\n", stmt.render())
}

/// As `get_contact`, by email.
pub fn get_contact_by_email() -> String {
    let stmt = Statement {
        sql: sql::GET_CONTACTS_BY_EMAIL_CHECKED,
        params: vec![
            ":tenant".into(),
            format!("ARRAY[{}]", Dataset::EMAIL_SQL),
            ":keyhash".into(),
        ],
    };
    format!("{PICK}{};\n", stmt.render())
}

/// How many seeded contacts lend their values to the write baselines: pgbench runs
/// one script per contact, each binding that contact's properties, search text and
/// timeline entry, picked at random per transaction. Every client prepares every
/// script, so more variants cost the baseline preparing time; the customer reference,
/// the one value unique per contact, is new in every row instead (`CR_SQL`).
pub const WRITE_VARIANTS: u64 = 16;

/// The contacts that lend their values to the write baselines.
fn write_variant(data: &Dataset, i: u64) -> u64 {
    splitmix(i) % data.contacts
}

/// Stands for the customer reference in the variables' text; the scripts put
/// `CR_SQL` in its place.
const CR_PLACEHOLDER: &str = "@@@@@@@@";
/// A customer reference of its own per transaction (eight characters, as seeded ones).
const CR_SQL: &str = "upper(substr(md5(:k::text), 1, 8))";

/// Variables of the create and update scripts: per variant `i`, the values the
/// service would bind for seeded contact `write_variant(i)` (with the update patch
/// applied for `u…`), each split around the customer reference; `newprefix` and
/// `emailtag` make each run's ids and emails new. Different rows matter: the trigram
/// index's cost per write grows with the distinct trigrams a batch of rows brings,
/// and a baseline whose rows all carried one property set did half the index work
/// of the service's creates (`pg_stat_statements`: 41 against 88 buffer hits, 12.7
/// against 25.5 WAL records per create).
pub fn write_variables(data: &Dataset) -> Vec<(String, String)> {
    // New contacts' ids carry the run's start as their time part and `newat` as
    // their `created_at`, as the service's ids carry theirs (`ContactId::
    // generate_not_before`): an id earlier than its `created_at` would fire the
    // `contact_id_floors` trigger (migrations/postgres/0009), which the service's
    // creates never do, and every create would wait for that one row's lock.
    let start = ulid::Ulid::new();
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(start.timestamp_ms() as i64)
        .unwrap_or_default();
    let mut vars = vec![
        ("newprefix".into(), start.to_string()[..10].to_owned()),
        ("newat".into(), at.to_rfc3339()),
        ("emailtag".into(), Dataset::new_email_tag()),
    ];
    fn split(vars: &mut Vec<(String, String)>, name: String, text: String) {
        let (before, after) = text
            .split_once(CR_PLACEHOLDER)
            .expect("the text holds the customer reference");
        vars.push((format!("{name}_a"), before.to_owned()));
        vars.push((format!("{name}_b"), after.to_owned()));
    }
    for i in 0..WRITE_VARIANTS {
        let mut contact = data.contact(write_variant(data, i));
        let mut properties = contact.properties.as_map().clone();
        properties.insert("customerRef".into(), format!("CR-{CR_PLACEHOLDER}").into());
        contact.properties = Properties::from_trusted(properties.clone());
        let created = Dataset::created_entry(&contact);
        split(&mut vars, format!("props{i}"), json_text(&properties));
        split(&mut vars, format!("lines{i}"), properties_lines(&contact));
        split(&mut vars, format!("created{i}"), json_text(&created.data));
        // UpdateContact's patch: `score` (the value it has: the scenario sets
        // `r % 1000` on contact `r % contacts`) and `lastSeenAt`, a time within the
        // last day.
        let seen = data.base - chrono::Duration::seconds((splitmix(i) % 86_400) as i64);
        let seen = seen.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        properties.insert("lastSeenAt".into(), seen.clone().into());
        contact.properties = Properties::from_trusted(properties.clone());
        split(&mut vars, format!("uprops{i}"), json_text(&properties));
        split(&mut vars, format!("ulines{i}"), properties_lines(&contact));
        let updated = serde_json::json!({"properties": {
            "lastSeenAt": {"before": null, "after": seen},
        }});
        vars.push((format!("updated{i}"), updated.to_string()));
    }
    vars
}

/// SQL joining a variable split by `write_variables` around `cr`.
fn joined(name: &str, cr: &str) -> String {
    format!("(:{name}_a || {cr} || :{name}_b)")
}

fn json_text(map: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::to_string(map).expect("JSON map")
}

/// The search text the service builds for the contact less its first line (the
/// email), its newlines as spaces: pgbench variables cannot hold newlines, and no
/// trigram crosses either.
fn properties_lines(contact: &Contact) -> String {
    let text = search_text(contact.email.as_str(), &contact.properties);
    let lines = text.split_once('\n').map_or("", |(_, rest)| rest);
    lines.replace('\n', " ")
}

/// The bound values of a contact write, `$1`..`$10` of the create and update
/// statements, typed as the service binds them.
struct WriteParams {
    entry_key: &'static str,
    /// `created_at` or `updated_at`, and the entry's time.
    at: &'static str,
    id: String,
    email: String,
    email_key: String,
    properties: String,
    search: String,
    kind: &'static str,
    data: String,
}

impl WriteParams {
    fn render(self) -> Vec<String> {
        vec![
            ":tenant".into(),
            self.id,
            self.email,
            self.email_key,
            format!("({})::jsonb", self.properties),
            format!("({})::text", self.search),
            self.at.into(),
            format!("('tle_' || :newprefix || {})", self.entry_key),
            format!("'{}'::text", self.kind),
            format!("({})::jsonb", self.data),
        ]
    }
}

/// The create baseline: one script per variant.
pub fn create_contact() -> Vec<String> {
    create_contact_keyed(NEW_KEY_SQL)
}

/// `create_contact` with keys from per-client ranges.
pub fn create_contact_per_client_keys() -> Vec<String> {
    create_contact_keyed(PER_CLIENT_KEY_SQL)
}

/// A new contact with a new email and a seeded contact's properties, as the create
/// scenario sends them; search text and `contact.created` entry as the service
/// builds them.
fn create_contact_keyed(key: &'static str) -> Vec<String> {
    let email = Dataset::NEW_EMAIL_SQL;
    (0..WRITE_VARIANTS)
        .map(|i| {
            let write = WriteParams {
                entry_key: key,
                at: "(:newat)::timestamptz",
                id: format!("('con_' || :newprefix || {key})"),
                email: email.into(),
                email_key: format!("lower{email}"),
                properties: joined(&format!("props{i}"), CR_SQL),
                search: format!(
                    "lower{email} || chr(10) || {}",
                    joined(&format!("lines{i}"), &format!("lower({CR_SQL})"))
                ),
                kind: "contact.created",
                data: joined(&format!("created{i}"), CR_SQL),
            };
            let mut params = write.render();
            params.push(":keyhash".into());
            let stmt = Statement {
                sql: sql::CREATE_CONTACT_CHECKED,
                params,
            };
            format!("{NEXT}{};\n", stmt.render())
        })
        .collect()
}

/// The optimistic merge of a random seeded row: read it with its revision (and the
/// key check), then write it if the revision is unchanged; two round trips, as in
/// the store. What it writes is a variant's merged properties.
pub fn update_contact() -> Vec<String> {
    (0..WRITE_VARIANTS)
        .map(|i| {
            // The merge's read is a point read (`lookups.rs`): alone, the
            // coalesced lookup with one key, as `get_contact` runs it.
            let read = Statement {
                sql: sql::GET_CONTACTS_CHECKED,
                params: vec![
                    ":tenant".into(),
                    format!("ARRAY[{ID_SQL}]"),
                    ":keyhash".into(),
                ],
            };
            let write = WriteParams {
                entry_key: NEW_KEY_SQL,
                at: "now()",
                id: ID_SQL.into(),
                email: Dataset::EMAIL_SQL.into(),
                email_key: Dataset::EMAIL_SQL.into(),
                properties: joined(&format!("uprops{i}"), CR_SQL),
                search: format!(
                    "{} || chr(10) || {}",
                    Dataset::EMAIL_SQL,
                    joined(&format!("ulines{i}"), &format!("lower({CR_SQL})"))
                ),
                kind: "contact.updated",
                data: format!(":updated{i}"),
            };
            let mut params = write.render();
            params.push(":revision".into());
            let update = Statement {
                sql: sql::UPDATE_CONTACT_IF_REVISION,
                params,
            };
            format!(
                "{PICK}{NEXT}{} \\gset\n{};\n",
                read.render(),
                update.render()
            )
        })
        .collect()
}

/// UpsertContact into a random seeded contact, its statements as the store runs them
/// (`app::contacts::upsert` over the shared write transaction): the key check, then
/// BEGIN, the lock by email, the update of the whole row, its `contact.updated`
/// entry, its change in the outbox, COMMIT; seven round trips. What it writes is a variant's merged properties,
/// as `update_contact`.
pub fn upsert_contact() -> Vec<String> {
    (0..WRITE_VARIANTS)
        .map(|i| {
            let key = Statement {
                sql: sql::TENANT_FOR_KEY,
                params: vec![":keyhash".into()],
            };
            let lock = Statement {
                sql: sql::LOCK_CONTACT_BY_EMAIL,
                params: vec![":tenant".into(), Dataset::EMAIL_SQL.into()],
            };
            let update = Statement {
                sql: sql::UPDATE_CONTACT,
                params: vec![
                    ":tenant".into(),
                    ID_SQL.into(),
                    Dataset::EMAIL_SQL.into(),
                    Dataset::EMAIL_SQL.into(),
                    format!("({})::jsonb", joined(&format!("uprops{i}"), CR_SQL)),
                    format!(
                        "({} || chr(10) || {})::text",
                        Dataset::EMAIL_SQL,
                        joined(&format!("ulines{i}"), &format!("lower({CR_SQL})"))
                    ),
                    "now()".into(),
                ],
            };
            let entry = Statement {
                sql: sql::INSERT_TIMELINE_ENTRY,
                params: vec![
                    ":tenant".into(),
                    ID_SQL.into(),
                    format!("('tle_' || :newprefix || {NEW_KEY_SQL})"),
                    "'contact.updated'::text".into(),
                    "now()".into(),
                    format!("(:updated{i})::jsonb"),
                ],
            };
            // Its change, as `changes::record` binds it: the fields the entry names,
            // the contact after the merge.
            let change = Statement {
                sql: sql::INSERT_CHANGE,
                params: vec![
                    ":tenant".into(),
                    "'UPDATED'::text".into(),
                    ID_SQL.into(),
                    "'[\"properties.lastSeenAt\"]'::text".into(),
                    "now()".into(),
                    Dataset::EMAIL_SQL.into(),
                    format!("({})::jsonb", joined(&format!("uprops{i}"), CR_SQL)),
                    "false".into(),
                    "false".into(),
                    "now()".into(),
                    "now()".into(),
                    "2::bigint".into(),
                ],
            };
            format!(
                "{PICK}{NEXT}{};\nBEGIN;\n{};\n{};\n{};\n{};\nEND;\n",
                key.render(),
                lock.render(),
                update.render(),
                entry.render(),
                change.render()
            )
        })
        .collect()
}

/// BatchGetContacts of `scenarios::BATCH_IDS` random seeded ids under the key check,
/// the store's one statement for ids only. The store binds the ids as one array;
/// pgbench binds each contact number and the statement builds the array from them
/// (pgbench allows 255 parameters a statement), an initplan the service's statement
/// does not pay.
pub fn batch_get() -> String {
    let count = crate::scenarios::BATCH_IDS;
    let mut script = String::new();
    let mut numbers = Vec::new();
    for j in 0..count {
        script.push_str(&format!("\\set n{j} random(0, :ncontacts - 1)\n"));
        numbers.push(format!(":n{j}"));
    }
    let ids = format!(
        "(SELECT array_agg('con_' || :idprefix || lpad(n::text, 7, '0') || lpad(n::text, 16, '0')) \
         FROM unnest(ARRAY[{}]::bigint[]) n)::text[]",
        numbers.join(", ")
    );
    let stmt = Statement {
        sql: sql::BATCH_GET_CHECKED,
        params: vec![":tenant".into(), ":keyhash".into(), ids],
    };
    format!("{script}{};\n", stmt.render())
}

/// A keyset page of 1000 at a random place: what one ListContacts page costs.
pub fn keyset_page() -> String {
    format!(
        "{PICK}SELECT {} FROM contacts WHERE tenant_id = :tenant AND id > {ID_SQL} ORDER BY id LIMIT 1001;\n",
        sql::CONTACT_COLUMNS
    )
}

mod run;
pub use run::{copy_from, copy_rows, copy_to, copy_to_where, pgbench, pgbench_with};
