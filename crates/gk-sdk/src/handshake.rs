//! The process handshake between the host and a gRPC plugin (go-plugin's format).
//!
//! The host starts the plugin with [`MAGIC_COOKIE_KEY`]`=`[`MAGIC_COOKIE_VALUE`], the path of its
//! host socket and a token in the environment. The plugin listens on a Unix socket of its own
//! and prints one line on stdout: `1|1|unix|/path/to/plugin.sock|grpc` (core protocol version,
//! app protocol version, network, address, protocol).

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

/// A parsed handshake line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The plugin's socket path.
    pub socket: String,
}

/// The line a plugin prints for its socket.
pub fn handshake_line(socket: &str) -> String {
    format!("{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|unix|{socket}|grpc")
}

/// Parses a handshake line; the error quotes what the plugin printed.
pub fn parse_handshake(line: &str) -> Result<Handshake, String> {
    let quoted = || format!("the plugin printed `{}`", line.trim_end().escape_debug());
    let parts: Vec<&str> = line.trim().split('|').collect();
    let [core, app, network, address, protocol] = parts.as_slice() else {
        return Err(format!(
            "{}; a handshake line is `1|1|unix|/path/to/socket|grpc`",
            quoted()
        ));
    };
    if *core != CORE_PROTOCOL_VERSION.to_string() {
        return Err(format!(
            "{}: core protocol version `{core}`, the host speaks {CORE_PROTOCOL_VERSION}",
            quoted()
        ));
    }
    if *app != APP_PROTOCOL_VERSION.to_string() {
        return Err(format!(
            "{}: app protocol version `{app}`, the host speaks {APP_PROTOCOL_VERSION}",
            quoted()
        ));
    }
    if *network != "unix" {
        return Err(format!(
            "{}: network `{network}`, the host speaks unix",
            quoted()
        ));
    }
    if *protocol != "grpc" {
        return Err(format!(
            "{}: protocol `{protocol}`, the host speaks grpc",
            quoted()
        ));
    }
    if address.is_empty() {
        return Err(format!("{}: no socket path", quoted()));
    }
    Ok(Handshake {
        socket: (*address).to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        assert_eq!(
            parse_handshake(&handshake_line("/tmp/p.sock")),
            Ok(Handshake {
                socket: "/tmp/p.sock".into()
            })
        );
        for (line, problem) in [
            ("hello", "a handshake line is"),
            ("2|1|unix|/s|grpc", "core protocol version `2`"),
            ("1|9|unix|/s|grpc", "app protocol version `9`"),
            ("1|1|tcp|127.0.0.1:1|grpc", "network `tcp`"),
            ("1|1|unix|/s|netrpc", "protocol `netrpc`"),
            ("1|1|unix||grpc", "no socket path"),
        ] {
            let err = parse_handshake(line).unwrap_err();
            assert!(
                err.contains(problem) && err.contains(&format!("`{line}`")),
                "{line}: {err}"
            );
        }
    }
}
