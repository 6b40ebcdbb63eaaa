//! `--nginx` (issue 18): two replicas of the server on one PostgreSQL behind nginx
//! (Debian's `nginx-light`, configured by the project's own `deploy/nginx.conf`, as
//! `tests/api/support/nginx.rs` renders it) against the first replica reached
//! directly, in alternating rounds in one run. Prints a markdown section for
//! BENCHMARKS.md ("nginx in front of two replicas (issue 18)").

use std::fmt::Write as _;
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
        arms::wait_for_port(&listen, Duration::from_secs(20), "nginx")
            .with_context(|| format!("see {}", prefix.display()))?;
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

pub(crate) async fn run(setup: &Setup, pg: &cluster::Postgres) -> anyhow::Result<String> {
    eprintln!("== nginx (issue 18): PostgreSQL at {}", pg.url);
    let (key, data, pool) = arms::seeded_tenant(setup, &pg.url).await?;
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
    // Both arms charge the first replica's CPU; the nginx arm adds the second's.
    let watch = Watch {
        server: Some(first.pid()),
        postgres: pg.postmaster_pid(),
    };

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
        let arms = [
            arms::Arm {
                name: "direct",
                clients: &direct,
                watch,
            },
            arms::Arm {
                name: "nginx",
                clients: &balanced,
                watch,
            },
        ];
        // The CPU `Watch` cannot see, per arm: the second replica's and nginx's.
        let mut other_cpu = [(0u64, 0u64); 2];
        let mut before = (0, 0);
        let results = arms::alternate(scenario, &arms, setup.rounds, plan, &data, |arm, after| {
            let now = (process::cpu_ticks(second.pid()), nginx.cpu_ticks());
            if after {
                other_cpu[arm].0 += now.0.saturating_sub(before.0);
                other_cpu[arm].1 += now.1.saturating_sub(before.1);
            }
            before = now;
        })
        .await;
        let direct_m = load::Measured::merge(&results[0]);
        let nginx_m = load::Measured::merge(&results[1]);
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
            arms::rate(scenario, &direct_m),
            arms::rate(scenario, &nginx_m),
            arms::median_ratio(scenario, &results, 1),
            ms(&direct_m, 0.5),
            ms(&nginx_m, 0.5),
            ms(&direct_m, 0.99),
            ms(&nginx_m, 0.99),
            cost(direct_m.server_cpu, &direct_m),
            cost(nginx_m.server_cpu + ticks(other_cpu[1].0), &nginx_m),
            cost(ticks(other_cpu[1].1), &nginx_m),
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
