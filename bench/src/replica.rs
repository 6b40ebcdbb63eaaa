//! `--replica-export` (issue 18): the full ListContacts stream of a tenant through a
//! server that reads from a hot standby (`--database-read-url`), against `COPY TO` of
//! the same rows on that standby, in rounds that alternate which goes first. The
//! standby is a `pg_basebackup -R` of the throwaway cluster, streaming from it, with
//! the same settings. Prints a markdown section for BENCHMARKS.md.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cluster::{self, SETTINGS};
use crate::data::Dataset;
use crate::load::{self, Plan, Watch};
use crate::scenarios::{self, Scenario};
use crate::{Setup, baseline, start_server_with};

pub(crate) async fn run(setup: &Setup) -> anyhow::Result<String> {
    let pg = cluster::start(&setup.work_dir, None)?;
    eprintln!("== read replica export: primary at {}", pg.url);
    let (key, data, pool) = crate::arms::seeded_tenant(setup, &pg.url).await?;

    let standby = start_standby(&pg.bin, pg.port, &setup.work_dir)?;
    let standby_url = format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        standby.port, pg.database
    );
    let standby_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&standby_url)
        .await?;
    let replayed = Instant::now();
    loop {
        let held: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts WHERE tenant_id = $1")
            .bind(data.tenant.as_str())
            .fetch_one(&standby_pool)
            .await?;
        if held as u64 >= setup.contacts {
            break;
        }
        if replayed.elapsed() > Duration::from_secs(600) {
            bail!("the standby holds {held} of {} contacts", setup.contacts);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("   standby at {standby_url}, replayed");

    let server = start_server_with(
        setup,
        &pg.url,
        "server-replica",
        &["--database-read-url", &standby_url],
    )
    .await?;
    let clients = load::connect(&server.addr(), &key, setup.connections).await?;
    let watch = Watch {
        server: Some(server.pid()),
        postgres: standby.postmaster_pid(),
    };
    // The same-run reference: a server without replicas, and COPY TO on the primary.
    let plain = crate::start_server(setup, &pg.url, "server-primary").await?;
    let plain_clients = load::connect(&plain.addr(), &key, setup.connections).await?;
    let plain_watch = Watch {
        server: Some(plain.pid()),
        postgres: pg.postmaster_pid(),
    };
    let standby_side = Side {
        clients: &clients,
        watch,
        pool: &standby_pool,
    };
    let primary_side = Side {
        clients: &plain_clients,
        watch: plain_watch,
        pool: &pool,
    };
    let one_stream = Plan {
        duration: Duration::ZERO,
        ..setup.plan
    };
    // Once each: both read in what the other may not have.
    for side in [&standby_side, &primary_side] {
        side.round(one_stream, &data, true).await?;
    }

    let mut rows = Vec::new();
    for round in 0..setup.rounds {
        let forward = round % 2 == 0;
        let on_standby = standby_side.round(one_stream, &data, forward).await?;
        let on_primary = primary_side.round(one_stream, &data, forward).await?;
        eprintln!(
            "   round {}: standby: stream {:>8.0} rows/s, COPY TO {:>8.0} rows/s ({:.2}); \
             primary: stream {:>8.0}, COPY TO {:>8.0} ({:.2}); standby stream CPU s: server \
             {:.2}, standby {:.2}, over {:.2} elapsed",
            round + 1,
            on_standby.stream,
            on_standby.copy,
            on_standby.stream / on_standby.copy,
            on_primary.stream,
            on_primary.copy,
            on_primary.stream / on_primary.copy,
            on_standby.server_cpu,
            on_standby.postgres_cpu,
            on_standby.elapsed,
        );
        rows.push((
            if forward {
                "COPY, stream"
            } else {
                "stream, COPY"
            },
            on_standby,
            on_primary,
        ));
    }
    // The server's replica pool: idle connections whose last statement was a page.
    let on_standby: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
         AND query LIKE '%FROM contacts WHERE tenant_id%ORDER BY%'",
    )
    .fetch_one(&standby_pool)
    .await?;
    if on_standby == 0 {
        bail!("no connection of the server on the standby ran a page of the list");
    }
    let median = |ratio: fn(&Rates) -> f64, side: fn(&Row) -> &Rates| {
        let mut ratios: Vec<f64> = rows.iter().map(|row| ratio(side(row))).collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    let on_standby = median(Rates::ratio, |row| &row.1);
    let on_primary = median(Rates::ratio, |row| &row.2);

    let mut md = String::new();
    md.push_str(&format!(
        "{} contacts of one tenant; the full ListContacts stream (one client, pages of 1000, \
         read as gRPC frames, not decoded: the main run's export scenario) through a server \
         whose `--database-read-url` is a hot standby (`pg_basebackup -R`, streaming from the \
         primary, same settings), against `COPY (SELECT the same columns) TO STDOUT` on that \
         standby; and, in the same rounds, the same stream through a server without replicas \
         against COPY TO on the primary. {} rounds alternating which of stream and COPY goes \
         first. Median stream/COPY ratio: **{on_standby:.2} on the standby**, {on_primary:.2} \
         on the primary.\n\n",
        setup.contacts, setup.rounds
    ));
    md.push_str(
        "| round | order | standby: stream rows/s | COPY TO rows/s | ratio | server CPU s | \
         standby CPU s | primary: stream rows/s | COPY TO rows/s | ratio |\n",
    );
    md.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for (i, (order, standby, primary)) in rows.iter().enumerate() {
        md.push_str(&format!(
            "| {} | {order} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.2} |\n",
            i + 1,
            standby.stream,
            standby.copy,
            standby.ratio(),
            standby.server_cpu,
            standby.postgres_cpu,
            primary.stream,
            primary.copy,
            primary.ratio(),
        ));
    }
    Ok(md)
}

type Row = (&'static str, Rates, Rates);

/// One round's figures on one side.
struct Rates {
    /// Rows per second.
    stream: f64,
    copy: f64,
    /// CPU seconds of the stream: the server's, the database's.
    server_cpu: f64,
    postgres_cpu: f64,
    elapsed: f64,
}

impl Rates {
    fn ratio(&self) -> f64 {
        self.stream / self.copy
    }
}

/// A server and the database its export reads, with a pool for COPY TO there.
struct Side<'a> {
    clients: &'a load::Clients,
    watch: Watch,
    pool: &'a sqlx::PgPool,
}

impl Side<'_> {
    /// One stream and one COPY TO (the COPY first when `copy_first`); checks they
    /// read the same rows.
    async fn round(
        &self,
        plan: Plan,
        data: &Arc<Dataset>,
        copy_first: bool,
    ) -> anyhow::Result<Rates> {
        let early = if copy_first {
            Some(baseline::copy_to(self.pool, data).await?)
        } else {
            None
        };
        let stream = scenarios::run(Scenario::ListAll, self.clients, plan, self.watch, data).await;
        let (copied, took) = match early {
            Some(copied) => copied,
            None => baseline::copy_to(self.pool, data).await?,
        };
        if stream.errors > 0 || stream.items != copied {
            bail!(
                "the stream delivered {} rows with {} errors ({:?}), COPY {copied}",
                stream.items,
                stream.errors,
                stream.first_error
            );
        }
        Ok(Rates {
            stream: stream.items_per_sec(),
            copy: copied as f64 / took.as_secs_f64(),
            server_cpu: stream.server_cpu.as_secs_f64(),
            postgres_cpu: stream.postgres_cpu.as_secs_f64(),
            elapsed: stream.elapsed.as_secs_f64(),
        })
    }
}

