//! The run on each backend: seed, start the server, drive the scenarios next to
//! their baselines (`main.rs` sets up and reports).

use super::*;

/// The server's pool (`--db-max-connections`' default): at most this many of its
/// statements run at once.
pub(crate) const SERVICE_POOL: usize = 16;

mod unary;

pub(crate) async fn postgres_run(
    setup: &Setup,
    pg: &cluster::Postgres,
    echo: &Echo,
    report: &mut Report,
) -> anyhow::Result<()> {
    eprintln!("== PostgreSQL at {}", pg.url);
    let key = create_key(setup, &pg.url, "bench")?;
    let data = Arc::new(Dataset::new(TenantId::parse("bench")?, setup.contacts));
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&pg.url)
        .await?;
    eprintln!("   seeding {} contacts", setup.contacts);
    let seed = seed::postgres(&pool, data.clone(), 2).await?;
    eprintln!("   seeded: {seed:?}");
    // For investigations only (KRAITER_BENCH_AFTER_SEED_SQL="REINDEX ..."): statements
    // run once on the seeded database, before anything is measured.
    if let Ok(sql) = std::env::var("KRAITER_BENCH_AFTER_SEED_SQL") {
        sqlx::raw_sql(&sql).execute(&pool).await?;
        eprintln!("   ran KRAITER_BENCH_AFTER_SEED_SQL");
    }
    match prewarm(&pool).await {
        Ok(blocks) => eprintln!("   prewarmed {} MiB", blocks * 8 / 1024),
        Err(err) => eprintln!("   not prewarmed ({err}): the first scenario reads cold pages"),
    }

    let server = start_server(setup, &pg.url, "server-postgres").await?;
    let clients = load::connect(&server.addr(), &key, setup.connections).await?;
    let watch = Watch {
        server: Some(server.pid()),
        postgres: pg.postmaster_pid(),
    };
    let mut rows = Vec::new();
    // Reads and searches first: pgbench's writes below add rows and replace whole
    // property sets, which the searches and the full stream must not see.
    if wanted(setup, Scenario::ListAll) {
        eprintln!("== full stream and COPY TO, in rounds");
        let rounds = export_rounds(setup, &pool, &clients, watch, &data, Scenario::ListAll).await?;
        rows.push(Row {
            scenario: Scenario::ListAll,
            concurrency: 1,
            measured: rounds.service(),
        });
        report.baselines.rounds.push(rounds);
    }
    if wanted(setup, Scenario::ListSearch) {
        eprintln!("== full stream of a common term's matches and COPY TO of them, in rounds");
        let rounds =
            export_rounds(setup, &pool, &clients, watch, &data, Scenario::ListSearch).await?;
        rows.push(Row {
            scenario: Scenario::ListSearch,
            concurrency: 1,
            measured: rounds.service(),
        });
        report.baselines.rounds.push(rounds);
    }
    let others = run_scenarios(setup, &server, &key, pg.postmaster_pid(), &data, true).await?;
    // Before the writes below add rows: the dropped search reads the seeded tenant.
    if wanted_name(setup, "cancelled search") {
        eprintln!("== cancelled search: a two-letter term to its end, then dropped mid-statement");
        let runs = if setup.quick { 1 } else { 3 };
        // A server of its own, whose frequent health probes make the search's
        // connection flush its table statistics soon after the search.
        let server = start_server_with(
            setup,
            &pg.url,
            "server-cancel",
            &["--health-interval", cancel::HEALTH_INTERVAL],
        )
        .await?;
        let clients = load::connect(&server.addr(), &key, 1).await?;
        let after_others = !others.is_empty() || wanted(setup, Scenario::ListAll);
        report.cancel = Some(cancel::run(&pool, &clients, &data, runs, after_others).await?);
    }

    let mut sections = Vec::new();
    if wanted_name(setup, "filters") {
        eprintln!("== filters, orders and counts (issue 16)");
        let vars = baseline::variables(&data, &key);
        let section =
            filters::postgres(pg, &pool, &clients, setup.plan, watch, &data, &vars).await?;
        eprintln!("{section}");
        sections.push(section);
    }

    if compression::wanted(setup) {
        eprintln!("== response compression (issue 19): gzip always vs never, in rounds");
        let section = compression::run(setup, &pg.url, &key, pg.postmaster_pid(), &data).await?;
        eprintln!("{section}");
        sections.push(format!("#### Response compression (issue 19)\n\n{section}"));
    }

    eprintln!("== unary calls in rounds: echo, service, pgbench (and back)");
    baseline::check_ids(&pool, &data).await?;
    let vars = baseline::variables(&data, &key);
    for rounds in unary::rounds(setup, pg, echo, &clients, watch, &data, &vars).await? {
        rows.push(Row {
            scenario: rounds.scenario,
            concurrency: setup.plan.concurrency,
            measured: rounds.service(),
        });
        report.baselines.rounds.push(rounds);
    }
    // Neither the seed nor a baseline's creates may break the id rule the service
    // keeps: each broken row would make its insert also write `contact_id_floors`.
    let floors: i64 = sqlx::query_scalar("SELECT count(*) FROM contact_id_floors")
        .fetch_one(&pool)
        .await?;
    if floors != 0 {
        anyhow::bail!(
            "rows with an id earlier than their created_at: the baselines did extra work"
        );
    }
    rows.extend(others);
    // The writes above leave autovacuum work behind: the light rows start on a
    // settled database, so no vacuum shares their windows.
    import::settle(&pool).await?;
    let light = light::run(
        setup,
        "PostgreSQL",
        &server.addr(),
        &key,
        watch,
        echo,
        &data,
    )
    .await?;
    // The report's order: every scenario at C, then the latency rows at C = 1.
    rows.sort_by_key(|row| {
        let latency_row = row.concurrency == 1 && Scenario::LATENCY.contains(&row.scenario);
        (latency_row, row.scenario)
    });
    if setup.hold {
        eprintln!(
            "holding: psql {}\n         server {} (pid {}), key {key}\n         press Enter to go on",
            pg.url,
            server.addr(),
            server.pid()
        );
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    }
    if import::wanted(setup) {
        eprintln!("== ImportContacts ({} rows each)", import::rows(setup));
        // Investigation only (KRAITER_BENCH_IMPORT_AB=1): the same imports first with
        // the GIN indexes' own 64 kB pending-list limit, as before migration 0010 (it
        // overrides a batch's raised limit), as a same-run baseline of the change.
        let ab = std::env::var_os("KRAITER_BENCH_IMPORT_AB").is_some();
        if ab {
            let limit = |option: &str| {
                for index in ["contacts_search_tenant", "contacts_properties_tenant"] {
                    cluster::psql(&pg.bin, &pg.url, &format!("ALTER INDEX {index} {option}"))?;
                }
                anyhow::Ok(())
            };
            limit("SET (gin_pending_list_limit = 64)")?;
            let label = "the indexes' own 64 kB limit (before migration 0010)";
            eprintln!("   {label}:");
            let section = import::run(setup, &server, &key, &data, watch, Some(&pool)).await?;
            report.imports.push((label.into(), section));
            limit("RESET (gin_pending_list_limit)")?;
        }
        // Investigation (KRAITER_BENCH_IMPORT_DEPTHS=1,2,...): the imports on a server
        // of their own per `--import-depth`, in the order given, same cluster.
        if let Some(depths) = import::depths() {
            for depth in depths {
                let flag = depth.to_string();
                let name = format!("server-import-depth-{depth}");
                let flags = ["--import-depth", flag.as_str()];
                let server = start_server_with(setup, &pg.url, &name, &flags).await?;
                let watched = Watch {
                    server: Some(server.pid()),
                    postgres: pg.postmaster_pid(),
                };
                let label = format!("--import-depth {depth}");
                eprintln!("   {label}:");
                let section =
                    import::run(setup, &server, &key, &data, watched, Some(&pool)).await?;
                report.imports.push((label, section));
            }
        } else {
            let mut label = "";
            if ab {
                label = "a batch's own 16 MB limit, merged before its commit (0010)";
                eprintln!("   {label}:");
            }
            let section = import::run(setup, &server, &key, &data, watch, Some(&pool)).await?;
            report.imports.push((label.into(), section));
        }
    }
    drop(server);
    if wanted_name(setup, "flood") {
        eprintln!("== flood: tenant B's GetContact beside floods, on servers of their own");
        let a_key = create_key(setup, &pg.url, "flood")?;
        report.flood = Some(
            flood::run(
                &setup.server_bin,
                &setup.work_dir,
                &pg.url,
                pg.postmaster_pid(),
                &key,
                &a_key,
                &data,
                setup.plan,
                setup.rounds,
            )
            .await?,
        );
    }
    if wanted_name(setup, "WatchContacts") {
        eprintln!("== WatchContacts (issue 17): backlog replay, then delivery latency");
        let server =
            start_server_with(setup, &pg.url, "server-watch", &watch::SERVER_FLAGS).await?;
        let watched = Watch {
            server: Some(server.pid()),
            postgres: pg.postmaster_pid(),
        };
        let run = watch::run(
            &server.addr(),
            &key,
            &pool,
            &data,
            setup.plan,
            setup.rounds.min(3),
            watched,
        )
        .await?;
        eprintln!("{}", run.section);
        rows.push(Row {
            scenario: Scenario::WatchReplay,
            concurrency: 1,
            measured: run.replay.service(),
        });
        rows.extend(run.delivery);
        report.baselines.rounds.push(run.replay);
        report.watch = Some(run.section);
    }
    report.postgres = Some(BackendRun {
        name: "PostgreSQL",
        seed,
        rows,
        light,
        sections,
    });

    eprintln!("== other baselines");
    if !setup.quick {
        // The same create with keys in per-client ranges: what the time order of ids costs.
        let result = baseline::pgbench(
            pg,
            "create-per-client",
            &baseline::create_contact_per_client_keys(),
            &unary::write_vars(&vars, &data),
            setup.plan.concurrency,
            setup.plan.duration,
        )?;
        eprintln!(
            "   CreateContact, per-client key ranges      {:>10.0} tx/s",
            result.tps
        );
        report.baselines.create_per_client = Some(result);
    }
    let keyset = baseline::pgbench(
        pg,
        "keyset",
        &[baseline::keyset_page()],
        &vars,
        1,
        setup.plan.duration,
    )?;
    eprintln!("   keyset pages of 1000: {:.0} rows/s", keyset.tps * 1001.0);
    report.baselines.keyset = Some(keyset);

    pool.close().await;
    Ok(())
}

