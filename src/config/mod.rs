//! Command line and environment. Every flag has an environment variable, and the
//! README's configuration table is checked against `--help` by a test. The server's
//! flags are in `server`, the operator's subcommands in `tools`, the parsers of
//! durations, sizes and endpoints in `values`.

mod server;
mod tools;
mod values;

use clap::{Parser, Subcommand};

pub use server::*;
pub use tools::*;
pub use values::*;

/// Default store: a SQLite file next to where the service runs.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/kraiter-contacts.db";

#[derive(Debug, Parser)]
#[command(
    name = "kraiter-contacts",
    version,
    about = "The Kraiter contacts gRPC service"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, which runs when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at start-up; boxing `ServeArgs` would only make the match noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (the default).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(StoreArgs),
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Ask a running server's gRPC health service; exits 0 when it is SERVING, 1
    /// otherwise (the container's HEALTHCHECK).
    Health(HealthArgs),
    /// Import or export a tenant's contacts through a running server.
    Contacts {
        #[command(subcommand)]
        command: ContactsCommand,
    },
    /// Manage indexes of hot properties, for filters on them.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn read_urls_come_comma_separated_or_repeated() {
        let cli = Cli::try_parse_from([
            "kraiter-contacts",
            "--database-read-url",
            "postgres://a/db,postgres://b/db",
            "--database-read-url",
            "postgres://c/db",
        ])
        .expect("flags parse");
        let options = cli.serve.replicas.options();
        assert_eq!(
            options.urls,
            ["postgres://a/db", "postgres://b/db", "postgres://c/db"]
        );
        assert_eq!(options.max_lag, Duration::from_secs(5));
        let defaults = Cli::try_parse_from(["kraiter-contacts"]).expect("no flags parse");
        assert!(defaults.serve.replicas.options().urls.is_empty());
        assert_eq!(
            defaults.serve.replicas.max_replica_lag,
            ReplicaArgs::default().max_replica_lag
        );
    }

    #[test]
    fn limit_defaults_match_the_flags() {
        let cli = Cli::try_parse_from(["kraiter-contacts"]).expect("no flags parse");
        let parsed = cli.serve.limits;
        let default = LimitArgs::default();
        assert_eq!(parsed.max_message_size, default.max_message_size);
        assert_eq!(
            parsed.max_concurrent_streams,
            default.max_concurrent_streams
        );
        assert_eq!(parsed.request_timeout, default.request_timeout);
        assert_eq!(parsed.rate_limit_rps, None);
        assert_eq!(parsed.max_page_bytes, default.max_page_bytes);
        assert_eq!(parsed.max_streams, default.max_streams);
        assert_eq!(
            parsed.max_streams_per_tenant,
            default.max_streams_per_tenant
        );
        assert_eq!(parsed.stream_key_recheck, default.stream_key_recheck);
        assert_eq!(parsed.change_retention, default.change_retention);
        assert_eq!(parsed.max_watchers, default.max_watchers);
        assert_eq!(
            parsed.max_watchers_per_tenant,
            default.max_watchers_per_tenant
        );
        assert_eq!(parsed.import_depth, default.import_depth);
        assert!(cli.serve.tls.tls_cert.is_none());
        assert_eq!(cli.serve.telemetry.otlp_endpoint, None, "off by default");
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
