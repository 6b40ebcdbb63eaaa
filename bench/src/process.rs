//! Child processes (the server under test, the echo server) and what /proc says
//! about them: CPU time and resident memory.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A child that is killed when dropped, and by a watchdog if this process dies first.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// From spawn to the first SERVING health answer.
    pub start_to_serving: Duration,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `program args`, logging to `log`, and waits until health says SERVING.
pub async fn spawn_serving(
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
    port: u16,
    log: &Path,
) -> anyhow::Result<Server> {
    let log_file = std::fs::File::create(log)?;
    let started = Instant::now();
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("start `{}`", program.display()))?;
    guard(child.id())?;
    let mut server = Server {
        child,
        port,
        start_to_serving: Duration::ZERO,
    };
    server.start_to_serving = wait_serving(&mut server, started, log).await?;
    Ok(server)
}

async fn wait_serving(
    server: &mut Server,
    started: Instant,
    log: &Path,
) -> anyhow::Result<Duration> {
    let deadline = started + Duration::from_secs(60);
    let uri = server.addr();
    loop {
        if let Some(status) = server.child.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            bail!("server exited with {status} before serving:\n{text}");
        }
        if let Ok(channel) = Channel::from_shared(uri.clone())?.connect().await {
            let mut health = HealthClient::new(channel);
            loop {
                let serving = health
                    .check(HealthCheckRequest::default())
                    .await
                    .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32);
                if serving {
                    return Ok(started.elapsed());
                }
                if Instant::now() > deadline {
                    bail!("server did not report SERVING within 60s");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        if Instant::now() > deadline {
            bail!("server did not accept connections within 60s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Kills `pid` once this process is gone, so no server outlives an interrupted run.
// The watchdog must outlive this process, so it is deliberately never waited for.
#[allow(clippy::zombie_processes)]
fn guard(pid: u32) -> anyhow::Result<()> {
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -9 {pid} 2>/dev/null",
        me = std::process::id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(())
}

/// Clock ticks per second of /proc/<pid>/stat times.
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User plus system CPU time of `pid`, in ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    stat_fields(pid).map_or(0, |stat| stat.ticks)
}

/// What `/proc/<pid>/stat` says of a process's parent and CPU time.
struct Stat {
    ppid: u32,
    /// `utime + stime`.
    ticks: u64,
    /// `cutime + cstime`: of its children that exited and were waited for.
    reaped_ticks: u64,
}

fn stat_fields(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last `)`.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        ticks: number(11)? + number(12)?,
        reaped_ticks: number(13)? + number(14)?,
    })
}

/// CPU ticks of `parent` and all its direct children (a postmaster and its backends).
pub fn cpu_ticks_with_children(parent: u32) -> u64 {
    let mut total = cpu_ticks(parent);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return total;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = stat_fields(pid)
            && stat.ppid == parent
        {
            total += stat.ticks;
        }
    }
    total
}

/// `cpu_ticks_with_children` plus the children that exited (`cutime` and `cstime`):
/// a pgbench run's backends exit before it ends.
pub fn cpu_ticks_with_reaped_children(parent: u32) -> u64 {
    let reaped = stat_fields(parent).map_or(0, |stat| stat.reaped_ticks);
    cpu_ticks_with_children(parent) + reaped
}

/// Busy ticks of the whole machine (all cores), from /proc/stat.
pub fn machine_busy_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().next() else {
        return 0;
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle)
}

/// A field of /proc/<pid>/status in KiB (`VmHWM`, `VmRSS`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Resets the peak RSS (VmHWM) of `pid` to its current RSS, so a peak can be taken
/// per scenario. Needs the process to be ours (or root).
pub fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}
