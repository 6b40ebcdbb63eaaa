//! The baselines' table and every round of every scenario.

use std::fmt::Write as _;

use super::*;

impl Report {
    pub(super) fn baseline_table(&self, out: &mut String) {
        let b = &self.baselines;
        let _ = writeln!(out, "### Baselines (same run, same machine)\n");
        let _ = writeln!(
            out,
            "Medians over the rounds, with the range in brackets; CPU/call over all rounds.\n"
        );
        let _ = writeln!(
            out,
            "| baseline | for | result | CPU/call: the echo server's, PostgreSQL's under pgbench |"
        );
        let _ = writeln!(out, "|---|---|---|---|");
        let ranged = |values: Vec<f64>| {
            let (median, low, high) = spread(&values);
            if values.len() > 1 {
                format!("{} ({}–{})", rate(median), rate(low), rate(high))
            } else {
                rate(median)
            }
        };
        for rounds in &b.rounds {
            let echo: Vec<&Measured> = rounds.echo().collect();
            if echo.is_empty() {
                continue;
            }
            let all = Measured::merge(echo.iter().copied());
            let _ = writeln!(
                out,
                "| tonic echo, C = {} | {} | {} calls/s, p50 {} | {} |",
                self.concurrency,
                rounds.scenario.name(),
                ranged(echo.iter().map(|m| m.throughput()).collect()),
                ms(all.percentile(0.5)),
                us(all.per_call(all.server_cpu))
            );
        }
        for rounds in &b.rounds {
            let runs: Vec<&Pgbench> = rounds.pgbench().collect();
            let Some(first) = runs.first() else { continue };
            let cpu: Vec<f64> = runs
                .iter()
                .filter_map(|p| p.postgres_cpu_per_tx.map(|d| d.as_secs_f64() * 1e6))
                .collect();
            let clients = if rounds.scenario.is_write() {
                let used: Vec<String> = runs
                    .iter()
                    .map(|p| {
                        let generic = if p.generic_plans { " generic" } else { "" };
                        format!("{}{generic}", p.clients)
                    })
                    .collect();
                format!(
                    "{} or {} clients, custom or generic plans (the best of the four each round; by round: {})",
                    self.concurrency,
                    crate::runs::SERVICE_POOL,
                    used.join(", ")
                )
            } else {
                format!("{} clients", first.clients)
            };
            let _ = writeln!(
                out,
                "| pgbench -M prepared, {} | {} | {} tx/s, latency {:.2} ms | {} |",
                clients,
                rounds.scenario.name(),
                ranged(runs.iter().map(|p| p.tps).collect()),
                spread(&runs.iter().map(|p| p.latency_ms).collect::<Vec<_>>()).0,
                if cpu.is_empty() {
                    String::new()
                } else {
                    format!("{:.0} µs", spread(&cpu).0)
                }
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
        for rounds in &b.rounds {
            let label = match rounds.scenario {
                Scenario::ListAll => "COPY (SELECT ...) TO STDOUT",
                Scenario::ListSearch => "COPY (SELECT ... WHERE search_text LIKE ...) TO STDOUT",
                Scenario::WatchReplay => "COPY (SELECT ... FROM contact_changes ...) TO STDOUT",
                _ => "L = 1/(1/echo + 1/pgbench)",
            };
            let unit = match rounds.scenario {
                Scenario::ListAll => format!("rows/s ({} rows)", rate(self.contacts as f64)),
                Scenario::ListSearch => format!(
                    "rows/s ({} rows)",
                    rate(crate::scenarios::common_term_matches(self.contacts) as f64)
                ),
                Scenario::WatchReplay => "rows/s (the outbox's rows)".into(),
                _ => "calls/s".into(),
            };
            let _ = writeln!(
                out,
                "| {label} | {} | {} {unit} | |",
                rounds.scenario.name(),
                ranged(rounds.baseline_rates()),
            );
        }
        if let Some(p) = &b.keyset {
            let _ = writeln!(
                out,
                "| pgbench keyset page of 1000, 1 client | ListContacts | {} rows/s | |",
                rate(p.tps * 1001.0)
            );
        }
        out.push('\n');
        self.rounds_table(out);
        let scripts: Vec<(Scenario, &Pgbench)> = b
            .rounds
            .iter()
            .filter_map(|r| Some((r.scenario, r.pgbench().next()?)))
            .collect();
        if !scripts.is_empty() {
            let _ = writeln!(out, "<details><summary>pgbench scripts</summary>\n");
            for (scenario, p) in scripts {
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

    /// Every round of every scenario, in the order they ran.
    pub(super) fn rounds_table(&self, out: &mut String) {
        let b = &self.baselines;
        if b.rounds.iter().all(|r| r.rounds.len() < 2) {
            return;
        }
        let _ = writeln!(out, "<details><summary>every round</summary>\n");
        let _ = writeln!(
            out,
            "| scenario | round | order | service | echo | pgbench | baseline | ratio | other CPU |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for rounds in &b.rounds {
            let s = rounds.scenario;
            for (i, round) in rounds.rounds.iter().enumerate() {
                let (echo, pgbench) = match &round.baseline {
                    Baseline::Ceiling { echo, pgbench } => {
                        (rate(echo.throughput()), rate(pgbench.tps))
                    }
                    Baseline::CopyTo { .. } => (String::new(), String::new()),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {echo} | {pgbench} | {} | {:.2} | {:.1} s |",
                    s.name(),
                    i + 1,
                    round.order,
                    rate(round.service_rate(s)),
                    rate(round.baseline.rate()),
                    round.ratio(s),
                    round.service.foreign_cpu().as_secs_f64()
                );
            }
        }
        let _ = writeln!(out, "\n</details>\n");
    }
}
