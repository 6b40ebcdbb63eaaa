//! The processes a run starts: the server under test (and `--compare-bin`'s), its
//! keys, the start-up measurement, and the echo server beside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use kraiter_contacts::domain::TenantId;

use crate::data::Dataset;
use crate::load::{self, Plan, Watch};
use crate::report::Startup;
use crate::scenarios::{self, Scenario};
use crate::{Setup, cluster, process};

/// A binary built next to this one.
pub(crate) fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name(name);
    if !path.exists() {
        bail!(
            "`{}` not found: build it with `cargo build --release --workspace --bins` or pass \
             --server-bin",
            path.display()
        );
    }
    Ok(path)
}

/// Runs `kraiter-contacts keys create` (which also migrates) and returns the key.
pub(crate) fn create_key(setup: &Setup, url: &str, tenant: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new(&setup.server_bin)
        .args(["keys", "create", "--tenant", tenant, "--database-url", url])
        .env("RUST_LOG", "warn")
        .output()
        .context("run `kraiter-contacts keys create`")?;
    if !out.status.success() {
        bail!(
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub(crate) async fn start_server(
    setup: &Setup,
    url: &str,
    name: &str,
) -> anyhow::Result<process::Server> {
    start_server_with(setup, url, name, &[]).await
}

/// `start_server` with more flags.
pub(crate) async fn start_server_with(
    setup: &Setup,
    url: &str,
    name: &str,
    flags: &[&str],
) -> anyhow::Result<process::Server> {
    start_binary(setup, &setup.server_bin, url, name, flags).await
}

/// `--compare-bin`'s server, if one is asked for, as `start_server` starts the other.
pub(crate) async fn start_compare_server(
    setup: &Setup,
    url: &str,
    name: &str,
) -> anyhow::Result<Option<process::Server>> {
    match &setup.compare_bin {
        Some(bin) => Ok(Some(start_binary(setup, bin, url, name, &[]).await?)),
        None => Ok(None),
    }
}

/// The server binary `bin` serving `url`, its log `name`.log in the work directory.
async fn start_binary(
    setup: &Setup,
    bin: &Path,
    url: &str,
    name: &str,
    flags: &[&str],
) -> anyhow::Result<process::Server> {
    let port = cluster::free_port()?;
    let args: Vec<String> = [
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--database-url",
        url,
    ]
    .iter()
    .chain(flags)
    .map(|s| s.to_string())
    .collect();
    let log = setup.work_dir.join(format!("{name}.log"));
    process::spawn_serving(bin, &args, &[], port, &log).await
}

pub(crate) async fn startup(setup: &Setup, runs: usize) -> anyhow::Result<Startup> {
    let mut times = Vec::new();
    let mut idle_rss_kib = 0;
    for i in 0..runs {
        let dir = setup.work_dir.join(format!("startup-{i}"));
        std::fs::create_dir_all(&dir)?;
        let url = format!("sqlite://{}/contacts.db", dir.display());
        let server = start_server(setup, &url, &format!("startup-{i}")).await?;
        times.push(server.start_to_serving);
        if i == 0 {
            // Idle: after start-up work settles and a few health probes have run.
            tokio::time::sleep(Duration::from_secs(if setup.quick { 1 } else { 2 })).await;
            idle_rss_kib = process::status_kib(server.pid(), "VmRSS");
        }
    }
    Ok(Startup {
        runs: times,
        idle_rss_kib,
    })
}

/// The echo server (`kraiter-bench echo-server`) and clients connected to it.
pub(crate) struct Echo {
    pub(crate) server: process::Server,
    pub(crate) clients: load::Clients,
    pub(crate) data: Arc<Dataset>,
}

impl Echo {
    pub(crate) async fn start(setup: &Setup) -> anyhow::Result<Echo> {
        let port = cluster::free_port()?;
        let args = vec![
            "echo-server".to_owned(),
            "--port".to_owned(),
            port.to_string(),
            "--stream-rows".to_owned(),
            setup.contacts.to_string(),
        ];
        let log = setup.work_dir.join("echo.log");
        let server =
            process::spawn_serving(&std::env::current_exe()?, &args, &[], port, &log).await?;
        let clients = load::connect(&server.addr(), "kr_echo", setup.connections).await?;
        let data = Arc::new(Dataset::new(TenantId::parse("echo")?, setup.contacts));
        Ok(Echo {
            server,
            clients,
            data,
        })
    }

    /// What a measurement of the echo server reads: its own process.
    pub(crate) fn watch(&self) -> Watch {
        Watch {
            server: Some(self.server.pid()),
            postgres: None,
        }
    }

    pub(crate) async fn measure(&self, scenario: Scenario, plan: Plan) -> load::Measured {
        let measured =
            scenarios::run(scenario, &self.clients, plan, self.watch(), &self.data).await;
        eprintln!(
            "   {:<50} echo  {:>10.0} calls/s",
            scenario.name(),
            measured.throughput()
        );
        measured
    }
}
