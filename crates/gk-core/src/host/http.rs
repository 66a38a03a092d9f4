//! Outbound HTTP for plugins, on hyper with rustls.
//!
//! The host name is resolved first and every address is checked: loopback, private, link-local
//! (cloud metadata at 169.254.169.254), shared (100.64/10), unspecified, multicast and reserved
//! ranges are refused unless the configuration opens that network (and port) in
//! [`HttpConfig::allow_private`] and the request may go inside
//! ([`HttpRequest::internal_allowed`]: its host is named exactly in the plugin's scope). The connection then goes
//! to a checked address itself, so a name that the sandbox allowed but that resolves inside
//! (DNS rebinding) cannot reach inside. Redirects are returned to the plugin, never followed, so
//! the sandbox judges every hop. The response body is read up to a cap and no further.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gk_sdk::{HostError, HostResult, HttpRequest, HttpResponse};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use url::{Host, Url};

/// The default largest response body (10 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 10 << 20;

/// Limits of outbound HTTP.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Longest DNS lookup plus TCP (and TLS) connect.
    pub connect_timeout: Duration,
    /// Longest whole request, body included.
    pub total_timeout: Duration,
    /// Largest response body read.
    pub max_response_bytes: usize,
    /// The internal networks (loopback, private, link-local, …) an operator opens to plugins,
    /// each optionally limited to one port. Empty by default: every internal address is refused.
    pub allow_private: Vec<PrivateNetwork>,
}

/// An internal network opened to plugins: `10.1.2.0/24`, `192.168.1.7`, `127.0.0.1:8025`,
/// `10.0.0.0/8:443`, `fd00::/8`, `[::1]:8025`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivateNetwork {
    /// The addresses.
    pub network: IpNet,
    /// The one port opened, or every port.
    pub port: Option<u16>,
}

/// Why an entry of `allow_private` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{entry}` is not a network (like 10.1.2.0/24, 192.168.1.7 or 127.0.0.1:8025)")]
pub struct PrivateNetworkError {
    /// The entry as written.
    pub entry: String,
}

impl std::str::FromStr for PrivateNetwork {
    type Err = PrivateNetworkError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let entry = text.trim();
        let error = || PrivateNetworkError {
            entry: text.to_owned(),
        };
        if let Ok(address) = entry.parse::<SocketAddr>() {
            return Ok(Self {
                network: IpNet::from(canonical(address.ip())),
                port: Some(address.port()),
            });
        }
        if let Some(network) = parse_network(entry) {
            return Ok(Self {
                network,
                port: None,
            });
        }
        // `10.0.0.0/8:443`: a network, then a port after the prefix length.
        let (network, port) = entry.rsplit_once(':').ok_or_else(error)?;
        let network = network.contains('/').then(|| parse_network(network));
        match (network.flatten(), port.parse::<u16>()) {
            (Some(network), Ok(port)) => Ok(Self {
                network,
                port: Some(port),
            }),
            _ => Err(error()),
        }
    }
}

impl std::fmt::Display for PrivateNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.network),
            None => write!(f, "{}", self.network),
        }
    }
}

fn parse_network(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|net| net.trunc())
}

/// An IPv4 address in IPv6 clothes (`::ffff:10.0.0.1`) is judged as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl PrivateNetwork {
    /// Whether this entry opens `address`.
    pub fn opens(&self, address: SocketAddr) -> bool {
        self.network.contains(&canonical(address.ip()))
            && self.port.is_none_or(|port| port == address.port())
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(30),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            allow_private: Vec::new(),
        }
    }
}

