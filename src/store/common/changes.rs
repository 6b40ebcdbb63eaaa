//! The change feed's outbox (`contact_changes`): written by the write primitives in
//! the writing transaction (`write_tx.rs`, and PostgreSQL's one-statement writes in
//! `postgres/sql.rs`), read by WatchContacts in position order, purged after the
//! retention window.
//!
//! # Why a delivered position is never passed by a later commit
//!
//! SQLite has one writer at a time, so its AUTOINCREMENT key is handed out in
//! commit order: a change that commits later has a larger position.
//!
//! PostgreSQL hands out sequence values and transaction ids at the start of work,
//! not at commit, so neither alone is commit-ordered. A change is stamped with
//! `xid = greatest(pg_current_xact_id(), pg_snapshot_xmax(pg_current_snapshot()))`
//! (and a `seq` that orders the changes of one transaction), and a reader delivers,
//! in `(xid, seq)` order, only changes whose xid is below the `xmin` of its own
//! snapshot: every transaction with a smaller id has ended then. Two properties
//! follow:
//!
//! 1. *No later commit lands before a delivered position.* A transaction that has
//!    not committed when the reader takes its snapshot was running then (its id is
//!    at least the snapshot's `xmin`) or gets its id later (larger than every id
//!    handed out before, so again at least `xmin`). Its changes are stamped with at
//!    least its own id, so at least `xmin`, above every position delivered from that
//!    snapshot. A resume token is such a position: resuming after it misses nothing
//!    and repeats nothing.
//! 2. *Changes of one contact come in the order they committed.* A write stamps a
//!    change while it holds the contact's row lock (it has just written the row).
//!    If another transaction changed the contact and committed first, its id is at
//!    most the `latestCompletedXid` this writer's snapshot sees, so below the
//!    snapshot's `xmax` and so below this change's stamp (or equal to it with a
//!    smaller `seq`, taken earlier). Stamping with the transaction's id alone would
//!    break this: a transaction that got its id early (claiming a request id, an
//!    earlier row of an import) and then waited for the lock of a contact held by a
//!    younger transaction would sort before that transaction's change although it
//!    committed after it, and a cache following the feed would end on a stale
//!    contact.
//!
//! 3. *A quiet database delivers everything.* A change's stamp is at least its
//!    writer's snapshot `xmax`, so the last changes written before the database goes
//!    quiet are stamped at the `xmin` that follows (no newer id is handed out to move
//!    it): below-`xmin` alone would hold them until some other write anywhere in the
//!    cluster. So when the reader's snapshot shows no transaction holding an id
//!    (`xmin = xmax`), it delivers every committed change: any later one belongs to a
//!    transaction whose id is at least that `xmax`, and whose stamp, its own
//!    snapshot's `xmax`, is above its id, so above every stamp delivered.
//!
//! A long transaction anywhere in the cluster holds `xmin` back and so delays (never
//! reorders) delivery; the reader says when committed changes wait above the
//! horizon, and the watcher polls again shortly.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Database;

use super::db::{Get, fetch_within};
use super::types::{DbJson, DbTime, JsonText, TextList};
use super::{ColumnKind, ConnSource, Dialect, JsonColumn, SqlDb, SqlStore, SqlText, Stmt, TxConn};
use crate::domain::{
    ChangeKind, ChangePosition, ChangeRecord, ContactChange, ContactId, ContactView, Email,
    PropertiesJson, TenantId, WatchStart,
};
use crate::store::{
    ChangeBatch, ChangeBell, ChangeStore, StoreError, StoreResult, change_record_bytes,
};

/// The statements of the feed that differ between the databases.
pub(crate) struct ChangeSql {
    /// The stamp of a change written now (PostgreSQL), as an extra `xid` column.
    pub stamp: Option<&'static str>,
    /// A change's position as `xid` (text) and `seq` columns.
    pub position: &'static str,
    /// Changes after the position `($2, $3)`, deliverable now, with the tenant's
    /// purge watermark and whether committed changes wait above the horizon.
    pub after: &'static str,
    /// The position `WatchStart::Now` starts after, for tenant `$1`.
    pub now: &'static str,
    /// The tenant's purge watermark as `xid`, `seq` (no row when nothing was purged).
    pub watermark: &'static str,
    /// Raises the watermark of `$1` to `($2, $3)` unless it is past it.
    pub raise_watermark: &'static str,
}

