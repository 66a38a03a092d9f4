//! The host as a plugin process sees it: a gRPC client of the `HostService` (what `init` hands
//! the plugin). Calls travel on the `Calls` stream the client opens at start, and again after
//! it ends (one message each way per call), or as unary calls when the host has no such stream,
//! when a call's message is large ([`STREAM_MESSAGE_BYTES`]), or while the stream opens again.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tonic::{Request, Status};

use crate::call_stream::{
    CallStream, HOST_CALLS_AT_ONCE, NotSent, ReopeningStream, STREAM_MESSAGE_BYTES,
};
use crate::handshake::TOKEN_METADATA;
use crate::proto::pb::host_call::Call;
use crate::proto::pb::host_reply::Reply;
use crate::proto::pb::host_service_client::HostServiceClient;
use crate::proto::{pb, status_to_host_error};
use crate::unix_channel::UnixChannel;
use crate::{
    CallContext, Email, HostApi, HostError, HostResult, HttpRequest, HttpResponse, LogLevel, Row,
    TranslateArgs,
};

/// The host, as a gRPC client of its `HostService`.
#[derive(Clone)]
pub(super) struct GrpcHost {
    client: HostServiceClient<UnixChannel>,
    token: tonic::metadata::AsciiMetadataValue,
    stream: Option<ReopeningStream<pb::HostCall, pb::HostReply>>,
}

impl GrpcHost {
    /// Connects to the host's socket and opens the `Calls` stream where the host serves it;
    /// `max_message_bytes` is the host's cap, up to which its answers are taken.
    pub(super) async fn connect(
        socket: &str,
        token: &str,
        max_message_bytes: usize,
    ) -> Result<Self, String> {
        let channel = UnixChannel::connect(socket)
            .await
            .map_err(|e| format!("cannot reach the host: {e}"))?;
        let token: tonic::metadata::AsciiMetadataValue = token
            .parse()
            .map_err(|_| "the host token is not valid metadata".to_owned())?;
        let client = HostServiceClient::with_origin(channel, UnixChannel::origin())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let stream = {
            let (client, token) = (client.clone(), token.clone());
            ReopeningStream::new("host calls", move || {
                let (mut client, token) = (client.clone(), token.clone());
                CallStream::open(HOST_CALLS_AT_ONCE, move |outgoing| {
                    let mut request = Request::new(outgoing);
                    request.metadata_mut().insert(TOKEN_METADATA, token);
                    async move { client.calls(request).await }
                })
            })
        };
        let served = stream
            .open_now()
            .await
            .map_err(|status| format!("the host refused the call stream: {status}"))?;
        Ok(Self {
            client,
            token,
            stream: served.then_some(stream),
        })
    }

    /// A host that makes every call as a unary call (the form plugins in other languages use).
    #[cfg(test)]
    pub(super) fn without_stream(&self) -> Self {
        Self {
            stream: None,
            ..self.clone()
        }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(TOKEN_METADATA, self.token.clone());
        request
    }

    /// Makes `call` on the stream, or as a unary call; a failed call is its status.
    async fn exchange(&self, call: Call) -> Result<Reply, HostError> {
        let call = match &self.stream {
            Some(stream) if call.encoded_len() <= STREAM_MESSAGE_BYTES => {
                match stream.call(call).await {
                    Ok(replied) => return replied.map_err(host_error),
                    Err(NotSent(call)) => call,
                }
            }
            _ => call,
        };
        self.unary(call).await.map_err(host_error)
    }

