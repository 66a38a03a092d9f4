//! The plugin process: started with a minimal environment in its own process group, tied to
//! the host's life (`PR_SET_PDEATHSIG`), its handshake read from stdout, its output forwarded
//! line by line, its exit watched.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gk_sdk::LogLevel;
use gk_sdk::handshake::parse_handshake;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use crate::host_server::HostSide;
use crate::sandbox_plan::{self, Request};
use crate::{GrpcError, IsolationConfig, sandbox_linux};

/// Stderr lines kept for crash reports.
const STDERR_TAIL: usize = 20;

/// A started plugin process.
pub(crate) struct Spawned {
    pub(crate) pid: u32,
    /// The socket it serves on, as the host reaches it.
    pub(crate) socket: std::path::PathBuf,
    /// `Some(description)` once the process has exited.
    pub(crate) exit: watch::Receiver<Option<String>>,
    pub(crate) stderr_tail: Arc<Mutex<VecDeque<String>>>,
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

/// How a plugin process is isolated from the host.
#[derive(Debug, Clone)]
pub(crate) struct Isolation {
    /// New network namespace: no network at all (the Unix socket to the host still works).
    pub(crate) no_network: bool,
    /// Cap on private writable memory (`RLIMIT_DATA`), in bytes; 0 = none.
    pub(crate) memory_bytes: u64,
    /// Full isolation (`sandbox_linux`) with this configuration and host socket; `None` runs
    /// the process unisolated (the operator allowed it where isolation is not available).
    pub(crate) sandbox: Option<(Arc<IsolationConfig>, std::path::PathBuf)>,
}

/// Whether new PID, mount and network namespaces can be made here (with util-linux `unshare`);
/// checked once. Without them a warning names what is skipped.
fn namespaces_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let probe = std::process::Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--net", "--kill-child", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let available = probe.is_ok_and(|status| status.success());
        if !available {
            tracing::warn!(
                "Linux namespaces are not available here (no privilege, or no `unshare`): plugin processes run \
                 without their own PID, mount and network namespaces"
            );
        }
        available
    })
}

/// Puts `pid` into a cgroup v2 of its own with `memory.max` = `bytes`, where the host may
/// (a writable unified hierarchy with the memory controller). Returns the cgroup to remove when
/// the process has ended; `None` where cgroups v2 are not available, which leaves the
/// `RLIMIT_DATA` cap as the only one.
fn memory_cgroup(plugin: &str, pid: u32, bytes: u64) -> Option<std::path::PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).ok()?;
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return None;
    }
    let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
    let dir = root.join(format!("goatkit-{plugin}-{pid}"));
    std::fs::create_dir(&dir).ok()?;
    let limited = std::fs::write(dir.join("memory.max"), bytes.to_string()).is_ok()
        && std::fs::write(dir.join("cgroup.procs"), pid.to_string()).is_ok();
    if !limited {
        let _ = std::fs::remove_dir(&dir);
        return None;
    }
    Some(dir)
}