pub(crate) const POSTGRES: ChangeSql = ChangeSql {
    stamp: Some("greatest(pg_current_xact_id(), pg_snapshot_xmax(pg_current_snapshot()))"),
    position: "xid::text AS xid, seq",
    // The inner ORDER BY names the table's columns: a bare `xid` there would be the
    // output column, `xid::text`, sorted as text ("1000" before "998"), and a batch
    // cut by LIMIT would skip changes once ids gain a digit.
    // `idle`: no transaction holds an id, so every committed change is final (see the
    // module's comment) and all are delivered; else only those below `xmin`.
    after: "WITH s AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon, \
                pg_snapshot_xmin(pg_current_snapshot()) \
                  = pg_snapshot_xmax(pg_current_snapshot()) AS idle) \
        SELECT (SELECT w.xid::text || '.' || w.seq FROM contact_change_watermarks w \
                 WHERE w.tenant_id = $1) AS purged, \
               NOT s.idle AND EXISTS (SELECT 1 FROM contact_changes h WHERE h.tenant_id = $1 \
                 AND h.xid >= s.horizon) AS held, c.* \
        FROM s LEFT JOIN LATERAL (SELECT xid::text AS xid, seq, type, contact_id, \
                 changed_fields, occurred_at, email, properties, suppressed, unsubscribed, \
                 created_at, updated_at, revision FROM contact_changes \
               WHERE tenant_id = $1 AND (xid, seq) > ($2::xid8, $3) \
                 AND (xid < s.horizon OR s.idle) \
                 AND ($5 OR type = ANY($6)) \
               ORDER BY contact_changes.xid, contact_changes.seq LIMIT $4) c ON true \
        ORDER BY c.xid::xid8, c.seq",
    now: "SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xid, 0::bigint AS seq \
          WHERE $1::text IS NOT NULL",
    watermark: "SELECT xid::text AS xid, seq FROM contact_change_watermarks WHERE tenant_id = $1",
    raise_watermark: "INSERT INTO contact_change_watermarks (tenant_id, xid, seq) \
        VALUES ($1, $2::xid8, $3) ON CONFLICT (tenant_id) DO UPDATE \
        SET xid = EXCLUDED.xid, seq = EXCLUDED.seq \
        WHERE (contact_change_watermarks.xid, contact_change_watermarks.seq) \
            < (EXCLUDED.xid, EXCLUDED.seq)",
};

pub(crate) const SQLITE: ChangeSql = ChangeSql {
    stamp: None,
    position: "'0' AS xid, seq",
    after: "SELECT (SELECT '0.' || w.seq FROM contact_change_watermarks w \
                 WHERE w.tenant_id = $1) AS purged, 0 AS held, c.* \
        FROM (SELECT 1) s LEFT JOIN (SELECT '0' AS xid, seq, type, contact_id, \
                 changed_fields, occurred_at, email, properties, suppressed, unsubscribed, \
                 created_at, updated_at, revision FROM contact_changes \
               WHERE tenant_id = $1 AND seq > $3 AND $2 IS NOT NULL \
                 AND ($5 OR type IN (SELECT value FROM json_each($6))) \
               ORDER BY seq LIMIT $4) c ON 1 ORDER BY c.seq",
    now: "SELECT '0' AS xid, coalesce(max(seq), 0) AS seq FROM contact_changes \
          WHERE tenant_id = $1",
    watermark: "SELECT '0' AS xid, seq FROM contact_change_watermarks WHERE tenant_id = $1",
    raise_watermark: "INSERT INTO contact_change_watermarks (tenant_id, seq) \
        VALUES ($1, $3) ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq \
        WHERE contact_change_watermarks.seq < excluded.seq AND $2 IS NOT NULL",
};

/// Writes `change` in the transaction on `conn`.
pub(super) async fn record<C: TxConn>(
    conn: &mut <C::Db as Database>::Connection,
    tenant: &str,
    change: &ContactChange,
) -> StoreResult<()> {
    let text = record_sql::<C::Db>();
    let fields = serde_json::to_string(&change.changed_fields).map_err(StoreError::internal)?;
    let contact = change.contact.as_ref();
    Stmt::<C::Db>::new(text.as_str())
        .bind(tenant)
        .bind(change.kind.as_str())
        .bind(change.contact_id.as_str())
        .bind(Some(fields.as_str()))
        .bind(DbTime(change.occurred_at))
        .bind(contact.map(|c| c.email.as_str()))
        .bind(contact.map(|c| DbJson(c.properties.as_map())))
        .bind(contact.map(|c| c.suppressed))
        .bind(contact.map(|c| c.unsubscribed))
        .bind(contact.map(|c| DbTime(c.created_at)))
        .bind(contact.map(|c| DbTime(c.updated_at)))
        .bind(contact.map(|c| c.revision))
        .bind_now()
        .execute(conn)
        .await?;
    Ok(())
}

