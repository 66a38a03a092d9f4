//! [`ReopeningStream`]: a [`CallStream`] opened again after it ends, with backoff.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Status;

use super::{CallStream, NotSent, StreamedCall, StreamedReply, lock};

/// The first wait before opening a stream again after one ended or an opening failed.
pub const REOPEN_FIRST_DELAY: Duration = Duration::from_millis(100);

/// The longest wait between two openings (the wait doubles after each one, and starts again
/// from [`REOPEN_FIRST_DELAY`] at the first opening this long after a stream opened).
pub const REOPEN_MAX_DELAY: Duration = Duration::from_secs(30);

/// How long one opening may take before it counts as failed (a side that never answers).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// What opens one stream: `Ok(None)` when the other side does not serve the method.
type Opener<C, R> = Box<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Option<CallStream<C, R>>, Status>> + Send>>
        + Send
        + Sync,
>;

/// What [`ReopeningStream::claim`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Open one.
    Granted,
    /// Another opening is under way.
    Busy,
    /// The wait since the last opening is not over.
    TooSoon,
    /// The other side does not serve the method.
    Unsupported,
}

/// An opening under way: settled with its outcome, or (its future dropped, its task gone)
/// released as a failed one, so that a later call may open again.
struct Opening<C: StreamedCall, R: StreamedReply>(Option<ReopeningStream<C, R>>);

impl<C: StreamedCall, R: StreamedReply> Opening<C, R> {
    fn settle(mut self, opened: Result<Option<CallStream<C, R>>, Status>) -> Result<bool, Status> {
        // Only `settle` and `drop` take the stream, each once.
        self.0
            .take()
            .map_or(Ok(false), |stream| stream.settle(opened))
    }
}

impl<C: StreamedCall, R: StreamedReply> Drop for Opening<C, R> {
    fn drop(&mut self) {
        if let Some(stream) = self.0.take() {
            let _ = stream.settle(Err(Status::cancelled("the opening was given up")));
        }
    }
}

/// When to open a stream again.
#[derive(Debug)]
struct Retry {
    /// An opening is under way.
    opening: bool,
    /// Not before then.
    not_before: Instant,
    /// The wait after the next opening.
    delay: Duration,
    /// When the last stream opened, until the next opening is claimed.
    opened_at: Option<Instant>,
    /// The other side does not serve the method: never again.
    unsupported: bool,
}

struct Inner<C: StreamedCall, R: StreamedReply> {
    current: Mutex<Option<Arc<CallStream<C, R>>>>,
    open: Opener<C, R>,
    retry: Mutex<Retry>,
    /// For logs: whose stream it is.
    label: String,
}

/// A [`CallStream`] that is opened again, in the background, when a call finds it ended (the
/// other side closed it, a protocol error, the connection went): that call and the ones after
/// it go another way (unary) until the new stream is open. Openings are spaced from
/// [`REOPEN_FIRST_DELAY`], doubling up to [`REOPEN_MAX_DELAY`], so a stream that keeps ending
/// costs an opening now and then, not one per call. A side that does not serve the method is
/// not asked again.
pub struct ReopeningStream<C: StreamedCall, R: StreamedReply> {
    inner: Arc<Inner<C, R>>,
}

impl<C: StreamedCall, R: StreamedReply> Clone for ReopeningStream<C, R> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: StreamedCall, R: StreamedReply> std::fmt::Debug for ReopeningStream<C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReopeningStream")
            .field("label", &self.inner.label)
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}