/// The outbound HTTP client.
#[derive(Clone)]
pub struct HttpClient {
    config: HttpConfig,
    tls: TlsConnector,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Whether an address is inside: not a public unicast address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                // IETF protocol assignments (192.0.0.0/24) and benchmarking (198.18.0.0/15).
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (b & 0xfe) == 18)
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            let first = segments[0];
            let embedded_v4 = |high: u16, low: u16| {
                let [a, b] = high.to_be_bytes();
                let [c, d] = low.to_be_bytes();
                is_internal(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)))
            };
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                // Deprecated site-local.
                || (first & 0xffc0) == 0xfec0
                // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address a gateway
                // would reach: judged as that address.
                || (segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                    && embedded_v4(segments[6], segments[7]))
                // Local-use NAT64 (64:ff9b:1::/48), Teredo (2001::/32), IPv4-translated
                // (::ffff:0:a.b.c.d): reach gateways and tunnels, never a plugin's business.
                || segments[..3] == [0x64, 0xff9b, 1]
                || (first == 0x2001 && (segments[1] == 0 || segments[1] == 0x0db8))
                || (segments[..4] == [0, 0, 0, 0] && segments[4] == 0xffff && segments[5] == 0)
                || (first == 0x2002 && embedded_v4(segments[1], segments[2]))
                // IPv4-compatible (::a.b.c.d), deprecated but still parsed.
                || (segments[..6] == [0; 6] && embedded_v4(segments[6], segments[7]))
        }
    }
}

impl HttpClient {
    /// A client with the web PKI's root certificates.
    pub fn new(config: HttpConfig) -> Self {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
            .map(|config| TlsConnector::from(Arc::new(config)));
        let tls = match tls {
            Ok(tls) => tls,
            // The ring provider supports the default protocol versions; this cannot fail.
            Err(error) => unreachable!("rustls rejected its own defaults: {error}"),
        };
        Self { config, tls }
    }

    /// Sends `request`; see the module documentation for what is refused.
    pub async fn send(&self, request: HttpRequest) -> HostResult<HttpResponse> {
        let total = self.config.total_timeout;
        tokio::time::timeout(total, self.send_inner(request))
            .await
            .unwrap_or_else(|_| {
                Err(HostError::Timeout(format!(
                    "the request took longer than {} ms (total_timeout)",
                    total.as_millis()
                )))
            })
    }

    async fn send_inner(&self, request: HttpRequest) -> HostResult<HttpResponse> {
        let url = Url::parse(&request.url)
            .map_err(|e| HostError::InvalidInput(format!("`{}` is not a URL: {e}", request.url)))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(HostError::InvalidInput(format!(
                    "scheme `{other}` is not supported"
                )));
            }
        };
        let host = url
            .host()
            .ok_or_else(|| HostError::InvalidInput(format!("`{url}` has no host")))?
            .to_owned();
        let port = url
            .port_or_known_default()
            .unwrap_or(if https { 443 } else { 80 });
        // What can be refused without the network is refused before any lookup or connection.
        let method = if request.method.is_empty() {
            "GET"
        } else {
            request.method.as_str()
        };
        let method = hyper::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| HostError::InvalidInput(format!("`{method}` is not an HTTP method")))?;
        let connect = self.connect(&host, port, https, request.internal_allowed);
        let stream = tokio::time::timeout(self.config.connect_timeout, connect)
            .await
            .unwrap_or_else(|_| {
                Err(HostError::Timeout(format!(
                    "connecting to {host} took longer than {} ms (connect_timeout)",
                    self.config.connect_timeout.as_millis()
                )))
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| HostError::Backend(format!("HTTP handshake with {host}: {e}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });

        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", host_text(&host)),
            None => host_text(&host),
        };
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, authority);
        for (name, value) in &request.headers {
            if name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length") {
                continue;
            }
            builder = builder.header(name.as_str(), value.as_str());
        }
        let outgoing = builder
            .body(Full::new(Bytes::from(request.body)))
            .map_err(|e| HostError::InvalidInput(format!("the request is not valid HTTP: {e}")))?;
        let response = sender
            .send_request(outgoing)
            .await
            .map_err(|e| HostError::Backend(format!("HTTP request to {host}: {e}")))?;

        let status = response.status().as_u16();
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value)
                })
                .or_insert(value);
        }
        let mut body = response.into_body();
        let mut collected = Vec::new();
        let cap = self.config.max_response_bytes;
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| HostError::Backend(format!("reading the response of {host}: {e}")))?;
            if let Some(data) = frame.data_ref() {
                if collected.len() + data.len() > cap {
                    return Err(HostError::InvalidInput(format!(
                        "the response of {host} is larger than {cap} bytes (max_response_bytes)"
                    )));
                }
                collected.extend_from_slice(data);
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body: collected,
        })
    }

    /// Resolves, checks every address, connects to the first allowed one (and speaks TLS).
    async fn connect(
        &self,
        host: &Host<String>,
        port: u16,
        https: bool,
        internal_allowed: bool,
    ) -> HostResult<Box<dyn Io>> {
        let addresses: Vec<SocketAddr> = match host {
            Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(*ip), port)],
            Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(*ip), port)],
            Host::Domain(name) => tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|e| HostError::Unavailable(format!("cannot resolve {name}: {e}")))?
                .collect(),
        };
        let allowed: Vec<SocketAddr> = addresses
            .iter()
            .copied()
            .filter(|a| {
                !is_internal(a.ip())
                    || (internal_allowed && self.config.allow_private.iter().any(|n| n.opens(*a)))
            })
            .collect();
        if allowed.is_empty() {
            // The addresses go to the server's log only: a plugin must not map internal names.
            let listed: Vec<String> = addresses.iter().map(|a| a.ip().to_string()).collect();
            tracing::info!(host = %host_text(host), port, addresses = %listed.join(", "), "outbound HTTP refused: internal addresses only");
            return Err(HostError::denied(
                "http",
                format!(
                    "{} resolves only to internal addresses on port {port}, which the host does not reach ([http] allow_private opens chosen networks)",
                    host_text(host),
                ),
            ));
        }
        let mut last_error = None;
        for address in allowed {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    if !https {
                        return Ok(Box::new(stream));
                    }
                    let name = match host {
                        Host::Domain(name) => ServerName::try_from(name.clone()),
                        other => ServerName::try_from(
                            host_text(other).trim_matches(['[', ']']).to_owned(),
                        ),
                    }
                    .map_err(|e| HostError::InvalidInput(format!("{}: {e}", host_text(host))))?;
                    let tls = self.tls.connect(name, stream).await.map_err(|e| {
                        HostError::Backend(format!("TLS with {}: {e}", host_text(host)))
                    })?;
                    return Ok(Box::new(tls));
                }
                Err(error) => last_error = Some(format!("{address}: {error}")),
            }
        }
        Err(HostError::Unavailable(format!(
            "cannot connect to {}: {}",
            host_text(host),
            last_error.unwrap_or_default()
        )))
    }
}

