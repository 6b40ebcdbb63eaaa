//! The change feed's rows of the main table and its own section of BENCHMARKS.md.

use std::fmt::Write as _;
use std::time::Duration;

use super::{CREATE_RATE, LatencyRow, ReplayRound, WORKERS, percentile};
use crate::load::Plan;
use crate::report::{Row, spread};
use crate::scenarios::Scenario;

impl LatencyRow {
    /// A row of the main table: the creates' throughput and CPU, the deliveries'
    /// latency (answer -> watcher), and a missing or repeated delivery as an error.
    pub(super) fn report_row(&self) -> Row {
        let mut measured = self.creates.clone();
        measured.latencies = self.from_answer.clone();
        let wrong = self.missing + self.repeated;
        if wrong > 0 {
            measured.errors += wrong;
            measured.first_error.get_or_insert_with(|| {
                format!(
                    "{} missing, {} repeated deliveries",
                    self.missing, self.repeated
                )
            });
        }
        Row {
            scenario: if self.watchers == 1 {
                Scenario::WatchDelivery1
            } else {
                Scenario::WatchDelivery100
            },
            concurrency: WORKERS,
            measured,
        }
    }
}

pub(super) fn markdown(
    plan: Plan,
    expected: u64,
    replays: &[ReplayRound],
    rows: &[LatencyRow],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Delivery: paced CreateContact at {CREATE_RATE}/s offered ({WORKERS} workers), {:.1} s warm-up, {:.1} s measured; watchers from NOW, one HTTP/2 connection each.\n",
        plan.warmup.as_secs_f64(),
        plan.duration.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| watchers | creates/s | create p50 | delivery p50 (answer -> watcher) | p99 | from occurred_at p50 | p99 | before the answer | missing | repeated | server CPU | PG CPU | other CPU | target |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for row in rows {
        let c = &row.creates;
        let cores = |cpu: Duration| cpu.as_secs_f64() / c.elapsed.as_secs_f64().max(1e-9);
        let p50 = percentile(&row.from_answer, 0.5);
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} ms | **{p50:.2} ms** | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} | {} | {:.2} | {:.2} | {:.2} | p50 < 50 ms: {} |",
            row.watchers,
            c.throughput(),
            c.percentile(0.5).as_secs_f64() * 1e3,
            percentile(&row.from_answer, 0.99),
            percentile(&row.from_occurred, 0.5),
            percentile(&row.from_occurred, 0.99),
            row.before_answer,
            row.missing,
            row.repeated,
            cores(c.server_cpu),
            cores(c.postgres_cpu),
            cores(c.foreign_cpu()),
            if p50 < 50.0 { "met" } else { "**missed**" },
        );
    }
    let ratios: Vec<f64> = replays.iter().map(ReplayRound::ratio).collect();
    let (median, low, high) = spread(&ratios);
    let _ = writeln!(
        out,
        "\nReplay of {expected} changes from OLDEST_RETAINED against COPY TO of the same rows, {} round(s): **{median:.2} x** ({low:.2}–{high:.2}); target >= 0.5 x: {}.\n",
        replays.len(),
        if median >= 0.5 { "met" } else { "**missed**" }
    );
    let _ = writeln!(
        out,
        "| round | order | watch changes/s | COPY TO rows/s | ratio | server CPU s | PG CPU s | server peak RSS |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for (i, r) in replays.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} MiB |",
            i + 1,
            r.order,
            r.changes as f64 / r.took.as_secs_f64(),
            r.copied as f64 / r.copy_took.as_secs_f64(),
            r.ratio(),
            r.server_cpu.as_secs_f64(),
            r.postgres_cpu.as_secs_f64(),
            r.server_peak_rss_kib as f64 / 1024.0,
        );
    }
    out
}
