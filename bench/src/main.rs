//! `kraiter-bench`: how close kraiter-contacts comes to the limits of its own stack,
//! in one run on one machine. It starts a throwaway PostgreSQL (or uses
//! `--database-url`), seeds a tenant, runs the release server as a separate
//! process, drives each scenario over HTTP/2 and measures, in the same run, the
//! baselines each scenario is judged by: pgbench on the store's own SQL, COPY, and
//! a tonic echo server. Then it does the same on SQLite and writes BENCHMARKS.md.
//!
//! `cargo build --release --workspace --bins && target/release/kraiter-bench` (add
//! `--quick` for a CI-sized run).
#![forbid(unsafe_code)]

mod arms;
mod baseline;
mod cancel;
mod cluster;
mod compression;
mod data;
mod echo;
mod filters;
mod flood;
mod import;
mod light;
mod load;
mod measures;
mod nginx;
mod pgbouncer;
mod process;
mod replica;
mod report;
mod runs;
mod scenarios;
mod seed;
mod servers;
mod sqlite_baseline;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use kraiter_contacts::config::parse_duration;
use kraiter_contacts::domain::TenantId;

use crate::data::Dataset;
use crate::load::{Plan, Watch};
use crate::report::{BackendRun, Baseline, Baselines, Machine, Report, Round, Rounds, Row};
use crate::scenarios::Scenario;
pub(crate) use crate::servers::{
    Echo, create_key, sibling, start_compare_server, start_server, start_server_with, startup,
};

#[derive(Debug, Parser)]
#[command(
    name = "kraiter-bench",
    about = "Benchmark kraiter-contacts against same-run baselines"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Internal>,
    /// CI-sized run: 20,000 contacts, short windows, well under a minute.
    #[arg(long)]
    quick: bool,
    /// Contacts to seed (default 1,000,000; 20,000 with --quick).
    #[arg(long)]
    contacts: Option<u64>,
    /// Calls in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the calls share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Measured time per scenario (default 10s; 500ms with --quick).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Warm-up before each measured window (default 3s; 200ms with --quick).
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// Rounds of each unary call and of the full stream, each round next to its
    /// baseline; the ratio reported is the median of the rounds' (default 5; 1 with
    /// --quick). A unary call's `--duration` is split over its rounds.
    #[arg(long)]
    rounds: Option<usize>,
    /// Use this PostgreSQL server (a fresh database is made in it) instead of
    /// starting one.
    #[arg(long)]
    database_url: Option<String>,
    /// The server binary (default: `kraiter-contacts` next to this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// A second server binary, for an A/B within one run on a host whose speed
    /// drifts: SQLite's export rounds stream from both servers (on the same file,
    /// alternating which goes first) and print each one's rate and CPU a row.
    /// Nothing else uses it, and the report is `--server-bin`'s.
    #[arg(long)]
    compare_bin: Option<PathBuf>,
    /// Skip the SQLite backend.
    #[arg(long)]
    skip_sqlite: bool,
    /// Skip the PostgreSQL backend and its baselines.
    #[arg(long)]
    skip_postgres: bool,
    /// Markdown output (default BENCHMARKS.md on a full run, none on a partial one:
    /// `--quick`, `--only`, `--skip-sqlite` or `--skip-postgres`).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Run only these scenarios against the servers (by name, e.g.
    /// `GetContact,search`: a scenario runs when its name contains one of them).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Before stopping PostgreSQL and its server, print how to reach them and wait
    /// for Enter (for profiling and EXPLAIN by hand).
    #[arg(long)]
    hold: bool,
    /// Only the PgBouncer comparison (issue 18): GetContact, CreateContact and the full
    /// ListContacts stream on one PostgreSQL, directly and through PgBouncer in
    /// transaction mode, in alternating rounds; prints its BENCHMARKS.md section.
    #[arg(long)]
    pgbouncer: bool,
    /// Run only the read-replica export (issue 18): a hot standby of the throwaway
    /// cluster, the full ListContacts stream through a server reading from it
    /// (`--database-read-url`) against COPY TO on the standby; prints its section.
    #[arg(long)]
    replica_export: bool,
    /// Only the load-balancer comparison (issue 18): GetContact and the full
    /// ListContacts stream through nginx (`deploy/nginx.conf`) in front of two
    /// replicas on one PostgreSQL, against one replica directly, in alternating
    /// rounds; prints its BENCHMARKS.md section.
    #[arg(long)]
    nginx: bool,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// Serve the echo baseline (started by the benchmark itself).
    #[command(hide = true)]
    EchoServer {
        #[arg(long)]
        port: u16,
        /// Contacts in every ListContacts stream.
        #[arg(long, default_value_t = 0)]
        stream_rows: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.command {
        Some(Internal::EchoServer { port, stream_rows }) => {
            runtime.block_on(echo::serve(port, stream_rows))
        }
        None => runtime.block_on(run(args)),
    }
}

