//! `serve()`: runs a [`Plugin`] as a gRPC plugin process. The author writes no gRPC code.
//!
//! ```no_run
//! # use gk_sdk::{CallContext, GkRegistration, HostApi, Plugin, PluginError};
//! # use std::sync::Arc;
//! struct Hello;
//!
//! #[async_trait::async_trait]
//! impl Plugin for Hello {
//!     async fn register(&self) -> Result<GkRegistration, PluginError> {
//!         Ok(GkRegistration { name: "hello".into(), version: "0.1.0".into(), ..Default::default() })
//!     }
//!     async fn init(&self, _: &CallContext, _host: Arc<dyn HostApi>) -> Result<(), PluginError> {
//!         Ok(())
//!     }
//!     async fn call(&self, _: &CallContext, _function: &str, _args: &[u8]) -> Result<Vec<u8>, PluginError> {
//!         Ok(br#"{"message":"hello"}"#.to_vec())
//!     }
//!     async fn shutdown(&self, _: &CallContext) -> Result<(), PluginError> {
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), gk_sdk::ServeError> {
//!     gk_sdk::serve(Hello).await
//! }
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{Notify, watch};
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::call_stream::{PLUGIN_CALLS_AT_ONCE, PluginCall, ReceiverStream, answer_calls};
use crate::handshake::{
    DEFAULT_MAX_MESSAGE_BYTES, HEALTH_SERVICE, HOST_SOCKET_ENV, HOST_TOKEN_ENV,
    INIT_MAX_MESSAGE_BYTES, MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE, handshake_line,
};
use crate::proto::pb::plugin_service_server::{PluginService, PluginServiceServer};
use crate::proto::{host_error_to_status, pb};
use crate::{CallContext, Plugin, PluginError};

mod grpc_host;
use grpc_host::GrpcHost;

/// Why a plugin process could not serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The environment lacks what the host sets.
    #[error("{0}")]
    Environment(String),
    /// The socket or the server failed.
    #[error("the plugin's gRPC server failed: {0}")]
    Server(String),
}

