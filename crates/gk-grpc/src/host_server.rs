//! The `HostService` a plugin process calls back into: one server per plugin, on its own socket,
//! answering only requests that carry the plugin's token (checked once, by [`TokenCheck`], an
//! interceptor in front of every method), each passed to the plugin's sandboxed host with the
//! plugin's own identity.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use gk_sdk::handshake::TOKEN_METADATA;
use gk_sdk::proto::pb::host_service_server::{HostService, HostServiceServer};
use gk_sdk::proto::{host_error_to_status, pb};
use gk_sdk::{
    CallContext, Email, HostApi, HostError, HttpRequest, LogLevel, MAX_CALL_DEPTH, PluginError,
    TranslateArgs,
};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

/// Output lines a plugin prints before it is initialised that are kept for its log.
const EARLY_LINES: usize = 1_000;

/// What a process printed before the plugin had a host to log to.
#[derive(Debug, Default)]
struct Early {
    lines: VecDeque<(LogLevel, String)>,
    dropped: usize,
}

/// How many of a plugin's calls are in flight at each depth (0 to [`MAX_CALL_DEPTH`]; a deeper
/// one counts as the deepest): a host call is as deep as the deepest of them, found without a
/// lock on every host call.
#[derive(Debug, Default)]
pub(crate) struct CallDepths([AtomicU32; MAX_CALL_DEPTH as usize + 1]);

impl CallDepths {
    /// Counts a call at `depth` in flight until the guard is dropped (however the call ends).
    pub(crate) fn enter(&self, depth: u32) -> InFlight<'_> {
        let slot = &self.0[(depth as usize).min(MAX_CALL_DEPTH as usize)];
        slot.fetch_add(1, Ordering::AcqRel);
        InFlight { slot }
    }

    /// The depth of the deepest call in flight (0 when none is).
    pub(crate) fn deepest(&self) -> u32 {
        self.0
            .iter()
            .rposition(|count| count.load(Ordering::Acquire) > 0)
            .map_or(0, |depth| depth as u32)
    }
}

/// A call counted in [`CallDepths`] while it lives.
pub(crate) struct InFlight<'a> {
    slot: &'a AtomicU32,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.slot.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the host service knows about its plugin.
pub(crate) struct HostSide {
    pub(crate) plugin: String,
    pub(crate) token: String,
    /// The sandboxed host, set by `init`.
    pub(crate) host: OnceLock<Arc<dyn HostApi>>,
    /// How many of the plugin's calls are in flight at each depth.
    pub(crate) depths: CallDepths,
    /// Output printed before `init` (after the handshake, during `Register`), written to the
    /// plugin's log once it has a host; `None` from then on.
    early: Mutex<Option<Early>>,
}

impl HostSide {
    /// The host side of plugin `plugin`, whose calls must carry `token`.
    pub(crate) fn new(plugin: &str, token: &str) -> Self {
        Self {
            plugin: plugin.to_owned(),
            token: token.to_owned(),
            host: OnceLock::new(),
            depths: CallDepths::default(),
            early: Mutex::new(Some(Early::default())),
        }
    }

    /// Writes a line the process printed to the plugin's log, or keeps it (the newest
    /// [`EARLY_LINES`]) until the plugin is initialised.
    pub(crate) async fn output(&self, level: LogLevel, line: String) {
        let host = {
            let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
            match early.as_mut() {
                Some(early) => {
                    tracing::info!(plugin = %self.plugin, stream = %level, "{line}");
                    if early.lines.len() == EARLY_LINES {
                        early.lines.pop_front();
                        early.dropped += 1;
                    }
                    early.lines.push_back((level, line));
                    return;
                }
                None => self.host.get().cloned(),
            }
        };
        if let Some(host) = host {
            let ctx = CallContext::for_plugin(self.plugin.clone());
            let _ = host.log(&ctx, level, &line, &Map::new()).await;
        }
    }

    /// Sets the plugin's host (once) and writes what the process printed until now to its log.
    pub(crate) async fn set_host(&self, host: Arc<dyn HostApi>) -> Result<(), PluginError> {
        self.host
            .set(host.clone())
            .map_err(|_| PluginError::Unavailable("the plugin was initialised already".into()))?;
        let early = self
            .early
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        let ctx = CallContext::for_plugin(self.plugin.clone());
        if early.dropped > 0 {
            let message = format!(
                "{} earlier output lines were dropped (only the last {EARLY_LINES} printed before \
                 init are kept)",
                early.dropped
            );
            let _ = host.log(&ctx, LogLevel::Warn, &message, &Map::new()).await;
        }
        for (level, line) in early.lines {
            let _ = host.log(&ctx, level, &line, &Map::new()).await;
        }
        Ok(())
    }
}

