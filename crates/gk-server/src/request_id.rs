//! One id per HTTP request: taken from a safe incoming `x-request-id` or made here, carried in
//! the request's extensions (for its tracing span) and in a task-local for the request's
//! handler (so an internal failure answers and logs that same id), and echoed in the response's
//! `x-request-id`.
//!
//! This module is a leaf: the router mounts [`RequestIdLayer`]; the JSON API's errors and the
//! admin pages read [`current_or_new`].

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderValue, Response};
use tower::{Layer, Service};

/// The header that carries a request's id, in the request and in its response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest incoming request id that is kept.
pub const MAX_INCOMING_LEN: usize = 64;

tokio::task_local! {
    /// The id of the request whose handler runs on this task.
    static CURRENT: RequestId;
}

/// A request's id: printable ASCII, at most [`MAX_INCOMING_LEN`] characters of
/// `[A-Za-z0-9._-]` when it came from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The incoming header's value, when it is short and safe to log and echo.
    pub fn accept(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let safe = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        (!bytes.is_empty() && bytes.len() <= MAX_INCOMING_LEN && bytes.iter().all(safe))
            .then(|| Self(value.clone()))
    }

    /// A new id, unique in this process and unlikely to repeat across restarts or nodes: the
    /// process start (seconds and microseconds, hex) and a counter.
    pub fn generate() -> Self {
        static START: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        let start = *START.get_or_init(|| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            // Seconds and the sub-second part, so that nodes started in the same second differ.
            (now.as_secs() << 20) ^ u64::from(now.subsec_micros())
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // `{start:x}-{n:x}` written by hand: this runs for every request, and `format!` was
        // most of its cost. Hex digits and a dash only: always a valid header value.
        let (text, length) = id_text(start, n);
        let value = HeaderValue::from_bytes(&text[..length])
            .unwrap_or_else(|_| HeaderValue::from_static("0"));
        Self(value)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ever built from visible ASCII (checked or generated).
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

/// `{start:x}-{n:x}` in a buffer, and its length.
fn id_text(start: u64, n: u64) -> ([u8; 33], usize) {
    let mut text = [0u8; 33];
    let dash = push_hex(&mut text, 0, start);
    text[dash] = b'-';
    let length = push_hex(&mut text, dash + 1, n);
    (text, length)
}

/// Writes `value` in lowercase hex without leading zeros into `text` at `at`; returns the end.
fn push_hex(text: &mut [u8; 33], at: usize, value: u64) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let count = (64 - value.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, slot) in text[at..at + count].iter_mut().enumerate() {
        let shift = 4 * (count - 1 - i);
        *slot = DIGITS[((value >> shift) & 0xf) as usize];
    }
    at + count
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The id of the request being handled on this task, or a new one outside a request (a
/// handler called without the router's layers, as unit tests do).
pub fn current_or_new() -> RequestId {
    CURRENT
        .try_with(RequestId::clone)
        .unwrap_or_else(|_| RequestId::generate())
}

/// The layer that gives each request its id (see the module docs): in its extensions, on its
/// task while it is handled, and in its response's `x-request-id`. A tower layer of its own
/// rather than `axum::middleware::from_fn`, which boxes the inner service anew per request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = WithRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithRequestId(inner)
    }
}

/// A service whose requests get their ids ([`RequestIdLayer`]).
#[derive(Debug, Clone)]
pub struct WithRequestId<S>(S);

impl<S, B> Service<Request> for WithRequestId<S>
where
    S: Service<Request, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(RequestId::accept)
            .unwrap_or_else(RequestId::generate);
        request.extensions_mut().insert(id.clone());
        let header = id.0.clone();
        let handled = CURRENT.scope(id, self.0.call(request));
        Box::pin(async move {
            let mut response = handled.await?;
            response.headers_mut().insert(REQUEST_ID_HEADER, header);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_the_start_and_the_counter_in_hex() {
        for (start, n) in [(0, 0), (1, 15), (16, 255), (0x1234_5678_9abc, u64::MAX)] {
            let (text, length) = id_text(start, n);
            assert_eq!(&text[..length], format!("{start:x}-{n:x}").as_bytes());
        }
        // Other tests make ids meanwhile: the second's counter is later, not the next.
        let (first, second) = (RequestId::generate(), RequestId::generate());
        let (start, n) = first.as_str().split_once('-').unwrap();
        let (same_start, later) = second.as_str().split_once('-').unwrap();
        assert_eq!(same_start, start);
        assert!(u64::from_str_radix(later, 16).unwrap() > u64::from_str_radix(n, 16).unwrap());
    }

    #[test]
    fn only_short_safe_ids_are_accepted() {
        let accepted = |text: &str| {
            HeaderValue::from_str(text)
                .ok()
                .and_then(|value| RequestId::accept(&value))
                .map(|id| id.to_string())
        };
        for good in ["abc", "A-1.b_2", &"x".repeat(MAX_INCOMING_LEN)] {
            assert_eq!(accepted(good).as_deref(), Some(good), "{good}");
        }
        for bad in [
            "",
            "has space",
            "semi;colon",
            "new\tline",
            "quote\"",
            "é",
            &"x".repeat(MAX_INCOMING_LEN + 1),
        ] {
            assert_eq!(accepted(bad), None, "{bad:?}");
        }
        let generated = RequestId::generate();
        assert!(RequestId::accept(generated.header_value()).is_some());
        assert_ne!(generated, RequestId::generate());
    }
}
