use sqlx::Postgres;

use super::{CONTACT_COLUMNS, lock_sql};
use crate::store::postgres::sql;

/// A contact's columns come first and in the same order in every statement that
/// returns one: PostgreSQL reads them by position (`postgres::rows`).
#[test]
fn the_shared_contact_columns_are_postgres_columns() {
    assert_eq!(CONTACT_COLUMNS, sql::CONTACT_COLUMNS);
    let lock = lock_sql::<Postgres>(CONTACT_COLUMNS, "contacts", "id = $2");
    assert!(lock.ends_with(" FOR UPDATE"), "{lock}");
}

/// The benchmark's UpsertContact baseline runs `postgres::sql`'s copies.
#[test]
fn the_benchmarks_copies_of_the_upsert_statements_are_the_stores() {
    let lock = lock_sql::<Postgres>(CONTACT_COLUMNS, "contacts", "email_key = $2");
    assert_eq!(lock, sql::LOCK_CONTACT_BY_EMAIL);
    assert_eq!(super::UPDATE_CONTACT, sql::UPDATE_CONTACT);
    assert_eq!(super::INSERT_TIMELINE_ENTRY, sql::INSERT_TIMELINE_ENTRY);
}

/// SQLite's baseline (issue 20) runs `sqlite::sql`'s copies of the contact writes.
#[test]
fn the_sqlite_baselines_copies_of_the_contact_writes_are_the_stores() {
    use crate::store::sqlite::sql as sqlite;
    let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(words(super::INSERT_CONTACT), words(sqlite::INSERT_CONTACT));
    assert_eq!(
        words(super::UPDATE_CONTACT_IF_REVISION),
        words(sqlite::UPDATE_CONTACT_IF_REVISION)
    );
    assert_eq!(
        words(super::INSERT_TIMELINE_ENTRY),
        words(sqlite::INSERT_TIMELINE_ENTRY)
    );
}
