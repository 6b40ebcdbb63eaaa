//! `--pgbouncer` (issue 18): the same seeded PostgreSQL served by two servers, one
//! connected directly and one through PgBouncer (Debian's `pgbouncer`) in transaction
//! mode with `--database-pooler transaction`, and a third connected directly with
//! that option (its own cost, without PgBouncer's hop), measured in alternating
//! rounds in one run. Prints a markdown section for BENCHMARKS.md ("PgBouncer (issue
//! 18)").

use std::fmt::Write as _;
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
    let run_as = cluster::run_as_postgres(&dir, "PgBouncer")?;
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
    arms::wait_for_port(&listen, Duration::from_secs(30), "PgBouncer")
        .with_context(|| format!("see {}", dir.display()))?;
    let at = format!("@{}:{}/", pg.host, pg.port);
    if !pg.url.contains(&at) {
        bail!("cannot point {} at PgBouncer", pg.url);
    }
    Ok(pg.url.replacen(&at, &format!("@{listen}/"), 1))
}

pub(crate) async fn run(setup: &Setup, pg: &cluster::Postgres) -> anyhow::Result<String> {
    eprintln!("== PgBouncer (issue 18): PostgreSQL at {}", pg.url);
    let (key, data, pool) = arms::seeded_tenant(setup, &pg.url).await?;
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
    let servers = [
        ("direct", &direct),
        ("PgBouncer", &pooled),
        ("mode only", &mode_only),
    ];
    let mut clients = Vec::new();
    for (_, server) in servers {
        clients.push(load::connect(&server.addr(), &key, setup.connections).await?);
    }
    let arms: Vec<arms::Arm> = servers
        .iter()
        .zip(&clients)
        .map(|((name, server), clients)| arms::Arm {
            name,
            clients,
            watch: Watch {
                server: Some(server.pid()),
                postgres: pg.postmaster_pid(),
            },
        })
        .collect();
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
        let results = arms::alternate(scenario, &arms, setup.rounds, plan, &data, |_, _| {}).await;
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
            arms::rate(scenario, &direct),
            arms::rate(scenario, &pooled),
            arms::median_ratio(scenario, &results, 1),
            arms::median_ratio(scenario, &results, 2),
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