/// Serves `plugin` to the host that started this process, until the host shuts it down.
///
/// Started by hand (without the host's environment), it prints that this is a plugin and
/// exits with status 1.
pub async fn serve<P: Plugin + 'static>(plugin: P) -> Result<(), ServeError> {
    if std::env::var(MAGIC_COOKIE_KEY).ok().as_deref() != Some(MAGIC_COOKIE_VALUE) {
        eprintln!(
            "This is a GoatKit plugin: it is started by the GoatKit host, not by hand.\n\
             Put it (with its plugin.yaml) in the host's plugins directory and run `gk serve`."
        );
        std::process::exit(1);
    }
    let host_socket = std::env::var(HOST_SOCKET_ENV)
        .map_err(|_| ServeError::Environment(format!("{HOST_SOCKET_ENV} is not set")))?;
    let token = std::env::var(HOST_TOKEN_ENV)
        .map_err(|_| ServeError::Environment(format!("{HOST_TOKEN_ENV} is not set")))?;

    let dir = std::env::temp_dir().join(format!("gk-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| ServeError::Server(format!("cannot create {}: {e}", dir.display())))?;
    let socket = dir.join("plugin.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .map_err(|e| ServeError::Server(format!("cannot listen on {}: {e}", socket.display())))?;

    // The connection back to the host is made while the host connects to this process and
    // registers it (an `Init` with the default message cap takes it; another cap connects anew).
    let early_host = {
        let (socket, token) = (host_socket.clone(), token.clone());
        tokio::spawn(
            async move { GrpcHost::connect(&socket, &token, DEFAULT_MAX_MESSAGE_BYTES).await },
        )
    };
    let stop = Arc::new(Notify::new());
    let stopping = Arc::new(watch::channel(false).0);
    let service = PluginServer {
        plugin: Arc::new(plugin),
        host_socket,
        token,
        early_host: std::sync::Mutex::new(Some(early_host)),
        stop: stop.clone(),
        stopping: stopping.clone(),
        max_message_bytes: Arc::new(AtomicUsize::new(DEFAULT_MAX_MESSAGE_BYTES)),
        initialised: OnceLock::new(),
    };
    let health = tonic_health::pb::health_server::HealthServer::new(StandardHealth {
        plugin: service.plugin.clone(),
    });

    println!("{}", handshake_line(&socket.to_string_lossy()));
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let stopped = async move {
        tokio::select! {
            () = stop.notified() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        // The host's `Calls` streams end once their calls have answered, so that the graceful
        // shutdown below is not held up by them.
        stopping.send_replace(true);
    };
    let result = Server::builder()
        .add_service(health)
        .add_service(PluginServiceServer::new(service))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            stopped,
        )
        .await;
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_dir(&dir);
    result.map_err(|e| ServeError::Server(e.to_string()))
}

/// The standard `grpc.health.v1` service, answering for service `plugin` (and the server as a
/// whole, `""`) from the plugin's own [`Plugin::health`].
struct StandardHealth<P> {
    plugin: Arc<P>,
}

#[tonic::async_trait]
impl<P: Plugin + 'static> tonic_health::pb::health_server::Health for StandardHealth<P> {
    async fn check(
        &self,
        request: Request<tonic_health::pb::HealthCheckRequest>,
    ) -> Result<Response<tonic_health::pb::HealthCheckResponse>, Status> {
        use tonic_health::pb::health_check_response::ServingStatus;
        let service = request.into_inner().service;
        if !service.is_empty() && service != HEALTH_SERVICE {
            return Err(Status::not_found(format!("no service `{service}`")));
        }
        let status = if self.plugin.health().await.is_ok() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        Ok(Response::new(tonic_health::pb::HealthCheckResponse {
            status: status as i32,
        }))
    }

    type WatchStream = std::pin::Pin<
        Box<
            dyn tokio_stream::Stream<Item = Result<tonic_health::pb::HealthCheckResponse, Status>>
                + Send,
        >,
    >;

    async fn watch(
        &self,
        _request: Request<tonic_health::pb::HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("use Check"))
    }
}

struct PluginServer<P> {
    plugin: Arc<P>,
    host_socket: String,
    token: String,
    stop: Arc<Notify>,
    /// Set when the server stops: the host's `Calls` streams end.
    stopping: Arc<watch::Sender<bool>>,
    /// The host's message cap (`Init` says it): results over it are refused one by one.
    max_message_bytes: Arc<AtomicUsize>,
    /// The connection to the host made at start, with the default message cap; the first
    /// `Init` takes it.
    early_host: std::sync::Mutex<Option<tokio::task::JoinHandle<Result<GrpcHost, String>>>>,
    initialised: OnceLock<()>,
}

fn context(ctx: Option<pb::CallContext>) -> CallContext {
    ctx.map(CallContext::from).unwrap_or_default()
}

/// A plugin error as a gRPC status: a host error the plugin passes on keeps its kind (as a
/// `google.rpc.Status` with the `HostErrorDetail`, which the host decodes); anything else is
/// `INTERNAL` with the message.
fn plugin_status(error: PluginError) -> Status {
    match error {
        PluginError::Host(host) => host_error_to_status(&host),
        // Listed one by one so that a new variant must be mapped before this compiles.
        error @ (PluginError::UnknownFunction(_)
        | PluginError::Failed { .. }
        | PluginError::Timeout { .. }
        | PluginError::Crashed(_)
        | PluginError::Trap(_)
        | PluginError::Protocol(_)
        | PluginError::Unavailable(_)) => Status::internal(error.to_string()),
    }
}