/// Starts `executable` and waits for its handshake line up to `timeout`.
pub(crate) async fn spawn(
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
    {
        use std::os::unix::fs::PermissionsExt;
        if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
            return Err(spawn_error("not an executable file".into()));
        }
    }
    let memory = isolation.memory_bytes;
    let started = match &isolation.sandbox {
        Some((config, host_socket)) => start_isolated(
            executable,
            working_dir,
            env,
            &isolation,
            config,
            host_socket,
        )
        .await
        .map_err(spawn_error)?,
        None => start_unisolated(executable, working_dir, env, &isolation)
            .map_err(|e| spawn_error(e.to_string()))?,
    };
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
    let cgroup = if memory > 0 {
        memory_cgroup(&plugin, pid, memory)
    } else {
        None
    };
    let (exit_tx, exit) = watch::channel(None);
    tokio::spawn(async move {
        let description = wait.await;
        if let Some(cgroup) = cgroup {
            let _ = std::fs::remove_dir(cgroup);
        }
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
    let first = tokio::time::timeout(timeout, lines.next_line()).await;
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
    let handshake = parse_handshake(&line).map_err(failure)?;
    let socket = if isolation.sandbox.is_some() {
        sandbox_linux::socket_from_host(pid, &handshake.socket).map_err(failure)?
    } else {
        std::path::PathBuf::from(&handshake.socket)
    };
    let rest = lines.into_inner();
    tokio::spawn(forward(rest, side.clone(), LogLevel::Info, None));
    Ok(Spawned {
        pid,
        socket,
        exit,
        stderr_tail,
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

type Output = Box<dyn AsyncRead + Unpin + Send>;

/// A process just started: its pid, output, and how it ends.
struct Started {
    pid: u32,
    stdout: Option<Output>,
    stderr: Option<Output>,
    exit: std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>,
}

/// Starts the plugin in its namespaces (`sandbox_linux`).
async fn start_isolated(
    executable: &Path,
    working_dir: &Path,
    env: &[(String, String)],
    isolation: &Isolation,
    config: &IsolationConfig,
    host_socket: &Path,
) -> Result<Started, String> {
    // The host socket's directory is the plugin's own and bound nowhere: its new root is
    // mounted (in its own mount namespace) on an empty directory there.
    let stage = host_socket.parent().unwrap_or(Path::new("/")).join("root");
    std::fs::create_dir_all(&stage).map_err(|e| format!("{}: {e}", stage.display()))?;
    let plan = sandbox_plan::plan(&Request {
        executable,
        working_dir,
        stage: &stage,
        host_socket: Some(host_socket),
        env,
        network: !isolation.no_network,
        memory_bytes: isolation.memory_bytes,
        config,
    })?;
    if plan.outside_root {
        // The plugin's user connects to its host socket (its directory stays the host's own).
        std::os::unix::fs::chown(host_socket, Some(plan.outside_uid), Some(plan.outside_gid))
            .map_err(|e| format!("{}: {e}", host_socket.display()))?;
    }
    let child = sandbox_linux::spawn(&plan)?;
    let pid = child.pid;
    let pipe = |fd: std::os::fd::OwnedFd| -> Option<Output> {
        tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
            .ok()
            .map(|r| Box::new(r) as Output)
    };
    let pidfd = child.pidfd;
    let exit = Box::pin(async move {
        // SAFETY: the AsyncFd owns the pidfd; nothing else closes or replaces it.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        };
        if let Ok(fd) = registered {
            let _ = fd.readable().await;
        }
        let waited = tokio::task::spawn_blocking(move || {
            let mut status = 0;
            let pid = libc::pid_t::try_from(pid).unwrap_or(0);
            // SAFETY: waitpid(2) of our own child, reaped only here.
            let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
            if reaped == pid {
                use std::os::unix::process::ExitStatusExt;
                std::process::ExitStatus::from_raw(status).to_string()
            } else {
                format!("unknown exit ({})", std::io::Error::last_os_error())
            }
        })
        .await;
        waited.unwrap_or_else(|e| format!("unknown exit ({e})"))
    });
    Ok(Started {
        pid,
        stdout: pipe(child.stdout),
        stderr: pipe(child.stderr),
        exit,
    })
}

/// Starts the plugin as the server's user, where isolation is not available and the operator
/// allowed it: a minimal environment, its own process group, `no_new_privs`, rlimits, and
/// PID/mount/network namespaces where util-linux `unshare` can make them.
fn start_unisolated(
    executable: &Path,
    working_dir: &Path,
    env: &[(String, String)],
    isolation: &Isolation,
) -> std::io::Result<Started> {
    let mut command = if cfg!(target_os = "linux") && namespaces_available() {
        // The plugin runs as PID 1 of a new PID namespace with its own /proc, in a new mount
        // namespace, and without network unless its policy grants http; `unshare` stays as
        // its parent and kills it when it dies.
        let mut command = Command::new("unshare");
        command.args(["--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL"]);
        if isolation.no_network {
            command.arg("--net");
        }
        command.arg("--").arg(executable);
        command
    } else {
        Command::new(executable)
    };
    let memory = isolation.memory_bytes;
    command
        .current_dir(working_dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2) and
    // setrlimit(2): both are async-signal-safe system calls on plain values.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            let core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &core) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if memory > 0 {
                // RLIMIT_DATA counts private writable memory; the PROT_NONE reservations Go and
                // Java runtimes make at start do not count, so they still start (RLIMIT_AS
                // would stop them).
                let limit = libc::rlimit {
                    rlim_cur: memory,
                    rlim_max: memory,
                };
                if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let pid = child.id().unwrap_or(0);
    let stdout = child.stdout.take().map(|s| Box::new(s) as Output);
    let stderr = child.stderr.take().map(|s| Box::new(s) as Output);
    let exit = Box::pin(async move {
        match child.wait().await {
            Ok(status) => status.to_string(),
            Err(e) => format!("unknown exit ({e})"),
        }
    });
    Ok(Started {
        pid,
        stdout,
        stderr,
        exit,
    })
}
