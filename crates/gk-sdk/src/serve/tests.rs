//! The plugin side of the host's `Calls` stream, driven by the host's side (`CallStream`) over a
//! real socket: results by id, the time budget, cancellation, host errors, the end of the
//! stream at shutdown, and a stream opened again after it ended.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::Code;

use super::*;
use crate::call_stream::{CallStream, NotSent, ReopeningStream};
use crate::proto::pb::plugin_service_client::PluginServiceClient;
use crate::unix_channel::UnixChannel;
use crate::{GkRegistration, HostApi, HostError};

/// `echo` answers its arguments, `sleep` sleeps a minute, `limited` passes a host error on;
/// every call that ends, finished or stopped, is counted.
#[derive(Default)]
struct Sleeper {
    ended: Arc<AtomicUsize>,
}

/// Counts a call as ended when dropped, however it ends.
struct Ends(Arc<AtomicUsize>);

impl Drop for Ends {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Plugin for Sleeper {
    async fn register(&self) -> Result<GkRegistration, PluginError> {
        Ok(GkRegistration::default())
    }
    async fn init(&self, _: &CallContext, _: Arc<dyn HostApi>) -> Result<(), PluginError> {
        Ok(())
    }
    async fn call(
        &self,
        _: &CallContext,
        function: &str,
        args: &[u8],
    ) -> Result<Vec<u8>, PluginError> {
        let _ends = Ends(self.ended.clone());
        match function {
            "echo" => Ok(args.to_vec()),
            "sleep" => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(Vec::new())
            }
            "limited" => Err(PluginError::Host(HostError::RateLimited {
                limit: "max_calls_per_second".into(),
                retry_after: Duration::from_secs(1),
            })),
            other => Err(PluginError::UnknownFunction(other.into())),
        }
    }
    async fn shutdown(&self, _: &CallContext) -> Result<(), PluginError> {
        Ok(())
    }
}

fn call(function: &str, args: &[u8]) -> pb::CallRequest {
    pb::CallRequest {
        context: None,
        function: function.into(),
        args_json: args.to_vec(),
    }
}

