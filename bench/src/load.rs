//! The load generator: C calls in flight over a few HTTP/2 connections, a warm-up,
//! then a measured window; and what the server spent meanwhile, from /proc.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kraiter_contacts::api::pb::contacts_service_client::ContactsServiceClient;
use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::data::Rng;
use crate::process;

/// Adds `authorization: Bearer <key>` to every call, as an SDK would.
#[derive(Clone)]
pub struct Bearer(pub MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type Client = ContactsServiceClient<InterceptedService<Channel, Bearer>>;

/// A client without generated methods, for calls decoded into the bench's own types.
pub type Raw = tonic::client::Grpc<InterceptedService<Channel, Bearer>>;

/// One generated client per HTTP/2 connection (it derefs to them), and a raw client on
/// the first connection.
pub struct Clients {
    typed: Vec<Client>,
    pub raw: Raw,
}

impl std::ops::Deref for Clients {
    type Target = [Client];

    fn deref(&self) -> &[Client] {
        &self.typed
    }
}

pub async fn connect(addr: &str, key: &str, connections: usize) -> anyhow::Result<Clients> {
    let bearer = Bearer(format!("Bearer {key}").parse()?);
    let mut typed = Vec::new();
    let mut raw = None;
    for _ in 0..connections.max(1) {
        let channel = Channel::from_shared(addr.to_owned())?.connect().await?;
        let service = InterceptedService::new(channel, bearer.clone());
        raw.get_or_insert_with(|| {
            tonic::client::Grpc::new(service.clone()).max_decoding_message_size(64 << 20)
        });
        typed.push(ContactsServiceClient::new(service).max_decoding_message_size(64 << 20));
    }
    Ok(Clients {
        typed,
        raw: raw.expect("at least one connection"),
    })
}

/// How long, and how hard.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// Which processes to account for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Watch {
    pub server: Option<u32>,
    /// A postmaster: its own and its backends' CPU.
    pub postgres: Option<u32>,
}

/// What one measured window produced.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub calls: u64,
    /// Rows (or entries) received, for lists.
    pub items: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Sorted call latencies in microseconds.
    pub latencies: Vec<u32>,
    pub server_cpu: Duration,
    pub postgres_cpu: Duration,
    /// CPU of this process: the load generator.
    pub client_cpu: Duration,
    /// CPU time the whole machine was busy, all processes counted.
    pub machine_busy_cpu: Duration,
    pub server_peak_rss_kib: u64,
}

impl Measured {
    pub fn throughput(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    pub fn items_per_sec(&self) -> f64 {
        self.items as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        Duration::from_micros(u64::from(self.latencies[rank]))
    }

    pub fn per_call(&self, cpu: Duration) -> Duration {
        cpu.checked_div(self.calls.max(1) as u32)
            .unwrap_or_default()
    }

    /// `cpu` over the items (a stream's rows), in µs.
    pub fn micros_per_item(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.items.max(1) as f64
    }

    /// Windows measured apart, as one: counts and times add up, latencies pool, the
    /// peak is the highest.
    pub fn merge<'a>(parts: impl IntoIterator<Item = &'a Measured>) -> Measured {
        let mut out = Measured::default();
        for part in parts {
            out.calls += part.calls;
            out.items += part.items;
            out.errors += part.errors;
            if out.first_error.is_none() {
                out.first_error.clone_from(&part.first_error);
            }
            out.elapsed += part.elapsed;
            out.latencies.extend_from_slice(&part.latencies);
            out.server_cpu += part.server_cpu;
            out.postgres_cpu += part.postgres_cpu;
            out.client_cpu += part.client_cpu;
            out.machine_busy_cpu += part.machine_busy_cpu;
            out.server_peak_rss_kib = out.server_peak_rss_kib.max(part.server_peak_rss_kib);
        }
        out.latencies.sort_unstable();
        out
    }

    /// CPU the machine spent on processes other than ours (other users' builds, say):
    /// a run where this is large is not comparable.
    pub fn foreign_cpu(&self) -> Duration {
        self.machine_busy_cpu
            .saturating_sub(self.server_cpu + self.postgres_cpu + self.client_cpu)
    }
}