/// The full stream against `COPY TO` of the same rows, in rounds that alternate
/// which goes first; one stream and one COPY each.
async fn export_rounds(
    setup: &Setup,
    pool: &sqlx::PgPool,
    clients: &load::Clients,
    watch: Watch,
    data: &Arc<Dataset>,
    scenario: Scenario,
) -> anyhow::Result<Rounds> {
    let condition = export_condition(scenario);
    let copy_to = || baseline::copy_to_where(pool, data, condition);
    // Once: COPY's and the stream's first pass read in what the other may not have.
    copy_to().await?;
    let one_stream = Plan {
        duration: Duration::ZERO,
        ..setup.plan
    };
    let mut rounds = Vec::new();
    for round in 0..setup.rounds {
        let forward = round % 2 == 0;
        let early = if forward {
            Some(copy_to().await?)
        } else {
            None
        };
        let service = scenarios::run(scenario, clients, one_stream, watch, data).await;
        let (rows, took) = match early {
            Some(copied) => copied,
            None => copy_to().await?,
        };
        eprintln!(
            "   round {}: stream {:>8.0} rows/s, COPY TO {:>8.0} rows/s; stream CPU s: server {:.2}, PostgreSQL {:.2}, bench {:.2}, machine {:.2} of {:.2} elapsed",
            round + 1,
            service.items_per_sec(),
            rows as f64 / took.as_secs_f64(),
            service.server_cpu.as_secs_f64(),
            service.postgres_cpu.as_secs_f64(),
            service.client_cpu.as_secs_f64(),
            service.machine_busy_cpu.as_secs_f64(),
            service.elapsed.as_secs_f64(),
        );
        rounds.push(Round {
            order: if forward {
                "COPY, stream"
            } else {
                "stream, COPY"
            },
            service,
            baseline: Baseline::CopyTo { rows, took },
        });
    }
    Ok(Rounds { scenario, rounds })
}

