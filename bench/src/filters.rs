//! Typed filters, orders and counts (issue 16), on the seeded tenant: first pages of
//! filtered lists at C = 1 (p50) and C = 32 (throughput), exact counts beside pgbench
//! running the same count statement, a scanning filter beside a sequential scan of
//! the table, and what the GIN index on properties costs CreateContact. Prints a
//! Markdown section (`--only filters`); BENCHMARKS.md records it by hand.
//!
//! The seeded `score` is `n % 1000` and `company` one of 10 names: `score` IN ten
//! values matches 1 % of the tenant, `score` equal to one 0.1 %; no company holds
//! `zzq`, so CONTAINS on it reads every contact.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use kraiter_contacts::api::convert::to_value;
use kraiter_contacts::api::pb::{self, ContactOrder, FilterOperator as Op};
use serde_json::json;
use tonic::Status;

use crate::baseline;
use crate::cluster::Postgres;
use crate::data::Dataset;
use crate::load::{self, Client, Clients, Measured, Plan, Watch};
use crate::scenarios;

fn cond(field: &str, op: Op, value: serde_json::Value) -> pb::ContactFilter {
    pb::ContactFilter {
        field: field.into(),
        operator: op as i32,
        value: Some(to_value(value)),
        ..Default::default()
    }
}

/// `score` IN ten consecutive values from `r`: 1 % of the tenant.
fn one_percent(r: u64) -> pb::ContactFilter {
    let first = (r % 100) * 10;
    pb::ContactFilter {
        field: "properties.score".into(),
        operator: Op::In as i32,
        values: (first..first + 10).map(|v| to_value(json!(v))).collect(),
        ..Default::default()
    }
}

fn newest(data: &Dataset, r: u64) -> pb::ContactFilter {
    // The newest 10 % of the tenant, from a random start within it.
    let n = data.contacts - 1 - (r % (data.contacts / 10).max(1));
    let at = data.created_at(n);
    pb::ContactFilter {
        field: "created_at".into(),
        operator: Op::GreaterThanOrEqual as i32,
        timestamp: Some(prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: at.timestamp_subsec_micros() as i32 * 1000,
        }),
        ..Default::default()
    }
}

#[derive(Clone, Copy)]
enum Case {
    Equal,
    OnePercent,
    CreatedAsc,
    CreatedDesc,
    CreatedById,
    Scan,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Self::Equal => "property = value (0.1 %), GIN",
            Self::OnePercent => "property IN 10 values (1 %), GIN",
            Self::CreatedAsc => "created_at >= t (newest 10 %), oldest first",
            Self::CreatedDesc => "created_at >= t (newest 10 %), newest first",
            Self::CreatedById => "created_at >= t (newest 10 %), id order",
            Self::Scan => "company CONTAINS \"zzq\" (no match: scans)",
        }
    }

    fn request(self, data: &Dataset, r: u64) -> pb::ListContactsRequest {
        let (filter, order) = match self {
            Self::Equal => (
                cond("properties.score", Op::Equals, json!(r % 1000)),
                ContactOrder::Unspecified,
            ),
            Self::OnePercent => (one_percent(r), ContactOrder::Unspecified),
            Self::CreatedAsc => (newest(data, r), ContactOrder::CreatedAtAsc),
            Self::CreatedDesc => (newest(data, r), ContactOrder::CreatedAtDesc),
            Self::CreatedById => (newest(data, r), ContactOrder::Unspecified),
            Self::Scan => (
                cond("properties.company", Op::Contains, json!("zzq")),
                ContactOrder::Unspecified,
            ),
        };
        pb::ListContactsRequest {
            filter: Some(filter),
            order_by: order as i32,
            limit: 20,
            max_pages: 1,
            ..Default::default()
        }
    }
}

async fn first_page(mut client: Client, request: pb::ListContactsRequest) -> Result<u64, Status> {
    let mut stream = client.list_contacts(request).await?.into_inner();
    let page = stream
        .message()
        .await?
        .ok_or_else(|| Status::internal("no first page"))?;
    // Read to the trailers (`max_pages` is 1): a stream dropped early is reset, and
    // thousands of resets make the client's HTTP/2 stack close the connection.
    while stream.message().await?.is_some() {}
    Ok(page.contacts.len() as u64)
}

async fn list_case(
    clients: &Clients,
    plan: Plan,
    watch: Watch,
    data: &Arc<Dataset>,
    case: Case,
) -> Measured {
    let data = data.clone();
    load::drive(clients, plan, watch, move |client, r, _| {
        first_page(client, case.request(&data, r))
    })
    .await
}

