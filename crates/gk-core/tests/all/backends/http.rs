//! Outbound HTTP against a local test server: status, headers, body, size cap, timeout,
//! redirects not followed, and internal addresses refused unless allowed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gk_core::host::{HttpClient, HttpConfig};
use gk_sdk::{HostError, HttpRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A tiny HTTP/1.1 server with a few routes; returns its port.
async fn test_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, port));
        }
    });
    port
}

async fn serve(mut stream: TcpStream, port: u16) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        let Ok(n) = stream.read(&mut buffer).await else {
            return;
        };
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buffer[..n]);
        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while request.len() < head_end + length {
        let Ok(n) = stream.read(&mut buffer).await else {
            return;
        };
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..n]);
    }
    let body = request[head_end..].to_vec();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        })
    };
    let reply = |status: &str, extra: &str, body: &[u8]| {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    };
    let response = match path.split('?').next().unwrap_or_default() {
        "/status" => reply(
            "201 Created",
            "X-Test: yes\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n",
            b"created",
        ),
        "/echo" => reply(
            "200 OK",
            &format!(
                "X-Echo: {}\r\nX-Path: {path}\r\n",
                header("x-in").unwrap_or_default()
            ),
            &body,
        ),
        "/redirect" => reply(
            "302 Found",
            &format!("Location: http://127.0.0.1:{port}/status\r\n"),
            b"",
        ),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            reply("200 OK", "", b"late")
        }
        "/big" => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 52428800\r\n\r\n")
                .await;
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..800 {
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            return;
        }
        _ => reply("404 Not Found", "", b"no"),
    };
    let _ = stream.write_all(&response).await;
}

fn client(allow_private_networks: bool) -> HttpClient {
    HttpClient::new(HttpConfig {
        total_timeout: Duration::from_millis(800),
        max_response_bytes: 1 << 20,
        allow_private: if allow_private_networks {
            vec!["127.0.0.0/8".parse().unwrap()]
        } else {
            Vec::new()
        },
        ..HttpConfig::default()
    })
}

/// A GET as the sandbox passes it for a host its scope names exactly.
fn get(url: String) -> HttpRequest {
    HttpRequest {
        url,
        internal_allowed: true,
        ..HttpRequest::default()
    }
}

#[tokio::test]
async fn status_headers_and_body() {
    let port = test_server().await;
    let response = client(true)
        .send(get(format!("http://127.0.0.1:{port}/status")))
        .await
        .unwrap();
    assert_eq!(response.status, 201);
    assert_eq!(response.headers["x-test"], "yes");
    assert_eq!(
        response.headers["set-cookie"], "a=1, b=2",
        "repeated headers are joined"
    );
    assert_eq!(response.body, b"created");

    let echo = HttpRequest {
        method: "post".into(),
        url: format!("http://localhost:{port}/echo?q=1"),
        headers: BTreeMap::from([("X-In".to_owned(), "hello".to_owned())]),
        body: b"{\"a\":1}".to_vec(),
        internal_allowed: true,
    };
    let response = client(true).send(echo).await.unwrap();
    assert_eq!(
        (response.status, response.body.as_slice()),
        (200, b"{\"a\":1}".as_slice())
    );
    assert_eq!(response.headers["x-echo"], "hello");
    assert_eq!(
        response.headers["x-path"], "/echo?q=1",
        "the query reaches the server"
    );
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let port = test_server().await;
    let response = client(true)
        .send(get(format!("http://127.0.0.1:{port}/redirect")))
        .await
        .unwrap();
    assert_eq!(response.status, 302);
    assert_eq!(
        response.headers["location"],
        format!("http://127.0.0.1:{port}/status")
    );
}

#[tokio::test]
async fn the_size_cap_stops_reading() {
    let port = test_server().await;
    let start = Instant::now();
    let err = client(true)
        .send(get(format!("http://127.0.0.1:{port}/big")))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        HostError::InvalidInput(
            "the response of 127.0.0.1 is larger than 1048576 bytes (max_response_bytes)".into()
        )
    );
    assert!(
        start.elapsed() < Duration::from_millis(800),
        "it stopped reading instead of taking all 50 MiB"
    );
}

#[tokio::test]
async fn slow_servers_time_out() {
    let port = test_server().await;
    let start = Instant::now();
    let err = client(true)
        .send(get(format!("http://127.0.0.1:{port}/slow")))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        HostError::Timeout("the request took longer than 800 ms (total_timeout)".into())
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn internal_addresses_are_refused_unless_allowed() {
    let port = test_server().await;
    for url in [
        format!("http://localhost:{port}/status"),
        format!("http://127.0.0.1:{port}/status"),
        format!("http://[::ffff:127.0.0.1]:{port}/status"),
    ] {
        let err = client(false).send(get(url.clone())).await.unwrap_err();
        let HostError::PermissionDenied { permission, reason } = &err else {
            panic!("{url}: {err:?}")
        };
        assert_eq!(permission, "http");
        assert!(
            reason.contains("resolves only to internal addresses on port")
                && !reason.contains("addresses ("),
            "{url}: {reason} (the resolved addresses stay in the server's log)"
        );
    }
    let err = client(false)
        .send(get("http://169.254.169.254/latest/meta-data".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, HostError::PermissionDenied { .. }),
        "cloud metadata: {err:?}"
    );
    assert_eq!(
        client(true)
            .send(get(format!("http://localhost:{port}/status")))
            .await
            .unwrap()
            .status,
        201
    );
    // An opened network is reached only by a request whose host the plugin's scope names
    // exactly (the sandbox says so): not through `*` and a name that resolves inside.
    let through_a_wildcard = HttpRequest {
        internal_allowed: false,
        ..get(format!("http://localhost:{port}/status"))
    };
    let err = client(true).send(through_a_wildcard).await.unwrap_err();
    assert!(matches!(err, HostError::PermissionDenied { .. }), "{err:?}");
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_problem() {
    let err = client(true)
        .send(get("ftp://example.com/x".into()))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        HostError::InvalidInput("scheme `ftp` is not supported".into())
    );
    let err = client(true)
        .send(get("not a url".into()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not a URL"), "{err}");
    let bad_method = HttpRequest {
        method: "GE T".into(),
        url: "http://127.0.0.1:1/".into(),
        ..Default::default()
    };
    // Refused before any connection (port 1 would refuse it too, with another message).
    let err = client(true).send(bad_method).await.unwrap_err();
    assert!(
        err.to_string().contains("`GE T` is not an HTTP method"),
        "{err}"
    );
}
