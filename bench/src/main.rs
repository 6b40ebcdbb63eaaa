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

mod baseline;
mod cluster;
mod data;
mod echo;
mod load;
mod process;
mod report;
mod scenarios;
mod seed;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use kraiter_contacts::config::parse_duration;
use kraiter_contacts::domain::TenantId;

use crate::data::Dataset;
use crate::load::{Plan, Watch};
use crate::report::{
    BackendRun, Baseline, Baselines, Machine, Report, Round, Rounds, Row, Startup,
};
use crate::scenarios::Scenario;

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
    /// Skip the SQLite backend.
    #[arg(long)]
    skip_sqlite: bool,
    /// Skip the PostgreSQL backend and its baselines.
    #[arg(long)]
    skip_postgres: bool,
    /// Markdown output (default BENCHMARKS.md; none with --quick).
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
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// Serve the echo baseline (started by the benchmark itself).
    #[command(hide = true)]
    EchoServer {
        #[arg(long)]
        port: u16,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.command {
        Some(Internal::EchoServer { port }) => runtime.block_on(echo::serve(port)),
        None => runtime.block_on(run(args)),
    }
}

struct Setup {
    quick: bool,
    only: Vec<String>,
    hold: bool,
    server_bin: PathBuf,
    work_dir: PathBuf,
    plan: Plan,
    connections: usize,
    contacts: u64,
    rounds: usize,
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
    std::fs::create_dir_all(&setup.work_dir)?;
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
        sqlite: None,
    };

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
        postgres_run(&setup, &pg, &echo, &mut report).await?;
    }
    if !args.skip_sqlite {
        report.sqlite = Some(sqlite_run(&setup).await?);
    }

    let markdown = report.markdown();
    println!("{markdown}");
    let output = args
        .output
        .or_else(|| (!quick).then(|| PathBuf::from("BENCHMARKS.md")));
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

