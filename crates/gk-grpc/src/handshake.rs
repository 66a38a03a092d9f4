//! Reading a plugin's handshake line (go-plugin's format, see [`gk_sdk::handshake`]): host-only
//! code, so it lives here and not in the SDK plugin authors compile.

use gk_sdk::handshake::{APP_PROTOCOL_VERSION, CORE_PROTOCOL_VERSION};

/// A parsed handshake line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Handshake {
    /// The plugin's socket path, as the plugin sees it.
    pub(crate) socket: String,
}

/// Why a handshake line was refused. Each message quotes what the plugin printed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The line does not have the five `|`-separated fields.
    #[error("the plugin printed `{line}`; a handshake line is `1|1|unix|/path/to/socket|grpc`")]
    Malformed {
        /// What the plugin printed, escaped.
        line: String,
    },
    /// Another core protocol version.
    #[error(
        "the plugin printed `{line}`: core protocol version `{found}`, the host speaks \
         {CORE_PROTOCOL_VERSION}"
    )]
    CoreVersion {
        /// What the plugin printed, escaped.
        line: String,
        /// The version it printed.
        found: String,
    },
    /// Another app protocol version.
    #[error(
        "the plugin printed `{line}`: app protocol version `{found}`, the host speaks \
         {APP_PROTOCOL_VERSION}"
    )]
    AppVersion {
        /// What the plugin printed, escaped.
        line: String,
        /// The version it printed.
        found: String,
    },
    /// A network other than `unix`.
    #[error("the plugin printed `{line}`: network `{found}`, the host speaks unix")]
    Network {
        /// What the plugin printed, escaped.
        line: String,
        /// The network it printed.
        found: String,
    },
    /// A protocol other than `grpc`.
    #[error("the plugin printed `{line}`: protocol `{found}`, the host speaks grpc")]
    Protocol {
        /// What the plugin printed, escaped.
        line: String,
        /// The protocol it printed.
        found: String,
    },
    /// An empty socket path.
    #[error("the plugin printed `{line}`: no socket path")]
    NoSocket {
        /// What the plugin printed, escaped.
        line: String,
    },
}

/// Parses a handshake line.
pub(crate) fn parse_handshake(line: &str) -> Result<Handshake, HandshakeError> {
    let quoted = line.trim_end().escape_debug().to_string();
    let parts: Vec<&str> = line.trim().split('|').collect();
    let [core, app, network, address, protocol] = parts.as_slice() else {
        return Err(HandshakeError::Malformed { line: quoted });
    };
    let found = |field: &str| field.to_owned();
    if *core != CORE_PROTOCOL_VERSION.to_string() {
        return Err(HandshakeError::CoreVersion {
            line: quoted,
            found: found(core),
        });
    }
    if *app != APP_PROTOCOL_VERSION.to_string() {
        return Err(HandshakeError::AppVersion {
            line: quoted,
            found: found(app),
        });
    }
    if *network != "unix" {
        return Err(HandshakeError::Network {
            line: quoted,
            found: found(network),
        });
    }
    if *protocol != "grpc" {
        return Err(HandshakeError::Protocol {
            line: quoted,
            found: found(protocol),
        });
    }
    if address.is_empty() {
        return Err(HandshakeError::NoSocket { line: quoted });
    }
    Ok(Handshake {
        socket: (*address).to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gk_sdk::handshake::handshake_line;

    #[test]
    fn round_trip_and_refusals() {
        assert_eq!(
            parse_handshake(&handshake_line("/tmp/p.sock")),
            Ok(Handshake {
                socket: "/tmp/p.sock".into()
            })
        );
        let line = |l: &str| l.to_owned();
        let found = |f: &str| f.to_owned();
        for (text, expected) in [
            (
                "hello",
                HandshakeError::Malformed {
                    line: line("hello"),
                },
            ),
            (
                "2|1|unix|/s|grpc",
                HandshakeError::CoreVersion {
                    line: line("2|1|unix|/s|grpc"),
                    found: found("2"),
                },
            ),
            (
                "1|9|unix|/s|grpc",
                HandshakeError::AppVersion {
                    line: line("1|9|unix|/s|grpc"),
                    found: found("9"),
                },
            ),
            (
                "1|1|tcp|127.0.0.1:1|grpc",
                HandshakeError::Network {
                    line: line("1|1|tcp|127.0.0.1:1|grpc"),
                    found: found("tcp"),
                },
            ),
            (
                "1|1|unix|/s|netrpc",
                HandshakeError::Protocol {
                    line: line("1|1|unix|/s|netrpc"),
                    found: found("netrpc"),
                },
            ),
            (
                "1|1|unix||grpc",
                HandshakeError::NoSocket {
                    line: line("1|1|unix||grpc"),
                },
            ),
        ] {
            assert_eq!(parse_handshake(text), Err(expected), "{text}");
        }
        assert_eq!(
            parse_handshake("2|1|unix|/s|grpc\n")
                .unwrap_err()
                .to_string(),
            "the plugin printed `2|1|unix|/s|grpc`: core protocol version `2`, the host speaks 1"
        );
        assert_eq!(
            parse_handshake("a\tb").unwrap_err().to_string(),
            "the plugin printed `a\\tb`; a handshake line is `1|1|unix|/path/to/socket|grpc`"
        );
    }
}