/// Serves the `HostService` of `side` on `listener` until `stop` is notified. Messages over
/// `max_message_bytes` either way are refused (`OUT_OF_RANGE`, saying the size and the limit).
pub(crate) async fn serve_host(
    side: Arc<HostSide>,
    listener: tokio::net::UnixListener,
    max_message_bytes: usize,
    stop: Arc<tokio::sync::Notify>,
) {
    let (stopping, stopping_seen) = tokio::sync::watch::channel(false);
    let service = HostServiceServer::new(HostServer {
        side: side.clone(),
        max_message_bytes,
        stopping: stopping_seen,
    })
    .max_decoding_message_size(max_message_bytes)
    .max_encoding_message_size(max_message_bytes);
    let served = tonic::transport::Server::builder()
        .add_service(InterceptedService::new(
            service,
            TokenCheck { side: side.clone() },
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            async move {
                stop.notified().await;
                stopping.send_replace(true);
            },
        )
        .await;
    if let Err(error) = served {
        tracing::warn!(plugin = %side.plugin, %error, "the host service stopped");
    }
}

/// Refuses every request that does not carry the plugin's token (compared in constant time),
/// before any method sees it.
#[derive(Clone)]
pub(crate) struct TokenCheck {
    side: Arc<HostSide>,
}

impl Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let token = request
            .metadata()
            .get(TOKEN_METADATA)
            .map(|value| value.as_bytes())
            .unwrap_or_default();
        if bool::from(token.ct_eq(self.side.token.as_bytes())) {
            return Ok(request);
        }
        tracing::warn!(plugin = %self.side.plugin, "host call with a wrong token refused");
        Err(Status::unauthenticated(
            "this socket belongs to another plugin",
        ))
    }
}

/// The `HostService` of one plugin.
#[derive(Clone)]
pub(crate) struct HostServer {
    pub(crate) side: Arc<HostSide>,
    /// The message cap either way (an answer on the `Calls` stream over it fails alone).
    pub(crate) max_message_bytes: usize,
    /// Says `true` once the server stops: `Calls` streams take no more calls and end when the
    /// calls running have answered (so the server's graceful stop does not wait for the
    /// plugin to close them).
    pub(crate) stopping: tokio::sync::watch::Receiver<bool>,
}

impl HostServer {
    /// The plugin's host and the context of a call (its token was checked by [`TokenCheck`]):
    /// the plugin is this server's plugin whatever the request says, and the depth is the
    /// deepest of the plugin's calls in flight, so a plugin cannot reset its own call depth.
    fn admit(
        &self,
        sent: Option<&pb::CallContext>,
    ) -> Result<(Arc<dyn HostApi>, CallContext), Status> {
        let host =
            self.side.host.get().cloned().ok_or_else(|| {
                Status::failed_precondition("the plugin has not been initialised")
            })?;
        let depth = self.side.depths.deepest();
        let language = sent.map(|c| c.language.clone()).filter(|l| !l.is_empty());
        Ok((
            host,
            CallContext {
                plugin: self.side.plugin.clone(),
                caller: None,
                depth,
                language,
            },
        ))
    }
}

fn status(error: HostError) -> Status {
    host_error_to_status(&error)
}

fn json<T: serde::de::DeserializeOwned + Default>(bytes: &[u8], what: &str) -> Result<T, Status> {
    if bytes.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| status(HostError::InvalidInput(format!("{what}: {e}"))))
}

