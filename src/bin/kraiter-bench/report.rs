//! Everything one run measured, and its Markdown.

use std::fmt::Write as _;
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
}

#[derive(Default)]
pub struct Baselines {
    pub echo: Vec<(Scenario, Measured)>,
    pub pgbench: Vec<(Scenario, Pgbench)>,
    pub keyset: Option<Pgbench>,
    /// CreateContact's pgbench with keys in per-client ranges instead of time order.
    pub create_per_client: Option<Pgbench>,
    pub copy_to: Option<(u64, Duration)>,
    pub copy_from: Option<(u64, Duration)>,
}

impl Baselines {
    fn echo(&self, scenario: Scenario) -> Option<f64> {
        self.echo
            .iter()
            .find(|(s, _)| *s == scenario)
            .map(|(_, m)| m.throughput())
    }

    fn pgbench(&self, scenario: Scenario) -> Option<f64> {
        self.pgbench
            .iter()
            .find(|(s, _)| *s == scenario)
            .map(|(_, p)| p.tps)
    }

    /// The combined ceiling of a store-bound unary RPC: L = 1 / (1/echo + 1/pgbench).
    pub fn ceiling(&self, scenario: Scenario) -> Option<f64> {
        let (echo, pg) = (self.echo(scenario)?, self.pgbench(scenario)?);
        Some(1.0 / (1.0 / echo + 1.0 / pg))
    }

    fn copy_to_rate(&self) -> Option<f64> {
        self.copy_to.map(|(rows, d)| rows as f64 / d.as_secs_f64())
    }
}

pub struct Report {
    pub command: String,
    pub machine: Machine,
    pub contacts: u64,
    pub concurrency: usize,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub startup: Option<Startup>,
    pub baselines: Baselines,
    pub postgres: Option<BackendRun>,
    pub sqlite: Option<BackendRun>,
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn rate(x: f64) -> String {
    if x >= 100.0 {
        let n = x.round() as u64;
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{x:.1}")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "Machine: {} cores ({}), {} RAM, Linux {}, {}. Load generator, server and database share the machine.\n",
            m.cores, m.cpu, m.memory, m.kernel, m.postgres
        );
        let _ = writeln!(out, "Command: `{}`\n", self.command);
        let _ = writeln!(
            out,
            "{} contacts; {} calls in flight over {} HTTP/2 connections; {:.1} s warm-up, {:.1} s measured per scenario. \
             p50/p99 are per call (for streams, the whole stream); CPU/call is the server process's user+system time \
             from /proc divided by the calls; \"other CPU\" is what the rest of the machine (not the bench, server or \
             PostgreSQL) used in that window, and should be near zero for a comparable run.\n",
            rate(self.contacts as f64),
            self.concurrency,
            self.connections,
            self.warmup.as_secs_f64(),
            self.duration.as_secs_f64()
        );
        if let Some(pg) = &self.postgres {
            self.backend_table(&mut out, pg, true);
        }
        self.baseline_table(&mut out);
        if let Some(startup) = &self.startup {
            self.startup_table(&mut out, startup);
        }
        if let Some(sqlite) = &self.sqlite {
            self.backend_table(&mut out, sqlite, false);
        }
        out
    }