struct Standby {
    port: u16,
    data: std::path::PathBuf,
}

impl Standby {
    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

/// A hot standby of the cluster at `primary_port`, stopped by a watchdog when this
/// process exits.
// The watchdog must outlive this process, so it is deliberately never waited for.
#[allow(clippy::zombie_processes)]
fn start_standby(bin: &Path, primary_port: u16, work_dir: &Path) -> anyhow::Result<Standby> {
    let dir = work_dir.join("standby");
    std::fs::create_dir_all(&dir)?;
    let run_as = cluster::run_as_postgres(&dir, "PostgreSQL")?;
    let data = dir.join("data");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{run_as}'{}' -h 127.0.0.1 -p {primary_port} -U postgres -D '{}' -R -X stream -c fast \
             >'{}/basebackup.log' 2>&1",
            bin.join("pg_basebackup").display(),
            data.display(),
            dir.display()
        ))
        .status()
        .context("run pg_basebackup")?;
    if !status.success() {
        bail!("pg_basebackup failed; see {}/basebackup.log", dir.display());
    }
    let port = cluster::free_port()?;
    let settings: String = SETTINGS
        .iter()
        .map(|(name, value)| format!(" -c {name}={value}"))
        .collect();
    let script = format!(
        "{run_as}'{postgres}' -D '{data}' -p {port} -k '{dir}' -c listen_addresses=127.0.0.1 \
           -c hot_standby=on{settings} >'{dir}/server.log' 2>&1 & \
         while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         {run_as}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1",
        postgres = bin.join("postgres").display(),
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
        pid = std::process::id(),
    );
    cluster::spawn_watchdog(&script)?;
    cluster::wait_until_ready(bin, port, &dir)?;
    Ok(Standby { port, data })
}
