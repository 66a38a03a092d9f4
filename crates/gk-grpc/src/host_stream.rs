//! The `Calls` stream of the `HostService`: a plugin's host calls as messages on one
//! bidirectional stream (gk-sdk's `call_stream`). Each call is answered by the same method of
//! the service as its unary form (same admission, same sandbox; the token was checked when the
//! stream opened), on a task of its own, so a slow call does not hold up the others; at most
//! [`HOST_CALLS_AT_ONCE`] run at once per stream, and the stream is not read further until one
//! completes.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use gk_sdk::call_stream::{HOST_CALLS_AT_ONCE, ReceiverStream, answer_calls};
use gk_sdk::proto::pb;
use gk_sdk::proto::pb::host_call::Call;
use gk_sdk::proto::pb::host_reply::Reply;
use gk_sdk::proto::pb::host_service_server::HostService;
use tonic::{Request, Status, Streaming};

/// What the host sends back on a `Calls` stream.
pub(crate) type ReplyStream = ReceiverStream<Result<pb::HostReply, Status>>;

/// Answers the calls `inbound` brings with `service`'s methods, until the plugin closes it or
/// goes away (its process ending ends it), or `stop` completes (the host's server stops: no
/// more calls are read, and the stream ends when the running ones have answered). A message
/// the host cannot read (over the size cap, not a `HostCall`) ends the stream with its status.
/// An answer over `max_reply_bytes` fails its call alone (`OUT_OF_RANGE`).
pub(crate) fn answer_stream<S>(
    service: S,
    max_reply_bytes: usize,
    inbound: Streaming<pb::HostCall>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> ReplyStream
where
    S: HostService + Clone,
{
    let answer = move |call| {
        let service = service.clone();
        async move { answer(&service, call).await }
    };
    let cap = Arc::new(AtomicUsize::new(max_reply_bytes));
    answer_calls(inbound, HOST_CALLS_AT_ONCE, cap, answer, stop)
}

/// One call, answered by its unary method.
async fn answer<S: HostService>(server: &S, call: Call) -> Result<Reply, Status> {
    match call {
        Call::DbQuery(m) => server
            .db_query(Request::new(m))
            .await
            .map(|r| Reply::DbQuery(r.into_inner())),
        Call::DbExec(m) => server
            .db_exec(Request::new(m))
            .await
            .map(|r| Reply::DbExec(r.into_inner())),
        Call::CacheGet(m) => server
            .cache_get(Request::new(m))
            .await
            .map(|r| Reply::CacheGet(r.into_inner())),
        Call::CacheSet(m) => server
            .cache_set(Request::new(m))
            .await
            .map(|r| Reply::CacheSet(r.into_inner())),
        Call::CacheDelete(m) => server
            .cache_delete(Request::new(m))
            .await
            .map(|r| Reply::CacheDelete(r.into_inner())),
        Call::HttpRequest(m) => server
            .http_request(Request::new(m))
            .await
            .map(|r| Reply::HttpRequest(r.into_inner())),
        Call::SendEmail(m) => server
            .send_email(Request::new(m))
            .await
            .map(|r| Reply::SendEmail(r.into_inner())),
        Call::Log(m) => server
            .log(Request::new(m))
            .await
            .map(|r| Reply::Log(r.into_inner())),
        Call::ConfigGet(m) => server
            .config_get(Request::new(m))
            .await
            .map(|r| Reply::ConfigGet(r.into_inner())),
        Call::Translate(m) => server
            .translate(Request::new(m))
            .await
            .map(|r| Reply::Translate(r.into_inner())),
        Call::CallPlugin(m) => server
            .call_plugin(Request::new(m))
            .await
            .map(|r| Reply::CallPlugin(r.into_inner())),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use gk_sdk::call_stream::StreamedCall as _;
    use gk_sdk::handshake::TOKEN_METADATA;
    use gk_sdk::proto::pb::host_service_client::HostServiceClient;
    use gk_sdk::testing::{MemoryHost, RecordingHost};
    use gk_sdk::unix_channel::UnixChannel;
    use tonic::Code;

    use tokio::sync::mpsc;

    use super::*;
    use crate::host_server::{HostSide, serve_host};

    /// A host service for plugin `p` (token `t`) over a recorder of the kit's memory host, and a
    /// client of it.
    async fn served(
        max_message_bytes: usize,
    ) -> (
        HostServiceClient<UnixChannel>,
        Arc<RecordingHost>,
        tempfile::TempDir,
    ) {
        let host = RecordingHost::wrapping(Arc::new(MemoryHost::default()));
        served_with(max_message_bytes, host).await
    }

    /// A host service for plugin `p` (token `t`) over `host`, and a client of it.
    async fn served_with(
        max_message_bytes: usize,
        host: RecordingHost,
    ) -> (
        HostServiceClient<UnixChannel>,
        Arc<RecordingHost>,
        tempfile::TempDir,
    ) {
        let served = serving(max_message_bytes, host).await;
        (served.client, served.host, served.dir)
    }

    /// A running host service, its client, and what stops it.
    struct Served {
        client: HostServiceClient<UnixChannel>,
        host: Arc<RecordingHost>,
        dir: tempfile::TempDir,
        stop: Arc<tokio::sync::Notify>,
        server: tokio::task::JoinHandle<()>,
    }

    async fn serving(max_message_bytes: usize, host: RecordingHost) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("host.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let side = Arc::new(HostSide::new("p", "t"));
        let host = Arc::new(host);
        let _ = side.host.set(host.clone());
        let stop = Arc::new(tokio::sync::Notify::new());
        let server = tokio::spawn(serve_host(side, listener, max_message_bytes, stop.clone()));
        let channel = UnixChannel::connect(&socket).await.unwrap();
        Served {
            client: HostServiceClient::with_origin(channel, UnixChannel::origin()),
            host,
            dir,
            stop,
            server,
        }
    }

    /// Opens the `Calls` stream with `token`; calls go in through the sender.
    async fn open(
        client: &mut HostServiceClient<UnixChannel>,
        token: &str,
    ) -> Result<(mpsc::Sender<pb::HostCall>, Streaming<pb::HostReply>), Status> {
        let (sender, outgoing) = mpsc::channel(1_024);
        let mut request = Request::new(ReceiverStream::new(outgoing));
        request
            .metadata_mut()
            .insert(TOKEN_METADATA, token.parse().unwrap());
        let replies = client.calls(request).await?.into_inner();
        Ok((sender, replies))
    }

    fn cache_get(key: &str) -> Call {
        Call::CacheGet(pb::CacheGetRequest {
            context: None,
            key: key.into(),
        })
    }

    #[tokio::test]
    async fn each_call_is_answered_under_its_id_as_its_unary_method_would() {
        let (mut client, host, _dir) = served(1 << 20).await;
        let (calls, mut replies) = open(&mut client, "t").await.unwrap();
        let sent = [
            (
                10,
                Some(Call::CacheSet(pb::CacheSetRequest {
                    context: None,
                    key: "k".into(),
                    value: b"v".to_vec(),
                    ttl_seconds: 0,
                })),
            ),
            (
                11,
                Some(Call::ConfigGet(pb::ConfigGetRequest {
                    context: None,
                    key: "missing".into(),
                })),
            ),
            (12, None),
        ];
        for (id, call) in sent {
            calls
                .send(pb::HostCall {
                    id,
                    call,
                    cancel: false,
                })
                .await
                .unwrap();
        }
        let mut answered = BTreeMap::new();
        for _ in 0..3 {
            let reply = replies.message().await.unwrap().unwrap();
            answered.insert(reply.id, reply.reply.unwrap());
        }
        assert_eq!(answered[&10], Reply::CacheSet(pb::CacheSetResponse {}));
        let Reply::Error(missing) = &answered[&11] else {
            panic!("{:?}", answered[&11]);
        };
        let missing = Status::from(missing.clone());
        assert_eq!(missing.code(), Code::NotFound);
        assert_eq!(
            gk_sdk::proto::status_to_host_error(&missing),
            gk_sdk::HostError::NotFound("config key `missing`".into()),
            "the host error travels with its detail"
        );
        let Reply::Error(empty) = &answered[&12] else {
            panic!("{:?}", answered[&12]);
        };
        assert_eq!(empty.code, Code::InvalidArgument as i32);

        calls
            .send(pb::HostCall::with_id(13, cache_get("k")))
            .await
            .unwrap();
        let reply = replies.message().await.unwrap().unwrap();
        assert_eq!(reply.id, 13);
        assert_eq!(
            reply.reply,
            Some(Reply::CacheGet(pb::CacheGetResponse {
                found: true,
                value: b"v".to_vec()
            }))
        );
        let reached = host.reached();
        assert!(
            reached.iter().all(|r| r.ctx.plugin == "p"),
            "every call is the plugin's own: {reached:?}"
        );
        assert_eq!(
            reached.iter().map(|r| r.function).collect::<Vec<_>>(),
            ["cache_set", "config_get", "cache_get"]
        );

        drop(calls);
        assert!(
            replies.message().await.unwrap().is_none(),
            "the host ends the stream when the plugin does"
        );
    }

    #[tokio::test]
    async fn a_call_the_plugin_gives_up_is_stopped_in_the_host() {
        let held =
            RecordingHost::wrapping(Arc::new(MemoryHost::default())).holding_cache_key("slow");
        let (mut client, host, _dir) = served_with(1 << 20, held).await;
        let (calls, mut replies) = open(&mut client, "t").await.unwrap();
        calls
            .send(pb::HostCall::with_id(1, cache_get("slow")))
            .await
            .unwrap();
        let reached = std::time::Instant::now();
        while host.count() == 0 && reached.elapsed() < std::time::Duration::from_secs(5) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(host.count(), 1, "the held call reached the host");
        assert_eq!(host.given_up(), 0);
        calls.send(pb::HostCall::cancel(1).unwrap()).await.unwrap();
        // The stream goes on: the next call is answered, and it is the only answer.
        calls
            .send(pb::HostCall::with_id(2, cache_get("k")))
            .await
            .unwrap();
        let reply = replies.message().await.unwrap().unwrap();
        assert_eq!(reply.id, 2);
        let cancelled = std::time::Instant::now();
        while host.given_up() == 0 && cancelled.elapsed() < std::time::Duration::from_secs(5) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(
            host.given_up(),
            1,
            "the cancelled call was stopped in the host"
        );
    }

    #[tokio::test]
    async fn more_calls_than_run_at_once_are_all_answered() {
        let (mut client, host, _dir) = served(1 << 20).await;
        let (calls, mut replies) = open(&mut client, "t").await.unwrap();
        let count = HOST_CALLS_AT_ONCE as u64 * 2 + 7;
        let sending = tokio::spawn(async move {
            for id in 0..count {
                calls
                    .send(pb::HostCall::with_id(id, cache_get(&format!("key{id}"))))
                    .await
                    .unwrap();
            }
            calls
        });
        let mut ids = Vec::new();
        for _ in 0..count {
            ids.push(replies.message().await.unwrap().unwrap().id);
        }
        ids.sort_unstable();
        assert_eq!(ids, (0..count).collect::<Vec<_>>());
        assert_eq!(host.count() as u64, count);
        drop(sending.await.unwrap());
    }

    #[tokio::test]
    async fn the_host_ends_its_streams_when_its_server_stops() {
        let host = RecordingHost::wrapping(Arc::new(MemoryHost::default()));
        let Served {
            mut client,
            stop,
            server,
            dir: _dir,
            ..
        } = serving(1 << 20, host).await;
        let (calls, mut replies) = open(&mut client, "t").await.unwrap();
        calls
            .send(pb::HostCall::with_id(1, cache_get("k")))
            .await
            .unwrap();
        assert_eq!(replies.message().await.unwrap().unwrap().id, 1);

        stop.notify_one();
        // The plugin keeps its side open (`calls` lives): the host ends the stream anyway, and
        // its server's graceful stop does not wait for the plugin.
        let wait = std::time::Duration::from_secs(5);
        let ended = tokio::time::timeout(wait, replies.message())
            .await
            .expect("the stream ends when the server stops");
        assert!(matches!(ended, Ok(None)), "{ended:?}");
        tokio::time::timeout(wait, server)
            .await
            .expect("the server stops")
            .unwrap();
        drop(calls);
    }

    #[tokio::test]
    async fn a_wrong_token_opens_no_stream_and_an_oversized_message_ends_it() {
        let (mut client, host, _dir) = served(1_024).await;
        let refused = open(&mut client, "not-t").await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);

        let (calls, mut replies) = open(&mut client, "t").await.unwrap();
        calls
            .send(pb::HostCall::with_id(1, cache_get(&"x".repeat(2_000))))
            .await
            .unwrap();
        let ended = replies.message().await.unwrap_err();
        assert_eq!(ended.code(), Code::OutOfRange, "{ended:?}");
        assert_eq!(host.count(), 0, "nothing reached the host");
    }
}
