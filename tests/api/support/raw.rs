//! A raw HTTP/2 gRPC client, for bytes no generated client sends: invalid UTF-8,
//! messages past prost's recursion limit, oversize frames, and deadlines that only
//! the server enforces (tonic's client also times out locally, as CANCELLED).

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tonic::Code;

/// What came back: the gRPC status (from headers or trailers) and the message frames.
#[derive(Debug)]
pub struct RawReply {
    pub code: Code,
    pub message: String,
    pub messages: Vec<Bytes>,
}

/// One gRPC length-prefixed, uncompressed message.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Calls `path` (`/package.Service/Method`) with `body` as the request stream and
/// `headers` added (e.g. `authorization`, `grpc-timeout`).
pub async fn call(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> RawReply {
    exchange(addr, path, headers, body, None).await
}

/// Like `call`, but stops reading for `pause` after the first chunk of the response,
/// as a slow reader does.
pub async fn call_slowly(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    pause: std::time::Duration,
) -> RawReply {
    exchange(addr, path, headers, body, Some(pause)).await
}

/// The `SETTINGS_MAX_CONCURRENT_STREAMS` the server at `addr` announces to a new
/// connection, as the HTTP/2 client read it.
pub async fn max_concurrent_streams(addr: SocketAddr) -> usize {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the test server");
    let (client, connection) = h2::client::handshake(tcp).await.expect("http/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("connection ready");
    // The server's SETTINGS are its first frame: once an answer is in, so are they.
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("valid request");
    let (response, mut send) = client
        .send_request(request, false)
        .expect("send the request headers");
    let _ = send.send_data(Bytes::from(frame(&[])), true);
    response.await.expect("response headers");
    client.current_max_send_streams()
}

async fn exchange(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    mut pause: Option<std::time::Duration>,
) -> RawReply {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the test server");
    let (client, connection) = h2::client::handshake(tcp).await.expect("http/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("connection ready");
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(()).expect("valid request");
    let (response, mut send) = client
        .send_request(request, false)
        .expect("send the request headers");
    // The server may answer (and reset the stream) before reading it all; that is fine.
    let _ = send.send_data(Bytes::from(body), true);
    let response = response.await.expect("response headers");
    let (parts, mut body) = response.into_parts();
    if let Some(code) = status_of(&parts.headers) {
        // Trailers-only response.
        return RawReply {
            code,
            message: message_of(&parts.headers),
            messages: Vec::new(),
        };
    }
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("response data");
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        if let Some(pause) = pause.take() {
            tokio::time::sleep(pause).await;
        }
    }
    let trailers = body
        .trailers()
        .await
        .expect("response trailers")
        .unwrap_or_default();
    RawReply {
        code: status_of(&trailers).expect("a grpc-status trailer"),
        message: message_of(&trailers),
        messages: split_frames(data.freeze()),
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<Code> {
    let raw = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(raw.parse().ok()?))
}

fn message_of(headers: &http::HeaderMap) -> String {
    let raw = headers
        .get("grpc-message")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    percent_decode(raw)
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn split_frames(mut data: Bytes) -> Vec<Bytes> {
    let mut frames = Vec::new();
    while data.len() >= 5 {
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        if data.len() < 5 + len {
            break;
        }
        let _ = data.split_to(5);
        frames.push(data.split_to(len));
    }
    frames
}

/// Protobuf wire bytes of a length-delimited field (`string`, `bytes`, a message).
pub fn field(number: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(number << 3 | 2), &mut out);
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}
