//! [`GrpcRuntime`] and [`GrpcPlugin`]: starting, calling and stopping plugin processes.

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use gk_sdk::handshake::{HOST_SOCKET_ENV, HOST_TOKEN_ENV, MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE};
use gk_sdk::proto::pb;
use gk_sdk::proto::pb::host_service_server::HostServiceServer;
use gk_sdk::proto::pb::plugin_service_client::PluginServiceClient;
use gk_sdk::{
    CallContext, GkRegistration, HostApi, PermissionType, Plugin, PluginError, ResourcePolicy,
};
use hyper_util::rt::TokioIo;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, watch};
use tonic::transport::{Channel, Endpoint, Server};

use crate::GrpcError;
use crate::host_server::{HostServer, HostSide};
use crate::process::{self, signal_group, tail};

/// The limits one plugin process runs under, usually taken from its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcLimits {
    /// Deadline of one call.
    pub call_timeout: Duration,
    /// Deadline of the handshake, `Register` and `Init`.
    pub init_timeout: Duration,
    /// Grace period of each step of shutdown.
    pub shutdown_timeout: Duration,
    /// Whether the plugin may use the network (the policy grants `http`); without it the
    /// process runs in a network namespace of its own (no network at all, where namespaces are
    /// available) and is told so with `GOATFLOW_NO_NETWORK=1`.
    pub network: bool,
    /// Cap on the process's private writable memory in MiB (`RLIMIT_DATA`); 0 = none.
    pub memory_mb: u32,
}

impl GrpcLimits {
    /// The limits of a policy.
    pub fn from_policy(policy: &ResourcePolicy) -> Self {
        Self {
            call_timeout: policy.call_timeout,
            init_timeout: policy.init_timeout,
            shutdown_timeout: policy.shutdown_timeout,
            network: policy.permissions_of(PermissionType::Http).next().is_some(),
            memory_mb: policy.memory_mb,
        }
    }
}

/// Starts plugin executables.
#[derive(Debug, Clone)]
pub struct GrpcRuntime {
    /// Where the host's per-plugin socket directories are made.
    run_dir: PathBuf,
}

impl Default for GrpcRuntime {
    fn default() -> Self {
        Self {
            run_dir: std::env::temp_dir(),
        }
    }
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buffer = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buffer)
        .map_err(|_| "no randomness available".to_owned())?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates a directory readable by its owner only.
fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