fn host_text(host: &Host<String>) -> String {
    match host {
        Host::Domain(name) => name.clone(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => format!("[{ip}]"),
    }
}

/// A connected stream, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

#[cfg(test)]
mod tests {
    use super::{PrivateNetwork, is_internal};

    #[test]
    fn private_networks_are_read_with_an_optional_port() {
        let opens = |entry: &str, address: &str| {
            entry
                .parse::<PrivateNetwork>()
                .unwrap()
                .opens(address.parse().unwrap())
        };
        assert!(opens("10.1.2.0/24", "10.1.2.9:80"));
        assert!(!opens("10.1.2.0/24", "10.1.3.9:80"));
        assert!(opens("10.1.2.7/24", "10.1.2.9:80"), "host bits are dropped");
        assert!(opens("127.0.0.1:8025", "127.0.0.1:8025"));
        assert!(!opens("127.0.0.1:8025", "127.0.0.1:8026"));
        assert!(opens("10.0.0.0/8:443", "10.9.9.9:443"));
        assert!(!opens("10.0.0.0/8:443", "10.9.9.9:80"));
        assert!(
            opens("192.168.1.7", "[::ffff:192.168.1.7]:80"),
            "mapped IPv6"
        );
        assert!(opens("[::1]:8025", "[::1]:8025"));
        assert!(opens("fd00::/8", "[fd00::5]:80"));
        for bad in [
            "",
            "localhost",
            "10.0.0.0/33",
            "10.0.0.0/8:http",
            "10.1.2.3:99999",
        ] {
            let error = bad.parse::<PrivateNetwork>().unwrap_err();
            assert!(error.to_string().contains("is not a network"), "{bad}");
        }
        let entry: PrivateNetwork = "10.0.0.0/8:443".parse().unwrap();
        assert_eq!(entry.to_string(), "10.0.0.0/8:443");
    }

    #[test]
    fn internal_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "ff02::1",
            "64:ff9b::7f00:1",
            "2002:a00:1::1",
            "::7f00:1",
            "fec0::1",
            "192.0.0.8",
            "198.18.0.1",
            "198.19.255.255",
            "64:ff9b:1::a00:1",
            "2001:0:4136:e378::1",
            "::ffff:0:7f00:1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "100.128.0.1",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
