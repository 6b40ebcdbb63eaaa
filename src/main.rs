mod cli;

use anyhow::Context;
use clap::Parser;
use kraiter_contacts::config::{
    Cli, Command, HealthArgs, IndexCommand, KeysCommand, ServeArgs, StoreArgs,
};
use kraiter_contacts::domain::TenantId;
use kraiter_contacts::startup::Application;
use kraiter_contacts::{keys, store, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Migrate(args)) => {
            telemetry::init(kraiter_contacts::config::LogFormat::Text);
            open(&args).await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Some(Command::Keys { command }) => keys_command(command).await,
        Some(Command::Health(args)) => health(args).await,
        Some(Command::Contacts { command }) => cli::contacts(command).await,
        Some(Command::Index { command }) => index_command(command).await,
    }
}

/// Exit status 0 only when the server reports SERVING.
async fn health(args: HealthArgs) -> anyhow::Result<()> {
    let status = kraiter_contacts::client::health_check(&args.addr, &args.service, args.timeout)
        .await
        .with_context(|| format!("no health answer from `{}`", args.addr))?;
    println!("{}", status.as_str_name());
    anyhow::ensure!(
        status == tonic_health::pb::health_check_response::ServingStatus::Serving,
        "`{}` is not serving",
        args.addr
    );
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let telemetry =
        telemetry::init_serve(args.log_format, args.telemetry.otlp_endpoint.as_deref())?;
    let shutdown = shutdown_signal()?;
    let (app, bootstrap) = Application::build(&args).await.context("start-up failed")?;
    let addr = app.local_addr();
    if let Some(key) = bootstrap {
        // Shown once, on the terminal; only its hash is stored.
        eprintln!(
            "\nCreated tenant `{}` with API key (shown only this once):\n\n    {}\n\nTry it:\n\n    grpcurl -plaintext -H 'authorization: Bearer {}' -d '{{\"email\":\"alice@example.com\"}}' {} kraiter.contacts.v1.ContactsService/CreateContact\n",
            key.tenant, key.secret, key.secret, addr
        );
    }
    // Both addresses, so `--listen` and `--metrics-listen` may ask for port 0.
    match app.metrics_addr() {
        Some(metrics) => tracing::info!(%addr, %metrics, "listening"),
        None => tracing::info!(%addr, "listening"),
    }
    let result = app.run_until(shutdown).await.context("server failed");
    // After the drain: the last calls' spans are queued by now.
    telemetry.shutdown().await;
    result
}

/// Registers SIGTERM/SIGINT handlers at once (before the server announces itself, so an
/// early SIGTERM is a graceful stop, not a kill) and resolves on the first signal.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

async fn open(args: &StoreArgs) -> anyhow::Result<store::DynStore> {
    store::connect(&args.database_url, &args.connect_options())
        .await
        .context("cannot open the database")
}

async fn keys_command(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { tenant, store } => {
            let tenant = TenantId::parse(&tenant)?;
            let store = open(&store).await?;
            let (key_id, secret) = keys::create(store.as_ref(), &tenant).await?;
            eprintln!("created key `{key_id}` for tenant `{tenant}`");
            println!("{secret}");
        }
        KeysCommand::List { tenant, store } => {
            let tenant = tenant.as_deref().map(TenantId::parse).transpose()?;
            let store = open(&store).await?;
            println!("{:<32} {:<24} {:<28} STATE", "KEY ID", "TENANT", "CREATED");
            for key in store.list_api_keys(tenant.as_ref()).await? {
                let state = key.revoked_at.map_or("active".to_owned(), |at| {
                    format!("revoked {}", at.to_rfc3339())
                });
                println!(
                    "{:<32} {:<24} {:<28} {state}",
                    key.key_id,
                    key.tenant,
                    key.created_at.to_rfc3339()
                );
            }
        }
        KeysCommand::Revoke { key_id, store } => {
            let store = open(&store).await?;
            if !store.revoke_api_key(&key_id).await? {
                anyhow::bail!("no active key `{key_id}`");
            }
            eprintln!("revoked key `{key_id}`");
        }
    }
    Ok(())
}

async fn index_command(command: IndexCommand) -> anyhow::Result<()> {
    use kraiter_contacts::store::property_index::{self, parse_property};
    match command {
        IndexCommand::Create {
            tenant,
            property,
            store,
        } => {
            let (tenant, path) = (TenantId::parse(&tenant)?, parse_property(&property)?);
            // Migrated first: the index is on the contacts table.
            open(&store).await?;
            let url = &store.database_url;
            for statement in property_index::create(url, &tenant, &path).await? {
                eprintln!("{statement}");
            }
        }
        IndexCommand::List { store } => {
            for index in property_index::list(&store.database_url).await? {
                println!("{}\t{}", index.name, index.definition);
            }
        }
        IndexCommand::Drop {
            tenant,
            property,
            store,
        } => {
            let (tenant, path) = (TenantId::parse(&tenant)?, parse_property(&property)?);
            property_index::drop(&store.database_url, &tenant, &path).await?;
            eprintln!("dropped the indexes of `{property}` for `{tenant}`");
        }
    }
    Ok(())
}
