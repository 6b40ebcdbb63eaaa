//! `--nginx` (issue 18): two replicas of the server on one PostgreSQL behind nginx
//! (Debian's `nginx-light`, configured by the project's own `deploy/nginx.conf`, as
//! `tests/api/support/nginx.rs` renders it) against the first replica reached
//! directly, in alternating rounds in one run. Prints a markdown section for
//! BENCHMARKS.md ("nginx in front of two replicas (issue 18)").

use std::fmt::Write as _;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use super::*;

const CONFIG: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/nginx.conf"));

const SCENARIOS: [Scenario; 2] = [Scenario::GetContact, Scenario::ListAll];

/// `deploy/nginx.conf` with its markers filled in, as the balancer test does.
fn render(prefix: &Path, port: u16, upstreams: &[String]) -> anyhow::Result<String> {
    let servers: Vec<String> = upstreams
        .iter()
        .map(|addr| format!("server {addr} max_fails=1 fail_timeout=30s;"))
        .collect();
    let config = CONFIG
        .replace("@PREFIX@", &prefix.display().to_string())
        .replace("@LISTEN_PORT@", &port.to_string())
        .replace("@UPSTREAM_SERVERS@", &servers.join("\n        "));
    let unfilled = config.split('@').skip(1).step_by(2).find(|marker| {
        !marker.is_empty() && marker.chars().all(|c| c.is_ascii_uppercase() || c == '_')
    });
    if let Some(marker) = unfilled {
        bail!("deploy/nginx.conf has a marker the bench does not fill: @{marker}@");
    }
    Ok(config)
}

/// nginx in the foreground, stopped when dropped.
struct Nginx {
    child: Child,
    addr: String,
}

