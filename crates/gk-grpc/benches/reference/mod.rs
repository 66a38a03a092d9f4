//! The reference the runtime is measured against: a bare tonic parent and child over Unix
//! sockets, built from the project's own proto, doing what the runtime's calls do and nothing
//! else (no isolation, no token, no supervision, no limits). The child is this bench binary run
//! again with [`CHILD_SOCKET`] set.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gk_sdk::proto::pb;
use gk_sdk::proto::pb::host_service_client::HostServiceClient;
use gk_sdk::proto::pb::host_service_server::{HostService, HostServiceServer};
use gk_sdk::proto::pb::plugin_service_client::PluginServiceClient;
use gk_sdk::proto::pb::plugin_service_server::{PluginService, PluginServiceServer};
use tokio::io::AsyncBufReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

/// Set in the child's environment: the socket it serves `PluginService` on.
pub(crate) const CHILD_SOCKET: &str = "GK_BENCH_BARE_CHILD_SOCKET";
/// Set in the child's environment: the parent's `HostService` socket.
pub(crate) const HOST_SOCKET: &str = "GK_BENCH_BARE_HOST_SOCKET";

/// A tonic channel over a Unix socket.
pub(crate) async fn connect(socket: PathBuf) -> Channel {
    Endpoint::try_from("http://bare.invalid")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                UnixStream::connect(socket)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .unwrap()
}

/// The child's side: serves `PluginService` on [`CHILD_SOCKET`], says `ready` on stdout once
/// listening; `ping` makes one `ConfigGet` call to the parent, as hello-grpc's does.
pub(crate) async fn child_main(socket: &str) {
    let host = std::env::var(HOST_SOCKET).unwrap();
    let listener = UnixListener::bind(socket).unwrap();
    println!("ready");
    let child = Child {
        host: tokio::sync::OnceCell::new(),
        host_socket: PathBuf::from(host),
    };
    Server::builder()
        .add_service(PluginServiceServer::new(child))
        .serve_with_incoming(UnixListenerStream::new(listener))
        .await
        .unwrap();
}

struct Child {
    host: tokio::sync::OnceCell<HostServiceClient<Channel>>,
    host_socket: PathBuf,
}

#[tonic::async_trait]
impl PluginService for Child {
    async fn register(
        &self,
        _: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        Ok(Response::new(pb::RegisterResponse::default()))
    }

    async fn init(
        &self,
        _: Request<pb::InitRequest>,
    ) -> Result<Response<pb::InitResponse>, Status> {
        Ok(Response::new(pb::InitResponse::default()))
    }

    async fn call(
        &self,
        request: Request<pb::CallRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let request = request.into_inner();
        let result_json = if request.function == "ping" {
            let host = self
                .host
                .get_or_init(|| async {
                    HostServiceClient::new(connect(self.host_socket.clone()).await)
                })
                .await;
            let value = host
                .clone()
                .config_get(pb::ConfigGetRequest {
                    context: None,
                    key: "app.name".into(),
                })
                .await?
                .into_inner()
                .value;
            format!("{{\"app\":{value:?}}}").into_bytes()
        } else {
            request.args_json
        };
        Ok(Response::new(pb::CallResponse {
            result_json,
            failure: None,
        }))
    }

    async fn shutdown(
        &self,
        _: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        Ok(Response::new(pb::ShutdownResponse::default()))
    }

    type CallsStream = tokio_stream::Empty<Result<pb::StreamedResult, Status>>;

    /// The reference's calls are plain unary calls: no stream.
    async fn calls(
        &self,
        _: Request<tonic::Streaming<pb::StreamedCall>>,
    ) -> Result<Response<Self::CallsStream>, Status> {
        Err(Status::unimplemented("not in the reference"))
    }

    async fn health(
        &self,
        _: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        Ok(Response::new(pb::HealthResponse {
            healthy: true,
            message: String::new(),
        }))
    }
}

/// The parent's `HostService`: answers `ConfigGet` (unary), nothing else.
struct Host;

fn unused<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the reference"))
}

