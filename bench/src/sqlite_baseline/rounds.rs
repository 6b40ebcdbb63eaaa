//! The baseline's rounds beside the service's and echo's, and their section of
//! BENCHMARKS.md.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Call, checkpoint, export, run};
use crate::data::Dataset;

/// The unary calls that have a baseline, and what it runs.
const CALLS: [(crate::scenarios::Scenario, Call, &str); 4] = [
    (
        crate::scenarios::Scenario::GetContact,
        Call::GetContact,
        "GET_CONTACT_CHECKED",
    ),
    (
        crate::scenarios::Scenario::GetContactByEmail,
        Call::GetContactByEmail,
        "GET_CONTACT_BY_EMAIL_CHECKED",
    ),
    (
        crate::scenarios::Scenario::CreateContact,
        Call::CreateContact,
        "TENANT_FOR_KEY; BEGIN IMMEDIATE; INSERT_CONTACT; INSERT_CHANGE; INSERT_TIMELINE_ENTRY; COMMIT",
    ),
    (
        crate::scenarios::Scenario::UpdateContact,
        Call::UpdateContact,
        "GET_CONTACT_CHECKED; BEGIN IMMEDIATE; UPDATE_CONTACT_IF_REVISION; INSERT_CHANGE; INSERT_TIMELINE_ENTRY; COMMIT",
    ),
];

