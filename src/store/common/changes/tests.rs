use sqlx::Postgres;

use crate::store::postgres::sql;

/// The benchmark's UpsertContact baseline runs `postgres::sql`'s copy.
#[test]
fn the_benchmarks_copy_of_the_change_insert_is_the_stores() {
    assert_eq!(super::record_sql::<Postgres>().as_str(), sql::INSERT_CHANGE);
}

/// SQLite's baseline (issue 20) runs `sqlite::sql`'s copy.
#[test]
fn the_sqlite_baselines_copy_of_the_change_insert_is_the_stores() {
    let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        words(super::record_sql::<sqlx::Sqlite>().as_str()),
        words(crate::store::sqlite::sql::INSERT_CHANGE)
    );
}