impl GrpcRuntime {
    /// A runtime that makes its socket directories under `run_dir`.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self {
            run_dir: run_dir.into(),
        }
    }

    /// Starts `executable` (in `working_dir`) as plugin `name`: serves its host socket, waits
    /// for the handshake, connects and calls `Register`, all within `limits.init_timeout`.
    pub async fn start(
        &self,
        name: &str,
        executable: &Path,
        working_dir: &Path,
        limits: GrpcLimits,
    ) -> Result<GrpcPlugin, GrpcError> {
        let host_error = |message: String| GrpcError::Host {
            plugin: name.to_owned(),
            message,
        };
        let token = random_hex(32).map_err(host_error)?;
        let host_dir = self.run_dir.join(format!(
            "gk-host-{name}-{}",
            random_hex(6).map_err(host_error)?
        ));
        private_dir(&host_dir).map_err(|e| host_error(format!("{}: {e}", host_dir.display())))?;
        // One TMPDIR per process (not per plugin name): during a blue-green replace the old and
        // the new process of a plugin run side by side, and removing one's directory must not
        // pull it from under the other.
        let tmp_dir = std::env::temp_dir().join(format!(
            "goatflow-plugin-{name}-{}",
            random_hex(4).map_err(host_error)?
        ));
        private_dir(&tmp_dir).map_err(|e| host_error(format!("{}: {e}", tmp_dir.display())))?;

        let side = Arc::new(HostSide {
            plugin: name.to_owned(),
            token: token.clone(),
            host: OnceLock::new(),
            in_flight: DashMap::new(),
        });
        let host_socket = host_dir.join("host.sock");
        let listener = UnixListener::bind(&host_socket)
            .map_err(|e| host_error(format!("{}: {e}", host_socket.display())))?;
        let server_stop = Arc::new(Notify::new());
        let stop = server_stop.clone();
        let server = Server::builder()
            .add_service(HostServiceServer::new(HostServer { side: side.clone() }))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                async move { stop.notified().await },
            );
        tokio::spawn(server);

        let mut env: Vec<(String, String)> = ["PATH", "HOME", "TZ"]
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
            .collect();
        env.push(("TMPDIR".into(), tmp_dir.display().to_string()));
        env.push((MAGIC_COOKIE_KEY.into(), MAGIC_COOKIE_VALUE.into()));
        env.push((HOST_SOCKET_ENV.into(), host_socket.display().to_string()));
        env.push((HOST_TOKEN_ENV.into(), token));
        if !limits.network {
            env.push(("GOATFLOW_NO_NETWORK".into(), "1".into()));
        }

        let cleanup = |error: GrpcError| {
            server_stop.notify_one();
            let _ = std::fs::remove_dir_all(&host_dir);
            let _ = std::fs::remove_dir_all(&tmp_dir);
            error
        };
        let isolation = process::Isolation {
            no_network: !limits.network,
            memory_bytes: u64::from(limits.memory_mb) << 20,
        };
        let spawned = process::spawn(
            &side,
            executable,
            working_dir,
            &env,
            isolation,
            limits.init_timeout,
        )
        .await
        .map_err(cleanup)?;
        let socket = spawned.handshake.socket.clone();
        let endpoint = Endpoint::try_from("http://plugin.invalid")
            .map_err(|e| GrpcError::Host {
                plugin: name.to_owned(),
                message: e.to_string(),
            })
            .map_err(cleanup)?
            .timeout(limits.call_timeout);
        let channel = endpoint.connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }));
        let channel = match tokio::time::timeout(limits.init_timeout, channel).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                signal_group(spawned.pid, libc::SIGKILL);
                return Err(cleanup(GrpcError::Handshake {
                    plugin: name.to_owned(),
                    message: format!("cannot connect to its socket: {e}"),
                }));
            }
            Err(_) => {
                signal_group(spawned.pid, libc::SIGKILL);
                return Err(cleanup(GrpcError::Handshake {
                    plugin: name.to_owned(),
                    message: "connecting to its socket timed out".into(),
                }));
            }
        };
        let mut client = PluginServiceClient::new(channel);
        let mut request = tonic::Request::new(pb::RegisterRequest {});
        request.set_timeout(limits.init_timeout);
        let registration = match client.register(request).await {
            Ok(response) => response
                .into_inner()
                .registration
                .map(GkRegistration::try_from),
            Err(status) => Some(Err(PluginError::Unavailable(status.message().to_owned()))),
        };
        let registration = match registration {
            Some(Ok(registration)) => registration,
            Some(Err(e)) => {
                signal_group(spawned.pid, libc::SIGKILL);
                return Err(cleanup(GrpcError::Register {
                    plugin: name.to_owned(),
                    message: e.to_string(),
                }));
            }
            None => {
                signal_group(spawned.pid, libc::SIGKILL);
                return Err(cleanup(GrpcError::Register {
                    plugin: name.to_owned(),
                    message: "the reply holds no registration".into(),
                }));
            }
        };
        Ok(GrpcPlugin {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                limits,
                side,
                client,
                pid: spawned.pid,
                exit: spawned.exit,
                stderr_tail: spawned.stderr_tail,
                registration,
                host_dir,
                tmp_dir,
                server_stop,
                next_call: AtomicU64::new(0),
                stopped: AtomicBool::new(false),
            }),
        })
    }
}

/// A running plugin process behind the [`Plugin`] trait.
#[derive(Clone)]
pub struct GrpcPlugin {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    limits: GrpcLimits,
    side: Arc<HostSide>,
    client: PluginServiceClient<Channel>,
    pid: u32,
    exit: watch::Receiver<Option<String>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    registration: GkRegistration,
    host_dir: PathBuf,
    tmp_dir: PathBuf,
    server_stop: Arc<Notify>,
    next_call: AtomicU64,
    stopped: AtomicBool,
}

impl std::fmt::Debug for GrpcPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcPlugin")
            .field("name", &self.inner.name)
            .field("pid", &self.inner.pid)
            .finish_non_exhaustive()
    }
}

impl GrpcPlugin {
    /// The process id of the plugin.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// The host socket this plugin's callbacks arrive on (for diagnostics).
    pub fn host_socket(&self) -> PathBuf {
        self.inner.host_dir.join("host.sock")
    }

    /// The plugin's private `TMPDIR`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.inner.tmp_dir.clone()
    }

    /// How the process ended, once it has.
    pub fn exit_status(&self) -> Option<String> {
        self.inner.exit.borrow().clone()
    }

    /// The error for a failed RPC: a crash when the process is gone, else the status.
    async fn failure(
        &self,
        operation: &str,
        status: tonic::Status,
        after: Duration,
    ) -> PluginError {
        let deadline = matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        );
        let mut exit = self.inner.exit.clone();
        if !deadline {
            // A broken connection usually means the process died: give its exit a moment to
            // be recorded, so the error can say how it ended.
            let _ =
                tokio::time::timeout(Duration::from_millis(300), exit.wait_for(Option::is_some))
                    .await;
        }
        if let Some(exit) = exit.borrow().clone() {
            return PluginError::Crashed(format!(
                "the process ended ({exit}); stderr: {}",
                tail(&self.inner.stderr_tail)
            ));
        }
        if deadline {
            return PluginError::Timeout {
                operation: operation.to_owned(),
                after,
            };
        }
        PluginError::Unavailable(format!("{operation}: {}", status.message()))
    }
}