#[tonic::async_trait]
impl HostService for Host {
    async fn db_query(
        &self,
        _: Request<pb::DbQueryRequest>,
    ) -> Result<Response<pb::DbQueryResponse>, Status> {
        unused()
    }
    async fn db_exec(
        &self,
        _: Request<pb::DbExecRequest>,
    ) -> Result<Response<pb::DbExecResponse>, Status> {
        unused()
    }
    async fn cache_get(
        &self,
        _: Request<pb::CacheGetRequest>,
    ) -> Result<Response<pb::CacheGetResponse>, Status> {
        unused()
    }
    async fn cache_set(
        &self,
        _: Request<pb::CacheSetRequest>,
    ) -> Result<Response<pb::CacheSetResponse>, Status> {
        unused()
    }
    async fn cache_delete(
        &self,
        _: Request<pb::CacheDeleteRequest>,
    ) -> Result<Response<pb::CacheDeleteResponse>, Status> {
        unused()
    }
    async fn http_request(
        &self,
        _: Request<pb::OutboundHttpRequest>,
    ) -> Result<Response<pb::OutboundHttpResponse>, Status> {
        unused()
    }
    async fn send_email(
        &self,
        _: Request<pb::SendEmailRequest>,
    ) -> Result<Response<pb::SendEmailResponse>, Status> {
        unused()
    }
    async fn log(&self, _: Request<pb::LogRequest>) -> Result<Response<pb::LogResponse>, Status> {
        unused()
    }
    async fn config_get(
        &self,
        _: Request<pb::ConfigGetRequest>,
    ) -> Result<Response<pb::ConfigGetResponse>, Status> {
        Ok(Response::new(pb::ConfigGetResponse {
            value: "GoatKit".into(),
        }))
    }
    async fn translate(
        &self,
        _: Request<pb::TranslateRequest>,
    ) -> Result<Response<pb::TranslateResponse>, Status> {
        unused()
    }
    async fn call_plugin(
        &self,
        _: Request<pb::CallPluginRequest>,
    ) -> Result<Response<pb::CallPluginResponse>, Status> {
        unused()
    }

    type CallsStream = tokio_stream::Empty<Result<pb::HostReply, Status>>;

    /// The reference's callback is a plain unary call: no stream.
    async fn calls(
        &self,
        _: Request<tonic::Streaming<pb::HostCall>>,
    ) -> Result<Response<Self::CallsStream>, Status> {
        unused()
    }
}

/// A running bare child and the parent's client to it.
pub(crate) struct Bare {
    pub(crate) client: PluginServiceClient<Channel>,
    child: tokio::process::Child,
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Serves the parent's `HostService` under `dir` (once per run).
pub(crate) fn serve_host(dir: &Path) -> PathBuf {
    let socket = dir.join("bare-host.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(HostServiceServer::new(Host))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    socket
}

/// Starts a bare child (this binary again) and waits for its first answer to an empty call:
/// the spawn-to-first-answer reference.
pub(crate) async fn spawn(dir: &Path, host_socket: &Path, n: usize) -> (Bare, Duration) {
    let socket = dir.join(format!("bare-child-{n}.sock"));
    let _ = std::fs::remove_file(&socket);
    let start = Instant::now();
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD_SOCKET, &socket)
        .env(HOST_SOCKET, host_socket)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
    let mut client = PluginServiceClient::new(connect(socket).await);
    client.call(call_request("echo")).await.unwrap();
    (Bare { client, child }, start.elapsed())
}

/// A call request without context.
pub(crate) fn call_request(function: &str) -> pb::CallRequest {
    pb::CallRequest {
        context: None,
        function: function.into(),
        args_json: b"{}".to_vec(),
    }
}

/// p50 of `count` sequential calls of `function` on a bare child.
pub(crate) async fn p50(bare: &Bare, function: &str, count: usize) -> Duration {
    let mut client = bare.client.clone();
    for _ in 0..200 {
        client.call(call_request(function)).await.unwrap();
    }
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        client.call(call_request(function)).await.unwrap();
        samples.push(t.elapsed());
    }
    samples.sort();
    samples[samples.len() / 2]
}

/// Calls per second with `in_flight` callers sharing the connection, `total` calls.
pub(crate) async fn throughput(bare: &Bare, in_flight: usize, total: usize) -> f64 {
    let client = Arc::new(bare.client.clone());
    let start = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let mut client = (*client).clone();
            tokio::spawn(async move {
                for _ in 0..total / in_flight {
                    client.call(call_request("echo")).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (total / in_flight * in_flight) as f64 / start.elapsed().as_secs_f64()
}
