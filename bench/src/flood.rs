//! Other tenants' latency during a flood (issue 14): tenant B reads contacts at a
//! steady rate while tenant A calls far over its rate limit, or while one peer calls
//! with random keys no tenant has. Each runs against a server of its own: one with
//! the protections (a per-tenant rate limit, the per-peer budget of unknown-key
//! lookups) and, for comparison, one without them (no rate limit, a lookup budget
//! no flood reaches).
//!
//! The flood runs on a thread and a runtime of its own, so B's calls do not queue
//! behind its tasks in the bench; it still shares the machine's two cores with B,
//! the server and PostgreSQL, as a flood from elsewhere would not.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kraiter_contacts::api::pb;
use kraiter_contacts::api::pb::contacts_service_client::ContactsServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::data::{Dataset, Rng};
use crate::load::{self, Measured, Plan, Watch};
use crate::process;

/// Tenant B: 4 callers, each starting a GetContact every 5 ms (800 calls/s), under
/// the protected server's rate limit so that B itself is never limited.
pub const B_WORKERS: usize = 4;
pub const B_EVERY: Duration = Duration::from_millis(5);
/// The protected server's limit per tenant (calls/s, and its burst).
pub const RATE_LIMIT: u32 = 1_000;
/// The unprotected server's budget of unknown-key lookups per peer: never reached.
pub const UNBOUNDED_LOOKUPS: u32 = 1_000_000;
/// The flood: calls in flight, as fast as they are answered, over its connections.
pub const FLOOD_CONCURRENCY: usize = 32;
const FLOOD_CONNECTIONS: usize = 4;

/// Who floods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Quiet,
    /// Tenant A's GetContact calls, over its rate limit on the protected server.
    OverLimit,
    /// GetContact calls with a new random key each, from one peer.
    UnknownKeys,
}

/// A flood: who, and either as fast as its calls are answered (`rate: None`) or at a
/// rate offered whatever the answers (the same load for both servers, so what a
/// call costs each shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    pub who: Who,
    pub rate: Option<u32>,
}

/// The offered rate of the paced floods.
pub const PACED_RATE: u32 = 10_000;

impl Flood {
    const ALL: [Flood; 5] = [
        Flood {
            who: Who::Quiet,
            rate: None,
        },
        Flood {
            who: Who::OverLimit,
            rate: Some(PACED_RATE),
        },
        Flood {
            who: Who::UnknownKeys,
            rate: Some(PACED_RATE),
        },
        Flood {
            who: Who::OverLimit,
            rate: None,
        },
        Flood {
            who: Who::UnknownKeys,
            rate: None,
        },
    ];

    fn label(self, protected: bool) -> String {
        let who = match (self.who, protected) {
            (Who::Quiet, _) => return "none (quiet)".into(),
            (Who::OverLimit, true) => "tenant A over its limit",
            (Who::OverLimit, false) => "tenant A, no limit",
            (Who::UnknownKeys, _) => "a random key each call, one peer",
        };
        match self.rate {
            Some(rate) => format!(
                "{who}: {} GetContact/s offered",
                crate::report::rate(f64::from(rate))
            ),
            None => format!(
                "{who}: {FLOOD_CONCURRENCY} GetContact in flight, each sent when the last is answered"
            ),
        }
    }
}

/// The flood's calls in the measured window, by what became of them.
#[derive(Debug, Clone, Default)]
pub struct FloodCounts {
    pub calls: u64,
    /// Answered after database work: A's calls served (OK, NOT_FOUND), and unknown
    /// keys looked up and found in no tenant (UNAUTHENTICATED).
    pub reached_db: u64,
    /// RESOURCE_EXHAUSTED without database work.
    pub refused: u64,
    pub other: u64,
    pub first_other: Option<String>,
    pub elapsed: Duration,
}

impl FloodCounts {
    fn add(&mut self, other: &FloodCounts) {
        self.calls += other.calls;
        self.reached_db += other.reached_db;
        self.refused += other.refused;
        self.other += other.other;
        if self.first_other.is_none() {
            self.first_other.clone_from(&other.first_other);
        }
        self.elapsed += other.elapsed;
    }

