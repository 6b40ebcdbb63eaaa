//! Migrations embedded in the binary, so a deployed service needs no files beside it.

use std::borrow::Cow;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

/// `(version, description, sql)` of each migration, in order.
pub type Script = (i64, &'static str, &'static str);

// `POSTGRES` and `SQLITE`: every `migrations/<backend>/*.sql`, in order (build.rs).
include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

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

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("the migrations folder exists")
            .map(|entry| {
                entry
                    .expect("readable")
                    .file_name()
                    .into_string()
                    .expect("utf-8")
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_migration_file_is_embedded_in_order() {
        for (dir, scripts) in [
            ("migrations/postgres", POSTGRES),
            ("migrations/sqlite", SQLITE),
        ] {
            let names = files(dir);
            assert_eq!(names.len(), scripts.len(), "{dir}: a file is not embedded");
            for (name, (version, description, sql)) in names.iter().zip(scripts) {
                let expected = format!("{version:04}_{}.sql", description.replace(' ', "_"));
                assert_eq!(name, &expected, "{dir}");
                let on_disk = std::fs::read_to_string(
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join(dir)
                        .join(name),
                )
                .expect("readable");
                assert_eq!(&on_disk, sql, "{dir}/{name}: embedded text differs");
            }
            let versions: Vec<i64> = scripts.iter().map(|(v, _, _)| *v).collect();
            assert!(
                versions.windows(2).all(|w| w[0] < w[1]),
                "{dir}: versions ascend"
            );
        }
    }
}
