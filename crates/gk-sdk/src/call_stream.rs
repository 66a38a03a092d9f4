//! Request and reply as messages on one gRPC bidirectional stream (the `Calls` methods of both
//! services): [`CallStream`] is the calling side, [`answer_calls`] the answering side. Each call
//! carries an id the caller chose; the answering side runs calls concurrently and replies under
//! the same id in any order. A call saves the HTTP/2 stream (HEADERS, trailers, a task on each
//! side) a unary call costs.
//!
//! A [`ReopeningStream`] opens a stream again, with backoff, after it ended.
//!
//! The two pairs of messages, [`pb::HostCall`]/[`pb::HostReply`] (plugin → host) and
//! [`pb::StreamedCall`]/[`pb::StreamedResult`] (host → plugin), say how they carry an id, a
//! payload and a status through [`StreamedCall`] and [`StreamedReply`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::AbortHandle;
use tonic::{Code, Response, Status, Streaming};

use crate::proto::pb;
use crate::proto::pb::host_call::Call as HostCallKind;
use crate::proto::pb::host_reply::Reply as HostReplyKind;

pub use tokio_stream::wrappers::ReceiverStream;

mod reopening;

pub use reopening::{OPEN_TIMEOUT, REOPEN_FIRST_DELAY, REOPEN_MAX_DELAY, ReopeningStream};

/// A message that carries a call on a stream.
pub trait StreamedCall: Sized + Send + 'static {
    /// What the call asks.
    type Payload: Send + 'static;
    /// The message for call `id`.
    fn with_id(id: u64, payload: Self::Payload) -> Self;
    /// The message that cancels call `id`, where the protocol has one.
    fn cancel(id: u64) -> Option<Self>;
    /// The call's id.
    fn id(&self) -> u64;
    /// Whether this message cancels its call.
    fn is_cancel(&self) -> bool;
    /// What the call asks; `None` when the message holds nothing the receiver knows.
    fn into_payload(self) -> Option<Self::Payload>;
}

/// A message that carries a call's answer on a stream.
pub trait StreamedReply: Sized + Send + 'static {
    /// What a call answers when it succeeds.
    type Payload: Send + 'static;
    /// The message answering call `id`.
    fn with_id(id: u64, result: Result<Self::Payload, Status>) -> Self;
    /// The call it answers.
    fn id(&self) -> u64;
    /// The answer, or the status the call failed with.
    fn into_result(self) -> Result<Self::Payload, Status>;
}

/// How a call on a stream ended: its answer, or its payload back when the stream ended before
/// the call's message left (so it may go another way).
enum Outcome<P, Q> {
    Answered(Result<P, Status>),
    Unsent(Q),
}

/// Where a call's outcome is handed over.
type Slot<P, Q> = oneshot::Sender<Outcome<P, Q>>;

/// The answers awaited, by call id; `None` once the stream has ended.
type Pending<P, Q> = Mutex<Option<HashMap<u64, Slot<P, Q>>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The messages a [`CallStream`] sends, as the gRPC call takes them. When the stream ends, the
/// messages it has not taken yet are known not to have left: their calls get their payloads
/// back.
pub struct Outgoing<C> {
    queue: Arc<Mutex<Queue<C>>>,
}

/// The messages not taken yet, and who waits for the next one.
struct Queue<C> {
    receiver: mpsc::Receiver<C>,
    /// The gRPC call's task while it waits: woken when the queue is closed, so that it ends
    /// its side of the stream.
    waiting: Option<std::task::Waker>,
}

impl<C> std::fmt::Debug for Outgoing<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing").finish_non_exhaustive()
    }
}

impl<C> tokio_stream::Stream for Outgoing<C> {
    type Item = C;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<C>> {
        let mut queue = lock(&self.queue);
        let polled = queue.receiver.poll_recv(cx);
        if polled.is_pending()
            && !queue
                .waiting
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            queue.waiting = Some(cx.waker().clone());
        }
        polled
    }
}

/// Host calls of one `HostService.Calls` stream that run at once: the host's bound, and how many
/// a plugin keeps waiting on the stream (more go unary, so no call waits on the bound).
pub const HOST_CALLS_AT_ONCE: usize = 256;

/// Plugin calls of one `PluginService.Calls` stream that run at once: the SDK's bound, and how
/// many the host keeps waiting on the stream (more go unary).
pub const PLUGIN_CALLS_AT_ONCE: usize = 1_024;

/// Calls larger than this (encoded) are not sent on a stream: a message over the other side's
/// cap would end the stream for every call on it, where a unary call fails alone.
pub const STREAM_MESSAGE_BYTES: usize = 64 * 1024;

