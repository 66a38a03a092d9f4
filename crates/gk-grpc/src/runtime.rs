//! [`GrpcRuntime`]: starting a plugin: its host side, its first process, `Register`, then
//! supervision.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use gk_sdk::handshake::{HOST_SOCKET_ENV, HOST_TOKEN_ENV, MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE};
use gk_sdk::proto::pb;
use gk_sdk::{GkRegistration, PluginError};
use tokio::net::UnixListener;
use tokio::sync::Notify;

use crate::GrpcError;
use crate::host_server::{HostSide, serve_host};
use crate::limits::{DEFAULT_MAX_MESSAGE_BYTES, GrpcLimits};
use crate::plugin::{GrpcPlugin, Inner, Supervision};
use crate::process::{Process, Spec, private_dir, random_hex, signal_group};
use crate::sandbox::{self, IsolationConfig};
use crate::supervisor;

/// Starts plugin executables.
#[derive(Debug, Clone)]
pub struct GrpcRuntime {
    /// Where the host's per-plugin socket directories are made.
    run_dir: PathBuf,
    /// How plugin processes are isolated.
    isolation: Arc<IsolationConfig>,
    /// The largest gRPC message, both ways, on both connections.
    max_message_bytes: usize,
}

impl Default for GrpcRuntime {
    fn default() -> Self {
        Self::new(std::env::temp_dir())
    }
}

impl GrpcRuntime {
    /// A runtime that makes its socket directories under `run_dir`.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self {
            run_dir: run_dir.into(),
            isolation: Arc::new(IsolationConfig::default()),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// The same runtime with another cap on gRPC messages (default
    /// [`DEFAULT_MAX_MESSAGE_BYTES`]): a host call, a call to the plugin or a reply over it is
    /// refused with `RESOURCE_EXHAUSTED`/`OUT_OF_RANGE`, saying the size and the limit.
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// The same runtime isolating its plugins as `isolation` says.
    pub fn with_isolation(mut self, isolation: IsolationConfig) -> Self {
        self.isolation = Arc::new(isolation);
        self
    }

    /// Starts `executable` (in `working_dir`) as plugin `name`: serves its host socket, waits
    /// for the handshake, connects and calls `Register`, all within `limits.init_timeout`.
    /// `name` is the plugin's identity from then on (every host call is stamped with it); a
    /// `Register` reply naming another plugin is refused ([`GrpcError::NameMismatch`]).
    ///
    /// The process is isolated as the runtime's [`IsolationConfig`] says; where that is not
    /// possible, it is refused ([`GrpcError::Unisolated`]) unless the configuration allows
    /// unisolated plugins.
    /// The process is then supervised: restarted with backoff when it dies or stops answering
    /// its health checks, and marked failed after 5 crashes in 60 s.
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
        let sandboxed = match sandbox::available(&self.isolation) {
            Ok(()) => true,
            Err(reason) if self.isolation.allow_unisolated_native_plugins => {
                tracing::warn!(
                    plugin = %name,
                    %reason,
                    "native plugin isolation is not available: the plugin runs unisolated, as the \
                     server's user, because allow_unisolated_native_plugins is set"
                );
                false
            }
            Err(reason) => {
                return Err(GrpcError::Unisolated {
                    plugin: name.to_owned(),
                    reason,
                });
            }
        };
        // Absolute, once: the plugin is told this path (`plugin_dir`) and runs in it.
        let working_dir = working_dir
            .canonicalize()
            .or_else(|_| std::path::absolute(working_dir))
            .map_err(|e| host_error(format!("{}: {e}", working_dir.display())))?;
        let token = random_hex(32).map_err(host_error)?;
        let host_dir = self.run_dir.join(format!(
            "gk-host-{name}-{}",
            random_hex(6).map_err(host_error)?
        ));
        private_dir(&host_dir).map_err(|e| host_error(format!("{}: {e}", host_dir.display())))?;

        let side = Arc::new(HostSide::new(name, &token));
        let host_socket = host_dir.join("host.sock");
        let listener = UnixListener::bind(&host_socket)
            .map_err(|e| host_error(format!("{}: {e}", host_socket.display())))?;
        let server_stop = Arc::new(Notify::new());
        tokio::spawn(serve_host(
            side.clone(),
            listener,
            self.max_message_bytes,
            server_stop.clone(),
        ));

        let mut env: Vec<(String, String)> = ["PATH", "HOME", "TZ"]
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
            .collect();
        env.push((MAGIC_COOKIE_KEY.into(), MAGIC_COOKIE_VALUE.into()));
        env.push((HOST_SOCKET_ENV.into(), host_socket.display().to_string()));
        env.push((HOST_TOKEN_ENV.into(), token));
        if !limits.network {
            env.push(("GOATFLOW_NO_NETWORK".into(), "1".into()));
        }

        let inner = Arc::new(Inner {
            spec: Spec {
                name: name.to_owned(),
                limits,
                side,
                executable: executable.to_owned(),
                working_dir,
                env,
                host_dir,
                sandbox: sandboxed.then(|| self.isolation.clone()),
                max_message_bytes: self.max_message_bytes,
            },
            server_stop,
            registration: OnceLock::new(),
            current: RwLock::new(None),
            supervision: Mutex::new(Supervision::default()),
            restarted: Notify::new(),
            stopped: AtomicBool::new(false),
        });
        let process = inner.spec.launch().await?;
        let registering = std::time::Instant::now();
        let registration = register(&process, limits.init_timeout)
            .await
            .map_err(|message| {
                signal_group(process.pid, libc::SIGKILL);
                GrpcError::Register {
                    plugin: name.to_owned(),
                    message,
                }
            })?;
        if registration.name != name {
            signal_group(process.pid, libc::SIGKILL);
            return Err(GrpcError::NameMismatch {
                plugin: name.to_owned(),
                claimed: registration.name,
            });
        }
        tracing::debug!(
            plugin = name,
            register_us = registering.elapsed().as_micros(),
            "plugin registered"
        );
        let _ = inner.registration.set(registration);
        inner.set_current(Some(process));
        supervisor::watch(&inner);
        Ok(GrpcPlugin::new(inner))
    }
}

/// Calls `Register` on a process.
async fn register(process: &Process, timeout: Duration) -> Result<GkRegistration, String> {
    let mut request = tonic::Request::new(pb::RegisterRequest {});
    request.set_timeout(timeout);
    let response = process
        .client
        .clone()
        .register(request)
        .await
        .map_err(|status| status.message().to_owned())?;
    let registration = response
        .into_inner()
        .registration
        .ok_or("the reply holds no registration")?;
    GkRegistration::try_from(registration).map_err(|e: PluginError| e.to_string())
}
