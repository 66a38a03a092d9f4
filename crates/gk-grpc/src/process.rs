//! One plugin process: [`Spec::launch`] starts it (under the OS isolation of `sandbox`) with a
//! minimal environment in its own process group, tied to the host's life (`PR_SET_PDEATHSIG`),
//! reads its handshake from stdout, forwards its output line by line, watches its exit and
//! connects to its socket. The first start (`runtime`) and every restart (`supervisor`) go
//! through it.

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gk_sdk::LogLevel;
use gk_sdk::call_stream::{
    CallStream, NotSent, PLUGIN_CALLS_AT_ONCE, ReopeningStream, STREAM_MESSAGE_BYTES,
};
use gk_sdk::proto::pb;
use gk_sdk::proto::pb::plugin_service_client::PluginServiceClient;
use gk_sdk::unix_channel::UnixChannel;
use prost::Message as _;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;
use tonic::{Request, Status};

use crate::GrpcError;
use crate::handshake::parse_handshake;
use crate::host_server::HostSide;
use crate::limits::GrpcLimits;
use crate::sandbox::{self, Isolation, IsolationConfig, Started};

/// Stderr lines kept for crash reports.
const STDERR_TAIL: usize = 20;

/// A started plugin process.
struct Spawned {
    pid: u32,
    /// The socket it serves on, as the host reaches it.
    socket: PathBuf,
    /// `Some(description)` once the process has exited.
    exit: watch::Receiver<Option<String>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// How long the isolation and `exec` took, then the wait for the handshake line.
    started_in: Duration,
    handshake_in: Duration,
}

/// The last stderr lines, for error messages.
pub(crate) fn tail(lines: &Mutex<VecDeque<String>>) -> String {
    let lines = lines.lock().unwrap_or_else(|p| p.into_inner());
    if lines.is_empty() {
        "(nothing on stderr)".to_owned()
    } else {
        lines.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

/// Sends `signal` to the plugin's whole process group.
pub(crate) fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory.
    unsafe {
        libc::kill(-pid, signal);
    }
}

/// One running process of a plugin.
pub(crate) struct Process {
    pub(crate) client: PluginServiceClient<UnixChannel>,
    /// The connection, for the standard `grpc.health.v1` client.
    pub(crate) channel: UnixChannel,
    /// The socket the process serves on (from its handshake).
    pub(crate) socket: PathBuf,
    pub(crate) pid: u32,
    pub(crate) exit: watch::Receiver<Option<String>>,
    pub(crate) stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// Its `TMPDIR` as the host sees it.
    pub(crate) tmp_dir: PathBuf,
    /// Whether `tmp_dir` is a host directory made for it, to remove when it ends.
    pub(crate) owns_tmp: bool,
    /// Its `Calls` stream, opened in the background at start and again after it ends.
    calls: ReopeningStream<pb::StreamedCall, pb::StreamedResult>,
}

impl Process {
    pub(crate) fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Whether calls travel on the `Calls` stream.
    pub(crate) fn calls_streamed(&self) -> bool {
        self.calls.is_open()
    }

    /// Calls the plugin with `budget` left: on its `Calls` stream when that is open, else (for
    /// plugins without one, while it opens again after it ended, for a request over
    /// [`STREAM_MESSAGE_BYTES`], and beyond [`PLUGIN_CALLS_AT_ONCE`] calls at once) as a unary `Call`
    /// with the budget as its deadline.
    pub(crate) async fn call(
        &self,
        call: pb::CallRequest,
        budget: Duration,
    ) -> Result<pb::CallResponse, Status> {
        let call = if call.encoded_len() <= STREAM_MESSAGE_BYTES {
            let timeout_ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX).max(1);
            match self.calls.call((call, timeout_ms)).await {
                Ok(answered) => return answered,
                Err(NotSent((call, _))) => call,
            }
        } else {
            call
        };
        let mut request = Request::new(call);
        request.set_timeout(budget);
        Ok(self.client.clone().call(request).await?.into_inner())
    }
}

