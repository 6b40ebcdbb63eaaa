//! Running the baselines: pgbench over the scripts of `baseline.rs`, and COPY TO and
//! COPY FROM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kraiter_contacts::domain::Contact;
use sqlx::postgres::{PgPool, PgPoolCopyExt};
use tokio_stream::StreamExt;

use super::Pgbench;
use crate::cluster::Postgres;
use crate::data::Dataset;
use crate::seed::{COPY_CONTACTS, CopyRows};

/// Runs `scripts` (each transaction picks one at random) with `clients` connections
/// for a second of warm-up and then `duration` (whole seconds, at least 1), and
/// reports the seconds after the warm-up only: in its first second every connection
/// prepares every script's statements (with 16 scripts of a large insert, a sizeable
/// share of a short run).
pub fn pgbench(
    pg: &Postgres,
    name: &str,
    scripts: &[String],
    vars: &[(String, String)],
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Pgbench> {
    pgbench_with(pg, name, scripts, vars, clients, duration, None)
}

/// `pgbench` with `PGOPTIONS` for its sessions (e.g. `-c plan_cache_mode=...`).
pub fn pgbench_with(
    pg: &Postgres,
    name: &str,
    scripts: &[String],
    vars: &[(String, String)],
    clients: usize,
    duration: Duration,
    pgoptions: Option<&str>,
) -> anyhow::Result<Pgbench> {
    const WARMUP_SECS: u64 = 1;
    let secs = duration.as_secs().max(1);
    let (from, to) = (WARMUP_SECS as f64 + 0.5, (WARMUP_SECS + secs) as f64 + 0.5);
    let mut command = Command::new(pg.bin.join("pgbench"));
    for (i, script) in scripts.iter().enumerate() {
        let path = pg.work_dir.join(format!("{name}-{i}.pgbench.sql"));
        std::fs::write(&path, script)?;
        command.arg("-f").arg(&path);
    }
    command
        .args(["-n", "-M", "prepared", "-j", "2", "-P", "1"])
        .arg("-c")
        .arg(clients.to_string())
        .arg("-T")
        // pgbench may not report its last second: one more than needed.
        .arg((WARMUP_SECS + secs + 1).to_string())
        .args(["-h", &pg.host, "-p", &pg.port.to_string(), "-U", &pg.user]);
    for (name, value) in vars {
        command.arg("-D").arg(format!("{name}={value}"));
    }
    command.arg(&pg.database);
    if let Some(options) = pgoptions {
        command.env("PGOPTIONS", options);
    }
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let postmaster = pg.postmaster_pid();
    let cpu = || postmaster.map(crate::process::cpu_ticks_with_reaped_children);
    let mut child = command.spawn().context("run pgbench")?;
    // Progress lines come on stderr once a second; PostgreSQL's CPU is read when the
    // warm-up's and the last measured second's lines arrive, so both figures cover
    // the same seconds.
    let (mut cpu_before, mut cpu_after) = (None, None);
    let mut seconds = Vec::new();
    let mut stderr = String::new();
    let reader = BufReader::new(child.stderr.take().context("pgbench stderr")?);
    for line in reader.lines() {
        let line = line?;
        match progress(&line) {
            Some((at, _, _)) if at < from => cpu_before = cpu(),
            Some((at, tps, latency_ms)) if at < to => {
                seconds.push((tps, latency_ms));
                if at > to - 1.0 {
                    cpu_after = cpu();
                }
            }
            Some(_) => {}
            None => {
                stderr.push_str(&line);
                stderr.push('\n');
            }
        }
    }
    let out = child.wait_with_output().context("wait for pgbench")?;
    let cpu_after = cpu_after.or_else(cpu);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || stderr.contains("aborted") {
        bail!("pgbench `{name}` failed:\n{stdout}\n{stderr}");
    }
    if seconds.is_empty() {
        bail!("pgbench `{name}` reported no progress after its warm-up:\n{stdout}\n{stderr}");
    }
    let transactions: f64 = seconds.iter().map(|(tps, _)| tps).sum();
    let tps = transactions / seconds.len() as f64;
    let latency_ms = seconds.iter().map(|(t, l)| t * l).sum::<f64>() / transactions.max(1.0);
    let postgres_cpu_per_tx = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) if transactions > 0.0 => Some(Duration::from_secs_f64(
            after.saturating_sub(before) as f64 / crate::process::clock_ticks() / transactions,
        )),
        _ => None,
    };
    Ok(Pgbench {
        generic_plans: pgoptions.is_some_and(|o| o.contains("force_generic_plan")),
        postgres_cpu_per_tx,
        tps,
        latency_ms,
        clients,
        script: scripts.first().cloned().unwrap_or_default(),
        scripts: scripts.len(),
    })
}

/// `progress: 2.0 s, 1234.5 tps, lat 25.9 ms stddev 10.1, 0 failed`: the time, tps
/// and mean latency of one second.
fn progress(line: &str) -> Option<(f64, f64, f64)> {
    let mut parts = line.strip_prefix("progress: ")?.split(", ");
    let at = parts.next()?.strip_suffix(" s")?.parse().ok()?;
    let tps = parts.next()?.strip_suffix(" tps")?.parse().ok()?;
    let latency = parts
        .next()?
        .strip_prefix("lat ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((at, tps, latency))
}

/// The full export of the tenant's contacts (same columns as ListContacts), rows/s.
pub async fn copy_to(pool: &PgPool, data: &Dataset) -> anyhow::Result<(u64, Duration)> {
    copy_to_where(pool, data, "true").await
}

/// `copy_to` of the rows that also meet `condition` (SQL over `contacts`).
pub async fn copy_to_where(
    pool: &PgPool,
    data: &Dataset,
    condition: &str,
) -> anyhow::Result<(u64, Duration)> {
    let statement = format!(
        "COPY (SELECT {} FROM contacts WHERE tenant_id = '{}' AND {condition}) TO STDOUT",
        super::sql::CONTACT_COLUMNS,
        data.tenant.as_str()
    );
    let started = Instant::now();
    let mut stream = pool.copy_out_raw(&statement).await?;
    let mut rows = 0u64;
    while let Some(chunk) = stream.next().await {
        rows += chunk?.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    Ok((rows, started.elapsed()))
}

/// `contacts` of `tenant` in COPY text format, built before a window opens.
pub fn copy_rows(tenant: &str, contacts: impl Iterator<Item = Contact>) -> CopyRows {
    let mut rows = CopyRows::default();
    for contact in contacts {
        rows.contact(tenant, &contact);
    }
    rows
}

/// `COPY contacts FROM STDIN` of `rows`, every index in place: what an import has to
/// beat.
pub async fn copy_from(pool: &PgPool, rows: &CopyRows) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut copy = pool.copy_in_raw(COPY_CONTACTS).await?;
    for chunk in rows.buf.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    copy.finish().await?;
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress_lines_parse() {
        assert_eq!(
            super::progress("progress: 2.0 s, 1234.5 tps, lat 25.916 ms stddev 10.100, 0 failed"),
            Some((2.0, 1234.5, 25.916))
        );
        assert_eq!(super::progress("pgbench (15.18)"), None);
    }
}