/// `INSERT INTO contact_changes (...` up to the values: the columns `record` and
/// `record_many` fill, the stamp's among them where the dialect has one.
fn insert_columns<DB: Dialect>() -> SqlText {
    let text = SqlText::new(
        "INSERT INTO contact_changes (tenant_id, type, contact_id, changed_fields, \
         occurred_at, email, properties, suppressed, unsubscribed, created_at, updated_at, \
         revision, recorded_at",
    );
    if DB::CHANGES.stamp.is_some() {
        text.push(", xid")
    } else {
        text
    }
}

/// The statement `record` runs (PostgreSQL's is pinned to `postgres::sql::INSERT_CHANGE`,
/// the benchmark's copy).
fn record_sql<DB: Dialect>() -> SqlText {
    let sql = DB::CHANGES;
    let mut text = insert_columns::<DB>();
    text = text
        .push(") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ")
        .now::<DB>();
    if let Some(stamp) = sql.stamp {
        text = text.push(", ").push(stamp);
    }
    text.push(")")
}

/// Writes `changes` in the transaction on `conn` with one statement, in their
/// order (the order of their `seq`): a batch of contacts (ImportContacts) costs one
/// round trip, not one per contact. On PostgreSQL every change of the statement
/// gets the stamp `record` would give it, taken after the batch's contact rows were
/// written and locked.
pub(super) async fn record_many<C: TxConn>(
    conn: &mut <C::Db as Database>::Connection,
    tenant: &str,
    changes: &[&ContactChange],
) -> StoreResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut records = Vec::with_capacity(changes.len());
    for (ord, change) in changes.iter().enumerate() {
        let contact = change.contact.as_ref();
        records.push(ChangeRecordJson {
            ord: ord as i64,
            kind: change.kind.as_str(),
            contact_id: change.contact_id.as_str(),
            changed_fields: serde_json::to_string(&change.changed_fields)
                .map_err(StoreError::internal)?,
            occurred_at: change.occurred_at.timestamp_micros(),
            email: contact.map(|c| c.email.as_str()),
            properties: contact
                .map(|c| serde_json::to_string(c.properties.as_map()))
                .transpose()
                .map_err(StoreError::internal)?,
            suppressed: contact.map(|c| c.suppressed),
            unsubscribed: contact.map(|c| c.unsubscribed),
            created_at: contact.map(|c| c.created_at.timestamp_micros()),
            updated_at: contact.map(|c| c.updated_at.timestamp_micros()),
            revision: contact.map(|c| c.revision),
        });
    }
    let json = serde_json::to_string(&records).map_err(StoreError::internal)?;
    let text = record_many_sql::<C::Db>();
    Stmt::<C::Db>::new(text.as_str())
        .bind(tenant)
        .bind_now()
        .bind(JsonText(json.as_str()))
        .execute(conn)
        .await?;
    Ok(())
}

/// A change as a member of the JSON array `record_many` binds.
#[derive(serde::Serialize)]
struct ChangeRecordJson<'a> {
    ord: i64,
    kind: &'a str,
    contact_id: &'a str,
    changed_fields: String,
    occurred_at: i64,
    email: Option<&'a str>,
    properties: Option<String>,
    suppressed: Option<bool>,
    unsubscribed: Option<bool>,
    created_at: Option<i64>,
    updated_at: Option<i64>,
    revision: Option<i64>,
}

const CHANGE_ROW: &[JsonColumn] = &[
    JsonColumn("ord", ColumnKind::Int),
    JsonColumn("kind", ColumnKind::Text),
    JsonColumn("contact_id", ColumnKind::Text),
    JsonColumn("changed_fields", ColumnKind::Text),
    JsonColumn("occurred_at", ColumnKind::Micros),
    JsonColumn("email", ColumnKind::Text),
    JsonColumn("properties", ColumnKind::Json),
    JsonColumn("suppressed", ColumnKind::Bool),
    JsonColumn("unsubscribed", ColumnKind::Bool),
    JsonColumn("created_at", ColumnKind::Micros),
    JsonColumn("updated_at", ColumnKind::Micros),
    JsonColumn("revision", ColumnKind::Int),
];

