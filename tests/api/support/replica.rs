//! The real binary as a separate process (a replica of the service), serving a
//! database given by URL, its JSON logs collected; killed when dropped, so a failed
//! assertion leaves no process behind.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kraiter-contacts");

pub struct Replica {
    child: Child,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    /// Drains stderr so the process never blocks on a full pipe.
    _logs: std::thread::JoinHandle<Vec<String>>,
}

impl Replica {
    /// Starts `serve` on a free port with `extra` flags; returns once it listens.
    pub fn start(database_url: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(extra)
            .env("DATABASE_URL", database_url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let (listening, logs) = announced(&mut child, Duration::from_secs(60));
        Self {
            child,
            addr: listening.addr,
            metrics: listening.metrics.expect("the metrics address"),
            _logs: logs,
        }
    }

    /// Resident memory of the process, in KiB (`/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "SIGTERM sent");
    }

    /// Waits up to `within` for the process to exit; its status, if it did.
    pub async fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server") {
                return Some(status);
            }
            if started.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a server's `listening` line says it serves.
pub struct Listening {
    pub addr: SocketAddr,
    /// `/metrics`, when `--metrics-listen` was given.
    pub metrics: Option<SocketAddr>,
}

/// A server started with `--log-format json` and its stderr piped: the addresses its
/// `listening` line announces (waiting at most `wait`), and its log lines, read until
/// the process closes stderr (so it never blocks on a full pipe). A server that exits
/// first fails the test with its log.
pub fn announced(
    child: &mut Child,
    wait: Duration,
) -> (Listening, std::thread::JoinHandle<Vec<String>>) {
    let stderr = child.stderr.take().expect("stderr piped");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let logs = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("\"listening\"") {
                let value: serde_json::Value = serde_json::from_str(&line).expect("json log");
                let address = |field: &str| {
                    value[field]
                        .as_str()
                        .map(|addr| addr.parse::<SocketAddr>().expect("a socket address"))
                };
                let _ = addr_tx.send(Listening {
                    addr: address("addr").expect("addr"),
                    metrics: address("metrics"),
                });
            }
            lines.push(line);
        }
        lines
    });
    let listening = match addr_rx.recv_timeout(wait) {
        Ok(listening) => listening,
        Err(err) => {
            let exit = child.try_wait();
            let _ = child.kill();
            // The process is gone, so its stderr is closed and the log complete.
            let log = logs.join().unwrap_or_default().join("\n");
            panic!("the server announces its address ({err}); exit {exit:?}; its log:\n{log}")
        }
    };
    (listening, logs)
}