struct Setup {
    quick: bool,
    only: Vec<String>,
    hold: bool,
    server_bin: PathBuf,
    compare_bin: Option<PathBuf>,
    work_dir: PathBuf,
    plan: Plan,
    connections: usize,
    contacts: u64,
    rounds: usize,
}

impl Setup {
    /// The plans of a unary call's rounds, each a window of `--duration` split over
    /// `--rounds`: the first warms up as configured, later ones only refill the
    /// pipeline.
    fn round_plans(&self) -> (Plan, Plan) {
        let first = Plan {
            duration: self.plan.duration / self.rounds as u32,
            ..self.plan
        };
        let later = Plan {
            warmup: self.plan.warmup.min(Duration::from_millis(500)),
            ..first
        };
        (first, later)
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let quick = args.quick;
    let setup = Setup {
        quick,
        only: args.only.clone(),
        hold: args.hold,
        server_bin: match &args.server_bin {
            Some(path) => path.clone(),
            None => sibling("kraiter-contacts")?,
        },
        compare_bin: args.compare_bin.clone(),
        work_dir: std::env::temp_dir().join(format!(
            "kraiter-bench-{}",
            ulid::Ulid::new().to_string().to_lowercase()
        )),
        plan: Plan {
            concurrency: args.concurrency.max(1),
            warmup: args.warmup.unwrap_or(if quick {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(3)
            }),
            duration: args.duration.unwrap_or(if quick {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(10)
            }),
        },
        connections: args.connections,
        rounds: args.rounds.unwrap_or(if quick { 1 } else { 5 }).max(1),
        contacts: args
            .contacts
            .unwrap_or(if quick { 20_000 } else { 1_000_000 }),
    };
    if setup.contacts > Dataset::MAX_CONTACTS {
        bail!(
            "--contacts: at most {} (the seeded ids' numbering)",
            Dataset::MAX_CONTACTS
        );
    }
    std::fs::create_dir_all(&setup.work_dir)?;
    if args.replica_export {
        println!("{}", replica::run(&setup).await?);
        return Ok(());
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut report = Report {
        command,
        machine: Machine::probe(),
        contacts: setup.contacts,
        concurrency: setup.plan.concurrency,
        connections: setup.connections,
        duration: setup.plan.duration,
        warmup: setup.plan.warmup,
        rounds: setup.rounds,
        startup: None,
        baselines: Baselines::default(),
        postgres: None,
        flood: None,
        cancel: None,
        sqlite: None,
        watch: None,
        imports: Vec::new(),
    };

    if args.nginx {
        let pg = cluster::start(&setup.work_dir, args.database_url.as_deref())?;
        let section = nginx::run(&setup, &pg).await?;
        println!("{section}");
        return Ok(());
    }

    if args.pgbouncer {
        let pg = cluster::start(&setup.work_dir, args.database_url.as_deref())?;
        let section = pgbouncer::run(&setup, &pg).await?;
        println!("{section}");
        return Ok(());
    }

    eprintln!("== start-up and idle memory on an empty SQLite database");
    report.startup = Some(startup(&setup, if quick { 3 } else { 5 }).await?);

    let mut cleanup_work_dir = true;
    if !args.skip_postgres {
        // The echo server stays up: each unary scenario runs in rounds between its
        // echo and pgbench baselines, so the three see the machine in the same state.
        let echo = Echo::start(&setup).await?;
        let pg = cluster::start(&setup.work_dir, args.database_url.as_deref())?;
        cleanup_work_dir = pg.data_dir.is_none();
        report.machine.postgres = cluster::psql(&pg.bin, &pg.url, "SELECT version()")?
            .split(" on ")
            .next()
            .unwrap_or_default()
            .to_owned();
        runs::postgres_run(&setup, &pg, &echo, &mut report).await?;
    }
    if !args.skip_sqlite {
        report.sqlite = Some(runs::sqlite_run(&setup).await?);
    }

    let markdown = report.markdown();
    println!("{markdown}");
    let full = full_run(&args);
    let output = args
        .output
        .or_else(|| full.then(|| PathBuf::from("BENCHMARKS.md")));
    if output.is_none() && !quick {
        eprintln!(
            "a partial run: BENCHMARKS.md's last full run left as it is (--output to write one)"
        );
    }
    if let Some(path) = output {
        let existing = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, report::splice(&existing, &markdown))?;
        eprintln!("wrote {}", path.display());
    }
    if cleanup_work_dir {
        let _ = std::fs::remove_dir_all(&setup.work_dir);
    }
    Ok(())
}

/// Whether this run replaces BENCHMARKS.md's "last full run": every scenario on both
/// backends at full size. A partial run (`--only`, a skipped backend, `--quick`) would
/// leave that table nearly empty, so it only prints, or writes to `--output`.
fn full_run(args: &Args) -> bool {
    !args.quick && args.only.is_empty() && !args.skip_sqlite && !args.skip_postgres
}

fn wanted(setup: &Setup, scenario: Scenario) -> bool {
    wanted_name(setup, scenario.name())
}

/// Whether `--only` lets the scenario of this name run (all do without it).
fn wanted_name(setup: &Setup, scenario: &str) -> bool {
    setup.only.is_empty()
        || setup
            .only
            .iter()
            .any(|name| scenario.contains(name.as_str()))
}

fn print_row(row: &Row) {
    let me = &row.measured;
    eprintln!(
        "   {:<50} C={:<3} {:>10.0}/s p50 {:>8.2} ms  errors {}",
        row.scenario.name(),
        row.concurrency,
        if row.scenario.is_full_list() {
            me.items_per_sec()
        } else {
            me.throughput()
        },
        me.percentile(0.5).as_secs_f64() * 1e3,
        me.errors
    );
}

/// Every scenario but, with `paired`, those measured in rounds next to their baselines
/// (the unary calls and the full stream).
async fn run_scenarios(
    setup: &Setup,
    server: &process::Server,
    key: &str,
    postgres: Option<u32>,
    data: &Arc<Dataset>,
    paired: bool,
) -> anyhow::Result<Vec<Row>> {
    let clients = load::connect(&server.addr(), key, setup.connections).await?;
    let watch = Watch {
        server: Some(server.pid()),
        postgres,
    };
    let all = [
        Scenario::GetContact,
        Scenario::GetContactByEmail,
        Scenario::CreateContact,
        Scenario::UpdateContact,
        Scenario::UpsertContact,
        Scenario::BatchGet,
        Scenario::ListAll,
        Scenario::ListAllDecoded,
        Scenario::SearchRare,
        Scenario::SearchCommon,
        Scenario::SearchNone,
        Scenario::Timeline,
    ];
    let mut rows = Vec::new();
    let mut record = |scenario: Scenario, concurrency: usize, measured: load::Measured| {
        let row = Row {
            scenario,
            concurrency,
            measured,
        };
        print_row(&row);
        rows.push(row);
    };
    let chosen = all
        .into_iter()
        .filter(|s| wanted(setup, *s) && !(paired && Scenario::PAIRED.contains(s)));
    for scenario in chosen {
        let measured = scenarios::run(scenario, &clients, setup.plan, watch, data).await;
        let concurrency = if scenario.is_full_list() {
            1
        } else {
            setup.plan.concurrency
        };
        record(scenario, concurrency, measured);
    }
    for scenario in Scenario::LATENCY.into_iter().filter(|s| wanted(setup, *s)) {
        let plan = scenarios::single(setup.plan);
        let measured = scenarios::run(scenario, &clients, plan, watch, data).await;
        record(scenario, 1, measured);
    }
    Ok(rows)
}