/// The calling side of a stream: sends calls, and hands each answer to the call waiting for it.
pub struct CallStream<C: StreamedCall, R: StreamedReply> {
    sender: mpsc::Sender<C>,
    pending: Arc<Pending<R::Payload, C::Payload>>,
    next_id: Arc<AtomicU64>,
    in_flight: usize,
}

impl<C: StreamedCall, R: StreamedReply> std::fmt::Debug for CallStream<C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallStream").finish_non_exhaustive()
    }
}

/// What [`CallStream::call`] gives back when the stream does not carry the call (it has ended,
/// or as many calls as the other side runs at once are waiting): the payload, to send another
/// way.
#[derive(Debug)]
pub struct NotSent<P>(pub P);

impl<C: StreamedCall, R: StreamedReply> CallStream<C, R> {
    /// Opens a stream with `open` (given the outgoing messages, it makes the gRPC call). At most
    /// `in_flight` calls wait on it at once (the other side's bound: more go another way), which
    /// is also how many may be queued unwritten. `Ok(None)` when the other side does not serve
    /// the method (`UNIMPLEMENTED`).
    pub async fn open<F, Fut>(in_flight: usize, open: F) -> Result<Option<Self>, Status>
    where
        F: FnOnce(Outgoing<C>) -> Fut,
        Fut: Future<Output = Result<Response<Streaming<R>>, Status>>,
    {
        let in_flight = in_flight.max(1);
        let (sender, outgoing) = mpsc::channel(in_flight);
        let queue = Arc::new(Mutex::new(Queue {
            receiver: outgoing,
            waiting: None,
        }));
        let outgoing = Outgoing {
            queue: queue.clone(),
        };
        let replies = match open(outgoing).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == Code::Unimplemented => return Ok(None),
            Err(status) => return Err(status),
        };
        let pending: Arc<Pending<R::Payload, C::Payload>> =
            Arc::new(Mutex::new(Some(HashMap::new())));
        let next_id = Arc::new(AtomicU64::new(1));
        tokio::spawn(read_replies::<C, R>(
            replies,
            queue,
            pending.clone(),
            next_id.clone(),
        ));
        Ok(Some(Self {
            sender,
            pending,
            next_id,
            in_flight,
        }))
    }

    /// Whether the stream still carries calls.
    pub fn is_open(&self) -> bool {
        lock(&self.pending).is_some()
    }

    /// Sends a call and waits for its answer. A call given up before its answer (its future
    /// dropped) is cancelled where the protocol can say so. When the stream has ended (before
    /// the call, or with the call's message still queued), or as many calls as it carries at
    /// once are waiting, the payload comes back in [`NotSent`].
    pub async fn call(
        &self,
        payload: C::Payload,
    ) -> Result<Result<R::Payload, Status>, NotSent<C::Payload>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (slot, answer) = oneshot::channel();
        match lock(&self.pending).as_mut() {
            Some(waiting) if waiting.len() < self.in_flight => waiting.insert(id, slot),
            _ => return Err(NotSent(payload)),
        };
        let mut awaiting = Awaiting {
            stream: self,
            id,
            answered: false,
        };
        if let Err(mpsc::error::SendError(message)) =
            self.sender.send(C::with_id(id, payload)).await
        {
            awaiting.answered = true;
            if let Some(waiting) = lock(&self.pending).as_mut() {
                waiting.remove(&id);
            }
            return match message.into_payload() {
                Some(payload) => Err(NotSent(payload)),
                None => Ok(Err(Status::internal("a call was lost before it was sent"))),
            };
        }
        let outcome = answer.await;
        awaiting.answered = true;
        match outcome {
            Ok(Outcome::Answered(result)) => Ok(result),
            Ok(Outcome::Unsent(payload)) => Err(NotSent(payload)),
            Err(_) => Ok(Err(Status::unavailable("the call stream ended"))),
        }
    }
}

/// Removes a call given up before its answer, and cancels it where the protocol can.
struct Awaiting<'a, C: StreamedCall, R: StreamedReply> {
    stream: &'a CallStream<C, R>,
    id: u64,
    answered: bool,
}

impl<C: StreamedCall, R: StreamedReply> Drop for Awaiting<'_, C, R> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let was_waiting = lock(&self.stream.pending)
            .as_mut()
            .and_then(|waiting| waiting.remove(&self.id))
            .is_some();
        if was_waiting && let Some(cancel) = C::cancel(self.id) {
            // Best effort: a full queue means the other side is busy; it answers into a slot
            // that is gone.
            let _ = self.stream.sender.try_send(cancel);
        }
    }
}