/// Waits up to two seconds for `count` calls to have ended.
async fn ended(count: &AtomicUsize, expected: usize) -> usize {
    for _ in 0..200 {
        if count.load(Ordering::SeqCst) >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    count.load(Ordering::SeqCst)
}

/// Serves `plugin` on a socket in `dir`; the sender ends its `Calls` streams while it says
/// `true`.
async fn serve_on(
    dir: &tempfile::TempDir,
    plugin: Sleeper,
) -> (std::path::PathBuf, Arc<watch::Sender<bool>>) {
    let socket = dir.path().join("plugin.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let stopping = Arc::new(watch::channel(false).0);
    let server = PluginServer {
        plugin: Arc::new(plugin),
        host_socket: String::new(),
        token: String::new(),
        stop: Arc::new(Notify::new()),
        stopping: stopping.clone(),
        max_message_bytes: Arc::new(AtomicUsize::new(1_000)),
        early_host: std::sync::Mutex::new(None),
        initialised: OnceLock::new(),
    };
    tokio::spawn(
        Server::builder()
            .add_service(PluginServiceServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    (socket, stopping)
}

/// Waits up to two seconds for `stream` to be open (or not).
async fn until_open(stream: &ReopeningStream<pb::StreamedCall, pb::StreamedResult>, open: bool) {
    for _ in 0..200 {
        if stream.is_open() == open {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the stream is not {}", if open { "open" } else { "ended" });
}

#[tokio::test]
async fn an_ended_stream_is_opened_again_after_a_wait_and_calls_go_unary_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, stopping) = serve_on(&dir, Sleeper::default()).await;
    let channel = UnixChannel::connect(&socket).await.unwrap();
    let client = PluginServiceClient::with_origin(channel, UnixChannel::origin());
    let opened = Arc::new(AtomicUsize::new(0));
    let stream = {
        let opened = opened.clone();
        ReopeningStream::new("test", move || {
            opened.fetch_add(1, Ordering::SeqCst);
            let mut client = client.clone();
            CallStream::open(
                8,
                move |outgoing| async move { client.calls(outgoing).await },
            )
        })
    };
    assert!(stream.open_now().await.unwrap());
    let first_opened = std::time::Instant::now();
    let echoed = stream.call((call("echo", b"1"), 0)).await.unwrap().unwrap();
    assert_eq!(echoed.result_json, b"1");

    // The plugin ends its streams; while they end, a call is handed back (to go unary) and
    // asks for a new stream, which the plugin ends too: the next opening waits longer.
    stopping.send_replace(true);
    until_open(&stream, false).await;
    assert!(matches!(
        stream.call((call("echo", b"2"), 0)).await,
        Err(NotSent(_))
    ));
    for _ in 0..20 {
        let _ = stream.call((call("echo", b"3"), 0)).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let while_ending = opened.load(Ordering::SeqCst);
    // The n-th opening comes REOPEN_FIRST_DELAY * (2^(n-1) - 1) after the first at the soonest.
    let first = super::super::call_stream::REOPEN_FIRST_DELAY;
    let elapsed = first_opened.elapsed();
    let most = (1..32u32)
        .take_while(|n| first * (2u32.pow(n - 1) - 1) <= elapsed)
        .count();
    assert!(
        (2..=most).contains(&while_ending),
        "openings are spaced out, not one per call: {while_ending} in {elapsed:?} (at most {most})"
    );

    // Once the plugin serves streams again, a call reopens one, and calls travel on it.
    stopping.send_replace(false);
    tokio::time::sleep(super::super::call_stream::REOPEN_FIRST_DELAY * 4).await;
    let _ = stream.call((call("echo", b"4"), 0)).await;
    until_open(&stream, true).await;
    let echoed = stream.call((call("echo", b"5"), 0)).await.unwrap().unwrap();
    assert_eq!(echoed.result_json, b"5");
}

#[tokio::test]
async fn a_call_still_queued_when_the_stream_ends_comes_back_unsent() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, stopping) = serve_on(&dir, Sleeper::default()).await;
    let channel = UnixChannel::connect(&socket).await.unwrap();
    let mut client = PluginServiceClient::with_origin(channel, UnixChannel::origin());
    // The gRPC call is given a stream of its own that sends nothing: what the CallStream queues
    // is never taken, as when the connection cannot write.
    let held = Arc::new(std::sync::Mutex::new(None));
    let stream = {
        let held = held.clone();
        CallStream::<pb::StreamedCall, pb::StreamedResult>::open(8, move |outgoing| {
            *held.lock().unwrap() = Some(outgoing);
            async move {
                client
                    .calls(tokio_stream::pending::<pb::StreamedCall>())
                    .await
            }
        })
        .await
        .unwrap()
        .unwrap()
    };
    let stream = Arc::new(stream);
    let queued = tokio::spawn({
        let stream = stream.clone();
        async move { stream.call((call("echo", b"queued"), 0)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!queued.is_finished(), "the call waits for its answer");
    stopping.send_replace(true);
    let outcome = tokio::time::timeout(Duration::from_secs(5), queued)
        .await
        .expect("the call ends with the stream")
        .unwrap();
    match outcome {
        Err(NotSent((unsent, _))) => assert_eq!(unsent.args_json, b"queued"),
        Ok(answered) => panic!("a call that never left was answered: {answered:?}"),
    }
    assert!(!stream.is_open());
}

#[tokio::test]
async fn calls_on_the_stream_answer_by_id_keep_their_budget_and_stop_when_given_up() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = Sleeper::default();
    let calls_ended = plugin.ended.clone();
    let (socket, stopping) = serve_on(&dir, plugin).await;
    let channel = UnixChannel::connect(&socket).await.unwrap();
    let mut client = PluginServiceClient::with_origin(channel, UnixChannel::origin());
    let stream =
        CallStream::<pb::StreamedCall, pb::StreamedResult>::open(8, |outgoing| async move {
            client.calls(outgoing).await
        })
        .await
        .unwrap()
        .expect("the SDK serves the Calls stream");

    let (sleeping, echoed) = tokio::join!(stream.call((call("sleep", b""), 100)), async {
        stream.call((call("echo", br#"{"a":1}"#), 0)).await
    });
    assert_eq!(echoed.unwrap().unwrap().result_json, br#"{"a":1}"#);
    let timed_out = sleeping.unwrap().unwrap_err();
    assert_eq!(timed_out.code(), Code::DeadlineExceeded, "{timed_out:?}");
    assert_eq!(
        ended(&calls_ended, 2).await,
        2,
        "the call past its budget was stopped"
    );

    let given_up = tokio::time::timeout(
        Duration::from_millis(50),
        stream.call((call("sleep", b""), 0)),
    )
    .await;
    assert!(given_up.is_err());
    assert_eq!(
        ended(&calls_ended, 3).await,
        3,
        "a call the host gave up is cancelled in the plugin"
    );

    let limited = stream
        .call((call("limited", b""), 0))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert!(matches!(
        crate::proto::status_to_host_error(&limited),
        HostError::RateLimited { .. }
    ));
    let too_large = stream
        .call((call("echo", &[b'x'; 2_000]), 0))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(too_large.code(), Code::OutOfRange, "{too_large:?}");
    assert!(
        stream.is_open(),
        "a result over the cap fails its call alone"
    );
    let unknown = stream.call((call("nope", b""), 0)).await.unwrap().unwrap();
    assert_eq!(
        unknown.failure.unwrap().message,
        "plugin has no function `nope`",
        "a failure the plugin reports is a result, not a status"
    );

    stopping.send_replace(true);
    for _ in 0..200 {
        if !stream.is_open() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!stream.is_open(), "the stream ends when the plugin stops");
    assert!(matches!(
        stream.call((call("echo", b"1"), 0)).await,
        Err(NotSent(_))
    ));
}