impl Drop for Process {
    /// A process nobody holds any more does not outlive its handle.
    fn drop(&mut self) {
        if !self.has_exited() {
            signal_group(self.pid, libc::SIGKILL);
        }
        if self.owns_tmp {
            let _ = std::fs::remove_dir_all(&self.tmp_dir);
        }
    }
}

/// `bytes` random bytes, as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buffer = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buffer)
        .map_err(|_| "no randomness available".to_owned())?;
    Ok(hex::encode(buffer))
}

/// Creates a directory readable by its owner only.
pub(crate) fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Everything fixed about how a plugin's processes start: each restart launches from it.
pub(crate) struct Spec {
    /// The plugin's name, its identity.
    pub(crate) name: String,
    pub(crate) limits: GrpcLimits,
    pub(crate) side: Arc<HostSide>,
    pub(crate) executable: PathBuf,
    pub(crate) working_dir: PathBuf,
    /// The environment of every process, without its TMPDIR.
    pub(crate) env: Vec<(String, String)>,
    /// The plugin's private host directory (its host socket; the isolated root's stage).
    pub(crate) host_dir: PathBuf,
    /// The isolation of its processes; `None`: unisolated (allowed by the operator).
    pub(crate) sandbox: Option<Arc<IsolationConfig>>,
    /// The largest gRPC message to and from the process.
    pub(crate) max_message_bytes: usize,
}

impl Spec {
    /// Starts one process of the plugin and connects to it.
    pub(crate) async fn launch(&self) -> Result<Arc<Process>, GrpcError> {
        let name = self.name.clone();
        let host_error = |message: String| GrpcError::Host {
            plugin: name.clone(),
            message,
        };
        let mut env = self.env.clone();
        // An isolated process has a private /tmp tmpfs of its own. Otherwise one TMPDIR per process
        // (not per plugin name): during a blue-green replace the old and the new process of a
        // plugin run side by side, and removing one's directory must not pull it from under the
        // other.
        let owned_tmp = if self.sandbox.is_some() {
            None
        } else {
            let tmp_dir = std::env::temp_dir().join(format!(
                "goatflow-plugin-{}-{}",
                self.name,
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
        let isolation = Isolation {
            no_network: !self.limits.network,
            memory_bytes: u64::from(self.limits.memory_mb) << 20,
            sandbox: self
                .sandbox
                .clone()
                .map(|config| (config, self.host_dir.join("host.sock"))),
        };
        let limits = self.limits;
        let spawned = match spawn(
            &self.side,
            &self.executable,
            &self.working_dir,
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
                plugin: self.name.clone(),
                message,
            }
        };
        let connecting = Instant::now();
        let connect = UnixChannel::connect(socket);
        let channel = match tokio::time::timeout(limits.init_timeout, connect).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return Err(fail(format!("cannot connect to its socket: {e}"))),
            Err(_) => return Err(fail("connecting to its socket timed out".into())),
        };
        tracing::debug!(
            plugin = %self.name,
            pid = spawned.pid,
            start_us = spawned.started_in.as_micros(),
            handshake_us = spawned.handshake_in.as_micros(),
            connect_us = connecting.elapsed().as_micros(),
            "plugin process started"
        );
        let tmp_dir = match &owned_tmp {
            Some(dir) => dir.clone(),
            None => PathBuf::from(format!("/proc/{}/root/tmp", spawned.pid)),
        };
        let client = PluginServiceClient::with_origin(channel.clone(), UnixChannel::origin())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        let calls = {
            let client = client.clone();
            ReopeningStream::new(format!("calls to plugin {}", self.name), move || {
                let mut client = client.clone();
                CallStream::open(PLUGIN_CALLS_AT_ONCE, move |outgoing| async move {
                    client.calls(outgoing).await
                })
            })
        };
        // Calls are unary until it is open.
        calls.open_soon();
        let process = Arc::new(Process {
            client,
            channel,
            socket: spawned.socket,
            pid: spawned.pid,
            exit: spawned.exit,
            stderr_tail: spawned.stderr_tail,
            tmp_dir,
            owns_tmp: owned_tmp.is_some(),
            calls,
        });
        Ok(process)
    }
}

/// Starts `executable` and waits for its handshake line up to `timeout`.
async fn spawn(
    side: &Arc<HostSide>,
    executable: &Path,
    working_dir: &Path,
    env: &[(String, String)],
    isolation: Isolation,
    timeout: Duration,
) -> Result<Spawned, GrpcError> {
    let plugin = side.plugin.clone();
    let spawn_error = |message: String| GrpcError::Spawn {
        path: executable.display().to_string(),
        message,
    };
    let metadata = std::fs::metadata(executable).map_err(|e| spawn_error(e.to_string()))?;
    if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
        return Err(spawn_error("not an executable file".into()));
    }
    let starting = Instant::now();
    let started = sandbox::start(&plugin, executable, working_dir, env, &isolation)
        .await
        .map_err(spawn_error)?;
    let started_in = starting.elapsed();
    let Started {
        pid,
        stdout,
        stderr,
        exit: wait,
    } = started;