impl<C: StreamedCall, R: StreamedReply> ReopeningStream<C, R> {
    /// A stream that `open` opens (each time it is called), named `label` in logs; nothing is
    /// opened yet (see [`open_now`](Self::open_now) and [`open_soon`](Self::open_soon)).
    pub fn new<F, Fut>(label: impl Into<String>, open: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<CallStream<C, R>>, Status>> + Send + 'static,
    {
        Self {
            inner: Arc::new(Inner {
                current: Mutex::new(None),
                open: Box::new(move || Box::pin(open())),
                retry: Mutex::new(Retry {
                    opening: false,
                    not_before: Instant::now(),
                    delay: REOPEN_FIRST_DELAY,
                    opened_at: None,
                    unsupported: false,
                }),
                label: label.into(),
            }),
        }
    }

    /// Opens a stream now and waits for it: `Ok(true)` when one is open, `Ok(false)` when the
    /// other side does not serve the method (never asked again), the status when it failed
    /// (`UNAVAILABLE` while another opening is under way).
    pub async fn open_now(&self) -> Result<bool, Status> {
        match self.claim(true) {
            Claim::Granted => {}
            Claim::Unsupported => return Ok(false),
            Claim::Busy | Claim::TooSoon => {
                return Err(Status::unavailable("the call stream is being opened"));
            }
        }
        let opening = Opening(Some(self.clone()));
        let opened = self.opened().await;
        opening.settle(opened)
    }

    /// Opens a stream in the background if none is open and the last opening is long enough
    /// ago (and none is under way).
    pub fn open_soon(&self) {
        if self.is_open() || self.claim(false) != Claim::Granted {
            return;
        }
        let (stream, opening) = (self.clone(), Opening(Some(self.clone())));
        tokio::spawn(async move {
            let opened = stream.opened().await;
            let _ = opening.settle(opened);
        });
    }

    /// One opening, bounded by [`OPEN_TIMEOUT`].
    async fn opened(&self) -> Result<Option<CallStream<C, R>>, Status> {
        tokio::time::timeout(OPEN_TIMEOUT, (self.inner.open)())
            .await
            .unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(
                    "the call stream did not open in time",
                ))
            })
    }

    /// Whether a stream is open and carries calls.
    pub fn is_open(&self) -> bool {
        lock(&self.inner.current)
            .as_ref()
            .is_some_and(|stream| stream.is_open())
    }

    /// Sends a call on the stream and waits for its answer, as [`CallStream::call`]; when no
    /// stream is open (it ended, or is not open yet) the payload comes back in [`NotSent`], and
    /// a new stream is opened in the background.
    pub async fn call(
        &self,
        payload: C::Payload,
    ) -> Result<Result<R::Payload, Status>, NotSent<C::Payload>> {
        let current = lock(&self.inner.current).clone();
        let Some(stream) = current else {
            self.open_soon();
            return Err(NotSent(payload));
        };
        match stream.call(payload).await {
            Ok(answered) => Ok(answered),
            Err(not_sent) => {
                if !stream.is_open() {
                    self.open_soon();
                }
                Err(not_sent)
            }
        }
    }

    /// Takes the right to open a stream: when `now`, unless one is opening or the side does
    /// not serve the method; else also only once the wait since the last opening is over.
    fn claim(&self, now: bool) -> Claim {
        let mut retry = lock(&self.inner.retry);
        if retry.unsupported {
            return Claim::Unsupported;
        }
        if retry.opening {
            return Claim::Busy;
        }
        if !now && Instant::now() < retry.not_before {
            return Claim::TooSoon;
        }
        // The first opening long after a stream opened (it ended for a reason of its own)
        // starts the waits over; failed openings after it do not.
        if retry
            .opened_at
            .take()
            .is_some_and(|opened| opened.elapsed() >= REOPEN_MAX_DELAY)
        {
            retry.delay = REOPEN_FIRST_DELAY;
        }
        retry.opening = true;
        Claim::Granted
    }

    /// Records how an opening went and sets the wait before the next one.
    fn settle(&self, opened: Result<Option<CallStream<C, R>>, Status>) -> Result<bool, Status> {
        let mut retry = lock(&self.inner.retry);
        let wait = retry.delay;
        retry.opening = false;
        retry.not_before = Instant::now() + wait;
        retry.delay = (wait * 2).min(REOPEN_MAX_DELAY);
        match opened {
            Ok(Some(stream)) => {
                retry.opened_at = Some(Instant::now());
                *lock(&self.inner.current) = Some(Arc::new(stream));
                tracing::debug!(stream = %self.inner.label, "call stream open");
                Ok(true)
            }
            Ok(None) => {
                retry.unsupported = true;
                *lock(&self.inner.current) = None;
                Ok(false)
            }
            Err(status) => {
                tracing::warn!(stream = %self.inner.label, %status, retry_in_ms = wait.as_millis() as u64, "a call stream did not open; calls go unary until one does");
                Err(status)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::proto::pb;

    type HostCalls = ReopeningStream<pb::HostCall, pb::HostReply>;

    /// A stream whose openings never finish, and how many were started.
    fn hanging() -> (HostCalls, Arc<AtomicUsize>) {
        let started = Arc::new(AtomicUsize::new(0));
        let stream = {
            let started = started.clone();
            ReopeningStream::new("test", move || {
                started.fetch_add(1, Ordering::SeqCst);
                std::future::pending()
            })
        };
        (stream, started)
    }

    /// Opens `stream` now and gives the opening up after 20 ms; whether it was still going.
    async fn give_up_opening(stream: &HostCalls) -> bool {
        tokio::time::timeout(Duration::from_millis(20), stream.open_now())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn an_opening_given_up_lets_the_next_one_start() {
        let (stream, started) = hanging();
        assert!(give_up_opening(&stream).await);
        assert_eq!(started.load(Ordering::SeqCst), 1);
        // The first was given up (its future dropped): a new opening starts, rather than
        // waiting for one that will never end.
        assert!(give_up_opening(&stream).await);
        assert_eq!(started.load(Ordering::SeqCst), 2);
        assert!(!stream.is_open());
    }

    #[tokio::test]
    async fn a_side_that_does_not_serve_the_method_is_not_asked_again() {
        let asked = Arc::new(AtomicUsize::new(0));
        let stream: HostCalls = {
            let asked = asked.clone();
            ReopeningStream::new("test", move || {
                asked.fetch_add(1, Ordering::SeqCst);
                async { Ok(None) }
            })
        };
        assert!(!stream.open_now().await.unwrap(), "not served");
        stream.open_soon();
        assert!(!stream.open_now().await.unwrap(), "not served");
        tokio::task::yield_now().await;
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert!(!stream.is_open());
    }

    #[tokio::test]
    async fn nothing_keeps_a_stream_alive_after_its_openings() {
        // One opening given up, one that failed.
        let (given_up, _) = hanging();
        assert!(give_up_opening(&given_up).await);
        let failing: HostCalls =
            ReopeningStream::new("test", || async { Err(Status::unavailable("no host")) });
        assert!(failing.open_now().await.is_err());
        for stream in [given_up, failing] {
            let inner = Arc::downgrade(&stream.inner);
            drop(stream);
            assert!(inner.upgrade().is_none(), "an ended opening holds nothing");
        }
    }

    #[tokio::test]
    async fn an_opening_under_way_is_not_started_twice() {
        let (stream, started) = hanging();
        stream.open_soon();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(started.load(Ordering::SeqCst), 1);
        let busy = stream.open_now().await.unwrap_err();
        assert_eq!(busy.code(), tonic::Code::Unavailable, "{busy:?}");
        stream.open_soon();
        assert_eq!(started.load(Ordering::SeqCst), 1);
    }
}
