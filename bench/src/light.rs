//! Light load (issue 20): every unary scenario as most service-to-service traffic
//! sends it, not only 32 calls over 4 connections. Three loads, each for the service
//! and for the echo server next to it: one call at a time on one connection, four
//! calls in flight on one connection (a client with one channel), and 32 connections
//! of one call each (32 callers with a connection apiece). What matters here is the
//! server's CPU per call next to echo's at the same load: at light load a point read
//! is rarely coalesced, so it pays a statement and every hand-off alone.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::data::Dataset;
use crate::load::{self, Measured, Plan, Watch};
use crate::scenarios::{self, Scenario};
use crate::{Echo, Setup};

/// Calls in flight and the connections they share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub calls: usize,
    pub connections: usize,
}

impl Load {
    pub const ALL: [Load; 3] = [
        Load {
            calls: 1,
            connections: 1,
        },
        Load {
            calls: 4,
            connections: 1,
        },
        Load {
            calls: 32,
            connections: 32,
        },
    ];

    fn label(self) -> String {
        if self.connections == self.calls && self.calls > 1 {
            format!("{} connections × 1 call", self.connections)
        } else {
            format!(
                "C = {}, {} connection{}",
                self.calls,
                self.connections,
                if self.connections == 1 { "" } else { "s" }
            )
        }
    }
}

pub struct LightRow {
    pub scenario: Scenario,
    pub load: Load,
    pub service: Measured,
    pub echo: Measured,
    /// For the point reads at C = 1: echo paced to the service's call rate of each
    /// round.
    pub paced_echo: Option<Measured>,
}

pub struct LightRun {
    pub backend: &'static str,
    /// Rounds per row (each one window of the service and one of echo).
    pub rounds: usize,
    pub window: Duration,
    pub rows: Vec<LightRow>,
}

/// Which unary scenarios `--only` lets run here: `--only light` runs them all,
/// `--only GetContact` this one too.
fn chosen(setup: &Setup) -> Vec<Scenario> {
    Scenario::UNARY
        .into_iter()
        .filter(|s| crate::wanted_name(setup, &format!("light load {}", s.name())))
        .collect()
}

/// Every chosen unary scenario at every `Load`, against the server at `addr` and
/// `echo`, in rounds that alternate which of the two goes first.
pub(crate) async fn run(
    setup: &Setup,
    backend: &'static str,
    addr: &str,
    key: &str,
    watch: Watch,
    echo: &Echo,
    data: &Arc<Dataset>,
) -> anyhow::Result<Option<LightRun>> {
    let scenarios = chosen(setup);
    if scenarios.is_empty() {
        return Ok(None);
    }
    eprintln!("== light load (issue 20): C = 1, C = 4 on one connection, 32 connections × 1");
    let rounds = if setup.quick { 1 } else { 2 };
    let window = setup.plan.duration / setup.rounds as u32;
    let echo_watch = echo.watch();
    let mut rows = Vec::new();
    for load in Load::ALL {
        let service_clients = load::connect(addr, key, load.connections).await?;
        let echo_clients = load::connect(&echo.server.addr(), "kr_echo", load.connections).await?;
        let plan = Plan {
            concurrency: load.calls,
            warmup: setup.plan.warmup.min(Duration::from_millis(500)),
            duration: window,
        };
        for &scenario in &scenarios {
            let mut service = Vec::new();
            let mut baseline = Vec::new();
            let mut paced = Vec::new();
            for round in 0..rounds {
                let svc = || scenarios::run(scenario, &service_clients, plan, watch, data);
                let ech = || scenarios::run(scenario, &echo_clients, plan, echo_watch, &echo.data);
                if round % 2 == 0 {
                    baseline.push(ech().await);
                    service.push(svc().await);
                } else {
                    service.push(svc().await);
                    baseline.push(ech().await);
                }
                let rate = service.last().map_or(0.0, Measured::throughput);
                if cpu_target(scenario, load).is_some() && rate > 0.0 {
                    let every = Some(Duration::from_secs_f64(1.0 / rate));
                    let data = &echo.data;
                    paced.push(
                        scenarios::run_paced(
                            scenario,
                            &echo_clients,
                            plan,
                            echo_watch,
                            data,
                            every,
                        )
                        .await,
                    );
                }
            }
            let row = LightRow {
                scenario,
                load,
                service: Measured::merge(&service),
                echo: Measured::merge(&baseline),
                paced_echo: (!paced.is_empty()).then(|| Measured::merge(&paced)),
            };
            eprintln!(
                "   {:<45} {:<26} {:>8.0}/s p50 {:>6.2} ms p99 {:>6.2} ms cpu {:>4.0} µs | echo {:>8.0}/s cpu {:>4.0} µs  errors {}",
                scenario.name(),
                load.label(),
                row.service.throughput(),
                row.service.percentile(0.5).as_secs_f64() * 1e3,
                row.service.percentile(0.99).as_secs_f64() * 1e3,
                cpu_per_call(&row.service),
                row.echo.throughput(),
                cpu_per_call(&row.echo),
                row.service.errors + row.echo.errors,
            );
            rows.push(row);
        }
    }
    Ok(Some(LightRun {
        backend,
        rounds,
        window,
        rows,
    }))
}