/// Hands each answer to the call waiting for it (an answer to a call given up is dropped; one
/// to a call never made ends the stream); when the stream ends, hands the calls whose messages
/// never left their payloads back, fails the others still waiting with the reason, and marks
/// the stream ended.
async fn read_replies<C: StreamedCall, R: StreamedReply>(
    mut replies: Streaming<R>,
    queue: Arc<Mutex<Queue<C>>>,
    pending: Arc<Pending<R::Payload, C::Payload>>,
    next_id: Arc<AtomicU64>,
) {
    let ended = loop {
        match replies.message().await {
            Ok(Some(reply)) => {
                let id = reply.id();
                if id == 0 || id >= next_id.load(Ordering::Relaxed) {
                    break Status::internal(format!(
                        "the other side answered call {id}, which was never made"
                    ));
                }
                let waiting = lock(&pending)
                    .as_mut()
                    .and_then(|waiting| waiting.remove(&id));
                if let Some(waiting) = waiting {
                    let _ = waiting.send(Outcome::Answered(reply.into_result()));
                }
            }
            Ok(None) => break Status::unavailable("the other side closed the call stream"),
            Err(status) => break status,
        }
    };
    tracing::warn!(%ended, "a call stream ended");
    let mut waiting = lock(&pending).take().unwrap_or_default();
    // What the gRPC call has not taken from the queue has not left: no more is taken now.
    let (unsent, sender_task) = {
        let mut queue = lock(&queue);
        queue.receiver.close();
        let unsent = std::iter::from_fn(|| queue.receiver.try_recv().ok()).collect::<Vec<C>>();
        (unsent, queue.waiting.take())
    };
    // The gRPC call finds the queue closed and empty: its side of the stream ends.
    if let Some(sender_task) = sender_task {
        sender_task.wake();
    }
    for message in unsent {
        let id = message.id();
        if let (Some(call), Some(payload)) = (waiting.remove(&id), message.into_payload()) {
            let _ = call.send(Outcome::Unsent(payload));
        }
    }
    for (_, call) in waiting {
        let _ = call.send(Outcome::Answered(Err(ended.clone())));
    }
}

/// The answering side: runs each call `inbound` brings with `answer`, on a task of its own, at
/// most `concurrency` at once (the stream is not read further until one completes, but for
/// cancellations, which need no slot), and sends each result under its call's id. A cancelled
/// call is stopped and answered by nothing. A result over `max_reply_bytes` is answered
/// `OUT_OF_RANGE` alone (it would end the stream at the caller's cap). A message that cannot be
/// read (over the size cap, malformed) ends the stream with its status.
///
/// When the caller closes the stream or goes away, the calls still running are stopped, as a
/// unary call's handler is when its caller resets it. Once `stop` completes no further call is
/// read, and the stream ends when the calls running have answered (so a server's graceful
/// shutdown is not held up by it).
pub fn answer_calls<C, R, F, Fut, Stop>(
    inbound: Streaming<C>,
    concurrency: usize,
    max_reply_bytes: Arc<AtomicUsize>,
    answer: F,
    stop: Stop,
) -> ReceiverStream<Result<R, Status>>
where
    C: StreamedCall,
    R: StreamedReply + prost::Message,
    F: Fn(C::Payload) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R::Payload, Status>> + Send + 'static,
    Stop: Future<Output = ()> + Send + 'static,
{
    let concurrency = concurrency.max(1);
    let (replies, outbound) = mpsc::channel(concurrency);
    let answering = Answering {
        replies,
        permits: Arc::new(Semaphore::new(concurrency)),
        running: Arc::new(Mutex::new(HashMap::new())),
        max_reply_bytes,
        answer: Arc::new(answer),
    };
    tokio::spawn(answering.run(inbound, stop));
    ReceiverStream::new(outbound)
}

/// The loop of [`answer_calls`].
struct Answering<R, F> {
    replies: mpsc::Sender<Result<R, Status>>,
    permits: Arc<Semaphore>,
    running: Arc<Mutex<HashMap<u64, AbortHandle>>>,
    max_reply_bytes: Arc<AtomicUsize>,
    answer: Arc<F>,
}

impl<R, F> Answering<R, F> {
    fn running(&self) -> MutexGuard<'_, HashMap<u64, AbortHandle>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<R: StreamedReply + prost::Message, F> Answering<R, F> {
    async fn run<C, Fut, Stop>(self, mut inbound: Streaming<C>, stop: Stop)
    where
        C: StreamedCall,
        F: Fn(C::Payload) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Payload, Status>> + Send + 'static,
        Stop: Future<Output = ()> + Send + 'static,
    {
        tokio::pin!(stop);
        let caller_gone = loop {
            let received = tokio::select! {
                received = inbound.message() => received,
                () = self.replies.closed() => break true,
                () = &mut stop => break false,
            };
            let message = match received {
                Ok(Some(message)) => message,
                Ok(None) => break true,
                Err(status) => {
                    let _ = self.replies.send(Err(status)).await;
                    break true;
                }
            };
            let id = message.id();
            if message.is_cancel() {
                if let Some(task) = self.running().remove(&id) {
                    task.abort();
                }
                continue;
            }
            let Some(payload) = message.into_payload() else {
                let unknown =
                    Status::invalid_argument("a call without a request the receiver knows");
                let _ = self.replies.send(Ok(R::with_id(id, Err(unknown)))).await;
                continue;
            };
            let permit = tokio::select! {
                permit = self.permits.clone().acquire_owned() => permit,
                () = self.replies.closed() => break true,
            };
            let Ok(permit) = permit else { break true };
            self.start(id, payload, permit);
        };
        if caller_gone {
            for (_, task) in self.running().drain() {
                task.abort();
            }
        }
    }