impl Nginx {
    fn start(work_dir: &Path, upstreams: &[String]) -> anyhow::Result<Nginx> {
        let binary = Path::new("/usr/sbin/nginx");
        if !binary.exists() {
            bail!("nginx is not installed: `apt-get install nginx-light`");
        }
        let prefix = work_dir.join("nginx");
        std::fs::create_dir_all(&prefix)?;
        // Started as root, nginx runs its worker as `nobody`, which must write here.
        let mut permissions = std::fs::metadata(&prefix)?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o777);
        std::fs::set_permissions(&prefix, permissions)?;
        let port = cluster::free_port()?;
        let file = prefix.join("nginx.conf");
        std::fs::write(&file, render(&prefix, port, upstreams)?)?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&file)
            .arg("-p")
            .arg(&prefix)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(prefix.join("stderr.log"))?)
            .spawn()
            .context("start nginx")?;
        let listen = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&listen).is_err() {
            if std::time::Instant::now() > deadline {
                bail!("nginx did not start; see {}", prefix.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Nginx {
            child,
            addr: format!("http://{listen}"),
        })
    }

    /// The master's and its worker's CPU.
    fn cpu_ticks(&self) -> u64 {
        process::cpu_ticks_with_children(self.child.id())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One arm's rounds, with the CPU `Watch` cannot see (the second replica, nginx).
#[derive(Default)]
struct Arm {
    measured: Vec<load::Measured>,
    other_replica_cpu: Duration,
    nginx_cpu: Duration,
}

pub(crate) async fn run(setup: &Setup, pg: &cluster::Postgres) -> anyhow::Result<String> {
    eprintln!("== nginx (issue 18): PostgreSQL at {}", pg.url);
    let key = create_key(setup, &pg.url, "bench")?;
    let data = Arc::new(Dataset::new(TenantId::parse("bench")?, setup.contacts));
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&pg.url)
        .await?;
    eprintln!("   seeding {} contacts", setup.contacts);
    seed::postgres(&pool, data.clone(), 2).await?;
    drop(pool);
    let first = start_server(setup, &pg.url, "replica-a").await?;
    let second = start_server(setup, &pg.url, "replica-b").await?;
    let upstreams = [first.addr(), second.addr()].map(|addr| {
        addr.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned()
    });
    let nginx = Nginx::start(&setup.work_dir, &upstreams)?;
    let direct = load::connect(&first.addr(), &key, setup.connections).await?;
    let balanced = load::connect(&nginx.addr, &key, setup.connections).await?;
    let window = setup.plan.duration / setup.rounds as u32;
    let plan = Plan {
        duration: window,
        ..setup.plan
    };
    let tick = 1.0 / process::clock_ticks();
    let ticks = |n: u64| Duration::from_secs_f64(n as f64 * tick);

    let mut section = String::new();
    writeln!(section, "## nginx in front of two replicas (issue 18)\n")?;
    writeln!(
        section,
        "`{}`: {} contacts, {} calls in flight over {} HTTP/2 connections (the full stream: \
         one at a time), {} rounds of {:?} per arm, alternating which goes first. Two \
         release servers (default flags) on one PostgreSQL behind nginx \
         (`deploy/nginx.conf` as the balancer test renders it: `grpc_pass` to an upstream of \
         both, one worker); the direct arm reaches the first of them without \
         nginx. Server CPU is both replicas' for the nginx arm. All processes share this \
         machine's cores, nginx's included.\n",
        std::env::args().collect::<Vec<_>>().join(" "),
        setup.contacts,
        setup.plan.concurrency,
        setup.connections,
        setup.rounds,
        window,
    )?;
    writeln!(
        section,
        "| call | direct | through nginx | nginx / direct (median of rounds) | p50 direct / nginx | p99 direct / nginx | server CPU direct / replicas | nginx CPU | errors |"
    )?;
    writeln!(section, "|---|---|---|---|---|---|---|---|---|")?;
    for scenario in SCENARIOS {
        if !wanted(setup, scenario) {
            continue;
        }
        let mut ratios = Vec::new();
        let mut arms: [Arm; 2] = Default::default();
        for round in 0..setup.rounds {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for arm in order {
                let clients = if arm == 0 { &direct } else { &balanced };
                let watch = Watch {
                    server: Some(first.pid()),
                    postgres: pg.postmaster_pid(),
                };
                let before = (process::cpu_ticks(second.pid()), nginx.cpu_ticks());
                let measured = scenarios::run(scenario, clients, plan, watch, &data).await;
                let after = (process::cpu_ticks(second.pid()), nginx.cpu_ticks());
                arms[arm].other_replica_cpu += ticks(after.0.saturating_sub(before.0));
                arms[arm].nginx_cpu += ticks(after.1.saturating_sub(before.1));
                eprintln!(
                    "   {:<45} {:<6} {:>9.0}/s  errors {}{}",
                    scenario.name(),
                    if arm == 0 { "direct" } else { "nginx" },
                    rate(scenario, &measured),
                    measured.errors,
                    measured
                        .first_error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default(),
                );
                arms[arm].measured.push(measured);
            }
            let last = |arm: usize| rate(scenario, arms[arm].measured.last().expect("measured"));
            ratios.push(last(1) / last(0));
        }
        ratios.sort_by(f64::total_cmp);
        let direct_m = load::Measured::merge(&arms[0].measured);
        let nginx_m = load::Measured::merge(&arms[1].measured);
        let (unit, per) = if scenario.is_full_list() {
            ("rows/s", "µs/1,000 rows")
        } else {
            ("calls/s", "µs/call")
        };
        // CPU per unit of work, so arms with different throughput compare.
        let cost = |cpu: Duration, measured: &load::Measured| {
            let work = if scenario.is_full_list() {
                measured.items as f64 / 1000.0
            } else {
                measured.calls as f64
            };
            cpu.as_secs_f64() * 1e6 / work.max(1.0)
        };
        let ms = |measured: &load::Measured, p: f64| measured.percentile(p).as_secs_f64() * 1e3;
        writeln!(
            section,
            "| {} | {:.0} {unit} | {:.0} {unit} | {:.2} | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.0} / {:.0} {per} | {:.0} {per} | {} / {} |",
            scenario.name(),
            rate(scenario, &direct_m),
            rate(scenario, &nginx_m),
            ratios[ratios.len() / 2],
            ms(&direct_m, 0.5),
            ms(&nginx_m, 0.5),
            ms(&direct_m, 0.99),
            ms(&nginx_m, 0.99),
            cost(direct_m.server_cpu, &direct_m),
            cost(nginx_m.server_cpu + arms[1].other_replica_cpu, &nginx_m),
            cost(arms[1].nginx_cpu, &nginx_m),
            direct_m.errors,
            nginx_m.errors,
        )?;
        if scenario.is_full_list() {
            writeln!(
                section,
                "| {} (streams) | {:.2} streams/s | {:.2} streams/s | | | | | | |",
                scenario.name(),
                direct_m.throughput(),
                nginx_m.throughput(),
            )?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deploy_config_renders_with_every_marker_filled() {
        let upstreams = ["127.0.0.1:7001".to_owned(), "127.0.0.1:7002".to_owned()];
        let config = render(Path::new("/tmp/nginx-prefix"), 7000, &upstreams).unwrap();
        assert!(config.contains("listen 127.0.0.1:7000 http2;"), "{config}");
        assert!(config.contains("server 127.0.0.1:7001 max_fails=1"));
        assert!(config.contains("server 127.0.0.1:7002 max_fails=1"));
        assert!(config.contains("pid /tmp/nginx-prefix/nginx.pid;"));
        assert!(config.contains("grpc_pass grpc://kraiter_contacts;"));
        assert!(!config.contains("@UPSTREAM_SERVERS@"));
    }
}
