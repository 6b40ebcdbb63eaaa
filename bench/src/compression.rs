//! What gzip responses cost the server (issue 19): grpc-js advertises gzip on every
//! call, so under `--response-compression always` every Node client gets compressed
//! answers. Two servers on the seeded tenant, one `always` and one `never`, are
//! driven by clients that advertise gzip (as grpc-js does), in rounds that alternate
//! which goes first: GetContact at C (calls/s, server CPU per call) and whole-tenant
//! ListContacts streams (time, server CPU, bytes received). Bytes are counted under
//! HTTP/2, on the client's sockets: frames and headers included, as on the wire.
//!
//! Not part of a default run (`--only compression` runs it); it prints a Markdown
//! section that BENCHMARKS.md records by hand.

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use kraiter_contacts::api::pb;
use kraiter_contacts::api::pb::contacts_service_client::ContactsServiceClient;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::Status;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Endpoint, Uri};

use crate::data::Dataset;
use crate::load::{self, Bearer, Client, Measured, Plan, Raw, Watch};
use crate::{Setup, process};

/// The `--only` name that runs this section; it runs only when named.
pub const NAME: &str = "compression";

pub fn wanted(setup: &Setup) -> bool {
    setup.only.iter().any(|name| name == NAME)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    Always,
    Never,
}

impl Policy {
    fn flag(self) -> &'static str {
        match self {
            Policy::Always => "always",
            Policy::Never => "never",
        }
    }
}

/// One server under one policy, with gzip-advertising clients whose received bytes
/// are counted.
struct Side {
    policy: Policy,
    // Kept for the section: dropping it stops the server.
    _server: process::Server,
    clients: Vec<Client>,
    /// On a connection of its own, for the streams.
    raw: Raw,
    received: Arc<AtomicU64>,
    watch: Watch,
}

pub async fn run(
    setup: &Setup,
    url: &str,
    key: &str,
    postgres: Option<u32>,
    data: &Arc<Dataset>,
) -> anyhow::Result<String> {
    let mut sides = Vec::new();
    for policy in [Policy::Always, Policy::Never] {
        let server = crate::start_server_with(
            setup,
            url,
            &format!("server-compression-{}", policy.flag()),
            &["--response-compression", policy.flag()],
        )
        .await?;
        let received = Arc::new(AtomicU64::new(0));
        let bearer = Bearer(format!("Bearer {key}").parse()?);
        let mut clients = Vec::new();
        for _ in 0..setup.connections.max(1) {
            let channel = connect(&server.addr(), &received).await?;
            clients.push(
                ContactsServiceClient::new(InterceptedService::new(channel, bearer.clone()))
                    .accept_compressed(CompressionEncoding::Gzip)
                    .max_decoding_message_size(64 << 20),
            );
        }
        let channel = connect(&server.addr(), &received).await?;
        let raw = tonic::client::Grpc::new(InterceptedService::new(channel, bearer))
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(64 << 20);
        let watch = Watch {
            server: Some(server.pid()),
            postgres,
        };
        sides.push(Side {
            policy,
            _server: server,
            clients,
            raw,
            received,
            watch,
        });
    }

    let rounds = setup.rounds;
    let window = Plan {
        duration: setup.plan.duration / rounds as u32,
        ..setup.plan
    };
    let mut unary: [Vec<(Measured, u64)>; 2] = Default::default();
    let mut streams: [Vec<(Measured, u64)>; 2] = Default::default();
    for round in 0..rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let side = &sides[i];
            let measured = get_contacts(side, window, data).await;
            let bytes = bytes_per_call(side, data).await?;
            eprintln!(
                "   round {} GetContact {:<6} {:>8.0} calls/s, server CPU {:>5.1} µs/call, {:>6.0} B received/call, errors {}",
                round + 1,
                side.policy.flag(),
                measured.throughput(),
                measured.per_call(measured.server_cpu).as_secs_f64() * 1e6,
                bytes as f64 / BYTES_CALLS as f64,
                measured.errors
            );
            if let Some(error) = &measured.first_error {
                eprintln!("      first error: {error}");
            }
            unary[i].push((measured, bytes));
        }
    }
    let stream_rounds = rounds.min(3);
    for round in 0..stream_rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let side = &sides[i];
            let before = side.received.load(Ordering::Relaxed);
            let expected = data.contacts;
            let measured =
                load::drive_sequential(&side.raw, Duration::ZERO, side.watch, move |raw| {
                    crate::scenarios::list_all_framed(raw, expected)
                })
                .await;
            let bytes = side.received.load(Ordering::Relaxed) - before;
            eprintln!(
                "   round {} full stream {:<6} {:>6.2} s, {:>8.0} rows/s, server CPU {:.2} s, {:.1} MiB received, errors {}",
                round + 1,
                side.policy.flag(),
                measured.elapsed.as_secs_f64(),
                measured.items_per_sec(),
                measured.server_cpu.as_secs_f64(),
                bytes as f64 / (1 << 20) as f64,
                measured.errors
            );
            if let Some(error) = &measured.first_error {
                eprintln!("      first error: {error}");
            }
            streams[i].push((measured, bytes));
        }
    }
    drop(sides);
    // A figure of failed calls (or of answers compressed against the policy) is no
    // figure: the run fails rather than record it.
    if let Some(error) = unary
        .iter()
        .chain(&streams)
        .flatten()
        .find_map(|(m, _)| m.first_error.clone())
    {
        anyhow::bail!("compression section: a call failed: {error}");
    }
    Ok(section(setup, data, &unary, &streams))
}