    fn start<P, Fut>(&self, id: u64, payload: P, permit: tokio::sync::OwnedSemaphorePermit)
    where
        F: Fn(P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Payload, Status>> + Send + 'static,
        P: Send + 'static,
    {
        let answer = self.answer.clone();
        let replies = self.replies.clone();
        let running = self.running.clone();
        let max_reply_bytes = self.max_reply_bytes.clone();
        // Held while the task is registered, so that it cannot finish (and unregister) first.
        let mut registered = self.running();
        let task = tokio::spawn(async move {
            let result = answer(payload).await;
            running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            let mut reply = R::with_id(id, result);
            let cap = max_reply_bytes.load(Ordering::Relaxed);
            let size = reply.encoded_len();
            if size > cap {
                let too_large = Status::out_of_range(format!(
                    "the answer is {size} bytes, over the {cap}-byte message limit"
                ));
                reply = R::with_id(id, Err(too_large));
            }
            let _ = replies.send(Ok(reply)).await;
            drop(permit);
        });
        registered.insert(id, task.abort_handle());
    }
}

impl StreamedCall for pb::HostCall {
    type Payload = HostCallKind;
    fn with_id(id: u64, payload: HostCallKind) -> Self {
        Self {
            id,
            call: Some(payload),
            cancel: false,
        }
    }
    fn cancel(id: u64) -> Option<Self> {
        Some(Self {
            id,
            call: None,
            cancel: true,
        })
    }
    fn id(&self) -> u64 {
        self.id
    }
    fn is_cancel(&self) -> bool {
        self.cancel
    }
    fn into_payload(self) -> Option<HostCallKind> {
        self.call
    }
}

impl StreamedReply for pb::HostReply {
    type Payload = HostReplyKind;
    fn with_id(id: u64, result: Result<HostReplyKind, Status>) -> Self {
        let reply = result.unwrap_or_else(|status| HostReplyKind::Error((&status).into()));
        Self {
            id,
            reply: Some(reply),
        }
    }
    fn id(&self) -> u64 {
        self.id
    }
    fn into_result(self) -> Result<HostReplyKind, Status> {
        match self.reply {
            Some(HostReplyKind::Error(status)) => Err(status.into()),
            Some(reply) => Ok(reply),
            None => Err(Status::internal("an empty reply")),
        }
    }
}

/// A plugin call on the stream: the request and its time budget in milliseconds (0: none).
pub type PluginCall = (pb::CallRequest, u64);

impl StreamedCall for pb::StreamedCall {
    type Payload = PluginCall;
    fn with_id(id: u64, (call, timeout_ms): PluginCall) -> Self {
        Self {
            id,
            call: Some(call),
            timeout_ms,
            cancel: false,
        }
    }
    fn cancel(id: u64) -> Option<Self> {
        Some(Self {
            id,
            call: None,
            timeout_ms: 0,
            cancel: true,
        })
    }
    fn id(&self) -> u64 {
        self.id
    }
    fn is_cancel(&self) -> bool {
        self.cancel
    }
    fn into_payload(self) -> Option<PluginCall> {
        self.call.map(|call| (call, self.timeout_ms))
    }
}

impl StreamedReply for pb::StreamedResult {
    type Payload = pb::CallResponse;
    fn with_id(id: u64, result: Result<pb::CallResponse, Status>) -> Self {
        use pb::streamed_result::Result as Outcome;
        let result = match result {
            Ok(response) => Outcome::Response(response),
            Err(status) => Outcome::Error((&status).into()),
        };
        Self {
            id,
            result: Some(result),
        }
    }
    fn id(&self) -> u64 {
        self.id
    }
    fn into_result(self) -> Result<pb::CallResponse, Status> {
        use pb::streamed_result::Result as Outcome;
        match self.result {
            Some(Outcome::Response(response)) => Ok(response),
            Some(Outcome::Error(status)) => Err(status.into()),
            None => Err(Status::internal("an empty result")),
        }
    }
}
