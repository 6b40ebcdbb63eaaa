//! The operator's command line: `contacts import` and `contacts export`, which talk to
//! a running server through the crate's client, so they work against any deployment.

mod cells;
mod export;
mod import;
mod rows;

use kraiter_contacts::config::ContactsCommand;

pub async fn contacts(command: ContactsCommand) -> anyhow::Result<()> {
    match command {
        ContactsCommand::Export(args) => export::run(args).await,
        ContactsCommand::Import(args) => import::run(args).await,
    }
}
