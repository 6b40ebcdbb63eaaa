//! Same-run baselines: pgbench running the store's own statements, COPY TO for the
//! full export, COPY FROM for an import.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kraiter_contacts::store::postgres::sql;
use sqlx::postgres::{PgPool, PgPoolCopyExt};
use tokio_stream::StreamExt;

use crate::cluster::Postgres;
use crate::data::Dataset;
use crate::seed::{COPY_CONTACTS, CopyRows};

#[derive(Debug, Clone, Default)]
pub struct Pgbench {
    pub tps: f64,
    pub latency_ms: f64,
    pub clients: usize,
    /// The script, for the report.
    pub script: String,
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
        ("prefix".into(), data.prefix.clone()),
        ("ncontacts".into(), data.contacts.to_string()),
        ("seq".into(), "0".into()),
        ("keyhash".into(), format!("\\x{hex}")),
    ]
}

/// `:n` picks a seeded contact; the expressions compute its id and email.
const PICK: &str = "\\set n random(0, :ncontacts - 1)\n";
const ID_SQL: &str = "('con_' || :prefix || lpad(:n::text, 16, '0'))";
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

pub fn get_contact() -> String {
    let stmt = Statement {
        sql: sql::GET_CONTACT_CHECKED,
        params: vec![":tenant".into(), ID_SQL.into(), ":keyhash".into()],
    };
    format!("{PICK}{};\n", stmt.render())
}

pub fn get_contact_by_email() -> String {
    let stmt = Statement {
        sql: sql::GET_CONTACT_BY_EMAIL_CHECKED,
        params: vec![
            ":tenant".into(),
            Dataset::EMAIL_SQL.into(),
            ":keyhash".into(),
        ],
    };
    format!("{PICK}{};\n", stmt.render())
}

/// Extra variables of the create and update scripts: a contact's JSON as the
/// service would bind it. `newprefix` makes each pgbench run's rows new.
pub fn write_variables(data: &Dataset) -> Vec<(String, String)> {
    let contact = data.contact(0);
    let properties = serde_json::to_string(contact.properties.as_map()).expect("JSON map");
    let search = kraiter_contacts::domain::search_text(contact.email.as_str(), &contact.properties);
    let created = serde_json::to_string(&Dataset::created_entry(&contact).data).expect("JSON map");
    let updated = r#"{"properties":{"score":{"before":0,"after":417},"lastSeenAt":{"before":null,"after":"2026-01-01"}}}"#;
    vec![
        ("props".into(), properties),
        ("search".into(), search.replace('\n', " ")),
        ("created".into(), created),
        ("updated".into(), updated.into()),
        (
            "newprefix".into(),
            ulid::Ulid::new().to_string()[..10].to_owned(),
        ),
    ]
}

/// The bound values of a contact write, `$1`..`$10` of the create and update
/// statements, typed as the service binds them.
fn write_params(
    entry_key: &str,
    id: String,
    email: String,
    email_key: String,
    search: &str,
    kind: &str,
    data: &str,
) -> Vec<String> {
    vec![
        ":tenant".into(),
        id,
        email,
        email_key,
        "(:props)::jsonb".into(),
        format!("({search})::text"),
        "now()".into(),
        format!("('tle_' || :newprefix || {entry_key})"),
        format!("'{kind}'::text"),
        format!("({data})::jsonb"),
    ]
}

pub fn create_contact() -> String {
    create_contact_keyed(NEW_KEY_SQL)
}

/// `create_contact` with keys from per-client ranges.
pub fn create_contact_per_client_keys() -> String {
    create_contact_keyed(PER_CLIENT_KEY_SQL)
}

fn create_contact_keyed(key: &str) -> String {
    let mut params = write_params(
        key,
        format!("('con_' || :newprefix || {key})"),
        format!("('pgb' || {key} || '-' || :newprefix || '@example.com')"),
        format!("lower('pgb' || {key} || '-' || :newprefix || '@example.com')"),
        // A customer reference of its own per row, as the service's creates have: new
        // contacts bring new trigrams to the search index.
        ":search || chr(10) || 'cr-' || substr(md5(:k::text), 1, 8)",
        "contact.created",
        ":created",
    );
    params.push(":keyhash".into());
    let stmt = Statement {
        sql: sql::CREATE_CONTACT_CHECKED,
        params,
    };
    format!("{NEXT}{};\n", stmt.render())
}

