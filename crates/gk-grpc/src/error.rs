//! Errors of starting a gRPC plugin. Errors of calls are [`gk_sdk::PluginError`]s.

/// Why a plugin process could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrpcError {
    /// The executable could not be started.
    #[error("cannot start {path}: {message}")]
    Spawn {
        /// The executable.
        path: String,
        /// What the OS said.
        message: String,
    },
    /// The plugin did not complete the handshake.
    #[error("handshake with {plugin} failed: {message}")]
    Handshake {
        /// The plugin.
        plugin: String,
        /// What went wrong, quoting what the plugin printed.
        message: String,
    },
    /// The host side could not be set up (socket directory, host service).
    #[error("cannot prepare the host side of {plugin}: {message}")]
    Host {
        /// The plugin.
        plugin: String,
        /// What went wrong.
        message: String,
    },
    /// `Register` failed.
    #[error("{plugin} did not register: {message}")]
    Register {
        /// The plugin.
        plugin: String,
        /// What went wrong.
        message: String,
    },
}
