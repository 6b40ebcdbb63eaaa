//! `--pgbouncer` (issue 18): the same seeded PostgreSQL served by two servers, one
//! connected directly and one through PgBouncer (Debian's `pgbouncer`) in transaction
//! mode with `--database-pooler transaction`, and a third connected directly with
//! that option (its own cost, without PgBouncer's hop), measured in alternating
//! rounds in one run. Prints a markdown section for BENCHMARKS.md ("PgBouncer (issue
//! 18)").

use std::fmt::Write as _;
use std::net::TcpStream;
use std::process::Command;

use super::*;

/// The service's default pool size, so both arms hold as many server connections.
const POOL_SIZE: u32 = 16;

const SCENARIOS: [Scenario; 3] = [
    Scenario::GetContact,
    Scenario::CreateContact,
    Scenario::ListAll,
];

/// Starts PgBouncer in front of `pg` (a watchdog stops it when this process exits);
/// returns its URL of the benchmark database.
fn start_pgbouncer(pg: &cluster::Postgres, work_dir: &Path) -> anyhow::Result<String> {
    let binary = Path::new("/usr/sbin/pgbouncer");
    if !binary.exists() {
        bail!("PgBouncer is not installed: `apt-get install pgbouncer`");
    }
    let dir = work_dir.join("pgbouncer");
    std::fs::create_dir_all(&dir)?;
    let port = cluster::free_port()?;
    let password = pg
        .url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(credentials, _)| credentials.split_once(':'))
        .map_or("", |(_, password)| password);
    std::fs::write(
        dir.join("pgbouncer.ini"),
        format!(
            "[databases]\n* = host={host} port={pg_port}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             pool_mode = transaction\nignore_startup_parameters = extra_float_digits\n\
             auth_type = trust\nauth_file = {dir}/userlist.txt\n\
             max_client_conn = 1000\ndefault_pool_size = {POOL_SIZE}\n\
             logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
            host = pg.host,
            pg_port = pg.port,
            dir = dir.display(),
        ),
    )?;
    std::fs::write(
        dir.join("userlist.txt"),
        format!("\"{}\" \"{password}\"\n", pg.user),
    )?;
    // PgBouncer refuses to run as root.
    let run_as = if cluster::is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()?;
        if !status.success() {
            bail!("running as root needs a `postgres` user to run PgBouncer as");
        }
        "runuser -u postgres -- "
    } else {
        ""
    };
    let script = format!(
        "{run_as}'{binary}' '{dir}/pgbouncer.ini' >'{dir}/stdout.log' 2>&1 & \
         while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         kill \"$(cat '{dir}/pgbouncer.pid')\" 2>/dev/null",
        binary = binary.display(),
        dir = dir.display(),
        pid = std::process::id(),
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("spawn the PgBouncer watchdog")?;
    let listen = format!("127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&listen).is_err() {
        if std::time::Instant::now() > deadline {
            bail!("PgBouncer did not start; see {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let at = format!("@{}:{}/", pg.host, pg.port);
    if !pg.url.contains(&at) {
        bail!("cannot point {} at PgBouncer", pg.url);
    }
    Ok(pg.url.replacen(&at, &format!("@{listen}/"), 1))
}

pub(crate) async fn run(setup: &Setup, pg: &cluster::Postgres) -> anyhow::Result<String> {
    eprintln!("== PgBouncer (issue 18): PostgreSQL at {}", pg.url);
    let key = create_key(setup, &pg.url, "bench")?;
    let data = Arc::new(Dataset::new(TenantId::parse("bench")?, setup.contacts));
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&pg.url)
        .await?;
    eprintln!("   seeding {} contacts", setup.contacts);
    seed::postgres(&pool, data.clone(), 2).await?;
    drop(pool);
    let pooled_url = start_pgbouncer(pg, &setup.work_dir)?;
    let pool_size = POOL_SIZE.to_string();
    let direct = start_server_with(
        setup,
        &pg.url,
        "server-direct",
        &["--db-max-connections", &pool_size],
    )
    .await?;
    let pooled = start_server_with(
        setup,
        &pooled_url,
        "server-pgbouncer",
        &[
            "--db-max-connections",
            &pool_size,
            "--database-pooler",
            "transaction",
        ],
    )
    .await?;
    // The option's own cost, without PgBouncer's hop: each unit of work in a
    // transaction, statements parsed every time.
    let mode_only = start_server_with(
        setup,
        &pg.url,
        "server-direct-pooler-mode",
        &[
            "--db-max-connections",
            &pool_size,
            "--database-pooler",
            "transaction",
        ],
    )
    .await?;
    let arms = [
        ("direct", &direct),
        ("PgBouncer", &pooled),
        ("mode only", &mode_only),
    ];
    let mut clients = Vec::new();
    for (_, server) in arms {
        clients.push(load::connect(&server.addr(), &key, setup.connections).await?);
    }
    let window = setup.plan.duration / setup.rounds as u32;
    let plan = Plan {
        duration: window,
        ..setup.plan
    };

    let mut section = String::new();
    writeln!(section, "## PgBouncer (issue 18)\n")?;
    writeln!(
        section,
        "`{}`: {} contacts, {} calls in flight over {} connections, {} rounds of {:?} per \
         arm, alternating which goes first. Both servers run `--db-max-connections {POOL_SIZE}` \
         on one PostgreSQL; the PgBouncer arm goes through PgBouncer 1.18 \
         (`pool_mode = transaction`, `default_pool_size = {POOL_SIZE}`) with \
         `--database-pooler transaction`. All processes share this machine's cores, \
         PgBouncer's included.\n",
        std::env::args().collect::<Vec<_>>().join(" "),
        setup.contacts,
        setup.plan.concurrency,
        setup.connections,
        setup.rounds,
        window,
    )?;
    writeln!(
        section,
        "| call | direct | through PgBouncer | PgBouncer / direct (median of rounds) | `--database-pooler transaction` without PgBouncer / direct | p50 direct / PgBouncer / mode only | errors |"
    )?;
    writeln!(section, "|---|---|---|---|---|---|---|")?;
    for scenario in SCENARIOS {
        if !wanted(setup, scenario) {
            continue;
        }
        let mut ratios = Vec::new();
        let mut mode_ratios = Vec::new();
        let mut results: [Vec<load::Measured>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        for round in 0..setup.rounds {
            let order: [usize; 3] = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
            for arm in order {
                let server = arms[arm].1;
                let watch = Watch {
                    server: Some(server.pid()),
                    postgres: pg.postmaster_pid(),
                };
                let measured = scenarios::run(scenario, &clients[arm], plan, watch, &data).await;
                eprintln!(
                    "   {:<45} {:<10} {:>9.0}/s  errors {}",
                    scenario.name(),
                    arms[arm].0,
                    rate(scenario, &measured),
                    measured.errors
                );
                results[arm].push(measured);
            }
            let last = |arm: usize| rate(scenario, results[arm].last().expect("measured"));
            ratios.push(last(1) / last(0));
            mode_ratios.push(last(2) / last(0));
        }
        let median = |mut ratios: Vec<f64>| {
            ratios.sort_by(f64::total_cmp);
            ratios[ratios.len() / 2]
        };
        let merged = |arm: usize| load::Measured::merge(&results[arm]);
        let (direct, pooled, mode) = (merged(0), merged(1), merged(2));
        let unit = if scenario.is_full_list() {
            "rows/s"
        } else {
            "calls/s"
        };
        writeln!(
            section,
            "| {} | {:.0} {unit} | {:.0} {unit} | {:.2} | {:.2} | {:.2} / {:.2} / {:.2} ms | {} / {} / {} |",
            scenario.name(),
            rate(scenario, &direct),
            rate(scenario, &pooled),
            median(ratios),
            median(mode_ratios),
            direct.percentile(0.5).as_secs_f64() * 1e3,
            pooled.percentile(0.5).as_secs_f64() * 1e3,
            mode.percentile(0.5).as_secs_f64() * 1e3,
            direct.errors,
            pooled.errors,
            mode.errors,
        )?;
    }
    Ok(section)
}

fn rate(scenario: Scenario, measured: &load::Measured) -> f64 {
    if scenario.is_full_list() {
        measured.items_per_sec()
    } else {
        measured.throughput()
    }
}
