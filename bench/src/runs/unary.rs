//! The unary calls in rounds beside their ceilings: echo and pgbench running the
//! store's own statements (the best of several client counts and plan modes for a
//! write), alternating which goes first.

use super::*;

/// Sessions that plan a prepared statement once, as a long-lived pool ends up doing.
const GENERIC_PLANS: &str = "-c plan_cache_mode=force_generic_plan";

/// pgbench's variables with new ids and emails, for every run that writes.
pub(super) fn write_vars(vars: &[(String, String)], data: &Dataset) -> Vec<(String, String)> {
    let mut all = vars.to_vec();
    all.extend(baseline::write_variables(data));
    all
}

/// Each wanted unary scenario's rounds, in the order below.
pub(super) async fn rounds(
    setup: &Setup,
    pg: &cluster::Postgres,
    echo: &Echo,
    clients: &load::Clients,
    watch: Watch,
    data: &Arc<Dataset>,
    vars: &[(String, String)],
) -> anyhow::Result<Vec<Rounds>> {
    let mut all = Vec::new();
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
        (
            Scenario::UpsertContact,
            "upsert",
            baseline::upsert_contact(),
        ),
        (Scenario::BatchGet, "batch-get", vec![baseline::batch_get()]),
    ];
    let (first_plan, later_plan) = setup.round_plans();
    let window = first_plan.duration;
    for (scenario, name, scripts) in scripts {
        if !wanted(setup, scenario) {
            continue;
        }
        // A write's baseline also runs at the server's pool size, and with generic
        // plans from the first execution; the best of these is L's. 32 clients contend
        // for locks, the trigram index's pending list and WAL where the service runs
        // at most 16 statements at once; and each pgbench run is new sessions, each
        // preparing 16 scripts and planning each one custom for its first five
        // executions (PostgreSQL's plan cache), where the service's long-lived pool
        // runs the generic plan. The ceiling is what the database does best with these
        // statements.
        let variants: &[(usize, Option<&str>)] = if scenario.is_write() {
            &[
                (setup.plan.concurrency, None),
                (SERVICE_POOL, None),
                (setup.plan.concurrency, Some(GENERIC_PLANS)),
                (SERVICE_POOL, Some(GENERIC_PLANS)),
            ]
        } else {
            &[(setup.plan.concurrency, None)]
        };
        let pgbench = || {
            let mut best: Option<baseline::Pgbench> = None;
            for &(clients, options) in variants {
                let result = baseline::pgbench_with(
                    pg,
                    name,
                    &scripts,
                    &write_vars(vars, data),
                    clients,
                    window,
                    options,
                )?;
                eprintln!(
                    "   {:<50} pgbench {:>8.0} tx/s, {clients} clients{}, PG CPU/tx {}",
                    scenario.name(),
                    result.tps,
                    if options.is_some() {
                        ", generic plans"
                    } else {
                        ""
                    },
                    result
                        .postgres_cpu_per_tx
                        .map(|d| format!("{:.0} µs", d.as_secs_f64() * 1e6))
                        .unwrap_or_default()
                );
                if best.as_ref().is_none_or(|b| result.tps > b.tps) {
                    best = Some(result);
                }
            }
            best.ok_or_else(|| anyhow::anyhow!("no pgbench run"))
        };
        let mut rounds = Vec::new();
        for round in 0..setup.rounds {
            let plan = if round == 0 { first_plan } else { later_plan };
            let forward = round % 2 == 0;
            let service = || async {
                let measured = scenarios::run(scenario, clients, plan, watch, data).await;
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
        all.push(Rounds { scenario, rounds });
    }
    Ok(all)
}