async fn get_contacts(side: &Side, plan: Plan, data: &Arc<Dataset>) -> Measured {
    let data = data.clone();
    let gzip = side.policy == Policy::Always;
    load::drive(&side.clients, plan, side.watch, move |mut client, r, _| {
        let id = data.id(r % data.contacts);
        async move {
            let response = client.get_contact(pb::GetContactRequest { id }).await?;
            // The policy must have done what it says, or the figures compare nothing.
            let compressed = response.metadata().get("grpc-encoding").is_some();
            if compressed != gzip {
                return Err(Status::internal(format!(
                    "response compressed: {compressed}, expected {gzip}"
                )));
            }
            Ok(1)
        }
    })
    .await
}

/// GetContact calls made one at a time to count the bytes of one call (the load's
/// windows cannot: their warm-up calls are received too, but not counted).
const BYTES_CALLS: u64 = 200;

/// Bytes received for `BYTES_CALLS` GetContact calls, one at a time, on one connection.
async fn bytes_per_call(side: &Side, data: &Dataset) -> anyhow::Result<u64> {
    let mut client = side.clients[0].clone();
    let before = side.received.load(Ordering::Relaxed);
    for n in 0..BYTES_CALLS {
        let id = data.id(crate::data::splitmix(n) % data.contacts);
        client.get_contact(pb::GetContactRequest { id }).await?;
    }
    Ok(side.received.load(Ordering::Relaxed) - before)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn list(values: &[f64], digits: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.digits$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn section(
    setup: &Setup,
    data: &Dataset,
    unary: &[Vec<(Measured, u64)>; 2],
    streams: &[Vec<(Measured, u64)>; 2],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Run: {} contacts on PostgreSQL, GetContact at C = {} over {} connections, {} rounds of {:.1} s each per policy (+ {:.1} s warm-up), {} full streams per policy; clients advertise gzip (`grpc-accept-encoding: gzip`, as grpc-js does).\n",
        data.contacts,
        setup.plan.concurrency,
        setup.connections,
        unary[0].len(),
        (setup.plan.duration / setup.rounds as u32).as_secs_f64(),
        setup.plan.warmup.as_secs_f64(),
        streams[0].len(),
    );
    let _ = writeln!(
        out,
        "| GetContact | calls/s | server CPU per call | bytes received per call | CPU of other processes |\n|---|---|---|---|---|"
    );
    for (i, name) in ["always (gzip)", "never"].into_iter().enumerate() {
        let rows = &unary[i];
        let _ = writeln!(
            out,
            "| {name} | {} | {:.1} µs | {:.0} | {:.1} s |",
            crate::report::rate(median(rows.iter().map(|(m, _)| m.throughput()).collect())),
            median(
                rows.iter()
                    .map(|(m, _)| m.per_call(m.server_cpu).as_secs_f64() * 1e6)
                    .collect()
            ),
            median(
                rows.iter()
                    .map(|(_, b)| *b as f64 / BYTES_CALLS as f64)
                    .collect()
            ),
            rows.iter()
                .map(|(m, _)| m.foreign_cpu().as_secs_f64())
                .sum::<f64>(),
        );
    }
    let ratio = |f: &dyn Fn(&Measured) -> f64, rows: &[Vec<(Measured, u64)>; 2]| {
        rows[0]
            .iter()
            .zip(&rows[1])
            .map(|((a, _), (b, _))| f(a) / f(b))
            .collect::<Vec<_>>()
    };
    let cpu = ratio(
        &|m: &Measured| m.per_call(m.server_cpu).as_secs_f64(),
        unary,
    );
    let rate = ratio(&Measured::throughput, unary);
    let _ = writeln!(
        out,
        "\nalways / never, per round: server CPU per call {} (median {:.2}); calls/s {} (median {:.2}).\n",
        list(&cpu, 2),
        median(cpu.clone()),
        list(&rate, 2),
        median(rate.clone()),
    );
    let _ = writeln!(
        out,
        "| full stream, pages of 1000 | time | rows/s | server CPU | MiB received | CPU of other processes |\n|---|---|---|---|---|---|"
    );
    for (i, name) in ["always (gzip)", "never"].into_iter().enumerate() {
        let rows = &streams[i];
        let _ = writeln!(
            out,
            "| {name} | {:.2} s | {} | {:.2} s | {:.1} | {:.1} s |",
            median(rows.iter().map(|(m, _)| m.elapsed.as_secs_f64()).collect()),
            crate::report::rate(median(
                rows.iter().map(|(m, _)| m.items_per_sec()).collect()
            )),
            median(
                rows.iter()
                    .map(|(m, _)| m.server_cpu.as_secs_f64())
                    .collect()
            ),
            median(
                rows.iter()
                    .map(|(_, b)| *b as f64 / (1 << 20) as f64)
                    .collect()
            ),
            rows.iter()
                .map(|(m, _)| m.foreign_cpu().as_secs_f64())
                .sum::<f64>(),
        );
    }
    let time = ratio(&|m: &Measured| m.elapsed.as_secs_f64(), streams);
    let cpu = ratio(&|m: &Measured| m.server_cpu.as_secs_f64(), streams);
    let bytes = streams[0]
        .iter()
        .zip(&streams[1])
        .map(|((_, a), (_, b))| *a as f64 / (*b).max(1) as f64)
        .collect::<Vec<_>>();
    let errors: u64 = streams
        .iter()
        .chain(unary)
        .flatten()
        .map(|(m, _)| m.errors)
        .sum();
    let _ = writeln!(
        out,
        "\nalways / never, per round: time {} (median {:.2}); server CPU {} (median {:.2}); bytes {} (median {:.2}). Errors: {errors}.",
        list(&time, 2),
        median(time.clone()),
        list(&cpu, 2),
        median(cpu.clone()),
        list(&bytes, 3),
        median(bytes.clone()),
    );
    out
}

/// A channel to `addr` whose bytes received are added to `received`.
async fn connect(
    addr: &str,
    received: &Arc<AtomicU64>,
) -> anyhow::Result<tonic::transport::Channel> {
    let connector = Connector(received.clone());
    Ok(Endpoint::from_shared(addr.to_owned())?
        .connect_with_connector(connector)
        .await?)
}

#[derive(Clone)]
struct Connector(Arc<AtomicU64>);

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<Counted>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TokioIo<Counted>, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let received = self.0.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or("127.0.0.1").to_owned();
            let port = uri.port_u16().unwrap_or(80);
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(Counted { stream, received }))
        })
    }
}

/// A TCP stream that counts what it reads.
struct Counted {
    stream: TcpStream,
    received: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.received.fetch_add(read as u64, Ordering::Relaxed);
        poll
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
