//! The flood section of the report.

use super::*;
use crate::report::spread;

impl FloodReport {
    pub fn markdown(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "### Other tenants' latency during a flood (PostgreSQL)\n"
        );
        let _ = writeln!(
            out,
            "Tenant B: {B_WORKERS} callers, each starting a GetContact of a random seeded contact every \
             {} ms ({:.0} calls/s), beside each flood in turn; {} round(s) of quiet, A's flood and the \
             unknown keys' flood, each window {:.1} s. The flood: {FLOOD_CONCURRENCY} callers over \
             {FLOOD_CONNECTIONS} connections from 127.0.0.1, either offering a fixed rate (the same load \
             on both servers) or each sending its next call as soon as the last is answered (as much as \
             one client on this machine can send; a server that answers faster gets more), on a thread \
             and runtime of their own: the flood's client shares the two cores with B, the server and \
             PostgreSQL. Ratio: B's p99 during the flood \
             over B's p99 in the quiet windows on the same server; in brackets the range of the rounds' \
             ratios. Server and PostgreSQL CPU in cores (CPU seconds per second).\n",
            B_EVERY.as_millis(),
            B_WORKERS as f64 / B_EVERY.as_secs_f64(),
            self.rounds,
            self.window.as_secs_f64(),
        );
        let _ = writeln!(
            out,
            "| server | flood beside B | B calls/s | B p50 | B p99 | B p99 / quiet | B errors | flood calls/s | of which reached the database | server CPU | PG CPU |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
        for server in &self.servers {
            let quiet = server.quiet().b();
            let quiet_p99 = quiet.percentile(0.99).as_secs_f64();
            for phase in &server.phases {
                let b = phase.b();
                let p99 = b.percentile(0.99).as_secs_f64();
                let ratio = if phase.flood.who == Who::Quiet {
                    "1".to_owned()
                } else {
                    let per_round: Vec<f64> = phase
                        .rounds
                        .iter()
                        .zip(&server.quiet().rounds)
                        .map(|(f, q)| {
                            f.percentile(0.99).as_secs_f64()
                                / q.percentile(0.99).as_secs_f64().max(1e-9)
                        })
                        .collect();
                    let (_, low, high) = spread(&per_round);
                    if per_round.len() > 1 {
                        format!("**{:.2}** ({low:.2}–{high:.2})", p99 / quiet_p99.max(1e-9))
                    } else {
                        format!("**{:.2}**", p99 / quiet_p99.max(1e-9))
                    }
                };
                let (flood_rate, reached) = if phase.flood.who == Who::Quiet {
                    ("-".to_owned(), "-".to_owned())
                } else {
                    let c = &phase.counts;
                    (
                        format!("{:.0}", c.per_sec(c.calls)),
                        format!(
                            "{:.0}/s{}",
                            c.per_sec(c.reached_db),
                            if c.other > 0 {
                                format!(
                                    " ({} other errors: {})",
                                    c.other,
                                    c.first_other.as_deref().unwrap_or("").replace('|', "/")
                                )
                            } else {
                                String::new()
                            }
                        ),
                    )
                };
                let cores = |cpu: Duration| cpu.as_secs_f64() / b.elapsed.as_secs_f64().max(1e-9);
                let _ = writeln!(
                    out,
                    "| {} (`{}`) | {} | {:.0} | {:.2} ms | {:.2} ms | {ratio} | {} | {flood_rate} | {reached} | {:.2} | {:.2} |",
                    if server.protected {
                        "protected"
                    } else {
                        "**unprotected**, for comparison"
                    },
                    server.flags,
                    phase.flood.label(server.protected),
                    b.throughput(),
                    b.percentile(0.5).as_secs_f64() * 1e3,
                    p99 * 1e3,
                    b.errors,
                    cores(b.server_cpu),
                    cores(b.postgres_cpu),
                );
            }
        }
        out.push('\n');
    }
}