struct Snapshot {
    at: Instant,
    server: u64,
    postgres: u64,
    client: u64,
    machine: u64,
}

impl Watch {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            server: self.server.map_or(0, process::cpu_ticks),
            postgres: self.postgres.map_or(0, process::cpu_ticks_with_children),
            client: process::cpu_ticks(std::process::id()),
            machine: process::machine_busy_ticks(),
        }
    }

    fn fill(&self, before: &Snapshot, after: &Snapshot, out: &mut Measured) {
        let tick = 1.0 / process::clock_ticks();
        out.elapsed = after.at - before.at;
        // A backend that exits between the snapshots takes its ticks out of the sum
        // until the postmaster reaps it: no negative CPU, at worst an undercount.
        let cpu = |after: u64, before: u64| {
            Duration::from_secs_f64(after.saturating_sub(before) as f64 * tick)
        };
        out.server_cpu = cpu(after.server, before.server);
        out.postgres_cpu = cpu(after.postgres, before.postgres);
        out.client_cpu = cpu(after.client, before.client);
        out.machine_busy_cpu =
            Duration::from_secs_f64(after.machine.saturating_sub(before.machine) as f64 * tick);
        out.server_peak_rss_kib = self
            .server
            .map_or(0, |pid| process::status_kib(pid, "VmHWM"));
    }
}

#[derive(Default)]
struct Tally {
    calls: u64,
    items: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<u32>,
}

/// Runs `call(client, random, seq)` from `plan.concurrency` workers; a call returns
/// how many items it received. Only calls that start after the warm-up and finish
/// before the end count.
pub async fn drive<F, Fut>(clients: &[Client], plan: Plan, watch: Watch, call: F) -> Measured
where
    F: Fn(Client, u64, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, Status>> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let mut workers = Vec::new();
    for w in 0..plan.concurrency {
        let client = clients[w % clients.len()].clone();
        let call = call.clone();
        workers.push(tokio::spawn(async move {
            let mut rng = Rng::new((w as u64 + 1) << 32);
            let mut tally = Tally::default();
            let mut seq = 0u64;
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                seq += 1;
                let result = call(client.clone(), rng.next_u64(), (w as u64) << 40 | seq).await;
                let done = Instant::now();
                if began < measure_from || done > end {
                    continue;
                }
                match result {
                    Ok(items) => {
                        tally.calls += 1;
                        tally.items += items;
                        let micros = (done - began).as_micros().min(u128::from(u32::MAX));
                        tally.latencies.push(micros as u32);
                    }
                    Err(status) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert_with(|| status.to_string());
                    }
                }
            }
            tally
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    if let Some(pid) = watch.server {
        process::reset_peak_rss(pid);
    }
    let before = watch.snapshot();
    tokio::time::sleep_until(end.into()).await;
    let after = watch.snapshot();
    let mut out = Measured::default();
    watch.fill(&before, &after, &mut out);
    for worker in workers {
        let Ok(tally) = worker.await else { continue };
        out.calls += tally.calls;
        out.items += tally.items;
        out.errors += tally.errors;
        if out.first_error.is_none() {
            out.first_error = tally.first_error;
        }
        out.latencies.extend(tally.latencies);
    }
    out.latencies.sort_unstable();
    out
}

/// Runs whole calls one after another (full list streams) until `min_time` has
/// passed and at least one call completed; everything counts, nothing is warm-up.
pub async fn drive_sequential<C, F, Fut>(
    client: &C,
    min_time: Duration,
    watch: Watch,
    call: F,
) -> Measured
where
    C: Clone,
    F: Fn(C) -> Fut,
    Fut: Future<Output = Result<u64, Status>>,
{
    if let Some(pid) = watch.server {
        process::reset_peak_rss(pid);
    }
    let before = watch.snapshot();
    let mut tally = Tally::default();
    loop {
        let began = Instant::now();
        match call(client.clone()).await {
            Ok(items) => {
                tally.calls += 1;
                tally.items += items;
                let micros = began.elapsed().as_micros().min(u128::from(u32::MAX));
                tally.latencies.push(micros as u32);
            }
            Err(status) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| status.to_string());
                break;
            }
        }
        if before.at.elapsed() >= min_time {
            break;
        }
    }
    let after = watch.snapshot();
    let mut out = Measured::default();
    watch.fill(&before, &after, &mut out);
    out.calls = tally.calls;
    out.items = tally.items;
    out.errors = tally.errors;
    out.first_error = tally.first_error;
    out.latencies = tally.latencies;
    out.latencies.sort_unstable();
    out
}

