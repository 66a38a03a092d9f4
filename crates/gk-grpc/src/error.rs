//! Errors of starting a gRPC plugin. Errors of calls are [`gk_sdk::PluginError`]s.

/// Why a plugin process could not be started.
#[derive(Debug, thiserror::Error)]
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
    /// The plugin's handshake line was refused.
    #[error("handshake with {plugin} failed: {source}")]
    HandshakeLine {
        /// The plugin.
        plugin: String,
        /// What was wrong with the line.
        source: crate::HandshakeError,
    },
    /// The host side could not be set up (socket directory, host service).
    #[error("cannot prepare the host side of {plugin}: {message}")]
    Host {
        /// The plugin.
        plugin: String,
        /// What went wrong.
        message: String,
    },
    /// The plugin cannot be isolated here and the operator did not allow unisolated plugins.
    #[error(
        "native plugin {plugin} cannot be isolated here ({reason}); it does not start unless \
         `allow_unisolated_native_plugins = true` (GOATKIT_ALLOW_UNISOLATED_NATIVE_PLUGINS=1) \
         lets it run unisolated, as the server's user"
    )]
    Unisolated {
        /// The plugin.
        plugin: String,
        /// Why isolation is not available.
        reason: String,
    },
    /// The plugin registered under another name than the one it was discovered under.
    #[error(
        "{plugin} registered as `{claimed}`: a plugin registers under the name it was \
         installed as"
    )]
    NameMismatch {
        /// The name it was discovered (installed) under.
        plugin: String,
        /// The name its `Register` reply claimed.
        claimed: String,
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