    fn backend_table(&self, out: &mut String, run: &BackendRun, targets: bool) {
        let _ = writeln!(out, "### {}\n", run.name);
        let s = &run.seed;
        let _ = writeln!(
            out,
            "Seeded in {:.1} s (contacts {:.1} s, activity {:.1} s, search index {:.1} s, vacuum/analyze {:.1} s).\n",
            (s.contacts + s.activity + s.index + s.vacuum).as_secs_f64(),
            s.contacts.as_secs_f64(),
            s.activity.as_secs_f64(),
            s.index.as_secs_f64(),
            s.vacuum.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "| scenario | C | throughput | p50 | p99 | server CPU/call | PG CPU/call | server peak RSS | other CPU | errors | baseline | ratio | target |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for row in &run.rows {
            let me = &row.measured;
            let list = row.scenario.is_full_list();
            let throughput = if list {
                format!("{} rows/s", rate(me.items_per_sec()))
            } else {
                format!("{} calls/s", rate(me.throughput()))
            };
            let (baseline, ratio, target) = if targets {
                self.judge(row)
            } else {
                ("".into(), "".into(), "".into())
            };
            let pg_cpu = if run.name.starts_with("PostgreSQL") {
                us(me.per_call(me.postgres_cpu))
            } else {
                "-".into()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {} | {} | {} | {} |",
                row.scenario.name(),
                row.concurrency,
                throughput,
                ms(me.percentile(0.5)),
                ms(me.percentile(0.99)),
                us(me.per_call(me.server_cpu)),
                pg_cpu,
                mib(me.server_peak_rss_kib),
                me.foreign_cpu().as_secs_f64(),
                me.errors,
                baseline,
                ratio,
                target
            );
            if let Some(err) = &me.first_error {
                let _ = writeln!(
                    out,
                    "| ↳ first error: {} |||||||||||||",
                    err.replace('|', "/")
                );
            }
        }
        out.push('\n');
    }

    /// Baseline, ratio and verdict of a PostgreSQL row.
    fn judge(&self, row: &Row) -> (String, String, String) {
        let me = &row.measured;
        let b = &self.baselines;
        match row.scenario {
            s if Scenario::UNARY.contains(&s) => match b.ceiling(s) {
                Some(l) => {
                    let ratio = me.throughput() / l;
                    (
                        format!("L = {} /s", rate(l)),
                        format!("{ratio:.2}"),
                        format!("≥ 0.8: {}", verdict(ratio >= 0.8)),
                    )
                }
                None => Default::default(),
            },
            Scenario::ListAll => match b.copy_to_rate() {
                Some(copy) => {
                    let ratio = me.items_per_sec() / copy;
                    let rss_ok = me.server_peak_rss_kib < 100 * 1024;
                    (
                        format!("COPY TO {} rows/s", rate(copy)),
                        format!("{ratio:.2}"),
                        format!(
                            "≥ 0.5: {}; RSS < 100 MiB: {}",
                            verdict(ratio >= 0.5),
                            verdict(rss_ok)
                        ),
                    )
                }
                None => Default::default(),
            },
            Scenario::ListAllDecoded => match b.copy_to_rate() {
                Some(copy) => (
                    format!("COPY TO {} rows/s", rate(copy)),
                    format!("{:.2}", me.items_per_sec() / copy),
                    "none (the bench's own decoding shares the cores)".into(),
                ),
                None => Default::default(),
            },
            s if row.concurrency == 1 && Scenario::LATENCY.contains(&s) => {
                let limit = if s == Scenario::Timeline { 2.0 } else { 10.0 };
                let p50 = me.percentile(0.5).as_secs_f64() * 1e3;
                (
                    String::new(),
                    String::new(),
                    format!("p50 < {limit} ms: {}", verdict(p50 < limit)),
                )
            }
            _ => Default::default(),
        }
    }

