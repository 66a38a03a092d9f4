//! [`IsolationConfig`]: how native plugin processes are isolated from the host, and the fixed
//! places inside an isolated plugin's root.

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

/// The plugin's uid and gid inside its user namespace (`nobody`).
pub(crate) const INSIDE_ID: u32 = 65_534;
/// Where the host socket appears inside the plugin's root.
pub(crate) const HOST_SOCKET_INSIDE: &str = "/run/goatkit/host.sock";
/// The plugin's `TMPDIR` and `HOME` inside its root.
pub(crate) const TMP_INSIDE: &str = "/tmp";
/// The pauses, in milliseconds, before each new try of an isolated plugin's `exec` refused with
/// `ETXTBSY` (the executable is open for writing somewhere): 511 ms in all. Usually that writer
/// is no copy in progress but a descriptor inherited for a moment by a child another thread of
/// the host is starting (it closes before that child's own exec, a millisecond later), so a
/// start made while the host writes any file would otherwise fail at random.
pub(crate) const BUSY_EXECUTABLE_PAUSES_MS: [u16; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];
/// Said after the error of an `exec` still refused with `ETXTBSY` after every pause.
pub(crate) const BUSY_EXECUTABLE_HINT: &str =
    "the executable stayed open for writing through every try (is it still being copied?)";

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
