//! [`GrpcRuntime`]: starting plugin processes, and [`GrpcLimits`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use gk_sdk::handshake::{HOST_SOCKET_ENV, HOST_TOKEN_ENV, MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE};
use gk_sdk::proto::pb;
use gk_sdk::proto::pb::plugin_service_client::PluginServiceClient;
use gk_sdk::{GkRegistration, PluginError, ResourcePolicy};
use hyper_util::rt::TokioIo;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tonic::transport::Endpoint;

use crate::GrpcError;
use crate::IsolationConfig;
use crate::host_server::{HostSide, serve_host};
use crate::plugin::{GrpcPlugin, Inner, Process, Supervision};
use crate::process::{self, signal_group};
use crate::supervisor;

/// The largest message either side of a plugin's gRPC connections accepts or sends, by default
/// (host calls and their replies, and calls to the plugin and theirs): 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;

/// How often a running plugin's health is checked, by default.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);

/// The limits one plugin process runs under, usually taken from its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcLimits {
    /// Deadline of one call.
    pub call_timeout: Duration,
    /// Deadline of the handshake, `Register` and `Init`.
    pub init_timeout: Duration,
    /// Grace period of each step of shutdown.
    pub shutdown_timeout: Duration,
    /// Whether the plugin keeps the host's network. Never set from a policy: a plugin's `http`
    /// permission is for the host's `http_request`, which applies its scope, rate limit and the
    /// internal-address wall; a process on the host's network would bypass all three. Without
    /// it the process runs in a network namespace of its own (no network at all, where
    /// namespaces are available) and is told so with `GOATFLOW_NO_NETWORK=1`. Only an embedder
    /// that trusts a plugin sets it.
    pub network: bool,
    /// Memory cap in MiB; 0 = none. Enforced as `memory.max` of a cgroup v2 of the process's
    /// own where the host may create one, and always as `RLIMIT_DATA` (private writable memory:
    /// the `PROT_NONE` address reservations of Go and Java runtimes do not count, so they start,
    /// which `RLIMIT_AS` would prevent).
    pub memory_mb: u32,
    /// How often the plugin's `Health` is checked; a plugin that does not answer is restarted.
    pub health_interval: Duration,
}

impl GrpcLimits {
    /// The limits of a policy.
    pub fn from_policy(policy: &ResourcePolicy) -> Self {
        Self {
            call_timeout: policy.call_timeout,
            init_timeout: policy.init_timeout,
            shutdown_timeout: policy.shutdown_timeout,
            network: false,
            memory_mb: policy.memory_mb,
            health_interval: DEFAULT_HEALTH_INTERVAL,
        }
    }
}

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

pub(crate) fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buffer = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buffer)
        .map_err(|_| "no randomness available".to_owned())?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates a directory readable by its owner only.
pub(crate) fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
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
        let sandboxed = match crate::isolation::available(&self.isolation) {
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
            name: name.to_owned(),
            limits,
            side,
            executable: executable.to_owned(),
            working_dir,
            env,
            host_dir,
            sandbox: sandboxed.then(|| self.isolation.clone()),
            max_message_bytes: self.max_message_bytes,
            server_stop,
            registration: OnceLock::new(),
            current: RwLock::new(None),
            supervision: Mutex::new(Supervision::default()),
            restarted: Notify::new(),
            next_call: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        let process = launch(&inner).await?;
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
        let _ = inner.registration.set(registration);
        inner.set_current(Some(process));
        supervisor::watch(&inner);
        Ok(GrpcPlugin::new(inner))
    }
}

/// Starts one process of the plugin and connects to it.
pub(crate) async fn launch(inner: &Arc<Inner>) -> Result<Arc<Process>, GrpcError> {
    let name = inner.name.clone();
    let host_error = |message: String| GrpcError::Host {
        plugin: name.clone(),
        message,
    };
    let mut env = inner.env.clone();
    // An isolated process has a private /tmp tmpfs of its own. Otherwise one TMPDIR per process
    // (not per plugin name): during a blue-green replace the old and the new process of a
    // plugin run side by side, and removing one's directory must not pull it from under the
    // other.
    let owned_tmp = if inner.sandbox.is_some() {
        None
    } else {
        let tmp_dir = std::env::temp_dir().join(format!(
            "goatflow-plugin-{}-{}",
            inner.name,
            random_hex(4).map_err(host_error)?
        ));
        private_dir(&tmp_dir).map_err(|e| host_error(format!("{}: {e}", tmp_dir.display())))?;
        env.push(("TMPDIR".into(), tmp_dir.display().to_string()));
        Some(tmp_dir)
    };
    let remove_tmp = || {
        if let Some(dir) = &owned_tmp {
            let _ = std::fs::remove_dir_all(dir);
        }
    };
    let isolation = process::Isolation {
        no_network: !inner.limits.network,
        memory_bytes: u64::from(inner.limits.memory_mb) << 20,
        sandbox: inner
            .sandbox
            .clone()
            .map(|config| (config, inner.host_dir.join("host.sock"))),
    };
    let limits = inner.limits;
    let spawned = match process::spawn(
        &inner.side,
        &inner.executable,
        &inner.working_dir,
        &env,
        isolation,
        limits.init_timeout,
    )
    .await
    {
        Ok(spawned) => spawned,
        Err(error) => {
            remove_tmp();
            return Err(error);
        }
    };
    let socket = spawned.socket.clone();
    let fail = |message: String| {
        signal_group(spawned.pid, libc::SIGKILL);
        remove_tmp();
        GrpcError::Handshake {
            plugin: inner.name.clone(),
            message,
        }
    };
    let endpoint = Endpoint::try_from("http://plugin.invalid")
        .map_err(|e| fail(e.to_string()))?
        .timeout(limits.call_timeout);
    let connect = endpoint.connect_with_connector(tower::service_fn(move |_| {
        let socket = socket.clone();
        async move { UnixStream::connect(socket).await.map(TokioIo::new) }
    }));
    let channel = match tokio::time::timeout(limits.init_timeout, connect).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => return Err(fail(format!("cannot connect to its socket: {e}"))),
        Err(_) => return Err(fail("connecting to its socket timed out".into())),
    };
    let tmp_dir = match &owned_tmp {
        Some(dir) => dir.clone(),
        None => PathBuf::from(format!("/proc/{}/root/tmp", spawned.pid)),
    };
    Ok(Arc::new(Process {
        client: PluginServiceClient::new(channel.clone())
            .max_decoding_message_size(inner.max_message_bytes)
            .max_encoding_message_size(inner.max_message_bytes),
        channel,
        socket: spawned.socket,
        pid: spawned.pid,
        exit: spawned.exit,
        stderr_tail: spawned.stderr_tail,
        tmp_dir,
        owns_tmp: owned_tmp.is_some(),
    }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use gk_sdk::{Access, Permission, PermissionType};

    #[test]
    fn an_http_permission_never_opens_the_hosts_network() {
        let mut policy = ResourcePolicy::default_for("p");
        policy.permissions =
            vec![Permission::new(PermissionType::Http, Access::Read).with_scope(["*"])];
        assert!(!GrpcLimits::from_policy(&policy).network);
    }
}