/// The optimistic merge: read the row with its revision (and the key check), then
/// write it if the revision is unchanged; two round trips, as in the store.
pub fn update_contact() -> String {
    let read = Statement {
        sql: sql::READ_FOR_UPDATE_CHECKED,
        params: vec![":tenant".into(), ID_SQL.into(), ":keyhash".into()],
    };
    let mut params = write_params(
        NEW_KEY_SQL,
        ID_SQL.into(),
        Dataset::EMAIL_SQL.into(),
        Dataset::EMAIL_SQL.into(),
        // The merged text changes in the score and a timestamp, as the service's do.
        ":search || chr(10) || (:n % 1000) || chr(10) || now()::text",
        "contact.updated",
        ":updated",
    );
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
}

/// A keyset page of 1000 at a random place: what one ListContacts page costs.
pub fn keyset_page() -> String {
    format!(
        "{PICK}SELECT {} FROM contacts WHERE tenant_id = :tenant AND id > {ID_SQL} ORDER BY id LIMIT 1001;\n",
        sql::CONTACT_COLUMNS
    )
}

/// Runs `script` with `clients` connections for `duration` (whole seconds, at least 1).
pub fn pgbench(
    pg: &Postgres,
    name: &str,
    script: &str,
    vars: &[(String, String)],
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Pgbench> {
    let path = pg.work_dir.join(format!("{name}.pgbench.sql"));
    std::fs::write(&path, script)?;
    let mut command = Command::new(pg.bin.join("pgbench"));
    command
        .args(["-n", "-M", "prepared", "-j", "2"])
        .arg("-c")
        .arg(clients.to_string())
        .arg("-T")
        .arg(duration.as_secs().max(1).to_string())
        .arg("-f")
        .arg(&path)
        .args(["-h", &pg.host, "-p", &pg.port.to_string(), "-U", &pg.user]);
    for (name, value) in vars {
        command.arg("-D").arg(format!("{name}={value}"));
    }
    command.arg(&pg.database);
    let out = command.output().context("run pgbench")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || stderr.contains("aborted") {
        bail!("pgbench `{name}` failed:\n{stdout}\n{stderr}");
    }
    let field = |prefix: &str| {
        stdout.lines().find_map(|line| {
            let rest = line.trim().strip_prefix(prefix)?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
    };
    Ok(Pgbench {
        tps: field("tps = ").context("pgbench printed no tps")?,
        latency_ms: field("latency average = ").unwrap_or_default(),
        clients,
        script: script.to_owned(),
    })
}

/// The full export of the tenant's contacts (same columns as ListContacts), rows/s.
pub async fn copy_to(pool: &PgPool, data: &Dataset) -> anyhow::Result<(u64, Duration)> {
    let statement = format!(
        "COPY (SELECT {} FROM contacts WHERE tenant_id = '{}') TO STDOUT",
        sql::CONTACT_COLUMNS,
        data.tenant.as_str()
    );
    let started = Instant::now();
    let mut stream = pool.copy_out_raw(&statement).await?;
    let mut rows = 0u64;
    while let Some(chunk) = stream.next().await {
        rows += chunk?.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    Ok((rows, started.elapsed()))
}

/// COPY FROM of `count` new contacts into a fresh tenant, every index in place:
/// what an import has to beat.
pub async fn copy_from(pool: &PgPool, data: &Dataset, count: u64) -> anyhow::Result<Duration> {
    let tenant = format!("{}-import", data.tenant.as_str());
    sqlx::query("INSERT INTO tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(&tenant)
        .execute(pool)
        .await?;
    let mut rows = CopyRows::default();
    for n in 0..count {
        rows.contact(&tenant, &data.contact(n));
    }
    let started = Instant::now();
    let mut copy = pool.copy_in_raw(COPY_CONTACTS).await?;
    for chunk in rows.buf.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    copy.finish().await?;
    Ok(started.elapsed())
}
