//! The operator's subcommands: keys, health, contacts import and export, and
//! property indexes.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use super::{StoreArgs, parse_duration};

#[derive(Debug, Subcommand)]
pub enum ContactsCommand {
    /// Stream a CSV file (a header row: `email`, then one column per property) or a
    /// JSON Lines file (`{"email": ..., "properties": {...}}` a line) through
    /// ImportContacts; failed rows go to a file with their errors.
    Import(ImportArgs),
    /// Stream the tenant's contacts (ListContacts) to stdout.
    Export(ExportArgs),
}

/// Where the server is and who is calling.
#[derive(Clone, Args)]
pub struct RemoteArgs {
    /// The server's URL.
    #[arg(long, env = "KRAITER_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// The tenant's API key.
    #[arg(long, env = "KRAITER_API_KEY", hide_env_values = true)]
    pub key: String,
}

impl std::fmt::Debug for RemoteArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteArgs")
            .field("addr", &self.addr)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    /// From the file's extension: `.csv` is CSV, anything else JSON Lines.
    Auto,
    Csv,
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportModeArg {
    /// Create new contacts, merge properties into existing ones.
    Upsert,
    /// Create only; a row whose email exists fails.
    CreateOnly,
    /// Update only; a row whose email does not exist fails.
    UpdateOnly,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The file to import (`-` reads stdin, as JSON Lines unless `--format csv`).
    pub file: std::path::PathBuf,
    #[arg(long, value_enum, default_value_t = FileFormat::Auto)]
    pub format: FileFormat,
    #[arg(long, value_enum, default_value_t = ImportModeArg::Upsert)]
    pub mode: ImportModeArg,
    /// Rows per batch (one transaction, one response), 1 to 1000.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,
    /// Where failed rows go, as JSON Lines with their errors (default: FILE.failed.jsonl).
    #[arg(long)]
    pub failed: Option<std::path::PathBuf>,
    /// CSV: keep every cell a string (no numbers, booleans, nulls or JSON).
    #[arg(long)]
    pub strings: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One contact a line, as JSON; re-importable as it is.
    Jsonl,
    /// A header row, then `id,email,suppressed,unsubscribed,created_at,updated_at,properties`
    /// (the properties as JSON), for spreadsheets.
    Csv,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// Only contacts whose email or a property value contains this (case-insensitive).
    #[arg(long, default_value = "")]
    pub search: String,
    /// Only contacts whose `suppressed` flag has this value.
    #[arg(long)]
    pub suppressed: Option<bool>,
    /// Read from the primary even when the server has read replicas, so the export has
    /// every write acknowledged before it started.
    #[arg(long)]
    pub primary: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Index a property of a tenant (PostgreSQL: CREATE INDEX CONCURRENTLY).
    Create {
        /// Tenant whose contacts the index covers (PostgreSQL; on SQLite it covers all).
        #[arg(long)]
        tenant: String,
        /// Property path, plain keys joined by `.` (`plan`, `address.city`).
        #[arg(long)]
        property: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the property indexes and their definitions.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Drop the indexes `index create` made for this tenant and property.
    Drop {
        /// Tenant given to `index create`.
        #[arg(long)]
        tenant: String,
        /// Property given to `index create`.
        #[arg(long)]
        property: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Address of the server to check (`host:port`).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Service to ask about; empty means the whole server.
    #[arg(long, default_value = "")]
    pub service: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key for a tenant (creating the tenant if needed); prints the key alone on stdout.
    Create {
        /// Tenant the key belongs to.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List keys (ids and state, never secrets).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key by id; takes effect on the next call.
    Revoke {
        /// Id of the key (`key_...`), as `keys list` shows it.
        key_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}
