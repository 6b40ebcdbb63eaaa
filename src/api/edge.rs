//! The HTTP layer every call crosses around tonic's codecs: deadlines, the status of
//! a request message over the size limit, and whether a response may be compressed.
//!
//! Deadlines are enforced here rather than by tonic's own `grpc-timeout` handling,
//! which ends an expired call with CANCELLED; gRPC says DEADLINE_EXCEEDED. Our timer
//! starts before tonic's (this layer is called first), so it always fires first.
//! A call's deadline is the shorter of the client's `grpc-timeout` and
//! `--request-timeout`; the client's deadline also bounds a stream's whole body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tonic::{Code, Status};

use super::ApiError;
use crate::config::ResponseCompression;

/// Longest `grpc-timeout` we honour (about 3 years would overflow nothing, but a day
/// is already longer than any call should run).
const MAX_CLIENT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A deadline shorter than the timer's resolution has passed by the time we look.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
pub struct EdgeLayer {
    pub request_timeout: Duration,
    pub max_message_size: usize,
    pub response_compression: ResponseCompression,
}

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Edge {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    layer: EdgeLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Edge<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    type Response = http::Response<EdgeBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // tonic compresses a response for any client that accepts it; without that
        // header it answers uncompressed.
        if !compress_response(self.layer.response_compression, request.headers()) {
            request.headers_mut().remove("grpc-accept-encoding");
        }
        if crate::telemetry::exporting() {
            // The call's span is named by its path, which tonic's `Request` drops.
            let path = crate::telemetry::RpcPath(request.uri().path().to_owned());
            request.extensions_mut().insert(path);
        }
        let client_timeout = grpc_timeout(request.headers());
        let call_deadline = client_timeout.map(|timeout| Instant::now() + timeout);
        let start_timeout = client_timeout.map_or(self.layer.request_timeout, |timeout| {
            timeout.min(self.layer.request_timeout)
        });
        if start_timeout < MIN_TIMEOUT {
            // Spent before it arrived: answer without starting any work.
            let status = Status::from(ApiError::DeadlineExceeded);
            return Box::pin(async move { Ok(status_response(status)) });
        }
        // Created now, before the inner service (and tonic's timeout) start their clocks.
        let expired = tokio::time::sleep(start_timeout);
        let response = self.inner.call(request);
        let max_message_size = self.layer.max_message_size;
        Box::pin(async move {
            tokio::select! {
                biased;
                response = response => {
                    let response = response?;
                    if is_oversize_refusal(response.headers()) {
                        let err = ApiError::MessageTooLarge { limit: max_message_size };
                        return Ok(status_response(Status::from(err)));
                    }
                    Ok(response.map(|body| EdgeBody::new(body, call_deadline)))
                }
                () = expired => {
                    tracing::info!(timeout_ms = start_timeout.as_millis() as u64, "rpc deadline exceeded");
                    Ok(status_response(Status::from(ApiError::DeadlineExceeded)))
                }
            }
        })
    }
}

/// Whether the response to a request with `headers` may be compressed. Compressing
/// costs server CPU on every message; a client that compresses its own requests has
/// said bandwidth matters to it, one that only accepts compression (grpc-js accepts
/// gzip on every call unasked) has not.
fn compress_response(policy: ResponseCompression, headers: &HeaderMap) -> bool {
    match policy {
        ResponseCompression::Always => true,
        ResponseCompression::Never => false,
        ResponseCompression::WhenCompressed => headers
            .get("grpc-encoding")
            .is_some_and(|encoding| encoding != "identity"),
    }
}

/// tonic's decoder refuses a message over `max_decoding_message_size` with
/// OUT_OF_RANGE; every other gRPC stack says RESOURCE_EXHAUSTED, and so do we.
/// Nothing else in this service returns OUT_OF_RANGE.
fn is_oversize_refusal(headers: &HeaderMap) -> bool {
    headers.get(Status::GRPC_STATUS) == Some(&HeaderValue::from_static("11"))
}

/// A trailers-only response carrying `status`.
fn status_response<B>(status: Status) -> http::Response<EdgeBody<B>> {
    status.into_http::<()>().map(|()| EdgeBody {
        inner: None,
        deadline: None,
    })
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get("grpc-timeout")?.to_str().ok()?;
    if raw.len() < 2 || raw.len() > 9 {
        return None;
    }
    let (digits, unit) = raw.split_at(raw.len() - 1);
    let value: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    };
    Some(timeout.min(MAX_CLIENT_TIMEOUT))
}

/// The response body, ended with DEADLINE_EXCEEDED if the client's deadline passes
/// mid-stream. Dropping the inner body stops the stream's producer.
pub struct EdgeBody<B> {
    inner: Option<B>,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<B> EdgeBody<B> {
    fn new(inner: B, deadline: Option<Instant>) -> Self {
        Self {
            inner: Some(inner),
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
        }
    }
}

impl<B> Body for EdgeBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // The deadline first: a stream with pages ready still ends when time is up.
        let expired = this
            .deadline
            .as_mut()
            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
        if !expired {
            return Pin::new(inner).poll_frame(cx);
        }
        tracing::info!("stream deadline exceeded");
        this.inner = None;
        this.deadline = None;
        let mut trailers = HeaderMap::new();
        let status = Status::from(ApiError::DeadlineExceeded);
        if status.add_header(&mut trailers).is_err() {
            trailers.insert(Status::GRPC_STATUS, (Code::DeadlineExceeded as i32).into());
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(SizeHint::default, Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_by_unit_and_refuse_garbage() {
        let parse = |raw: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", HeaderValue::from_static(raw));
            grpc_timeout(&headers)
        };
        assert_eq!(parse("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("5n"), Some(Duration::from_nanos(5)));
        assert_eq!(parse("99999999H"), Some(MAX_CLIENT_TIMEOUT));
        for bad in ["", "m", "10", "10x", "-1S", "123456789S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