async fn count_case(clients: &Clients, plan: Plan, watch: Watch, filtered: bool) -> Measured {
    load::drive(clients, plan, watch, move |mut client, r, _| async move {
        let request = pb::CountContactsRequest {
            filter: filtered.then(|| one_percent(r)),
            ..Default::default()
        };
        let answer = client.count_contacts(request).await?.into_inner();
        Ok(answer.count as u64)
    })
    .await
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// One line of the table: p50 at C = 1 and throughput at C = `plan.concurrency`.
async fn row<F, Fut>(out: &mut String, name: &str, plan: Plan, measure: F)
where
    F: Fn(Plan) -> Fut,
    Fut: std::future::Future<Output = Measured>,
{
    let single = measure(scenarios::single(plan)).await;
    let many = measure(plan).await;
    let errors = single.errors + many.errors;
    let _ = writeln!(
        out,
        "| {name} | {} | {} | {:.0}/s | {errors}{} |",
        ms(single.percentile(0.5)),
        ms(single.percentile(0.99)),
        many.throughput(),
        single
            .first_error
            .as_ref()
            .or(many.first_error.as_ref())
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    eprintln!(
        "   {name}: p50 {} at C=1, {:.0}/s at C={}",
        ms(single.percentile(0.5)),
        many.throughput(),
        plan.concurrency
    );
}

const HEADER: &str =
    "| call | p50 C=1 | p99 C=1 | throughput C=32 | errors |\n|---|---|---|---|---|\n";

/// The list and count rows, on either backend.
async fn service_rows(
    out: &mut String,
    clients: &Clients,
    plan: Plan,
    watch: Watch,
    data: &Arc<Dataset>,
) {
    out.push_str(HEADER);
    for case in [
        Case::Equal,
        Case::OnePercent,
        Case::CreatedAsc,
        Case::CreatedDesc,
        Case::CreatedById,
    ] {
        let name = format!("ListContacts first page: {}", case.name());
        row(out, &name, plan, |p| {
            list_case(clients, p, watch, data, case)
        })
        .await;
    }
    row(out, "CountContacts, whole tenant", plan, |p| {
        count_case(clients, p, watch, false)
    })
    .await;
    row(out, "CountContacts, 1 % filter", plan, |p| {
        count_case(clients, p, watch, true)
    })
    .await;
}

/// The first page of the scanning filter, one call at a time: rows of the tenant read
/// per second.
async fn scan_rate(
    clients: &Clients,
    plan: Plan,
    watch: Watch,
    data: &Arc<Dataset>,
) -> (Duration, f64) {
    let plan = Plan {
        duration: plan.duration.max(Duration::from_secs(2)),
        ..scenarios::single(plan)
    };
    let measured = list_case(clients, plan, watch, data, Case::Scan).await;
    let p50 = measured.percentile(0.5);
    (p50, data.contacts as f64 / p50.as_secs_f64().max(1e-9))
}

pub async fn postgres(
    pg: &Postgres,
    pool: &sqlx::PgPool,
    clients: &Clients,
    plan: Plan,
    watch: Watch,
    data: &Arc<Dataset>,
    vars: &[(String, String)],
) -> anyhow::Result<String> {
    let mut out = String::from("#### Filters, orders and counts (issue 16)\n\n");
    service_rows(&mut out, clients, plan, watch, data).await;
    let (p50, rate) = scan_rate(clients, plan, watch, data).await;
    let count_all = "SELECT count(*) AS n FROM contacts WHERE tenant_id = :tenant;\n".to_owned();
    let count_kept = "SELECT CAST(coalesce(sum(n), 0) AS bigint) AS n FROM contact_counts \
                      WHERE tenant_id = :tenant;\n"
        .to_owned();
    let in_list: Vec<String> = (0..10)
        .map(|v| format!("properties @> '{{\"score\":{v}}}'"))
        .collect();
    let count_one = format!(
        "SELECT count(*) AS n FROM contacts WHERE tenant_id = :tenant AND ({});\n",
        in_list.join(" OR ")
    );
    let seq = "SELECT count(*) FROM contacts;\n".to_owned();
    let _ = writeln!(
        out,
        "\nSame-run pgbench of the count statements (prepared, literals for the jsonb operands):\n"
    );
    let _ = writeln!(
        out,
        "| statement | C=1 mean latency | C=32 tx/s |\n|---|---|---|"
    );
    for (name, script) in [
        ("count(*), whole tenant", &count_all),
        (
            "sum of the kept counters, whole tenant (what the store runs)",
            &count_kept,
        ),
        ("count, 1 % filter", &count_one),
        ("seq scan of contacts", &seq),
    ] {
        let one = baseline::pgbench(
            pg,
            "filters-count",
            std::slice::from_ref(script),
            vars,
            1,
            plan.duration,
        )?;
        let many = baseline::pgbench(
            pg,
            "filters-count",
            std::slice::from_ref(script),
            vars,
            plan.concurrency,
            plan.duration,
        )?;
        let _ = writeln!(
            out,
            "| {name} | {:.2} ms | {:.0} |",
            one.latency_ms, many.tps
        );
        if name.starts_with("seq") {
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
                .fetch_one(pool)
                .await?;
            let _ = writeln!(
                out,
                "\nScanning filter: first page of `company CONTAINS \"zzq\"` p50 {} for {} contacts, {:.0} rows/s; \
                 the sequential scan baseline reads {rows} rows in {:.2} ms, {:.0} rows/s.",
                ms(p50),
                data.contacts,
                rate,
                one.latency_ms,
                rows as f64 / (one.latency_ms / 1e3)
            );
        }
    }
    out.push_str(&gin_write_cost(pool, clients, plan, watch, data).await?);
    out.push_str(&counter_write_cost(pool, clients, plan, watch, data).await?);
    Ok(out)
}

const COUNT_TRIGGERS: [&str; 2] = ["contacts_count_added", "contacts_count_removed"];

/// CreateContact at C = 32 with the triggers that keep `contact_counts`, without
/// them, and with them again; then the counters are rebuilt from the table, since
/// the creates made without them went uncounted.
async fn counter_write_cost(
    pool: &sqlx::PgPool,
    clients: &Clients,
    plan: Plan,
    watch: Watch,
    data: &Arc<Dataset>,
) -> anyhow::Result<String> {
    let create = || {
        scenarios::run(
            scenarios::Scenario::CreateContact,
            clients,
            plan,
            watch,
            data,
        )
    };
    let toggle = |enable: bool| async move {
        for trigger in COUNT_TRIGGERS {
            let verb = if enable { "ENABLE" } else { "DISABLE" };
            sqlx::query(&format!("ALTER TABLE contacts {verb} TRIGGER {trigger}"))
                .execute(pool)
                .await?;
        }
        anyhow::Ok(())
    };
    let with = create().await;
    toggle(false).await?;
    let without = create().await;
    toggle(true).await?;
    let again = create().await;
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE contacts IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM contact_counts")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO contact_counts (tenant_id, shard, n) \
         SELECT tenant_id, 0, count(*) FROM contacts GROUP BY tenant_id",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(format!(
        "\nCreateContact at C={} (the triggers keeping `contact_counts`): \
         {:.0}/s with them, {:.0}/s without them, {:.0}/s with them again (p50 {}, {}, {}).\n",
        plan.concurrency,
        with.throughput(),
        without.throughput(),
        again.throughput(),
        ms(with.percentile(0.5)),
        ms(without.percentile(0.5)),
        ms(again.percentile(0.5)),
    ))
}

/// CreateContact at C = 32 with the GIN index on properties, without it, and with it
/// again (rebuilt from its catalog definition).
async fn gin_write_cost(
    pool: &sqlx::PgPool,
    clients: &Clients,
    plan: Plan,
    watch: Watch,
    data: &Arc<Dataset>,
) -> anyhow::Result<String> {
    let definition: String = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'contacts_properties_tenant'",
    )
    .fetch_one(pool)
    .await?;
    let create = || {
        scenarios::run(
            scenarios::Scenario::CreateContact,
            clients,
            plan,
            watch,
            data,
        )
    };
    let with = create().await;
    sqlx::query("DROP INDEX contacts_properties_tenant")
        .execute(pool)
        .await?;
    let without = create().await;
    sqlx::query(&definition).execute(pool).await?;
    let again = create().await;
    Ok(format!(
        "\nCreateContact at C={} (writes the GIN `jsonb_path_ops` index on properties): \
         {:.0}/s with it, {:.0}/s without it, {:.0}/s with it again (p50 {}, {}, {}).\n",
        plan.concurrency,
        with.throughput(),
        without.throughput(),
        again.throughput(),
        ms(with.percentile(0.5)),
        ms(without.percentile(0.5)),
        ms(again.percentile(0.5)),
    ))
}

pub async fn sqlite(clients: &Clients, plan: Plan, data: &Arc<Dataset>, server: u32) -> String {
    let watch = Watch {
        server: Some(server),
        postgres: None,
    };
    let mut out = String::from("#### Filters, orders and counts (issue 16)\n\n");
    service_rows(&mut out, clients, plan, watch, data).await;
    let (p50, rate) = scan_rate(clients, plan, watch, data).await;
    let _ = writeln!(
        out,
        "\nScanning filter: first page of `company CONTAINS \"zzq\"` p50 {} for {} contacts, {:.0} rows/s.",
        ms(p50),
        data.contacts,
        rate
    );
    out
}
