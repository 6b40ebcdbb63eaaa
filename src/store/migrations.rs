//! Migrations embedded in the binary, so a deployed service needs no files beside it.

use std::borrow::Cow;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

/// `(version, description, sql)` of each migration, in order.
pub type Script = (i64, &'static str, &'static str);

pub const POSTGRES: &[Script] = &[
    (
        1,
        "contacts",
        include_str!("../../migrations/postgres/0001_contacts.sql"),
    ),
    (
        2,
        "activity",
        include_str!("../../migrations/postgres/0002_activity.sql"),
    ),
    (
        3,
        "search index pending list",
        include_str!("../../migrations/postgres/0003_search_index_pending_list.sql"),
    ),
    (
        4,
        "search index trigrams first",
        include_str!("../../migrations/postgres/0004_search_index_trigrams_first.sql"),
    ),
];

pub const SQLITE: &[Script] = &[
    (
        1,
        "contacts",
        include_str!("../../migrations/sqlite/0001_contacts.sql"),
    ),
    (
        2,
        "activity",
        include_str!("../../migrations/sqlite/0002_activity.sql"),
    ),
];

#[derive(Debug)]
struct Embedded(&'static [Script]);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> futures_core::future::BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

pub async fn migrator(scripts: &'static [Script]) -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(Embedded(scripts)).await
}
