//! What one run measured: the machine, each scenario's rows, the rounds and the
//! baselines they are judged against. `report.rs` renders them.

use std::time::Duration;

use crate::baseline::Pgbench;
use crate::load::Measured;
use crate::scenarios::Scenario;
use crate::seed::SeedTimes;

pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory: String,
    pub kernel: String,
    pub postgres: String,
}

impl Machine {
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']))
            })
            .unwrap_or("unknown")
            .to_owned();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
            .map_or("unknown".into(), |kib| {
                format!("{:.0} GiB", kib as f64 / 1048576.0)
            });
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        Self {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            memory,
            kernel,
            postgres: String::new(),
        }
    }
}

pub struct Startup {
    pub runs: Vec<Duration>,
    pub idle_rss_kib: u64,
}

pub struct Row {
    pub scenario: Scenario,
    pub concurrency: usize,
    pub measured: Measured,
}

pub struct BackendRun {
    pub name: &'static str,
    pub seed: SeedTimes,
    pub rows: Vec<Row>,
    /// The unary calls at light load (issue 20).
    pub light: Option<crate::light::LightRun>,
    /// The backend's other sections, in the order they ran, each with its heading.
    pub sections: Vec<String>,
}

/// What one round of a scenario is judged against, measured right next to it.
// A few dozen per run: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Baseline {
    /// A unary RPC: the echo server's calls/s and pgbench's tx/s on the same SQL.
    Ceiling { echo: Measured, pgbench: Pgbench },
    /// The full stream: one `COPY (SELECT ...) TO STDOUT` of the same rows.
    CopyTo { rows: u64, took: Duration },
}

impl Baseline {
    /// Calls/s for a unary RPC (L = 1 / (1/echo + 1/pgbench): tonic and PostgreSQL
    /// share the cores, so their CPU per call adds up), rows/s for COPY.
    pub fn rate(&self) -> f64 {
        match self {
            Baseline::Ceiling { echo, pgbench } => {
                1.0 / (1.0 / echo.throughput() + 1.0 / pgbench.tps)
            }
            Baseline::CopyTo { rows, took } => *rows as f64 / took.as_secs_f64(),
        }
    }
}

/// One round: the scenario and its baseline back to back. Rounds alternate the order
/// (`echo, service, pgbench` then `pgbench, service, echo`), so a drift of the host's
/// speed during a round tilts half the ratios one way and half the other, and the
/// median discounts it.
pub struct Round {
    /// What ran in which order, for the report.
    pub order: &'static str,
    pub service: Measured,
    pub baseline: Baseline,
}

impl Round {
    pub fn service_rate(&self, scenario: Scenario) -> f64 {
        if scenario.is_full_list() {
            self.service.items_per_sec()
        } else {
            self.service.throughput()
        }
    }

    pub fn ratio(&self, scenario: Scenario) -> f64 {
        self.service_rate(scenario) / self.baseline.rate()
    }
}

/// A scenario measured in rounds against its baseline.
pub struct Rounds {
    pub scenario: Scenario,
    pub rounds: Vec<Round>,
}

impl Rounds {
    /// The service's measurements of every round as one.
    pub fn service(&self) -> Measured {
        Measured::merge(self.rounds.iter().map(|r| &r.service))
    }

    pub fn ratios(&self) -> Vec<f64> {
        self.rounds.iter().map(|r| r.ratio(self.scenario)).collect()
    }

    pub fn baseline_rates(&self) -> Vec<f64> {
        self.rounds.iter().map(|r| r.baseline.rate()).collect()
    }

    pub(crate) fn echo(&self) -> impl Iterator<Item = &Measured> {
        self.rounds.iter().filter_map(|r| match &r.baseline {
            Baseline::Ceiling { echo, .. } => Some(echo),
            Baseline::CopyTo { .. } => None,
        })
    }

    pub(crate) fn pgbench(&self) -> impl Iterator<Item = &Pgbench> {
        self.rounds.iter().filter_map(|r| match &r.baseline {
            Baseline::Ceiling { pgbench, .. } => Some(pgbench),
            Baseline::CopyTo { .. } => None,
        })
    }
}

/// The median (the mean of the middle two for an even count) and the range.
pub fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    (median, sorted[0], sorted[n - 1])
}

#[derive(Default)]
pub struct Baselines {
    /// The unary RPCs and the full stream, each in rounds with its baseline.
    pub rounds: Vec<Rounds>,
    pub keyset: Option<Pgbench>,
    /// CreateContact's pgbench with keys in per-client ranges instead of time order.
    pub create_per_client: Option<Pgbench>,
}

impl Baselines {
    pub(crate) fn of(&self, scenario: Scenario) -> Option<&Rounds> {
        self.rounds.iter().find(|r| r.scenario == scenario)
    }

    /// COPY TO's median rate, the baseline of every full-stream row.
    pub(crate) fn copy_to_rate(&self) -> Option<f64> {
        let rates = self.of(Scenario::ListAll)?.baseline_rates();
        Some(spread(&rates).0)
    }
}