/// Each unary call with a baseline in rounds (`echo, service, baseline`, then the
/// reverse), and the full stream against the bare `SELECT` (alternating which goes
/// first), all against the server on the file at `path`; the section for
/// BENCHMARKS.md.
pub async fn rounds(
    setup: &crate::Setup,
    server: &crate::process::Server,
    compare: Option<&crate::process::Server>,
    key: &str,
    path: &Path,
    data: &Arc<Dataset>,
) -> anyhow::Result<String> {
    use crate::load::{Plan, Watch};
    use crate::measures::{Baseline, Round, Rounds, spread};
    use crate::scenarios::{self, Scenario};

    let echo = crate::Echo::start(setup).await?;
    let clients = crate::load::connect(&server.addr(), key, setup.connections).await?;
    let watch = Watch {
        server: Some(server.pid()),
        postgres: None,
    };
    let (first_plan, later_plan) = setup.round_plans();
    let mut all = Vec::new();
    let mut echo_streams = Vec::new();
    // The export first, as on PostgreSQL: the writes below add rows.
    if crate::wanted(setup, Scenario::ListAll) {
        export(path, data)?;
        let one_stream = Plan {
            duration: Duration::ZERO,
            ..setup.plan
        };
        let mut rounds = Vec::new();
        let compared = match compare {
            Some(other) => Some((
                crate::load::connect(&other.addr(), key, setup.connections).await?,
                Watch {
                    server: Some(other.pid()),
                    postgres: None,
                },
            )),
            None => None,
        };
        let mut pairs = Vec::new();
        for round in 0..setup.rounds {
            let forward = round % 2 == 0;
            let early = if forward {
                Some(export(path, data)?)
            } else {
                None
            };
            let stream_b = || async {
                let (clients, watch) = compared.as_ref()?;
                Some(scenarios::run(Scenario::ListAll, clients, one_stream, *watch, data).await)
            };
            let b_first = if forward { stream_b().await } else { None };
            let service =
                scenarios::run(Scenario::ListAll, &clients, one_stream, watch, data).await;
            let b = match b_first {
                Some(b) => Some(b),
                None => stream_b().await,
            };
            if let Some(b) = &b {
                let per_row = |m: &crate::load::Measured| m.micros_per_item(m.server_cpu);
                pairs.push((service.items_per_sec(), b.items_per_sec()));
                eprintln!(
                    "   round {}: A {:>8.0} rows/s ({:.2} µs a row), B {:>8.0} rows/s ({:.2} µs a row), B/A {:.2}",
                    round + 1,
                    service.items_per_sec(),
                    per_row(&service),
                    b.items_per_sec(),
                    per_row(b),
                    b.items_per_sec() / service.items_per_sec()
                );
            }
            let (rows, took) = match early {
                Some(done) => done,
                None => export(path, data)?,
            };
            // The transport's ceiling: echo's stream of as many prebuilt contacts.
            let echoed = scenarios::run(
                Scenario::ListAll,
                &echo.clients,
                one_stream,
                echo.watch(),
                &echo.data,
            )
            .await;
            let per_row = |m: &crate::load::Measured| m.micros_per_item(m.server_cpu);
            echo_streams.push((echoed.items_per_sec(), per_row(&echoed)));
            eprintln!(
                "   round {}: stream {:>8.0} rows/s ({:.2} µs of server CPU a row), bare SELECT {:>8.0} rows/s, echo's stream {:>8.0} rows/s ({:.2} µs a row)",
                round + 1,
                service.items_per_sec(),
                per_row(&service),
                rows as f64 / took.as_secs_f64(),
                echoed.items_per_sec(),
                per_row(&echoed)
            );
            rounds.push(Round {
                order: if forward {
                    "SELECT, stream"
                } else {
                    "stream, SELECT"
                },
                service,
                baseline: Baseline::CopyTo { rows, took },
            });
        }
        if !pairs.is_empty() {
            let mut ratios: Vec<f64> = pairs.iter().map(|(a, b)| b / a).collect();
            ratios.sort_by(f64::total_cmp);
            eprintln!(
                "   the export, B against A: median B/A {:.2} over {} rounds (range {:.2}-{:.2})",
                ratios[ratios.len() / 2],
                ratios.len(),
                ratios[0],
                ratios[ratios.len() - 1]
            );
        }
        all.push(Rounds {
            scenario: Scenario::ListAll,
            rounds,
        });
    }
    for (scenario, call, script) in CALLS {
        if !crate::wanted(setup, scenario) {
            continue;
        }
        let baseline = |plan: Plan| -> anyhow::Result<crate::baseline::Pgbench> {
            let m = run(
                path,
                call,
                data,
                key,
                setup.plan.concurrency,
                plan.warmup,
                plan.duration,
            )?;
            eprintln!(
                "   {:<50} sqlite baseline {:>8.0} calls/s",
                scenario.name(),
                m.rate
            );
            Ok(crate::baseline::Pgbench {
                tps: m.rate,
                latency_ms: 0.0,
                clients: setup.plan.concurrency,
                script: script.to_owned(),
                scripts: 1,
                postgres_cpu_per_tx: Some(m.cpu_per_call),
                generic_plans: false,
            })
        };
        let mut rounds = Vec::new();
        for round in 0..setup.rounds {
            let plan = if round == 0 { first_plan } else { later_plan };
            let forward = round % 2 == 0;
            let service = || async {
                let measured = scenarios::run(scenario, &clients, plan, watch, data).await;
                eprintln!(
                    "   {:<50} service {:>8.0} calls/s",
                    scenario.name(),
                    measured.throughput()
                );
                measured
            };
            // Each side starts with an empty WAL (`checkpoint`).
            let (service, echo_result, base) = if forward {
                let echo_result = echo.measure(scenario, plan).await;
                checkpoint(path)?;
                let service = service().await;
                checkpoint(path)?;
                (service, echo_result, baseline(plan)?)
            } else {
                checkpoint(path)?;
                let base = baseline(plan)?;
                checkpoint(path)?;
                let service = service().await;
                (service, echo.measure(scenario, plan).await, base)
            };
            rounds.push(Round {
                order: if forward {
                    "echo, service, baseline"
                } else {
                    "baseline, service, echo"
                },
                service,
                baseline: Baseline::Ceiling {
                    echo: echo_result,
                    pgbench: base,
                },
            });
        }
        all.push(Rounds { scenario, rounds });
    }
    Ok(markdown(setup, &all, &echo_streams, spread))
}

