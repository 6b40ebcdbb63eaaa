//! Reading `/metrics` (`--metrics-listen`): the exposition text and single samples.
//! Metric families are process-wide, and tests run in parallel in one process, so
//! tests compare a sample before and after, or check lower bounds.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A plain HTTP/1.1 GET; returns the status line and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to /metrics");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("headers end with a blank line");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// The value of the sample whose name and labels start with `prefix`.
pub fn sample(body: &str, prefix: &str) -> f64 {
    try_sample(body, prefix).unwrap_or_else(|| panic!("no sample `{prefix}` in:\n{body}"))
}

/// The value of the sample whose name and labels start with `prefix`, if there is one
/// (a labelled counter appears only once it has counted).
pub fn try_sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// The `/metrics` text served at `addr`.
pub async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").await;
    assert!(status.contains("200"), "GET /metrics: {status}");
    body
}