#[async_trait]
impl Plugin for GrpcPlugin {
    async fn register(&self) -> Result<GkRegistration, PluginError> {
        Ok(self.inner.registration.clone())
    }

    async fn init(&self, ctx: &CallContext, host: Arc<dyn HostApi>) -> Result<(), PluginError> {
        self.inner
            .side
            .host
            .set(host)
            .map_err(|_| PluginError::Unavailable("the plugin was initialised already".into()))?;
        let mut request = tonic::Request::new(pb::InitRequest {
            context: Some(ctx.into()),
            config: Default::default(),
        });
        request.set_timeout(self.inner.limits.init_timeout);
        match self.inner.client.clone().init(request).await {
            Ok(_) => Ok(()),
            Err(status) => Err(self
                .failure("init", status, self.inner.limits.init_timeout)
                .await),
        }
    }

    async fn call(
        &self,
        ctx: &CallContext,
        function: &str,
        args: &[u8],
    ) -> Result<Vec<u8>, PluginError> {
        if self.inner.stopped.load(Ordering::SeqCst) {
            return Err(PluginError::Unavailable(
                "the plugin has been shut down".into(),
            ));
        }
        let budget = self.inner.limits.call_timeout;
        let id = self.inner.next_call.fetch_add(1, Ordering::Relaxed);
        self.inner.side.in_flight.insert(id, ctx.depth);
        let mut request = tonic::Request::new(pb::CallRequest {
            context: Some(ctx.into()),
            function: function.to_owned(),
            args_json: args.to_vec(),
        });
        request.set_timeout(budget);
        let outcome = tokio::time::timeout(budget, self.inner.client.clone().call(request)).await;
        self.inner.side.in_flight.remove(&id);
        match outcome {
            Err(_) => Err(PluginError::Timeout {
                operation: "call".into(),
                after: budget,
            }),
            Ok(Err(status)) => Err(self.failure("call", status, budget).await),
            Ok(Ok(response)) => {
                let response = response.into_inner();
                match response.failure {
                    Some(failure) => Err(PluginError::from(failure)),
                    None => Ok(response.result_json),
                }
            }
        }
    }

    async fn shutdown(&self, ctx: &CallContext) -> Result<(), PluginError> {
        let inner = &self.inner;
        inner.stopped.store(true, Ordering::SeqCst);
        let grace = inner.limits.shutdown_timeout;
        let mut request = tonic::Request::new(pb::ShutdownRequest {
            context: Some(ctx.into()),
        });
        request.set_timeout(grace);
        let _ = tokio::time::timeout(grace, inner.client.clone().shutdown(request)).await;
        let mut exit = inner.exit.clone();
        for signal in [None, Some(libc::SIGTERM), Some(libc::SIGKILL)] {
            if let Some(signal) = signal {
                signal_group(inner.pid, signal);
            }
            if tokio::time::timeout(grace, exit.wait_for(Option::is_some))
                .await
                .is_ok()
            {
                break;
            }
        }
        inner.server_stop.notify_one();
        let _ = std::fs::remove_dir_all(&inner.host_dir);
        let _ = std::fs::remove_dir_all(&inner.tmp_dir);
        Ok(())
    }

    async fn health(&self) -> Result<(), PluginError> {
        let mut request = tonic::Request::new(pb::HealthRequest {});
        request.set_timeout(self.inner.limits.call_timeout);
        match self.inner.client.clone().health(request).await {
            Ok(response) if response.get_ref().healthy => Ok(()),
            Ok(response) => Err(PluginError::Unavailable(response.into_inner().message)),
            Err(status) => Err(self
                .failure("health", status, self.inner.limits.call_timeout)
                .await),
        }
    }
}

impl Drop for Inner {
    /// A plugin dropped without shutdown does not outlive its handle.
    fn drop(&mut self) {
        if self.exit.borrow().is_none() {
            signal_group(self.pid, libc::SIGKILL);
        }
        self.server_stop.notify_one();
        let _ = std::fs::remove_dir_all(&self.host_dir);
        let _ = std::fs::remove_dir_all(&self.tmp_dir);
    }
}