#[tonic::async_trait]
impl HostService for HostServer {
    async fn db_query(
        &self,
        request: Request<pb::DbQueryRequest>,
    ) -> Result<Response<pb::DbQueryResponse>, Status> {
        let (host, ctx) = self.admit(request.get_ref().context.as_ref())?;
        let message = request.into_inner();
        let args: Vec<Value> = json(&message.args_json, "args_json")?;
        let rows = host
            .db_query(&ctx, &message.query, &args)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DbQueryResponse {
            rows_json: serde_json::to_vec(&rows).unwrap_or_default(),
        }))
    }

    async fn db_exec(
        &self,
        request: Request<pb::DbExecRequest>,
    ) -> Result<Response<pb::DbExecResponse>, Status> {
        let (host, ctx) = self.admit(request.get_ref().context.as_ref())?;
        let message = request.into_inner();
        let args: Vec<Value> = json(&message.args_json, "args_json")?;
        let affected = host
            .db_exec(&ctx, &message.query, &args)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DbExecResponse { affected }))
    }

    async fn cache_get(
        &self,
        request: Request<pb::CacheGetRequest>,
    ) -> Result<Response<pb::CacheGetResponse>, Status> {
        let (host, ctx) = self.admit(request.get_ref().context.as_ref())?;
        let value = host
            .cache_get(&ctx, &request.get_ref().key)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CacheGetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }

    async fn cache_set(
        &self,
        request: Request<pb::CacheSetRequest>,
    ) -> Result<Response<pb::CacheSetResponse>, Status> {
        let (host, ctx) = self.admit(request.get_ref().context.as_ref())?;
        let m = request.into_inner();
        host.cache_set(&ctx, &m.key, &m.value, Duration::from_secs(m.ttl_seconds))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CacheSetResponse {}))
    }

    async fn cache_delete(
        &self,
        request: Request<pb::CacheDeleteRequest>,
    ) -> Result<Response<pb::CacheDeleteResponse>, Status> {
        let (host, ctx) = self.admit(request.get_ref().context.as_ref())?;
        host.cache_delete(&ctx, &request.get_ref().key)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CacheDeleteResponse {}))
    }

    async fn http_request(
        &self,
        request: Request<pb::OutboundHttpRequest>,
    ) -> Result<Response<pb::OutboundHttpResponse>, Status> {
        let (host, ctx) = self.admit(request.get_ref().context.as_ref())?;
        let m = request.into_inner();
        let outgoing = HttpRequest {
            method: m.method,
            url: m.url,
            headers: m.headers.into_iter().collect(),
            body: m.body,
            internal_allowed: false,
        };
        let response = host.http_request(&ctx, outgoing).await.map_err(status)?;
        Ok(Response::new(pb::OutboundHttpResponse {
            status: u32::from(response.status),
            headers: response.headers.into_iter().collect(),
            body: response.body,
        }))
    }

    async fn send_email(
        &self,
        request: Request<pb::SendEmailRequest>,
    ) -> Result<Response<pb::SendEmailResponse>, Status> {
        let (host, ctx) = self.admit(request.get_ref().context.as_ref())?;
        let m = request.into_inner();
        host.send_email(
            &ctx,
            Email {
                to: m.to,
                subject: m.subject,
                body: m.body,
                html: m.html,
            },
        )
        .await
        .map_err(status)?;
        Ok(Response::new(pb::SendEmailResponse {}))
    }

    async fn log(
        &self,
        request: Request<pb::LogRequest>,
    ) -> Result<Response<pb::LogResponse>, Status> {
        let (host, ctx) = self.admit(request.get_ref().context.as_ref())?;
        let m = request.into_inner();
        let fields: Map<String, Value> = json(&m.fields_json, "fields_json")?;
        let level = LogLevel::from(pb::LogLevel::try_from(m.level).unwrap_or(pb::LogLevel::Info));
        host.log(&ctx, level, &m.message, &fields)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::LogResponse {}))
    }

    async fn config_get(
        &self,
        request: Request<pb::ConfigGetRequest>,
    ) -> Result<Response<pb::ConfigGetResponse>, Status> {
        let (host, ctx) = self.admit(request.get_ref().context.as_ref())?;
        let value = host
            .config_get(&ctx, &request.get_ref().key)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ConfigGetResponse { value }))
    }

    async fn translate(
        &self,
        request: Request<pb::TranslateRequest>,
    ) -> Result<Response<pb::TranslateResponse>, Status> {
        let (host, ctx) = self.admit(request.get_ref().context.as_ref())?;
        let m = request.into_inner();
        let args: Value = json(&m.args_json, "args_json")?;
        let value = host
            .translate(&ctx, &m.key, &TranslateArgs::from_json(args))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::TranslateResponse { value }))
    }

    async fn call_plugin(
        &self,
        request: Request<pb::CallPluginRequest>,
    ) -> Result<Response<pb::CallPluginResponse>, Status> {
        let (host, ctx) = self.admit(request.get_ref().context.as_ref())?;
        let m = request.into_inner();
        let result = host
            .call_plugin(&ctx, &m.plugin, &m.function, &m.args_json)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CallPluginResponse {
            result_json: result,
        }))
    }

    type CallsStream = crate::host_stream::ReplyStream;

    async fn calls(
        &self,
        request: Request<tonic::Streaming<pb::HostCall>>,
    ) -> Result<Response<Self::CallsStream>, Status> {
        let mut stopping = self.stopping.clone();
        let stopped = async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        };
        Ok(Response::new(crate::host_stream::answer_stream(
            self.clone(),
            self.max_message_bytes,
            request.into_inner(),
            stopped,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gk_sdk::proto::pb::host_service_client::HostServiceClient;
    use gk_sdk::testing::MemoryHost;

    #[test]
    fn a_host_call_is_as_deep_as_the_deepest_call_in_flight() {
        let depths = CallDepths::default();
        assert_eq!(depths.deepest(), 0);
        let outer = depths.enter(1);
        let inner = depths.enter(3);
        let same = depths.enter(3);
        assert_eq!(depths.deepest(), 3);
        drop(inner);
        assert_eq!(depths.deepest(), 3, "another call at 3 is still in flight");
        drop(same);
        assert_eq!(depths.deepest(), 1);
        let beyond = depths.enter(MAX_CALL_DEPTH + 5);
        assert_eq!(
            depths.deepest(),
            MAX_CALL_DEPTH,
            "deeper counts as the deepest"
        );
        drop(beyond);
        drop(outer);
        assert_eq!(depths.deepest(), 0);
    }

    #[tokio::test]
    async fn output_before_init_reaches_the_plugin_log_in_order_and_bounded() {
        let side = HostSide::new("p", "t");
        side.output(LogLevel::Warn, "dropped".into()).await;
        for n in 0..EARLY_LINES {
            side.output(LogLevel::Info, format!("early {n}")).await;
        }
        let host = Arc::new(MemoryHost::default());
        side.set_host(host.clone()).await.unwrap();
        side.output(LogLevel::Warn, "after init".into()).await;

        let lines = host.log_lines();
        assert!(
            lines.iter().all(|(plugin, _, _)| plugin == "p"),
            "a line is logged as the plugin's"
        );
        let logged: Vec<(LogLevel, String)> = lines
            .into_iter()
            .map(|(_, level, message)| (level, message))
            .collect();
        assert_eq!(logged.len(), EARLY_LINES + 2);
        assert_eq!(logged[0].0, LogLevel::Warn);
        assert!(
            logged[0]
                .1
                .starts_with("1 earlier output lines were dropped"),
            "{}",
            logged[0].1
        );
        assert_eq!(logged[1], (LogLevel::Info, "early 0".to_owned()));
        assert_eq!(
            logged[EARLY_LINES],
            (LogLevel::Info, format!("early {}", EARLY_LINES - 1))
        );
        assert_eq!(
            logged[EARLY_LINES + 1],
            (LogLevel::Warn, "after init".to_owned())
        );
        assert!(
            side.set_host(host.clone()).await.is_err(),
            "a plugin is initialised once"
        );
    }

    #[tokio::test]
    async fn host_calls_over_the_size_cap_are_refused_with_the_size_and_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("host.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let side = Arc::new(HostSide::new("p", "t"));
        let _ = side.host.set(Arc::new(gk_sdk::NoopHost));
        let stop = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(serve_host(side, listener, 1_024, stop.clone()));
        let channel = gk_sdk::unix_channel::UnixChannel::connect(&socket)
            .await
            .unwrap();
        let mut client =
            HostServiceClient::with_origin(channel, gk_sdk::unix_channel::UnixChannel::origin());
        let request = |size: usize| {
            let mut request = Request::new(pb::CacheSetRequest {
                context: None,
                key: "k".into(),
                value: vec![0; size],
                ttl_seconds: 0,
            });
            request
                .metadata_mut()
                .insert(TOKEN_METADATA, "t".parse().unwrap());
            request
        };
        client.cache_set(request(100)).await.unwrap();
        let status = client.cache_set(request(2_000)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
        assert!(
            status.message().contains("message length too large")
                && status.message().contains("1024"),
            "{}",
            status.message()
        );
        client.cache_set(request(100)).await.unwrap();
        stop.notify_one();
    }
}
