//! [`IsolationConfig`]: how native plugin processes are isolated from the host, and the
//! one-time probe of whether this kernel and this user can give that isolation.

use std::path::PathBuf;

/// The uid and gid a plugin runs as when the server runs as root: `nobody`.
pub const DEFAULT_PLUGIN_ID: u32 = 65_534;
/// Processes (threads included) a plugin's uid may have at once (`RLIMIT_NPROC`).
pub const DEFAULT_MAX_PROCESSES: u64 = 256;
/// Files a plugin process may hold open (`RLIMIT_NOFILE`).
pub const DEFAULT_MAX_OPEN_FILES: u64 = 1_024;
/// Size of a plugin's private `/tmp` (a tmpfs), in MiB.
pub const DEFAULT_TMP_SIZE_MB: u32 = 64;

/// The name of the setting that lets native plugins run without isolation, as it appears in
/// error messages (`goatkit.toml` key; the environment variable is
/// `GOATKIT_ALLOW_UNISOLATED_NATIVE_PLUGINS`).
pub const ALLOW_UNISOLATED_KEY: &str = "allow_unisolated_native_plugins";

/// How native plugin processes are isolated.
///
/// With isolation (Linux user, mount, PID, IPC, UTS and network namespaces),
/// a plugin runs as an unprivileged user with no capabilities and `no_new_privs`, in a new root
/// holding read-only binds of the system directories (`/usr`, `/bin`, `/lib`…, a few files of
/// `/etc`), its own directory read-only, a private `/tmp` tmpfs, a fresh `/proc` of its own PID
/// namespace, a minimal `/dev`, and its host socket: never the data directory, other plugins or
/// the host's home. Where the kernel or the user running the server cannot do that, native
/// plugins do not start unless [`IsolationConfig::allow_unisolated_native_plugins`] is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationConfig {
    /// Run native plugins without isolation where it is not available (they then run as the
    /// server's user and can read whatever it can, its secrets included). Off by default:
    /// such plugins are refused, with an error naming [`ALLOW_UNISOLATED_KEY`].
    pub allow_unisolated_native_plugins: bool,
    /// The uid a plugin runs as, outside its user namespace, when the server runs as root
    /// (another user can only map its own uid).
    pub uid: u32,
    /// The gid a plugin runs as, outside its user namespace, when the server runs as root.
    pub gid: u32,
    /// More host paths every plugin sees read-only at the same place (an interpreter's prefix
    /// such as `/opt/python3.12` or `/root/.pyenv`).
    pub read_only_paths: Vec<PathBuf>,
    /// `RLIMIT_NPROC` of a plugin (its uid's processes and threads).
    pub max_processes: u64,
    /// `RLIMIT_NOFILE` of a plugin.
    pub max_open_files: u64,
    /// Size of the plugin's private `/tmp`, in MiB.
    pub tmp_size_mb: u32,
    /// Behave as if the kernel refused isolation (to test the refusal and the opt-in).
    pub assume_unavailable: bool,
}

impl Default for IsolationConfig {
    fn default() -> Self {
        Self {
            allow_unisolated_native_plugins: false,
            uid: DEFAULT_PLUGIN_ID,
            gid: DEFAULT_PLUGIN_ID,
            read_only_paths: Vec::new(),
            max_processes: DEFAULT_MAX_PROCESSES,
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            tmp_size_mb: DEFAULT_TMP_SIZE_MB,
            assume_unavailable: false,
        }
    }
}

/// Whether plugins can be isolated here: `Err(why not)` when not. The kernel is probed once
/// per process, by starting `true` in the sandbox.
pub(crate) fn available(config: &IsolationConfig) -> Result<(), String> {
    if config.assume_unavailable {
        return Err(
            "the configuration says isolation is not available (assume_unavailable)".into(),
        );
    }
    static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    PROBE.get_or_init(|| probe(config)).clone()
}

fn probe(config: &IsolationConfig) -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return Err("native plugin isolation needs Linux".into());
    }
    let truth = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .map(std::path::Path::new)
        .find(|p| p.is_file())
        .ok_or("no `true` program to probe with")?;
    let stage = std::env::temp_dir().join(format!("gk-isolation-probe-{}", std::process::id()));
    std::fs::create_dir_all(&stage).map_err(|e| format!("{}: {e}", stage.display()))?;
    let outcome = probe_in(config, truth, &stage);
    let _ = std::fs::remove_dir(&stage);
    outcome
}

fn probe_in(
    config: &IsolationConfig,
    truth: &std::path::Path,
    stage: &std::path::Path,
) -> Result<(), String> {
    let plan = crate::sandbox_plan::plan(&crate::sandbox_plan::Request {
        executable: truth,
        working_dir: truth.parent().unwrap_or(std::path::Path::new("/usr/bin")),
        stage,
        host_socket: None,
        env: &[],
        network: false,
        memory_bytes: 0,
        config,
    })?;
    let child = crate::sandbox_linux::spawn(&plan)?;
    let pid = libc::pid_t::try_from(child.pid).map_err(|e| e.to_string())?;
    let mut status = 0;
    // SAFETY: waitpid(2) of our own child.
    let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
    let exited_well = reaped == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if exited_well {
        Ok(())
    } else {
        Err(format!(
            "a sandboxed test process failed (wait status {status})"
        ))
    }
}