/// The rows of a full-stream scenario, as a condition for its `COPY TO`: the stream
/// of a search term against a COPY of the rows its pattern matches (the store's
/// `search_text LIKE`), in no order, as the whole export's COPY.
fn export_condition(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::ListSearch => "search_text LIKE '%gmail%'",
        _ => "true",
    }
}

pub(crate) async fn sqlite_run(setup: &Setup) -> anyhow::Result<BackendRun> {
    eprintln!("== SQLite");
    let dir = setup.work_dir.join("sqlite");
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}/contacts.db", dir.display());
    let key = create_key(setup, &url, "bench")?;
    let data = Arc::new(Dataset::new(TenantId::parse("bench")?, setup.contacts));
    let seed = seed_sqlite(&dir.join("contacts.db"), &data).await?;
    eprintln!("   seeded: {seed:?}");
    let server = start_server(setup, &url, "server-sqlite").await?;
    let mut sections = Vec::new();
    // On the seeded tenant, before any write, as on PostgreSQL.
    if wanted_name(setup, "filters") {
        eprintln!("== filters, orders and counts (issue 16)");
        let clients = load::connect(&server.addr(), &key, setup.connections).await?;
        let section = filters::sqlite(&clients, setup.plan, &data, server.pid()).await;
        eprintln!("{section}");
        sections.push(section);
    }
    // Issue 20: the paired scenarios against SQLite's own baseline, in rounds.
    let paired = Scenario::PAIRED.iter().any(|s| wanted(setup, *s));
    if paired {
        eprintln!("== SQLite: unary calls and the full stream against their own baseline");
        let path = dir.join("contacts.db");
        let compare = start_compare_server(setup, &url, "server-sqlite-compare").await?;
        let section =
            sqlite_baseline::rounds(setup, &server, compare.as_ref(), &key, &path, &data).await?;
        eprintln!("{section}");
        sections.push(section);
    }
    let rows = run_scenarios(setup, &server, &key, None, &data, false).await?;
    let light = {
        let echo = Echo::start(setup).await?;
        let watch = Watch {
            server: Some(server.pid()),
            postgres: None,
        };
        light::run(setup, "SQLite", &server.addr(), &key, watch, &echo, &data).await?
    };
    if import::wanted(setup) {
        eprintln!("== ImportContacts ({} rows each)", import::rows(setup));
        let watch = Watch {
            server: Some(server.pid()),
            postgres: None,
        };
        let section = import::run(setup, &server, &key, &data, watch, None).await?;
        sections.push(format!("#### ImportContacts (issue 15)\n\n{section}"));
    }
    Ok(BackendRun {
        name: "SQLite",
        seed,
        rows,
        light,
        sections,
    })
}

/// Loads every table and index into shared buffers. COPY, index builds and VACUUM go
/// through small ring buffers, so without this the first scenario (and not the
/// pgbench baselines, which run later) would pay for reading the data in.
async fn prewarm(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        .execute(pool)
        .await?;
    let blocks = sqlx::query_scalar(
        "SELECT coalesce(sum(pg_prewarm(c.oid)), 0)::bigint FROM pg_class c \
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'i')",
    )
    .fetch_one(pool)
    .await?;
    Ok(blocks)
}

async fn seed_sqlite(path: &Path, data: &Dataset) -> anyhow::Result<seed::SeedTimes> {
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    let options = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Off)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let times = seed::sqlite(&pool, data).await?;
    pool.close().await;
    Ok(times)
}