    let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
    if let Some(stderr) = stderr {
        tokio::spawn(forward(
            stderr,
            side.clone(),
            LogLevel::Warn,
            Some(stderr_tail.clone()),
        ));
    }
    let (exit_tx, exit) = watch::channel(None);
    tokio::spawn(async move {
        let description = wait.await;
        let _ = exit_tx.send(Some(description));
    });

    let Some(stdout) = stdout else {
        signal_group(pid, libc::SIGKILL);
        return Err(GrpcError::Handshake {
            plugin,
            message: "no stdout".into(),
        });
    };
    let mut lines = BufReader::new(stdout).lines();
    let waiting = Instant::now();
    let first = tokio::time::timeout(timeout, lines.next_line()).await;
    let handshake_in = waiting.elapsed();
    let failure = |message: String| {
        signal_group(pid, libc::SIGKILL);
        GrpcError::Handshake {
            plugin: plugin.clone(),
            message,
        }
    };
    let line = match first {
        Err(_) => {
            return Err(failure(format!(
                "no handshake line within {} ms (init_timeout)",
                timeout.as_millis()
            )));
        }
        Ok(Err(e)) => return Err(failure(format!("reading its stdout: {e}"))),
        Ok(Ok(None)) => {
            let mut exit = exit.clone();
            let _ =
                tokio::time::timeout(Duration::from_secs(1), exit.wait_for(Option::is_some)).await;
            let status = exit
                .borrow()
                .clone()
                .unwrap_or_else(|| "still running".into());
            return Err(failure(format!(
                "it exited before the handshake ({status}); stderr: {}",
                tail(&stderr_tail)
            )));
        }
        Ok(Ok(Some(line))) => line,
    };
    let handshake = match parse_handshake(&line) {
        Ok(handshake) => handshake,
        Err(source) => {
            signal_group(pid, libc::SIGKILL);
            return Err(GrpcError::HandshakeLine {
                plugin: plugin.clone(),
                source,
            });
        }
    };
    let socket = if isolation.sandbox.is_some() {
        sandbox::socket_from_host(pid, &handshake.socket).map_err(failure)?
    } else {
        PathBuf::from(&handshake.socket)
    };
    let rest = lines.into_inner();
    tokio::spawn(forward(rest, side.clone(), LogLevel::Info, None));
    Ok(Spawned {
        pid,
        socket,
        exit,
        stderr_tail,
        started_in,
        handshake_in,
    })
}

/// Forwards a stream line by line to the plugin's log, from the process's start (lines printed
/// before `init` are kept and written once the plugin has its host).
async fn forward(
    stream: impl AsyncRead + Unpin,
    side: Arc<HostSide>,
    level: LogLevel,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(tail) = &tail {
            let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line.clone());
        }
        side.output(level, line).await;
    }
}