    fn per_sec(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One flood (or the quiet), over all rounds on one server.
pub struct Phase {
    pub flood: Flood,
    /// B's calls, each round's window.
    pub rounds: Vec<Measured>,
    pub counts: FloodCounts,
}

impl Phase {
    pub fn b(&self) -> Measured {
        Measured::merge(&self.rounds)
    }
}

pub struct ServerRun {
    pub protected: bool,
    pub flags: String,
    pub phases: Vec<Phase>,
}

impl ServerRun {
    fn quiet(&self) -> &Phase {
        &self.phases[0]
    }
}

pub struct FloodReport {
    pub rounds: usize,
    pub window: Duration,
    pub servers: Vec<ServerRun>,
}

/// Both servers, `rounds` rounds of quiet, A's flood and the unknown keys' flood,
/// each `window` long after its warm-up.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    server_bin: &Path,
    work_dir: &Path,
    database_url: &str,
    postmaster: Option<u32>,
    b_key: &str,
    a_key: &str,
    data: &Arc<Dataset>,
    plan: Plan,
    rounds: usize,
) -> anyhow::Result<FloodReport> {
    let window = plan.duration / rounds as u32;
    let mut servers = Vec::new();
    for protected in [true, false] {
        let flags: Vec<String> = if protected {
            vec![
                "--rate-limit-rps".into(),
                RATE_LIMIT.to_string(),
                "--rate-limit-burst".into(),
                RATE_LIMIT.to_string(),
            ]
        } else {
            vec![
                "--unknown-key-lookups-rps".into(),
                UNBOUNDED_LOOKUPS.to_string(),
            ]
        };
        let name = if protected {
            "protected"
        } else {
            "unprotected"
        };
        let server = start(server_bin, work_dir, database_url, &flags, name).await?;
        let watch = Watch {
            server: Some(server.pid()),
            postgres: postmaster,
        };
        let b = load::connect(&server.addr(), b_key, 2).await?;
        // Both keys seen live before any flood: the unknown keys come from the same
        // peer (127.0.0.1) and spend its budget of lookups of new keys.
        let probe = data.id(0);
        b[0].clone()
            .get_contact(pb::GetContactRequest { id: probe.clone() })
            .await?;
        let mut a =
            ContactsServiceClient::new(Channel::from_shared(server.addr())?.connect().await?);
        let found = a.get_contact(with_key(probe, a_key)?).await;
        if !matches!(&found, Err(status) if status.code() == Code::NotFound) {
            anyhow::bail!("tenant A's first call should be NOT_FOUND: {found:?}");
        }

        let mut phases: Vec<Phase> = Flood::ALL
            .iter()
            .map(|&flood| Phase {
                flood,
                rounds: Vec::new(),
                counts: FloodCounts::default(),
            })
            .collect();
        for round in 0..rounds {
            let plan = Plan {
                concurrency: B_WORKERS,
                warmup: if round == 0 {
                    plan.warmup
                } else {
                    plan.warmup.min(Duration::from_millis(500))
                },
                duration: window,
            };
            for phase in &mut phases {
                let (measured, counts) =
                    one_window(&server.addr(), phase.flood, a_key, &b, data, plan, watch).await?;
                eprintln!(
                    "   flood, {name:<11} {:<52} B p50 {:>6.2} ms p99 {:>6.2} ms, {} errors; flood {:>7.0} calls/s, {:>6.0}/s reached the database",
                    phase.flood.label(protected),
                    measured.percentile(0.5).as_secs_f64() * 1e3,
                    measured.percentile(0.99).as_secs_f64() * 1e3,
                    measured.errors,
                    counts.per_sec(counts.calls),
                    counts.per_sec(counts.reached_db),
                );
                phase.rounds.push(measured);
                phase.counts.add(&counts);
            }
        }
        servers.push(ServerRun {
            protected,
            flags: flags.join(" "),
            phases,
        });
    }
    Ok(FloodReport {
        rounds,
        window,
        servers,
    })
}

async fn start(
    server_bin: &Path,
    work_dir: &Path,
    database_url: &str,
    flags: &[String],
    name: &str,
) -> anyhow::Result<process::Server> {
    let port = crate::cluster::free_port()?;
    let mut args: Vec<String> = [
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--database-url",
        database_url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend_from_slice(flags);
    let log = work_dir.join(format!("server-flood-{name}.log"));
    process::spawn_serving(server_bin, &args, &[], port, &log).await
}

fn with_key(id: String, key: &str) -> anyhow::Result<tonic::Request<pb::GetContactRequest>> {
    let mut request = tonic::Request::new(pb::GetContactRequest { id });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse()?);
    Ok(request)
}

/// B's paced calls for one window, beside `flood` (nothing for the quiet).
async fn one_window(
    addr: &str,
    flood: Flood,
    a_key: &str,
    b: &load::Clients,
    data: &Arc<Dataset>,
    plan: Plan,
    watch: Watch,
) -> anyhow::Result<(Measured, FloodCounts)> {
    let measure_from = Instant::now() + plan.warmup;
    let end = measure_from + plan.duration;
    let flooder = (flood.who != Who::Quiet).then(|| {
        let (addr, a_key, data) = (addr.to_owned(), a_key.to_owned(), data.clone());
        std::thread::spawn(move || flood_thread(addr, flood, a_key, data, measure_from, end))
    });
    let data = data.clone();
    let measured = load::drive_paced(
        b,
        B_WORKERS,
        B_EVERY,
        plan,
        watch,
        move |mut client, r, _| {
            let id = data.id(r % data.contacts);
            async move {
                client.get_contact(pb::GetContactRequest { id }).await?;
                Ok(1)
            }
        },
    )
    .await;
    let counts = match flooder {
        Some(thread) => thread
            .join()
            .map_err(|_| anyhow::anyhow!("the flood's thread panicked"))??,
        None => FloodCounts::default(),
    };
    Ok((measured, counts))
}

/// The flood, on a runtime of its own, until `end`; counts the calls that start
/// after `measure_from` and finish before `end`.
fn flood_thread(
    addr: String,
    flood: Flood,
    a_key: String,
    data: Arc<Dataset>,
    measure_from: Instant,
    end: Instant,
) -> anyhow::Result<FloodCounts> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut channels = Vec::new();
        for _ in 0..FLOOD_CONNECTIONS {
            channels.push(Channel::from_shared(addr.clone())?.connect().await?);
        }
        let mut tasks = Vec::new();
        for w in 0..FLOOD_CONCURRENCY {
            let mut client = ContactsServiceClient::new(channels[w % channels.len()].clone());
            let (a_key, data) = (a_key.clone(), data.clone());
            // Paced: each task's calls evenly spread, the tasks' spread over the period.
            let every = flood
                .rate
                .map(|rate| Duration::from_secs_f64(FLOOD_CONCURRENCY as f64 / f64::from(rate)));
            let mut next = Instant::now()
                + every.map_or(Duration::ZERO, |every| {
                    every.mul_f64(w as f64 / FLOOD_CONCURRENCY as f64)
                });
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng::new((w as u64 + 7) << 48);
                let mut counts = FloodCounts::default();
                loop {
                    if let Some(every) = every {
                        tokio::time::sleep_until(next.into()).await;
                        next = (next + every).max(Instant::now());
                    }
                    let began = Instant::now();
                    if began >= end {
                        break;
                    }
                    let r = rng.next_u64();
                    let key = match flood.who {
                        Who::UnknownKeys => {
                            format!("kr_{:016x}{:016x}{:011x}", r, rng.next_u64(), w)
                        }
                        _ => a_key.clone(),
                    };
                    let request = with_key(data.id(r % data.contacts), &key)
                        .expect("a key is valid metadata");
                    let result = client.get_contact(request).await;
                    if began < measure_from || Instant::now() > end {
                        continue;
                    }
                    counts.calls += 1;
                    match result.map_err(|status| (status.code(), status)) {
                        Ok(_) | Err((Code::NotFound | Code::Unauthenticated, _)) => {
                            counts.reached_db += 1;
                        }
                        Err((Code::ResourceExhausted, _)) => counts.refused += 1,
                        Err((_, status)) => {
                            counts.other += 1;
                            counts.first_other.get_or_insert_with(|| status.to_string());
                        }
                    }
                }
                counts
            }));
        }
        let mut all = FloodCounts::default();
        for task in tasks {
            all.add(&task.await?);
        }
        all.elapsed = end - measure_from;
        Ok(all)
    })
}

mod report;