    /// `call` as its unary method.
    async fn unary(&self, call: Call) -> Result<Reply, Status> {
        let mut client = self.client.clone();
        Ok(match call {
            Call::DbQuery(m) => {
                Reply::DbQuery(client.db_query(self.request(m)).await?.into_inner())
            }
            Call::DbExec(m) => Reply::DbExec(client.db_exec(self.request(m)).await?.into_inner()),
            Call::CacheGet(m) => {
                Reply::CacheGet(client.cache_get(self.request(m)).await?.into_inner())
            }
            Call::CacheSet(m) => {
                Reply::CacheSet(client.cache_set(self.request(m)).await?.into_inner())
            }
            Call::CacheDelete(m) => {
                Reply::CacheDelete(client.cache_delete(self.request(m)).await?.into_inner())
            }
            Call::HttpRequest(m) => {
                Reply::HttpRequest(client.http_request(self.request(m)).await?.into_inner())
            }
            Call::SendEmail(m) => {
                Reply::SendEmail(client.send_email(self.request(m)).await?.into_inner())
            }
            Call::Log(m) => Reply::Log(client.log(self.request(m)).await?.into_inner()),
            Call::ConfigGet(m) => {
                Reply::ConfigGet(client.config_get(self.request(m)).await?.into_inner())
            }
            Call::Translate(m) => {
                Reply::Translate(client.translate(self.request(m)).await?.into_inner())
            }
            Call::CallPlugin(m) => {
                Reply::CallPlugin(client.call_plugin(self.request(m)).await?.into_inner())
            }
        })
    }
}

fn host_error(status: Status) -> HostError {
    status_to_host_error(&status)
}

/// A reply of another method than the call's.
fn mismatched(method: &str) -> HostError {
    HostError::Backend(format!(
        "the host answered a `{method}` call with another method's reply"
    ))
}

fn json_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

#[async_trait]
impl HostApi for GrpcHost {
    async fn db_query(
        &self,
        ctx: &CallContext,
        query: &str,
        args: &[Value],
    ) -> HostResult<Vec<Row>> {
        let call = Call::DbQuery(pb::DbQueryRequest {
            context: Some(ctx.into()),
            query: query.to_owned(),
            args_json: json_bytes(&args),
        });
        let Reply::DbQuery(reply) = self.exchange(call).await? else {
            return Err(mismatched("db_query"));
        };
        serde_json::from_slice(&reply.rows_json)
            .map_err(|e| HostError::Backend(format!("unreadable rows: {e}")))
    }

    async fn db_exec(&self, ctx: &CallContext, query: &str, args: &[Value]) -> HostResult<u64> {
        let call = Call::DbExec(pb::DbExecRequest {
            context: Some(ctx.into()),
            query: query.to_owned(),
            args_json: json_bytes(&args),
        });
        let Reply::DbExec(reply) = self.exchange(call).await? else {
            return Err(mismatched("db_exec"));
        };
        Ok(reply.affected)
    }

    async fn cache_get(&self, ctx: &CallContext, key: &str) -> HostResult<Option<Vec<u8>>> {
        let call = Call::CacheGet(pb::CacheGetRequest {
            context: Some(ctx.into()),
            key: key.to_owned(),
        });
        let Reply::CacheGet(reply) = self.exchange(call).await? else {
            return Err(mismatched("cache_get"));
        };
        Ok(reply.found.then_some(reply.value))
    }

