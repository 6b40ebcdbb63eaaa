//! What the comparisons of one scenario across several servers share (`--nginx`,
//! `--pgbouncer`, `--replica-export`): a seeded tenant and its key, waiting for a
//! helper process's port, and rounds that alternate the arms' order (in order on even
//! rounds, reversed on odd), so a host that speeds up or slows down during the run
//! favours no arm.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use kraiter_contacts::domain::TenantId;

use crate::data::Dataset;
use crate::load::{self, Plan, Watch};
use crate::scenarios::{self, Scenario};
use crate::{Setup, create_key, seed};

/// The `bench` tenant's key, its dataset, and a small pool on `url`, after seeding
/// `setup.contacts` contacts through `COPY`.
pub(crate) async fn seeded_tenant(
    setup: &Setup,
    url: &str,
) -> anyhow::Result<(String, Arc<Dataset>, sqlx::PgPool)> {
    let key = create_key(setup, url, "bench")?;
    let data = Arc::new(Dataset::new(TenantId::parse("bench")?, setup.contacts));
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await?;
    eprintln!("   seeding {} contacts", setup.contacts);
    let seeded = seed::postgres(&pool, data.clone(), 2).await?;
    eprintln!("   seeded: {seeded:?}");
    Ok((key, data, pool))
}

/// Until something accepts connections on `listen` (`host:port`), at most `within`.
pub(crate) fn wait_for_port(listen: &str, within: Duration, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while TcpStream::connect(listen).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not start within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// One server a comparison drives.
pub(crate) struct Arm<'a> {
    pub name: &'static str,
    pub clients: &'a load::Clients,
    pub watch: Watch,
}

/// `scenario` on every arm in `rounds` rounds, alternating their order; `around(arm,
/// after)` runs just before and just after each arm's window (to read the CPU of
/// processes `Watch` does not see). Each arm's windows, in round order.
pub(crate) async fn alternate(
    scenario: Scenario,
    arms: &[Arm<'_>],
    rounds: usize,
    plan: Plan,
    data: &Arc<Dataset>,
    mut around: impl FnMut(usize, bool),
) -> Vec<Vec<load::Measured>> {
    let mut results: Vec<Vec<load::Measured>> = arms.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..arms.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let arm = &arms[i];
            around(i, false);
            let measured = scenarios::run(scenario, arm.clients, plan, arm.watch, data).await;
            around(i, true);
            eprintln!(
                "   {:<45} {:<10} {:>9.0}/s  errors {}{}",
                scenario.name(),
                arm.name,
                rate(scenario, &measured),
                measured.errors,
                measured
                    .first_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default(),
            );
            results[i].push(measured);
        }
    }
    results
}

/// The median over rounds of arm `arm`'s rate over the first arm's in the same round.
pub(crate) fn median_ratio(scenario: Scenario, results: &[Vec<load::Measured>], arm: usize) -> f64 {
    median(
        results[arm]
            .iter()
            .zip(&results[0])
            .map(|(this, first)| rate(scenario, this) / rate(scenario, first))
            .collect(),
    )
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Rows per second for the full stream, calls per second otherwise.
pub(crate) fn rate(scenario: Scenario, measured: &load::Measured) -> f64 {
    if scenario.is_full_list() {
        measured.items_per_sec()
    } else {
        measured.throughput()
    }
}
