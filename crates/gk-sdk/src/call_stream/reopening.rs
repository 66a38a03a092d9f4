//! [`ReopeningStream`]: a [`CallStream`] opened again after it ends, with backoff.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tonic::Status;

use super::{CallStream, NotSent, StreamedCall, StreamedReply};

/// The first wait before opening a stream again after one ended or an opening failed.
pub const REOPEN_FIRST_DELAY: Duration = Duration::from_millis(100);

/// The longest wait between two openings (the wait doubles after each one, and starts again
/// from [`REOPEN_FIRST_DELAY`] once a stream has stayed open that long).
pub const REOPEN_MAX_DELAY: Duration = Duration::from_secs(30);

/// What opens one stream: `Ok(None)` when the other side does not serve the method.
type Opener<C, R> = Box<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Option<CallStream<C, R>>, Status>> + Send>>
        + Send
        + Sync,
>;

/// When to open a stream again.
#[derive(Debug)]
struct Retry {
    /// An opening is under way.
    opening: bool,
    /// Not before then.
    not_before: Instant,
    /// The wait after the next opening.
    delay: Duration,
    /// When the stream in use was opened.
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
    /// other side does not serve the method (never asked again), the status when it failed.
    pub async fn open_now(&self) -> Result<bool, Status> {
        if !self.claim(true) {
            return Ok(self.is_open());
        }
        let opened = (self.inner.open)().await;
        self.settle(opened)
    }

    /// Opens a stream in the background if none is open and the last opening is long enough
    /// ago (and none is under way).
    pub fn open_soon(&self) {
        if self.is_open() || !self.claim(false) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let opened = (this.inner.open)().await;
            let _ = this.settle(opened);
        });
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

    /// Takes the right to open a stream: always when `now` (unless one is opening or the side
    /// does not serve the method), else only once the wait since the last opening is over.
    fn claim(&self, now: bool) -> bool {
        let mut retry = lock(&self.inner.retry);
        if retry.opening || retry.unsupported || (!now && Instant::now() < retry.not_before) {
            return false;
        }
        // A stream that stayed open long enough ended for a reason of its own: start the
        // waits over.
        if retry
            .opened_at
            .is_some_and(|opened| opened.elapsed() >= REOPEN_MAX_DELAY)
        {
            retry.delay = REOPEN_FIRST_DELAY;
        }
        retry.opening = true;
        true
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