/// Runs `call(client, random, seq)` from `workers` workers, each starting a call
/// every `every` (a caller with a rate of its own, not one that goes as fast as the
/// server answers): a call that comes back late delays the worker's next, with no
/// catch-up burst. Latency is from a call's start to its answer. Only calls that
/// start after the warm-up and finish before the end count.
pub async fn drive_paced<F, Fut>(
    clients: &[Client],
    workers: usize,
    every: Duration,
    plan: Plan,
    watch: Watch,
    call: F,
) -> Measured
where
    F: Fn(Client, u64, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, Status>> + Send,
{
    drive_paced_with(clients, workers, every, false, plan, watch, call).await
}

/// `drive_paced`; `precise` sleeps to within tens of microseconds instead of
/// tokio's whole milliseconds (`sleep_until_precisely`), for periods under a few
/// milliseconds.
pub async fn drive_paced_with<F, Fut>(
    clients: &[Client],
    workers: usize,
    every: Duration,
    precise: bool,
    plan: Plan,
    watch: Watch,
    call: F,
) -> Measured
where
    F: Fn(Client, u64, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, Status>> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = clients[w % clients.len()].clone();
        let call = call.clone();
        // The workers' calls spread evenly over each period.
        let mut next = start + every.mul_f64(w as f64 / workers as f64);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new((w as u64 + 101) << 32);
            let mut tally = Tally::default();
            let mut seq = 0u64;
            loop {
                if precise {
                    sleep_until_precisely(next).await;
                } else {
                    tokio::time::sleep_until(next.into()).await;
                }
                let began = Instant::now();
                if began >= end {
                    break;
                }
                next = (next + every).max(began);
                seq += 1;
                let result = call(client.clone(), rng.next_u64(), (w as u64) << 40 | seq).await;
                let done = Instant::now();
                if began < measure_from || done > end {
                    continue;
                }
                match result {
                    Ok(items) => {
                        tally.calls += 1;
                        tally.items += items;
                        let micros = (done - began).as_micros().min(u128::from(u32::MAX));
                        tally.latencies.push(micros as u32);
                    }
                    Err(status) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert_with(|| status.to_string());
                    }
                }
            }
            tally
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    if let Some(pid) = watch.server {
        process::reset_peak_rss(pid);
    }
    let before = watch.snapshot();
    tokio::time::sleep_until(end.into()).await;
    let after = watch.snapshot();
    let mut out = Measured::default();
    watch.fill(&before, &after, &mut out);
    for task in tasks {
        let Ok(tally) = task.await else { continue };
        out.calls += tally.calls;
        out.items += tally.items;
        out.errors += tally.errors;
        if out.first_error.is_none() {
            out.first_error = tally.first_error;
        }
        out.latencies.extend(tally.latencies);
    }
    out.latencies.sort_unstable();
    out
}

/// Sleeps until `at` to within tens of microseconds: tokio's timer rounds up to whole
/// milliseconds, which would hold a caller paced at 3,000 calls a second to under
/// 1,000. The last two milliseconds are slept on a blocking thread (the client's
/// cost, not the server's).
async fn sleep_until_precisely(at: Instant) {
    let coarse = at.checked_sub(Duration::from_millis(2));
    if let Some(coarse) = coarse.filter(|c| *c > Instant::now()) {
        tokio::time::sleep_until(coarse.into()).await;
    }
    let left = at.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(left)).await;
    }
}
