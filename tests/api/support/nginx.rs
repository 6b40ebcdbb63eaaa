//! nginx (Debian's `nginx-light`) as a gRPC load balancer, configured by the
//! project's own `deploy/nginx.conf` with its `@...@` markers filled in. Installed
//! with apt on first use when it is missing and the tests run as root (as CI does);
//! otherwise a missing nginx fails the test with what to install.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::postgres::{free_port, is_root};

const CONFIG: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf"));

pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    _prefix: tempfile::TempDir,
}

fn binary() -> &'static PathBuf {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BINARY.get_or_init(|| {
        let path = PathBuf::from("/usr/sbin/nginx");
        if path.exists() {
            return Ok(path);
        }
        if !is_root() {
            return Err("nginx is not installed: `apt-get install nginx-light`".into());
        }
        let status = Command::new("sh")
            .args([
                "-c",
                "apt-get install -y -qq nginx-light >/dev/null 2>&1 || \
                 (apt-get update -qq && apt-get install -y -qq nginx-light)",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|err| format!("cannot run apt-get: {err}"))?;
        if status.success() && path.exists() {
            Ok(path)
        } else {
            Err(format!("installing nginx-light failed: {status}"))
        }
    });
    found.as_ref().unwrap_or_else(|err| panic!("{err}"))
}

impl Nginx {
    /// nginx on a free port, balancing over `upstreams`.
    pub async fn start(upstreams: &[SocketAddr]) -> Self {
        let prefix = tempfile::Builder::new()
            .prefix("kraiter-nginx-")
            .tempdir()
            .expect("a directory for nginx");
        // Workers run as `nobody` when nginx starts as root.
        let mut permissions = std::fs::metadata(prefix.path())
            .expect("metadata")
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o777);
        std::fs::set_permissions(prefix.path(), permissions).expect("chmod");
        let port = free_port();
        let servers: Vec<String> = upstreams
            .iter()
            .map(|addr| format!("server {addr} max_fails=1 fail_timeout=30s;"))
            .collect();
        let config = CONFIG
            .replace("@PREFIX@", &prefix.path().display().to_string())
            .replace("@LISTEN_PORT@", &port.to_string())
            .replace("@UPSTREAM_SERVERS@", &servers.join("\n        "));
        let unfilled = config.split('@').skip(1).step_by(2).find(|marker| {
            !marker.is_empty() && marker.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        });
        assert_eq!(
            unfilled, None,
            "every marker of deploy/nginx.conf filled in"
        );
        let file = prefix.path().join("nginx.conf");
        std::fs::write(&file, config).expect("write the config");
        let child = Command::new(binary())
            .arg("-c")
            .arg(&file)
            .arg("-p")
            .arg(prefix.path())
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nginx listens on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            child,
            addr,
            _prefix: prefix,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
