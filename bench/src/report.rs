//! The Markdown of what one run measured (`measures.rs`).

use std::fmt::Write as _;
use std::time::Duration;

use crate::baseline::Pgbench;
use crate::load::Measured;
pub use crate::measures::*;
use crate::scenarios::Scenario;

pub struct Report {
    pub command: String,
    pub machine: Machine,
    pub contacts: u64,
    pub concurrency: usize,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Rounds of the unary calls and of the full stream.
    pub rounds: usize,
    pub startup: Option<Startup>,
    pub baselines: Baselines,
    pub postgres: Option<BackendRun>,
    /// Other tenants' latency during floods (PostgreSQL).
    pub flood: Option<crate::flood::FloodReport>,
    /// What PostgreSQL does after a client drops an expensive search.
    pub cancel: Option<crate::cancel::CancelReport>,
    pub sqlite: Option<BackendRun>,
    /// The change feed's own section (its rows are in the PostgreSQL table).
    pub watch: Option<String>,
    /// PostgreSQL's imports between their COPY FROM baselines: (label, table).
    pub imports: Vec<(String, String)>,
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

pub(crate) fn rate(x: f64) -> String {
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
            "{} contacts; {} calls in flight over {} HTTP/2 connections; {:.1} s warm-up, {:.1} s measured per scenario{}. \
             p50/p99 are per call (for streams, the whole stream); CPU/call is the server process's user+system time \
             from /proc divided by the calls; \"other CPU\" is what the rest of the machine (not the bench, server or \
             PostgreSQL) used in that window, and should be near zero for a comparable run.\n",
            rate(self.contacts as f64),
            self.concurrency,
            self.connections,
            self.warmup.as_secs_f64(),
            self.duration.as_secs_f64(),
            if self.rounds > 1 {
                format!(
                    " (each unary call in {} rounds of {:.1} s, alternately \
                     `echo, service, pgbench` and `pgbench, service, echo`, with {:.1} s of \
                     warm-up after the first; the full stream in {} rounds of one stream and one \
                     COPY TO, alternating which goes first; their ratio is the median of the \
                     rounds' ratios, the range in brackets)",
                    self.rounds,
                    self.duration.as_secs_f64() / self.rounds as f64,
                    self.warmup.as_secs_f64().min(0.5),
                    self.rounds
                )
            } else {
                String::new()
            }
        );
        if let Some(pg) = &self.postgres {
            self.backend(&mut out, pg, true);
        }
        if let Some(flood) = &self.flood {
            flood.markdown(&mut out);
        }
        if let Some(cancel) = &self.cancel {
            cancel.markdown(&mut out);
        }
        if let Some(watch) = &self.watch {
            let _ = writeln!(out, "#### WatchContacts (issue 17)\n\n{watch}");
        }
        for (label, table) in &self.imports {
            let label = if label.is_empty() {
                String::new()
            } else {
                format!(": {label}")
            };
            let _ = writeln!(out, "#### ImportContacts (issue 15){label}\n\n{table}");
        }
        self.baseline_table(&mut out);
        if let Some(startup) = &self.startup {
            self.startup_table(&mut out, startup);
        }
        if let Some(sqlite) = &self.sqlite {
            self.backend(&mut out, sqlite, false);
        }
        out
    }

    /// A backend's table, its light-load rows and its other sections.
    fn backend(&self, out: &mut String, run: &BackendRun, targets: bool) {
        self.backend_table(out, run, targets);
        if let Some(light) = &run.light {
            light.markdown(out);
        }
        for section in &run.sections {
            let _ = writeln!(out, "{}\n", section.trim_end());
        }
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

    /// Baseline, ratio and verdict of a PostgreSQL row. A scenario measured in rounds
    /// is judged by the median of its rounds' ratios; the range shows how far the
    /// rounds agreed.
    fn judge(&self, row: &Row) -> (String, String, String) {
        let me = &row.measured;
        let b = &self.baselines;
        let rounds = |target: f64| -> Option<(String, String, String)> {
            let rounds = b.of(row.scenario)?;
            let (ratio, low, high) = spread(&rounds.ratios());
            let (base, _, _) = spread(&rounds.baseline_rates());
            let baseline = match row.scenario {
                Scenario::ListAll | Scenario::ListSearch | Scenario::WatchReplay => {
                    format!("COPY TO {} rows/s", rate(base))
                }
                _ => format!("L = {} /s", rate(base)),
            };
            let shown = if rounds.rounds.len() > 1 {
                format!(
                    "{ratio:.2} ({low:.2}–{high:.2}, {} rounds)",
                    rounds.rounds.len()
                )
            } else {
                format!("{ratio:.2}")
            };
            Some((
                baseline,
                shown,
                format!("≥ {target:?}: {}", verdict(ratio >= target)),
            ))
        };
        match row.scenario {
            s if Scenario::UNARY.contains(&s) => {
                let (baseline, ratio, target) = rounds(unary_target(s)).unwrap_or_default();
                (
                    baseline,
                    ratio,
                    crate::light::with_tail_check(s, me, target),
                )
            }
            // Issue 20's targets for both full streams.
            Scenario::ListAll | Scenario::ListSearch => match rounds(0.9) {
                Some((baseline, ratio, target)) => {
                    let rss_ok = me.server_peak_rss_kib < 64 * 1024;
                    (
                        baseline,
                        ratio,
                        format!("{target}; RSS < 64 MiB: {}", verdict(rss_ok)),
                    )
                }
                None => Default::default(),
            },
            Scenario::WatchReplay => rounds(0.5).unwrap_or_default(),
            Scenario::WatchDelivery1 | Scenario::WatchDelivery100 => {
                let p50 = me.percentile(0.5).as_secs_f64() * 1e3;
                let target = format!("delivery p50 < 50 ms: {}", verdict(p50 < 50.0));
                (String::new(), String::new(), target)
            }
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

/// The throughput target of a unary call, in L (issue 20 raised the point reads' and
/// the writes'; UpsertContact and BatchGetContacts keep issue 15's).
fn unary_target(scenario: Scenario) -> f64 {
    match scenario {
        Scenario::GetContact | Scenario::GetContactByEmail => 1.5,
        Scenario::CreateContact | Scenario::UpdateContact => 1.0,
        _ => 0.8,
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

mod baselines;
#[cfg(test)]
mod tests;