    async fn cache_set(
        &self,
        ctx: &CallContext,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> HostResult<()> {
        let call = Call::CacheSet(pb::CacheSetRequest {
            context: Some(ctx.into()),
            key: key.to_owned(),
            value: value.to_vec(),
            ttl_seconds: ttl.as_secs(),
        });
        let Reply::CacheSet(_) = self.exchange(call).await? else {
            return Err(mismatched("cache_set"));
        };
        Ok(())
    }

    async fn cache_delete(&self, ctx: &CallContext, key: &str) -> HostResult<()> {
        let call = Call::CacheDelete(pb::CacheDeleteRequest {
            context: Some(ctx.into()),
            key: key.to_owned(),
        });
        let Reply::CacheDelete(_) = self.exchange(call).await? else {
            return Err(mismatched("cache_delete"));
        };
        Ok(())
    }

    async fn http_request(
        &self,
        ctx: &CallContext,
        request: HttpRequest,
    ) -> HostResult<HttpResponse> {
        let call = Call::HttpRequest(pb::OutboundHttpRequest {
            context: Some(ctx.into()),
            method: request.method,
            url: request.url,
            headers: request.headers.into_iter().collect(),
            body: request.body,
        });
        let Reply::HttpRequest(reply) = self.exchange(call).await? else {
            return Err(mismatched("http_request"));
        };
        Ok(HttpResponse {
            status: u16::try_from(reply.status).unwrap_or(0),
            headers: reply.headers.into_iter().collect(),
            body: reply.body,
        })
    }

    async fn send_email(&self, ctx: &CallContext, email: Email) -> HostResult<()> {
        let call = Call::SendEmail(pb::SendEmailRequest {
            context: Some(ctx.into()),
            to: email.to,
            subject: email.subject,
            body: email.body,
            html: email.html,
        });
        let Reply::SendEmail(_) = self.exchange(call).await? else {
            return Err(mismatched("send_email"));
        };
        Ok(())
    }

    async fn log(
        &self,
        ctx: &CallContext,
        level: LogLevel,
        message: &str,
        fields: &Map<String, Value>,
    ) -> HostResult<()> {
        let call = Call::Log(pb::LogRequest {
            context: Some(ctx.into()),
            level: pb::LogLevel::from(level) as i32,
            message: message.to_owned(),
            fields_json: if fields.is_empty() {
                Vec::new()
            } else {
                json_bytes(fields)
            },
        });
        let Reply::Log(_) = self.exchange(call).await? else {
            return Err(mismatched("log"));
        };
        Ok(())
    }

    async fn config_get(&self, ctx: &CallContext, key: &str) -> HostResult<String> {
        let call = Call::ConfigGet(pb::ConfigGetRequest {
            context: Some(ctx.into()),
            key: key.to_owned(),
        });
        let Reply::ConfigGet(reply) = self.exchange(call).await? else {
            return Err(mismatched("config_get"));
        };
        Ok(reply.value)
    }

    async fn translate(
        &self,
        ctx: &CallContext,
        key: &str,
        args: &TranslateArgs,
    ) -> HostResult<String> {
        let args_json = match args {
            TranslateArgs::None => Vec::new(),
            other => json_bytes(&other.to_json()),
        };
        let call = Call::Translate(pb::TranslateRequest {
            context: Some(ctx.into()),
            key: key.to_owned(),
            args_json,
        });
        let Reply::Translate(reply) = self.exchange(call).await? else {
            return Err(mismatched("translate"));
        };
        Ok(reply.value)
    }

    async fn call_plugin(
        &self,
        ctx: &CallContext,
        plugin: &str,
        function: &str,
        args: &[u8],
    ) -> HostResult<Vec<u8>> {
        let call = Call::CallPlugin(pb::CallPluginRequest {
            context: Some(ctx.into()),
            plugin: plugin.to_owned(),
            function: function.to_owned(),
            args_json: args.to_vec(),
        });
        let Reply::CallPlugin(reply) = self.exchange(call).await? else {
            return Err(mismatched("call_plugin"));
        };
        Ok(reply.result_json)
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use tokio::sync::mpsc;
    use tokio_stream::Stream;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::{Response, Streaming};

    use super::*;
    use crate::proto::host_error_to_status;
    use crate::proto::pb::host_service_server::{HostService, HostServiceServer};

    /// A host service whose unary methods all fail with `unary <method>` (so a call that
    /// succeeds went on the stream), and whose `Calls` stream, when it serves one, answers
    /// `cache_get(key)` with the key as the value (keys starting `slow` after 50 ms, `end` by
    /// ending the stream, `liar` with an answer to a call never made) and `log` with a rate
    /// limit.
    struct StreamOnly {
        serves_stream: bool,
    }

    /// Calls of `cache_get("hold")` (never answered) that the client cancelled on the stream.
    static HELD_CANCELLED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn unary<T>(method: &str) -> Result<Response<T>, Status> {
        Err(Status::unavailable(format!("unary {method}")))
    }

    #[tonic::async_trait]
    impl HostService for StreamOnly {
        async fn db_query(
            &self,
            _: Request<pb::DbQueryRequest>,
        ) -> Result<Response<pb::DbQueryResponse>, Status> {
            unary("db_query")
        }
        async fn db_exec(
            &self,
            _: Request<pb::DbExecRequest>,
        ) -> Result<Response<pb::DbExecResponse>, Status> {
            unary("db_exec")
        }
        async fn cache_get(
            &self,
            _: Request<pb::CacheGetRequest>,
        ) -> Result<Response<pb::CacheGetResponse>, Status> {
            unary("cache_get")
        }
        async fn cache_set(
            &self,
            _: Request<pb::CacheSetRequest>,
        ) -> Result<Response<pb::CacheSetResponse>, Status> {
            unary("cache_set")
        }
        async fn cache_delete(
            &self,
            _: Request<pb::CacheDeleteRequest>,
        ) -> Result<Response<pb::CacheDeleteResponse>, Status> {
            unary("cache_delete")
        }
        async fn http_request(
            &self,
            _: Request<pb::OutboundHttpRequest>,
        ) -> Result<Response<pb::OutboundHttpResponse>, Status> {
            unary("http_request")
        }
        async fn send_email(
            &self,
            _: Request<pb::SendEmailRequest>,
        ) -> Result<Response<pb::SendEmailResponse>, Status> {
            unary("send_email")
        }
        async fn log(
            &self,
            _: Request<pb::LogRequest>,
        ) -> Result<Response<pb::LogResponse>, Status> {
            unary("log")
        }
        async fn config_get(
            &self,
            _: Request<pb::ConfigGetRequest>,
        ) -> Result<Response<pb::ConfigGetResponse>, Status> {
            unary("config_get")
        }
        async fn translate(
            &self,
            _: Request<pb::TranslateRequest>,
        ) -> Result<Response<pb::TranslateResponse>, Status> {
            unary("translate")
        }
        async fn call_plugin(
            &self,
            _: Request<pb::CallPluginRequest>,
        ) -> Result<Response<pb::CallPluginResponse>, Status> {
            unary("call_plugin")
        }

        type CallsStream = Pin<Box<dyn Stream<Item = Result<pb::HostReply, Status>> + Send>>;

        async fn calls(
            &self,
            request: Request<Streaming<pb::HostCall>>,
        ) -> Result<Response<Self::CallsStream>, Status> {
            if !self.serves_stream {
                return Err(Status::unimplemented("no Calls here"));
            }
            let mut inbound = request.into_inner();
            let (replies, outbound) = mpsc::channel(16);
            tokio::spawn(async move {
                let mut held = std::collections::HashSet::new();
                while let Ok(Some(call)) = inbound.message().await {
                    if call.cancel {
                        if held.remove(&call.id) {
                            HELD_CANCELLED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        continue;
                    }
                    let reply = match call.call {
                        Some(Call::CacheGet(m)) if m.key == "hold" => {
                            held.insert(call.id);
                            continue;
                        }
                        Some(Call::CacheGet(m)) if m.key == "liar" => {
                            let forged = pb::HostReply {
                                id: call.id + 1_000,
                                reply: Some(Reply::CacheGet(pb::CacheGetResponse::default())),
                            };
                            let _ = replies.send(Ok(forged)).await;
                            continue;
                        }
                        Some(Call::CacheGet(m)) if m.key == "end" => {
                            let _ = replies.send(Err(Status::unavailable("ended"))).await;
                            return;
                        }
                        Some(Call::CacheGet(m)) => Reply::CacheGet(pb::CacheGetResponse {
                            found: true,
                            value: m.key.clone().into_bytes(),
                        }),
                        Some(Call::Log(_)) => Reply::Error(pb::StreamStatus::from(
                            &host_error_to_status(&HostError::RateLimited {
                                limit: "max_log_lines_per_min".into(),
                                retry_after: Duration::from_secs(3),
                            }),
                        )),
                        _ => Reply::Error(pb::StreamStatus::from(&Status::unimplemented("-"))),
                    };
                    let slow = matches!(&reply, Reply::CacheGet(r) if r.value.starts_with(b"slow"));
                    let replies = replies.clone();
                    tokio::spawn(async move {
                        if slow {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        let _ = replies
                            .send(Ok(pb::HostReply {
                                id: call.id,
                                reply: Some(reply),
                            }))
                            .await;
                    });
                }
            });
            Ok(Response::new(Box::pin(ReceiverStream::new(outbound))))
        }
    }

    /// Serves `service` on a socket in `dir` and connects a [`GrpcHost`] to it.
    /// A client connected to a [`StreamOnly`] host that serves the `Calls` stream or not; the
    /// directory of its socket lives as long as the returned guard.
    async fn connected(serves_stream: bool) -> (GrpcHost, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let service = StreamOnly { serves_stream };
        let socket = dir.path().join("host.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(HostServiceServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );
        let host = GrpcHost::connect(&socket.to_string_lossy(), "t", 1 << 20)
            .await
            .unwrap();
        (host, dir)
    }

    fn ctx() -> CallContext {
        CallContext::for_plugin("p")
    }

    #[tokio::test]
    async fn calls_travel_on_the_stream_and_each_gets_its_own_reply() {
        let (host, _dir) = connected(true).await;
        let ctx = ctx();
        let (slow, fast) = tokio::join!(host.cache_get(&ctx, "slow one"), async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            host.cache_get(&ctx, "fast one").await
        });
        assert_eq!(slow.unwrap(), Some(b"slow one".to_vec()));
        assert_eq!(
            fast.unwrap(),
            Some(b"fast one".to_vec()),
            "the later call's reply came first"
        );
        assert_eq!(
            host.log(&ctx, LogLevel::Info, "m", &Map::new()).await,
            Err(HostError::RateLimited {
                limit: "max_log_lines_per_min".into(),
                retry_after: Duration::from_secs(3),
            }),
            "a host error keeps its kind on the stream"
        );
        let big = "x".repeat(STREAM_MESSAGE_BYTES + 1);
        assert_eq!(
            host.cache_set(&ctx, "k", big.as_bytes(), Duration::ZERO)
                .await,
            Err(HostError::Unavailable("unary cache_set".into())),
            "a large message goes unary"
        );
        assert_eq!(
            host.without_stream().cache_get(&ctx, "k").await,
            Err(HostError::Unavailable("unary cache_get".into()))
        );
    }

    #[tokio::test]
    async fn a_host_call_given_up_is_cancelled_on_the_stream() {
        let (host, _dir) = connected(true).await;
        let before = HELD_CANCELLED.load(std::sync::atomic::Ordering::SeqCst);
        let given_up =
            tokio::time::timeout(Duration::from_millis(100), host.cache_get(&ctx(), "hold")).await;
        assert!(given_up.is_err(), "the host never answers it");
        let waited = std::time::Instant::now();
        while HELD_CANCELLED.load(std::sync::atomic::Ordering::SeqCst) == before
            && waited.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            HELD_CANCELLED.load(std::sync::atomic::Ordering::SeqCst),
            before + 1,
            "the host was told to stop it"
        );
    }

    #[tokio::test]
    async fn calls_go_unary_without_the_stream_and_after_it_ended() {
        let (host, _dir) = connected(false).await;
        assert!(host.stream.is_none(), "UNIMPLEMENTED means no stream");
        assert_eq!(
            host.cache_get(&ctx(), "k").await,
            Err(HostError::Unavailable("unary cache_get".into()))
        );

        let (host, _dir) = connected(true).await;
        let lied_to = host.cache_get(&ctx(), "liar").await.unwrap_err();
        assert!(
            matches!(&lied_to, HostError::Backend(m) if m.contains("never made")),
            "an answer to a call never made ends the stream: {lied_to:?}"
        );
        assert_eq!(
            host.cache_get(&ctx(), "k").await,
            Err(HostError::Unavailable("unary cache_get".into())),
            "and the next call goes unary (while the stream opens again)"
        );

        let (host, _dir) = connected(true).await;
        assert_eq!(
            host.cache_get(&ctx(), "end").await,
            Err(HostError::Unavailable("ended".into())),
            "a call waiting when the stream ends fails with the reason"
        );
        assert_eq!(
            host.cache_get(&ctx(), "k").await,
            Err(HostError::Unavailable("unary cache_get".into())),
            "later calls go unary"
        );
    }
}