/// A binary built next to this one.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
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
fn create_key(setup: &Setup, url: &str, tenant: &str) -> anyhow::Result<String> {
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

async fn start_server(setup: &Setup, url: &str, name: &str) -> anyhow::Result<process::Server> {
    let port = cluster::free_port()?;
    let args: Vec<String> = [
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--database-url",
        url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = setup.work_dir.join(format!("{name}.log"));
    process::spawn_serving(&setup.server_bin, &args, &[], port, &log).await
}

async fn startup(setup: &Setup, runs: usize) -> anyhow::Result<Startup> {
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
struct Echo {
    server: process::Server,
    clients: load::Clients,
    data: Arc<Dataset>,
}

impl Echo {
    async fn start(setup: &Setup) -> anyhow::Result<Echo> {
        let port = cluster::free_port()?;
        let args = vec![
            "echo-server".to_owned(),
            "--port".to_owned(),
            port.to_string(),
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

    async fn measure(&self, scenario: Scenario, plan: Plan) -> load::Measured {
        let watch = Watch {
            server: Some(self.server.pid()),
            postgres: None,
        };
        let measured = scenarios::run(scenario, &self.clients, plan, watch, &self.data).await;
        eprintln!(
            "   {:<50} echo  {:>10.0} calls/s",
            scenario.name(),
            measured.throughput()
        );
        measured
    }
}

fn wanted(setup: &Setup, scenario: Scenario) -> bool {
    setup.only.is_empty()
        || setup
            .only
            .iter()
            .any(|name| scenario.name().contains(name.as_str()))
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

async fn postgres_run(
    setup: &Setup,
    pg: &cluster::Postgres,
    echo: &Echo,
    report: &mut Report,
) -> anyhow::Result<()> {
    eprintln!("== PostgreSQL at {}", pg.url);
    let key = create_key(setup, &pg.url, "bench")?;
    let data = Arc::new(Dataset::new(TenantId::parse("bench")?, setup.contacts));
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&pg.url)
        .await?;
    eprintln!("   seeding {} contacts", setup.contacts);
    let seed = seed::postgres(&pool, data.clone(), 2).await?;
    eprintln!("   seeded: {seed:?}");
    match prewarm(&pool).await {
        Ok(blocks) => eprintln!("   prewarmed {} MiB", blocks * 8 / 1024),
        Err(err) => eprintln!("   not prewarmed ({err}): the first scenario reads cold pages"),
    }

    let server = start_server(setup, &pg.url, "server-postgres").await?;
    let clients = load::connect(&server.addr(), &key, setup.connections).await?;
    let watch = Watch {
        server: Some(server.pid()),
        postgres: pg.postmaster_pid(),
    };
    let mut rows = Vec::new();
    // Reads and searches first: pgbench's writes below add rows and replace whole
    // property sets, which the searches and the full stream must not see.
    if wanted(setup, Scenario::ListAll) {
        eprintln!("== full stream and COPY TO, in rounds");
        let rounds = export_rounds(setup, &pool, &clients, watch, &data).await?;
        rows.push(Row {
            scenario: Scenario::ListAll,
            concurrency: 1,
            measured: rounds.service(),
        });
        report.baselines.rounds.push(rounds);
    }
    let others = run_scenarios(setup, &server, &key, pg.postmaster_pid(), &data, true).await?;

    eprintln!("== unary calls in rounds: echo, service, pgbench (and back)");
    let vars = baseline::variables(&data, &key);
    // New ids and emails for every pgbench run.
    let write_vars = || {
        let mut all = vars.clone();
        all.extend(baseline::write_variables(&data));
        all
    };
    let scripts = [
        (Scenario::GetContact, "get", vec![baseline::get_contact()]),
        (
            Scenario::GetContactByEmail,
            "by-email",
            vec![baseline::get_contact_by_email()],
        ),
        (
            Scenario::CreateContact,
            "create",
            baseline::create_contact(),
        ),
        (
            Scenario::UpdateContact,
            "update",
            baseline::update_contact(),
        ),
    ];
    // The first round warms up as configured; later ones only refill the pipeline.
    let window = setup.plan.duration / setup.rounds as u32;
    let first_plan = Plan {
        duration: window,
        ..setup.plan
    };
    let later_plan = Plan {
        warmup: setup.plan.warmup.min(Duration::from_millis(500)),
        ..first_plan
    };
    for (scenario, name, scripts) in scripts {
        if !wanted(setup, scenario) {
            continue;
        }
        let pgbench = || {
            let result = baseline::pgbench(
                pg,
                name,
                &scripts,
                &write_vars(),
                setup.plan.concurrency,
                window,
            );
            if let Ok(result) = &result {
                eprintln!(
                    "   {:<50} pgbench {:>8.0} tx/s",
                    scenario.name(),
                    result.tps
                );
            }
            result
        };
        let mut rounds = Vec::new();
        for round in 0..setup.rounds {
            let plan = if round == 0 { first_plan } else { later_plan };
            let forward = round % 2 == 0;
            let service = || async {
                let measured = scenarios::run(scenario, &clients, plan, watch, &data).await;
                print_row(&Row {
                    scenario,
                    concurrency: setup.plan.concurrency,
                    measured: measured.clone(),
                });
                measured
            };
            let (service, echo_result, pgbench_result) = if forward {
                let echo_result = echo.measure(scenario, plan).await;
                let service = service().await;
                (service, echo_result, pgbench()?)
            } else {
                let pgbench_result = pgbench()?;
                let service = service().await;
                (service, echo.measure(scenario, plan).await, pgbench_result)
            };
            rounds.push(Round {
                order: if forward {
                    "echo, service, pgbench"
                } else {
                    "pgbench, service, echo"
                },
                service,
                baseline: Baseline::Ceiling {
                    echo: echo_result,
                    pgbench: pgbench_result,
                },
            });
        }
        let rounds = Rounds { scenario, rounds };
        rows.push(Row {
            scenario,
            concurrency: setup.plan.concurrency,
            measured: rounds.service(),
        });
        report.baselines.rounds.push(rounds);
    }
    rows.extend(others);
    // The report's order: every scenario at C, then the latency rows at C = 1.
    rows.sort_by_key(|row| {
        let latency_row = row.concurrency == 1 && Scenario::LATENCY.contains(&row.scenario);
        (latency_row, row.scenario)
    });
    if setup.hold {
        eprintln!(
            "holding: psql {}\n         server {} (pid {}), key {key}\n         press Enter to go on",
            pg.url,
            server.addr(),
            server.pid()
        );
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    }
    drop(server);
    report.postgres = Some(BackendRun {
        name: "PostgreSQL",
        seed,
        rows,
    });

    eprintln!("== other baselines");
    if !setup.quick {
        // The same create with keys in per-client ranges: what the time order of ids costs.
        let result = baseline::pgbench(
            pg,
            "create-per-client",
            &baseline::create_contact_per_client_keys(),
            &write_vars(),
            setup.plan.concurrency,
            setup.plan.duration,
        )?;
        eprintln!(
            "   CreateContact, per-client key ranges      {:>10.0} tx/s",
            result.tps
        );
        report.baselines.create_per_client = Some(result);
    }
    let keyset = baseline::pgbench(
        pg,
        "keyset",
        &[baseline::keyset_page()],
        &vars,
        1,
        setup.plan.duration,
    )?;
    eprintln!("   keyset pages of 1000: {:.0} rows/s", keyset.tps * 1001.0);
    report.baselines.keyset = Some(keyset);

    let import = (setup.contacts / 10).clamp(1000, 100_000);
    let took = baseline::copy_from(&pool, &data, import).await?;
    eprintln!(
        "   COPY FROM: {:.0} rows/s",
        import as f64 / took.as_secs_f64()
    );
    report.baselines.copy_from = Some((import, took));
    pool.close().await;
    Ok(())
}

/// The full stream against `COPY TO` of the same rows, in rounds that alternate
/// which goes first; one stream and one COPY each.
async fn export_rounds(
    setup: &Setup,
    pool: &sqlx::PgPool,
    clients: &load::Clients,
    watch: Watch,
    data: &Arc<Dataset>,
) -> anyhow::Result<Rounds> {
    // Once: COPY's and the stream's first pass read in what the other may not have.
    baseline::copy_to(pool, data).await?;
    let one_stream = Plan {
        duration: Duration::ZERO,
        ..setup.plan
    };
    let mut rounds = Vec::new();
    for round in 0..setup.rounds {
        let forward = round % 2 == 0;
        let early = if forward {
            Some(baseline::copy_to(pool, data).await?)
        } else {
            None
        };
        let service = scenarios::run(Scenario::ListAll, clients, one_stream, watch, data).await;
        let (rows, took) = match early {
            Some(copied) => copied,
            None => baseline::copy_to(pool, data).await?,
        };
        eprintln!(
            "   round {}: stream {:>8.0} rows/s, COPY TO {:>8.0} rows/s; stream CPU s: server {:.2}, PostgreSQL {:.2}, bench {:.2}, machine {:.2} of {:.2} elapsed",
            round + 1,
            service.items_per_sec(),
            rows as f64 / took.as_secs_f64(),
            service.server_cpu.as_secs_f64(),
            service.postgres_cpu.as_secs_f64(),
            service.client_cpu.as_secs_f64(),
            service.machine_busy_cpu.as_secs_f64(),
            service.elapsed.as_secs_f64(),
        );
        rounds.push(Round {
            order: if forward {
                "COPY, stream"
            } else {
                "stream, COPY"
            },
            service,
            baseline: Baseline::CopyTo { rows, took },
        });
    }
    Ok(Rounds {
        scenario: Scenario::ListAll,
        rounds,
    })
}

async fn sqlite_run(setup: &Setup) -> anyhow::Result<BackendRun> {
    eprintln!("== SQLite");
    let dir = setup.work_dir.join("sqlite");
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}/contacts.db", dir.display());
    let key = create_key(setup, &url, "bench")?;
    let data = Arc::new(Dataset::new(TenantId::parse("bench")?, setup.contacts));
    let seed = seed_sqlite(&dir.join("contacts.db"), &data).await?;
    eprintln!("   seeded: {seed:?}");
    let server = start_server(setup, &url, "server-sqlite").await?;
    let rows = run_scenarios(setup, &server, &key, None, &data, false).await?;
    Ok(BackendRun {
        name: "SQLite (no targets yet)",
        seed,
        rows,
    })
}

/// Loads every table and index into shared buffers. COPY, index builds and VACUUM go
/// through small ring buffers, so without this the first scenario (and not the
/// pgbench baselines, which run later) would pay for reading the data in.
async fn prewarm(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        .execute(pool)
        .await?;
    let blocks = sqlx::query_scalar(
        "SELECT coalesce(sum(pg_prewarm(c.oid)), 0)::bigint FROM pg_class c \
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'i')",
    )
    .fetch_one(pool)
    .await?;
    Ok(blocks)
}

async fn seed_sqlite(path: &Path, data: &Dataset) -> anyhow::Result<seed::SeedTimes> {
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    let options = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Off)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let times = seed::sqlite(&pool, data).await?;
    pool.close().await;
    Ok(times)
}
