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

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::Notify;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::handshake::{
    HEALTH_SERVICE, HOST_SOCKET_ENV, HOST_TOKEN_ENV, MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE,
    handshake_line,
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

    let stop = Arc::new(Notify::new());
    let service = PluginServer {
        plugin: Arc::new(plugin),
        host_socket,
        token,
        stop: stop.clone(),
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
        let ctx = context(request.into_inner().context);
        let host = GrpcHost::connect(&self.host_socket, &self.token)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
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
        let request = request.into_inner();
        let ctx = context(request.context);
        match self
            .plugin
            .call(&ctx, &request.function, &request.args_json)
            .await
        {
            Ok(result) => Ok(Response::new(pb::CallResponse {
                result_json: result,
                failure: None,
            })),
            // A host error the function passed on (rate limited, denied…) travels as a status
            // with its detail, so the host answers it as what it is (e.g. HTTP 429).
            Err(PluginError::Host(host)) => Err(host_error_to_status(&host)),
            Err(error) => Ok(Response::new(pb::CallResponse {
                result_json: Vec::new(),
                failure: Some(pb::Failure::from(&error)),
            })),
        }
    }

    async fn shutdown(
        &self,
        request: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        let ctx = context(request.into_inner().context);
        let outcome = self.plugin.shutdown(&ctx).await;
        // Answer first, then stop serving.
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
