//! The plugin side of the host's `Calls` stream, driven by the host's side (`CallStream`) over a
//! real socket: results by id, the time budget, cancellation, host errors, and the end of the
//! stream at shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::Code;

use super::*;
use crate::call_stream::{CallStream, NotSent};
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

#[tokio::test]
async fn calls_on_the_stream_answer_by_id_keep_their_budget_and_stop_when_given_up() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("plugin.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let plugin = Sleeper::default();
    let calls_ended = plugin.ended.clone();
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
