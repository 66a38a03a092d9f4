//! The process handshake between the host and a gRPC plugin (go-plugin's format).
//!
//! The host starts the plugin with [`MAGIC_COOKIE_KEY`]`=`[`MAGIC_COOKIE_VALUE`], the path of its
//! host socket and a token in the environment. The plugin listens on a Unix socket of its own
//! and prints one line on stdout: `1|1|unix|/path/to/plugin.sock|grpc` (core protocol version,
//! app protocol version, network, address, protocol). The host reads it (gk-grpc); this module
//! holds what both sides share.

/// The environment variable that marks a process as started by the host.
pub const MAGIC_COOKIE_KEY: &str = "GOATKIT_PLUGIN";
/// Its value.
pub const MAGIC_COOKIE_VALUE: &str = "goatkit-v1";
/// The environment variable with the path of the host's socket for this plugin.
pub const HOST_SOCKET_ENV: &str = "GOATKIT_HOST_SOCKET";
/// The environment variable with the token the plugin sends on every host call.
pub const HOST_TOKEN_ENV: &str = "GOATKIT_HOST_TOKEN";
/// The gRPC metadata key carrying that token.
pub const TOKEN_METADATA: &str = "x-goatkit-token";
/// The core protocol version (go-plugin's first field).
pub const CORE_PROTOCOL_VERSION: u32 = 1;
/// The app protocol version: `goatkit.plugin.v1`.
pub const APP_PROTOCOL_VERSION: u32 = 1;
/// The service name the plugin's `grpc.health.v1` reports on (go-plugin's convention).
pub const HEALTH_SERVICE: &str = "plugin";
/// The `InitRequest.config` key of the host's message cap in bytes (either way): a plugin keeps
/// what it sends under it, and takes from the host up to it.
pub const INIT_MAX_MESSAGE_BYTES: &str = "max_message_bytes";
/// The message cap a plugin assumes when the host does not say (tonic's and gRPC's default).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;

/// The line a plugin prints for its socket.
pub fn handshake_line(socket: &str) -> String {
    format!("{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|unix|{socket}|grpc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_versions_and_the_socket() {
        assert_eq!(handshake_line("/tmp/p.sock"), "1|1|unix|/tmp/p.sock|grpc");
    }
}
