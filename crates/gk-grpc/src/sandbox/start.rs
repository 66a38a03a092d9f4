//! Starting a plugin process under the OS isolation it gets: fully isolated (`linux.rs`), or,
//! where the operator allowed it, unisolated with what util-linux `unshare` and rlimits give;
//! its memory capped by a cgroup v2 where the host may make one.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::AsyncRead;
use tokio::process::Command;

use super::config::IsolationConfig;
use super::plan::{Request, plan};
use super::spawner;

/// How a plugin process is isolated from the host.
#[derive(Debug, Clone)]
pub(crate) struct Isolation {
    /// New network namespace: no network at all (the Unix socket to the host still works).
    pub(crate) no_network: bool,
    /// Cap on private writable memory (`RLIMIT_DATA`), in bytes; 0 = none.
    pub(crate) memory_bytes: u64,
    /// Full isolation (`linux.rs`) with this configuration and host socket; `None` runs
    /// the process unisolated (the operator allowed it where isolation is not available).
    pub(crate) sandbox: Option<(Arc<IsolationConfig>, PathBuf)>,
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
fn memory_cgroup(plugin: &str, pid: u32, bytes: u64) -> Option<PathBuf> {
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

pub(crate) type Output = Box<dyn AsyncRead + Unpin + Send>;

/// How a process ends: the description of its exit status.
pub(crate) type Exit = Pin<Box<dyn Future<Output = String> + Send>>;

/// A process just started: its pid, output, and how it ends.
pub(crate) struct Started {
    /// Its pid, as the host sees it.
    pub(crate) pid: u32,
    /// Its stdout (the handshake line, then log lines).
    pub(crate) stdout: Option<Output>,
    /// Its stderr.
    pub(crate) stderr: Option<Output>,
    /// Resolves when it has ended (and its memory cgroup is removed).
    pub(crate) exit: Exit,
}

/// Starts `executable` as `plugin`'s process, isolated as `isolation` says, and puts it in a
/// memory cgroup of its own where the host may make one.
pub(crate) async fn start(
    plugin: &str,
    executable: &Path,
    working_dir: &Path,
    env: &[(String, String)],
    isolation: &Isolation,
) -> Result<Started, String> {
    let mut started = match &isolation.sandbox {
        Some((config, host_socket)) => {
            start_isolated(executable, working_dir, env, isolation, config, host_socket).await?
        }
        None => {
            start_unisolated(executable, working_dir, env, isolation).map_err(|e| e.to_string())?
        }
    };
    let memory = isolation.memory_bytes;
    if memory > 0
        && let Some(cgroup) = memory_cgroup(plugin, started.pid, memory)
    {
        let wait = started.exit;
        started.exit = Box::pin(async move {
            let description = wait.await;
            let _ = std::fs::remove_dir(cgroup);
            description
        });
    }
    Ok(started)
}

/// Starts the plugin in its namespaces (`linux.rs`).
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
    let plan = plan(&Request {
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
    // From the spawner thread, which lives as long as the process: the child's
    // `PR_SET_PDEATHSIG` fires when the thread that made it ends.
    let child = spawner::spawn(plan).await?.into_parts();
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