fn markdown(
    setup: &crate::Setup,
    all: &[crate::measures::Rounds],
    echo_streams: &[(f64, f64)],
    spread: fn(&[f64]) -> (f64, f64, f64),
) -> String {
    use std::fmt::Write as _;

    use crate::measures::Baseline;
    use crate::report::rate;
    use crate::scenarios::Scenario;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "#### SQLite against its own baseline (issue 20)\n\n\
         {} contacts, C = {}, {} rounds per scenario; baseline: the store's statements \
         (`src/store/sqlite/sql.rs`) run by rusqlite from {} threads on the same file \
         (reads: a connection each; writes: one shared writer, as the store's); \
         L_sqlite = 1/(1/echo + 1/baseline); ratios are the median of the rounds' \
         (range in brackets). CPU/call: the server's; the baseline's is the bench \
         process's while it ran.\n",
        rate(setup.contacts as f64),
        setup.plan.concurrency,
        setup.rounds,
        setup.plan.concurrency
    );
    let _ = writeln!(
        out,
        "| scenario | service | p50 | p99 | server CPU/call | echo | baseline | baseline CPU/call | L_sqlite or SELECT | ratio | target | other CPU |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for rounds in all {
        let s = rounds.scenario;
        let service = rounds.service();
        let (ratio, low, high) = spread(&rounds.ratios());
        let (base, _, _) = spread(&rounds.baseline_rates());
        let (echo, baseline, base_cpu) = {
            let echo: Vec<f64> = rounds.echo().map(|m| m.throughput()).collect();
            let runs: Vec<_> = rounds.pgbench().collect();
            let tps: Vec<f64> = runs.iter().map(|p| p.tps).collect();
            let cpu: Vec<f64> = runs
                .iter()
                .filter_map(|p| p.postgres_cpu_per_tx.map(|d| d.as_secs_f64() * 1e6))
                .collect();
            (echo, tps, cpu)
        };
        let target = if s == Scenario::ListAll { 0.5 } else { 0.8 };
        let is_list = s.is_full_list();
        let unit = if is_list { "rows/s" } else { "calls/s" };
        let first = rounds.rounds.first().map(|r| &r.baseline);
        let baseline_shown = match first {
            Some(Baseline::CopyTo { .. }) => String::from("-"),
            _ => format!("{} calls/s", rate(spread(&baseline).0)),
        };
        let _ = writeln!(
            out,
            "| {} | {} {unit} | {:.2} ms | {:.2} ms | {:.0} µs | {} | {} | {} | {} {unit} | {ratio:.2} ({low:.2}–{high:.2}) | ≥ {target}: {} | {:.1} s |",
            s.name(),
            rate(if is_list {
                service.items_per_sec()
            } else {
                service.throughput()
            }),
            service.percentile(0.5).as_secs_f64() * 1e3,
            service.percentile(0.99).as_secs_f64() * 1e3,
            service.per_call(service.server_cpu).as_secs_f64() * 1e6,
            if echo.is_empty() {
                "-".into()
            } else {
                format!("{} calls/s", rate(spread(&echo).0))
            },
            baseline_shown,
            if base_cpu.is_empty() {
                "-".into()
            } else {
                format!("{:.0} µs", spread(&base_cpu).0)
            },
            rate(base),
            if ratio >= target { "met" } else { "**missed**" },
            service.foreign_cpu().as_secs_f64(),
        );
    }
    out.push('\n');
    if !echo_streams.is_empty() {
        let rates: Vec<f64> = echo_streams.iter().map(|(rate, _)| *rate).collect();
        let cpus: Vec<f64> = echo_streams.iter().map(|(_, cpu)| *cpu).collect();
        let (echo, low, high) = spread(&rates);
        // A stream shorter than the clock's tick reads no CPU at all (`--quick`).
        let cpu = match spread(&cpus).0 {
            0.0 => String::from("too short to read the echo server's CPU"),
            cpu => format!("at {cpu:.2} µs of the echo server's CPU a row"),
        };
        let _ = writeln!(
            out,
            "The transport's ceiling for the export: the echo server's stream of as many \
             prebuilt contacts (pages of 1,000 cloned and encoded as the service encodes, no \
             store, no transcoding), read by the same reader, in the same rounds: {} rows/s \
             ({}–{}), {cpu}.\n",
            rate(echo),
            rate(low),
            rate(high),
        );
    }
    out
}
