//! gk-grpc: runs plugin executables in their own process and speaks to them over gRPC.
//!
//! [`GrpcRuntime::start`] runs the manifest's binary isolated (see [`IsolationConfig`]): in new
//! user, mount, PID, IPC, UTS and network namespaces (no network: a plugin's `http` goes
//! through the host's `http_request`), as an
//! unprivileged user without capabilities and with `no_new_privs`, in a read-only root of its
//! own (system directories, its own directory, a private `/tmp`, a fresh `/proc`, a minimal
//! `/dev`, its host socket), under rlimits, with a minimal environment (`PATH`, `TZ`, `HOME` and
//! `TMPDIR` = `/tmp`, and the handshake variables: nothing else of the host's environment
//! reaches the plugin). Where that isolation is not available it refuses the plugin, unless
//! [`IsolationConfig::allow_unisolated_native_plugins`] is set. It waits for the plugin's
//! go-plugin style handshake line within the init timeout, connects to its Unix socket and
//! serves it a `HostService` on a socket of its own that only this plugin may use (a 0700
//! directory and a per-plugin token checked on every call or `Calls` stream). `Register` must name the plugin as
//! it was started; every host call is passed, stamped with that name, to the `Arc<dyn HostApi>`
//! the plugin was initialised with — its sandbox. `Init` tells the process the host's version,
//! its directory and its writable directory ([`INIT_HOST_VERSION`], [`INIT_PLUGIN_DIR`],
//! [`INIT_WORK_DIR`]). What it prints (stdout after the handshake line, stderr) goes to its
//! log from the start: lines before `Init` are kept until it has its host. Host errors travel as
//! a `google.rpc.Status` with the `HostErrorDetail` packed as `Any`, both ways (see
//! [`gk_sdk::proto::host_error_to_status`]). Messages are capped both ways
//! ([`DEFAULT_MAX_MESSAGE_BYTES`]). Calls and host calls travel as messages on one `Calls`
//! stream each way where the plugin serves one (gk-sdk's `call_stream`; unary otherwise, see
//! [`GrpcPlugin::calls_streamed`]). Calls carry the call timeout as a deadline; shutdown asks,
//! then terminates, then kills, and removes every socket and directory.
//!
//! It depends on `gk-sdk` only: it returns a [`gk_sdk::Plugin`] and never knows the manager.

// Modules depend downwards in this order only (no cycle): `error`, `handshake`, `limits`,
// `sandbox` (all OS isolation) and `host_stream` (the `Calls` stream, answered by any
// `HostService`'s methods) are leaves; `host_server` uses `host_stream`; `process` (one
// process: start, handshake, connect) uses them; `plugin` (the `Plugin` handle) uses `process`; `supervisor`
// (restarts, health) uses `plugin`; `runtime` (start a plugin) uses all of them.
mod error;
mod handshake;
mod host_server;
mod host_stream;
mod limits;
mod plugin;
mod process;
mod runtime;
mod sandbox;
mod supervisor;

pub use error::GrpcError;
pub use handshake::HandshakeError;
pub use limits::{DEFAULT_HEALTH_INTERVAL, DEFAULT_MAX_MESSAGE_BYTES, GrpcLimits};
pub use plugin::{GrpcPlugin, INIT_HOST_VERSION, INIT_PLUGIN_DIR, INIT_WORK_DIR};
pub use runtime::GrpcRuntime;
pub use sandbox::{
    ALLOW_UNISOLATED_KEY, DEFAULT_MAX_OPEN_FILES, DEFAULT_MAX_PROCESSES, DEFAULT_PLUGIN_ID,
    DEFAULT_TMP_SIZE_MB, IsolationConfig,
};
pub use supervisor::{CRASH_WINDOW, MAX_CRASHES};