    fn baseline_table(&self, out: &mut String) {
        let b = &self.baselines;
        let _ = writeln!(out, "### Baselines (same run, same machine)\n");
        let _ = writeln!(
            out,
            "| baseline | for | result | CPU/call: the echo server's, PostgreSQL's under pgbench |"
        );
        let _ = writeln!(out, "|---|---|---|---|");
        for (scenario, me) in &b.echo {
            let _ = writeln!(
                out,
                "| tonic echo, C = {} | {} | {} calls/s, p50 {} | {} |",
                self.concurrency,
                scenario.name(),
                rate(me.throughput()),
                ms(me.percentile(0.5)),
                us(me.per_call(me.server_cpu))
            );
        }
        for (scenario, p) in &b.pgbench {
            let _ = writeln!(
                out,
                "| pgbench -M prepared, {} clients | {} | {} tx/s, latency {:.2} ms | {} |",
                p.clients,
                scenario.name(),
                rate(p.tps),
                p.latency_ms,
                p.postgres_cpu_per_tx.map(us).unwrap_or_default()
            );
        }
        if let Some(p) = &b.create_per_client {
            let _ = writeln!(
                out,
                "| pgbench -M prepared, {} clients, keys in per-client ranges (not time order; not used for L) | CreateContact | {} tx/s, latency {:.2} ms | {} |",
                p.clients,
                rate(p.tps),
                p.latency_ms,
                p.postgres_cpu_per_tx.map(us).unwrap_or_default()
            );
        }
        for scenario in Scenario::UNARY {
            if let Some(l) = b.ceiling(scenario) {
                let _ = writeln!(
                    out,
                    "| L = 1/(1/echo + 1/pgbench) | {} | {} calls/s | |",
                    scenario.name(),
                    rate(l)
                );
            }
        }
        if let Some(p) = &b.keyset {
            let _ = writeln!(
                out,
                "| pgbench keyset page of 1000, 1 client | ListContacts | {} rows/s | |",
                rate(p.tps * 1001.0)
            );
        }
        if let Some((rows, d)) = b.copy_to {
            let _ = writeln!(
                out,
                "| COPY (SELECT ...) TO STDOUT | ListContacts | {} rows/s ({} rows) | |",
                rate(rows as f64 / d.as_secs_f64()),
                rate(rows as f64)
            );
        }
        if let Some((rows, d)) = b.copy_from {
            let _ = writeln!(
                out,
                "| COPY contacts FROM STDIN, all indexes | ImportContacts (not built yet) | {} rows/s ({} rows) | |",
                rate(rows as f64 / d.as_secs_f64()),
                rate(rows as f64)
            );
        }
        out.push('\n');
        if !b.pgbench.is_empty() {
            let _ = writeln!(out, "<details><summary>pgbench scripts</summary>\n");
            for (scenario, p) in &b.pgbench {
                let variants = if p.scripts > 1 {
                    format!(
                        " (one of {} scripts, the same but for the variables' number: \
                         each binds the values of another seeded contact)",
                        p.scripts
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "{}{variants}:\n\n```sql\n{}```\n",
                    scenario.name(),
                    p.script
                );
            }
            let _ = writeln!(out, "</details>\n");
        }
    }

    fn startup_table(&self, out: &mut String, startup: &Startup) {
        let mut runs = startup.runs.clone();
        runs.sort();
        let median = runs.get(runs.len() / 2).copied().unwrap_or_default();
        let max = runs.last().copied().unwrap_or_default();
        let _ = writeln!(out, "### Start-up and idle (empty SQLite database)\n");
        let _ = writeln!(out, "| measure | result | target |");
        let _ = writeln!(out, "|---|---|---|");
        let _ = writeln!(
            out,
            "| process start to health SERVING ({} starts) | median {}, max {} | < 500 ms: {} |",
            runs.len(),
            ms(median),
            ms(max),
            verdict(median < Duration::from_millis(500))
        );
        let _ = writeln!(
            out,
            "| idle RSS after start | {} | < 30 MiB: {} |\n",
            mib(startup.idle_rss_kib),
            verdict(startup.idle_rss_kib < 30 * 1024)
        );
    }
}

/// Puts `generated` between the markers of `file`, keeping everything else (the
/// hand-written analysis); a file without markers gets them appended.
pub fn splice(existing: &str, generated: &str) -> String {
    const BEGIN: &str = "<!-- kraiter-bench:begin -->";
    const END: &str = "<!-- kraiter-bench:end -->";
    let block = format!("{BEGIN}\n{generated}{END}");
    match (existing.find(BEGIN), existing.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{block}{}", &existing[..b], &existing[e + END.len()..])
        }
        _ if existing.is_empty() => format!("# Benchmarks\n\n{block}\n"),
        _ => format!("{}\n{block}\n", existing.trim_end()),
    }
}