fn cpu_per_call(m: &Measured) -> f64 {
    m.per_call(m.server_cpu).as_secs_f64() * 1e6
}

/// The point reads: their server CPU at C = 1 should be within 2 × echo's.
fn cpu_target(scenario: Scenario, load: Load) -> Option<f64> {
    (load.calls == 1 && matches!(scenario, Scenario::GetContact | Scenario::GetContactByEmail))
        .then_some(2.0)
}

impl LightRun {
    pub fn markdown(&self, out: &mut String) {
        let _ = writeln!(out, "### Light load, {} (issue 20)\n", self.backend);
        let _ = writeln!(
            out,
            "Each row: {} round{} of {:.1} s of the service and {:.1} s of the echo server, alternating which goes \
             first, pooled. CPU/call is each server process's own; \"CPU ÷ echo\" is the service's server CPU per \
             call over echo's at the same load.\n",
            self.rounds,
            if self.rounds == 1 { "" } else { "s" },
            self.window.as_secs_f64(),
            self.window.as_secs_f64(),
        );
        let _ = writeln!(
            out,
            "| scenario | load | calls/s | p50 | p99 | server CPU/call | PG CPU/call | echo calls/s | echo p50 | echo CPU/call | CPU ÷ echo | other CPU | errors | target |"
        );
        let _ = writeln!(
            out,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        let pg = self.backend.starts_with("PostgreSQL");
        for row in &self.rows {
            let (me, echo) = (&row.service, &row.echo);
            let ratio = cpu_per_call(me) / cpu_per_call(echo);
            let target = match cpu_target(row.scenario, row.load) {
                Some(limit) => format!(
                    "CPU ≤ {limit} × echo's: {}",
                    if ratio <= limit { "met" } else { "**missed**" }
                ),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2} ms | {:.2} ms | {:.0} µs | {} | {} | {:.2} ms | {:.0} µs | {:.2} | {:.1} s | {} | {} |",
                row.scenario.name(),
                row.load.label(),
                crate::report::rate(me.throughput()),
                me.percentile(0.5).as_secs_f64() * 1e3,
                me.percentile(0.99).as_secs_f64() * 1e3,
                cpu_per_call(me),
                if pg {
                    format!("{:.0} µs", me.per_call(me.postgres_cpu).as_secs_f64() * 1e6)
                } else {
                    "-".into()
                },
                crate::report::rate(echo.throughput()),
                echo.percentile(0.5).as_secs_f64() * 1e3,
                cpu_per_call(echo),
                ratio,
                (me.foreign_cpu() + echo.foreign_cpu()).as_secs_f64(),
                me.errors + echo.errors,
                target,
            );
            if let Some(err) = me.first_error.as_ref().or(echo.first_error.as_ref()) {
                let _ = writeln!(
                    out,
                    "| ↳ first error: {} ||||||||||||||",
                    err.replace('|', "/")
                );
            }
        }
        out.push('\n');
        self.paced_markdown(out);
    }

    /// The point reads at C = 1 beside echo at the same call rate: what the service's
    /// own work costs once echo's threads sleep between calls too. Shown beside the
    /// target, which stays against echo at full speed.
    fn paced_markdown(&self, out: &mut String) {
        let paced: Vec<_> = self
            .rows
            .iter()
            .filter_map(|row| row.paced_echo.as_ref().map(|paced| (row, paced)))
            .collect();
        if paced.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "The point reads at C = 1 again, beside echo paced to the service's call rate of each round (one call \
             started every 1/rate, so echo's threads sleep between calls as the service's do). Not the target's \
             baseline; it separates the service's own work from the cost of waiting.\n"
        );
        let _ = writeln!(
            out,
            "| scenario | load | calls/s | server CPU/call | paced echo calls/s | paced echo CPU/call | CPU ÷ paced echo | CPU ÷ echo |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        for (row, echo) in paced {
            let me = &row.service;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} µs | {} | {:.0} µs | {:.2} | {:.2} |",
                row.scenario.name(),
                row.load.label(),
                crate::report::rate(me.throughput()),
                cpu_per_call(me),
                crate::report::rate(echo.throughput()),
                cpu_per_call(echo),
                cpu_per_call(me) / cpu_per_call(echo),
                cpu_per_call(me) / cpu_per_call(&row.echo),
            );
        }
        out.push('\n');
    }
}

/// Reads hold p99 under 4 × p50 at C = 32 (issue 20): appended to a row's target.
pub fn with_tail_check(scenario: Scenario, me: &Measured, target: String) -> String {
    let read = matches!(
        scenario,
        Scenario::GetContact | Scenario::GetContactByEmail | Scenario::BatchGet
    );
    if !read || me.latencies.is_empty() {
        return target;
    }
    let (p50, p99) = (me.percentile(0.5), me.percentile(0.99));
    let ok = p99 < p50 * 4;
    let check = format!(
        "p99 < 4 × p50 ({:.1} ×): {}",
        p99.as_secs_f64() / p50.as_secs_f64().max(1e-9),
        if ok { "met" } else { "**missed**" }
    );
    if target.is_empty() {
        check
    } else {
        format!("{target}; {check}")
    }
}
