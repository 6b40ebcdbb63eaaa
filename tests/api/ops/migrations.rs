//! Every file in `migrations/<backend>/` is applied at start-up: the versions sqlx
//! records as applied are exactly the files there, on both backends (build.rs embeds
//! the folder, so a new file cannot be forgotten).

use crate::conformance;
use crate::support::storage::Storage;
use crate::support::{Backend, spawn_app};

/// The versions of the migration files of `backend`, from their names (`NNNN_*.sql`).
fn versions_on_disk(backend: Backend) -> Vec<i64> {
    let folder = match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(folder);
    let mut versions: Vec<i64> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
        .map(|entry| entry.expect("a directory entry").file_name())
        .filter_map(|name| {
            let name = name.to_string_lossy().into_owned();
            name.ends_with(".sql")
                .then(|| name.split('_').next().map(str::to_owned))
                .flatten()
        })
        .map(|version| version.parse().expect("NNNN_description.sql"))
        .collect();
    versions.sort_unstable();
    versions
}

async fn every_migration_file_is_applied(backend: Backend) {
    let app = spawn_app(backend).await;
    let versions = versions_on_disk(backend);
    assert!(!versions.is_empty(), "{backend:?}: migration files found");
    let mut storage = Storage::open(&app).await;
    for version in &versions {
        let applied = storage
            .count(
                "SELECT count(*) FROM _sqlx_migrations WHERE version = CAST($1 AS BIGINT) AND success",
                &[&version.to_string()],
            )
            .await;
        assert_eq!(applied, 1, "{backend:?}: migration {version} applied");
    }
    let recorded = storage
        .count("SELECT count(*) FROM _sqlx_migrations", &[])
        .await;
    assert_eq!(
        recorded,
        versions.len() as i64,
        "{backend:?}: no migration applied that is not a file"
    );
}

conformance!(every_migration_file_is_applied);
