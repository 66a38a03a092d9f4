//! [`UnixChannel`]: a gRPC client transport over one HTTP/2 connection on a Unix socket.
//!
//! Both ends of a gRPC plugin talk over a Unix socket to exactly one peer process that lives as
//! long as the connection. tonic's `Channel` is made for the other case (a remote service,
//! reconnects, load balancing): each request travels through a `Buffer` task before it reaches
//! the connection, one more task hand-off per call. A plugin call that makes three host
//! callbacks pays that four times. This transport gives the generated clients hyper's HTTP/2
//! sender directly, so a request goes from the caller's task to the connection's.
//!
//! What it does not do: reconnect. When the connection ends, every call fails with
//! `UNAVAILABLE`; the side that owns the peer process (the host's supervisor, or the plugin
//! process that exits with its host) starts again with a new connection.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixStream;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response, Uri};

/// The authority the generated clients put in requests (HTTP/2 needs one; nothing reads it).
pub const UNIX_ORIGIN: &str = "http://localhost";

/// A gRPC transport over one HTTP/2 connection on a Unix socket: give it to a generated client
/// with [`UnixChannel::origin`] (`FooClient::with_origin(channel, UnixChannel::origin())`).
/// Cheap to clone: clones share the connection.
#[derive(Clone, Debug)]
pub struct UnixChannel {
    sender: SendRequest<Body>,
}

impl UnixChannel {
    /// Connects to the socket at `path` and makes the HTTP/2 handshake. The connection is
    /// driven by a task of the current tokio runtime until either side closes it.
    pub async fn connect(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let stream = UnixStream::connect(path).await?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        // A connection error reaches the callers through their requests (`UNAVAILABLE`).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender })
    }

    /// The origin to build generated clients with.
    pub fn origin() -> Uri {
        Uri::from_static(UNIX_ORIGIN)
    }

    /// Whether the connection has ended (its peer closed it or went away).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

impl tower::Service<Request<Body>> for UnixChannel {
    type Response = Response<hyper::body::Incoming>;
    /// A failed connection is `UNAVAILABLE`, as with tonic's own channel (hyper calls a request
    /// on a closed connection "canceled", which would read as a deadline).
    type Error = tonic::Status;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.sender.poll_ready(cx).map_err(unavailable)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // HTTP/2 needs a scheme and an authority; a client built with `new` sends the path only.
        if request.uri().authority().is_none() {
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            match Uri::try_from(format!("{UNIX_ORIGIN}{path}")) {
                Ok(uri) => *request.uri_mut() = uri,
                Err(_) => {
                    return Box::pin(std::future::ready(Err(Status::internal(
                        "the request's path is not a valid URI",
                    ))));
                }
            }
        }
        let response = self.sender.send_request(request);
        Box::pin(async move { response.await.map_err(unavailable) })
    }
}

fn unavailable(error: hyper::Error) -> Status {
    Status::unavailable(format!("the connection to the peer failed: {error}"))
}

#[cfg(all(test, feature = "grpc"))]
mod tests {
    use super::*;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    /// A tonic server with the standard health service on a Unix socket.
    async fn health_server(socket: &Path) {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("plugin", tonic_health::ServingStatus::Serving)
            .await;
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );
    }

    #[tokio::test]
    async fn generated_clients_reach_a_tonic_server_with_or_without_an_origin() {
        let dir = std::env::temp_dir().join(format!("gk-unix-channel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("s.sock");
        let _ = std::fs::remove_file(&socket);
        health_server(&socket).await;
        let channel = UnixChannel::connect(&socket).await.unwrap();
        let request = || HealthCheckRequest {
            service: "plugin".into(),
        };
        let with_origin = HealthClient::with_origin(channel.clone(), UnixChannel::origin())
            .check(request())
            .await
            .unwrap();
        assert_eq!(with_origin.get_ref().status, ServingStatus::Serving as i32);
        // Many calls at once share the one connection.
        let calls: Vec<_> = (0..32)
            .map(|_| {
                let mut client = HealthClient::new(channel.clone());
                tokio::spawn(async move { client.check(request()).await })
            })
            .collect();
        for call in calls {
            let reply = call.await.unwrap().unwrap();
            assert_eq!(reply.get_ref().status, ServingStatus::Serving as i32);
        }
        assert!(!channel.is_closed());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn calls_fail_as_unavailable_once_the_peer_is_gone() {
        let dir = std::env::temp_dir().join(format!("gk-unix-gone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("s.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        // A peer that speaks HTTP/2 for the handshake, then goes away.
        let peer = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(|_| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
                    }),
                );
            let _ = tokio::time::timeout(std::time::Duration::from_millis(200), connection).await;
        });
        let channel = UnixChannel::connect(&socket).await.unwrap();
        peer.await.unwrap();
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