/// One `Call`, unary or streamed: the function's result, a failure it reports, or, for a host
/// error it passes on (rate limited, denied…), that error's status with its detail, so the host
/// answers it as what it is (e.g. HTTP 429).
async fn answer_call<P: Plugin>(
    plugin: &P,
    request: pb::CallRequest,
) -> Result<pb::CallResponse, Status> {
    let ctx = context(request.context);
    match plugin
        .call(&ctx, &request.function, &request.args_json)
        .await
    {
        Ok(result) => Ok(pb::CallResponse {
            result_json: result,
            failure: None,
        }),
        Err(PluginError::Host(host)) => Err(host_error_to_status(&host)),
        Err(error) => Ok(pb::CallResponse {
            result_json: Vec::new(),
            failure: Some(pb::Failure::from(&error)),
        }),
    }
}

#[tonic::async_trait]
impl<P: Plugin + 'static> PluginService for PluginServer<P> {
    async fn register(
        &self,
        _: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let registration = self.plugin.register().await.map_err(plugin_status)?;
        Ok(Response::new(pb::RegisterResponse {
            registration: Some(pb::Registration::from(&registration)),
        }))
    }

    async fn init(
        &self,
        request: Request<pb::InitRequest>,
    ) -> Result<Response<pb::InitResponse>, Status> {
        let request = request.into_inner();
        let ctx = context(request.context);
        if let Some(cap) = request
            .config
            .get(INIT_MAX_MESSAGE_BYTES)
            .and_then(|cap| cap.parse::<usize>().ok())
        {
            self.max_message_bytes.store(cap, Ordering::Relaxed);
        }
        let cap = self.max_message_bytes.load(Ordering::Relaxed);
        let early = self
            .early_host
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let early = match early {
            Some(connecting) if cap == DEFAULT_MAX_MESSAGE_BYTES => connecting.await.ok(),
            Some(connecting) => {
                connecting.abort();
                None
            }
            None => None,
        };
        // A connection made early that failed is made again now (with the error of this one).
        let host = match early {
            Some(Ok(host)) => host,
            _ => GrpcHost::connect(&self.host_socket, &self.token, cap)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?,
        };
        self.plugin
            .init(&ctx, Arc::new(host))
            .await
            .map_err(plugin_status)?;
        let _ = self.initialised.set(());
        Ok(Response::new(pb::InitResponse {}))
    }

    async fn call(
        &self,
        request: Request<pb::CallRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        answer_call(&*self.plugin, request.into_inner())
            .await
            .map(Response::new)
    }

    type CallsStream = ReceiverStream<Result<pb::StreamedResult, Status>>;

    async fn calls(
        &self,
        request: Request<tonic::Streaming<pb::StreamedCall>>,
    ) -> Result<Response<Self::CallsStream>, Status> {
        let plugin = self.plugin.clone();
        let mut stopping = self.stopping.subscribe();
        let stopped = async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        };
        let answering = answer_calls(
            request.into_inner(),
            PLUGIN_CALLS_AT_ONCE,
            self.max_message_bytes.clone(),
            move |(call, timeout_ms): PluginCall| {
                let plugin = plugin.clone();
                async move {
                    let answering = answer_call(&*plugin, call);
                    if timeout_ms == 0 {
                        return answering.await;
                    }
                    tokio::time::timeout(Duration::from_millis(timeout_ms), answering)
                        .await
                        .unwrap_or_else(|_| {
                            Err(Status::deadline_exceeded("the call's time budget ran out"))
                        })
                }
            },
            stopped,
        );
        Ok(Response::new(answering))
    }

    async fn shutdown(
        &self,
        request: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        let ctx = context(request.into_inner().context);
        let outcome = self.plugin.shutdown(&ctx).await;
        // Answer first, then stop serving (the `Calls` streams end now: no call follows Shutdown).
        self.stopping.send_replace(true);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stop.notify_one();
        });
        outcome.map_err(plugin_status)?;
        Ok(Response::new(pb::ShutdownResponse {}))
    }

    async fn health(
        &self,
        _: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let healthy = self.plugin.health().await;
        Ok(Response::new(pb::HealthResponse {
            healthy: healthy.is_ok(),
            message: healthy.err().map(|e| e.to_string()).unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests;