/// The statement `record_many` runs: `record`'s columns from a JSON array.
fn record_many_sql<DB: Dialect>() -> SqlText {
    let sql = DB::CHANGES;
    let mut text = insert_columns::<DB>();
    text = text
        .push(
            ") SELECT ?, r.kind, r.contact_id, r.changed_fields, r.occurred_at, r.email, \
             r.properties, r.suppressed, r.unsubscribed, r.created_at, r.updated_at, \
             r.revision, ",
        )
        .now::<DB>();
    if let Some(stamp) = sql.stamp {
        text = text.push(", ").push(stamp);
    }
    text.push(" FROM ")
        .push(&DB::json_rows(CHANGE_ROW))
        .push(" ORDER BY r.ord")
}

/// Erases what the earlier changes of `contact` hold about the person: only the
/// kinds, ids and times remain.
pub(super) async fn scrub<C: TxConn>(
    conn: &mut <C::Db as Database>::Connection,
    tenant: &str,
    contact: &ContactId,
) -> StoreResult<()> {
    Stmt::<C::Db>::new(
        "UPDATE contact_changes SET changed_fields = NULL, email = NULL, properties = NULL, \
         suppressed = NULL, unsubscribed = NULL, created_at = NULL, updated_at = NULL, \
         revision = NULL WHERE tenant_id = $1 AND contact_id = $2 AND email IS NOT NULL",
    )
    .bind(tenant)
    .bind(contact.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

fn get<DB: SqlDb + Get<T>, T>(row: &DB::Row, column: &str) -> StoreResult<T> {
    <DB as Get<T>>::get(row, column).map_err(DB::classify)
}

fn position<DB: SqlDb>(xid: &str, seq: i64) -> StoreResult<ChangePosition> {
    let xid = xid
        .parse()
        .map_err(|_| StoreError::internal("a change's xid is not a number"))?;
    Ok(ChangePosition { xid, seq })
}

fn position_of_row<DB: SqlDb>(row: &DB::Row) -> StoreResult<ChangePosition> {
    let xid: String = get::<DB, _>(row, "xid")?;
    position::<DB>(&xid, get::<DB, _>(row, "seq")?)
}

/// A change of a row of `ChangeSql::after`; `None` for the row of a batch without
/// changes.
fn change_of_row<DB: SqlDb>(row: &DB::Row) -> StoreResult<Option<ChangeRecord>> {
    let Some(xid) = get::<DB, Option<String>>(row, "xid")? else {
        return Ok(None);
    };
    let seq: Option<i64> = get::<DB, _>(row, "seq")?;
    let kind: Option<String> = get::<DB, _>(row, "type")?;
    let kind = kind
        .as_deref()
        .and_then(ChangeKind::parse)
        .ok_or_else(|| StoreError::internal("unknown change type in the database"))?;
    let contact_id =
        ContactId::from_trusted(get::<DB, Option<String>>(row, "contact_id")?.unwrap_or_default());
    let fields: Option<String> = get::<DB, _>(row, "changed_fields")?;
    let changed_fields = match fields {
        Some(text) => serde_json::from_str(&text).map_err(StoreError::internal)?,
        None => Vec::new(),
    };
    let occurred_at: Option<DbTime> = get::<DB, _>(row, "occurred_at")?;
    let email: Option<String> = get::<DB, _>(row, "email")?;
    let contact = match email {
        None => None,
        Some(email) => {
            let properties: Option<JsonText> = get::<DB, _>(row, "properties")?;
            let created: Option<DbTime> = get::<DB, _>(row, "created_at")?;
            let updated: Option<DbTime> = get::<DB, _>(row, "updated_at")?;
            let missing = || StoreError::internal("a change's contact is incomplete");
            Some(ContactView {
                id: contact_id.clone(),
                email: Email::from_trusted(email),
                properties: PropertiesJson::from_trusted(properties.ok_or_else(missing)?.0),
                suppressed: get::<DB, Option<bool>>(row, "suppressed")?.unwrap_or_default(),
                unsubscribed: get::<DB, Option<bool>>(row, "unsubscribed")?.unwrap_or_default(),
                created_at: created.ok_or_else(missing)?.0,
                updated_at: updated.ok_or_else(missing)?.0,
                revision: get::<DB, Option<i64>>(row, "revision")?.unwrap_or_default(),
            })
        }
    };
    Ok(Some(ChangeRecord {
        position: position::<DB>(&xid, seq.unwrap_or_default())?,
        kind,
        contact_id,
        contact,
        changed_fields,
        occurred_at: occurred_at.map(|DbTime(at)| at).unwrap_or_default(),
    }))
}

/// Deletes changes recorded before `before`, at most `batch`, and raises the
/// watermark of each tenant that lost some to the last position it lost, in one
/// transaction (so a reader sees both or neither). Returns how many went.
pub(crate) async fn purge<S: SqlStore>(
    store: &S,
    before: DateTime<Utc>,
    batch: u32,
) -> StoreResult<u64> {
    let row_id = <S::Db as Dialect>::ROW_ID;
    let sql = <S::Db as Dialect>::CHANGES;
    let delete = format!(
        "DELETE FROM contact_changes WHERE {row_id} IN (SELECT {row_id} FROM contact_changes \
         WHERE recorded_at < $1 LIMIT $2) RETURNING tenant_id, {}",
        sql.position
    );
    let mut tx = store.begin_tx().await?;
    let rows = Stmt::<S::Db>::new(&delete)
        .bind(DbTime(before))
        .bind(i64::from(batch))
        .fetch_all(tx.conn())
        .await?;
    let mut last: std::collections::HashMap<String, ChangePosition> = Default::default();
    for row in &rows {
        let tenant: String = get::<S::Db, _>(row, "tenant_id")?;
        let at = position_of_row::<S::Db>(row)?;
        let entry = last.entry(tenant).or_insert(at);
        *entry = (*entry).max(at);
    }
    for (tenant, at) in &last {
        let xid = at.xid.to_string();
        Stmt::<S::Db>::new(sql.raise_watermark)
            .bind(tenant.as_str())
            .bind(xid.as_str())
            .bind(at.seq)
            .execute(tx.conn())
            .await?;
    }
    tx.commit().await?;
    Ok(rows.len() as u64)
}

/// A row of `ChangeSql::after`: the tenant's watermark and horizon, and a change
/// (none in the one row of a batch without changes).
struct ChangeRow {
    purged: Option<String>,
    held: bool,
    change: Option<ChangeRecord>,
}

fn change_row<DB: SqlDb>(row: &DB::Row) -> StoreResult<ChangeRow> {
    Ok(ChangeRow {
        purged: get::<DB, _>(row, "purged")?,
        held: get::<DB, bool>(row, "held")?,
        change: change_of_row::<DB>(row)?,
    })
}

fn change_row_bytes(row: &ChangeRow) -> usize {
    row.change.as_ref().map_or(0, change_record_bytes)
}

#[async_trait]
impl<S: SqlStore> ChangeStore for S {
    async fn read_changes(
        &self,
        tenant: &TenantId,
        after: ChangePosition,
        kinds: &[ChangeKind],
        limit: u32,
        max_bytes: usize,
    ) -> StoreResult<ChangeBatch> {
        let types: Vec<String> = kinds.iter().map(|k| k.as_str().to_owned()).collect();
        let xid = after.xid.to_string();
        let stmt = Stmt::<S::Db>::new(<S::Db as Dialect>::CHANGES.after)
            .bind(tenant.as_str())
            .bind(xid.as_str())
            .bind(after.seq)
            .bind(i64::from(limit))
            .bind(types.is_empty())
            .bind(TextList(&types));
        let rows = fetch_within(
            self.reads(),
            stmt,
            max_bytes,
            change_row::<S::Db>,
            change_row_bytes,
        )
        .await?;
        let mut batch = ChangeBatch {
            cut_short: rows.cut_short,
            ..ChangeBatch::default()
        };
        let mut rows = rows.items.into_iter();
        if let Some(first) = rows.next() {
            batch.purged = first
                .purged
                .as_deref()
                .map(ChangePosition::decode)
                .transpose()
                .map_err(StoreError::internal)?;
            batch.held_back = first.held;
            batch.changes.extend(first.change);
        }
        batch.changes.extend(rows.filter_map(|row| row.change));
        Ok(batch)
    }

    async fn change_start(
        &self,
        tenant: &TenantId,
        start: WatchStart,
    ) -> StoreResult<ChangePosition> {
        let sql = <S::Db as Dialect>::CHANGES;
        let text = match start {
            WatchStart::Now => sql.now,
            WatchStart::OldestRetained => sql.watermark,
        };
        let stmt = Stmt::<S::Db>::new(text).bind(tenant.as_str());
        match self.reads().fetch_optional(stmt).await? {
            Some(row) => position_of_row::<S::Db>(&row),
            None => Ok(ChangePosition::START),
        }
    }

    async fn purge_changes(&self, before: DateTime<Utc>, batch: u32) -> StoreResult<u64> {
        purge(self, before, batch).await
    }

    fn change_bell(&self) -> ChangeBell {
        self.bell().clone()
    }
}

#[cfg(test)]
mod tests;
