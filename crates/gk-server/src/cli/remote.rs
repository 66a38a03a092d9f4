//! `gk plugins`: the admin API of a running server, from the command line.

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A running server and the token to talk to it with.
#[derive(Debug)]
pub(crate) struct Remote {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub server: String,
    /// Bearer token.
    pub token: Option<String>,
}

impl Remote {
    /// Sends a request to the API and returns its JSON reply, or the server's error as an error.
    pub(crate) async fn send(&self, method: &str, path: &str, body: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        let mut request = hyper::Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .with_context(|| format!("`{url}` is not a valid URL"))?;
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let response = client.request(request).await.with_context(|| {
            format!(
                "cannot reach {url}: is `gk serve` running there? (set --server or GOATKIT_URL)"
            )
        })?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the reply of {url}"))?
            .to_bytes();
        let reply: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = reply["error"]["message"].as_str().map_or_else(
                || String::from_utf8_lossy(&bytes).into_owned(),
                str::to_owned,
            );
            let hint = if status.as_u16() == 401 {
                " (pass --token or set GOATKIT_TOKEN; mint one with `gk token`)"
            } else {
                ""
            };
            bail!("{method} {path}: {status}: {message}{hint}");
        }
        Ok(reply)
    }
}

/// Renders the plugin list as aligned lines.
pub(crate) fn plugin_table(list: &Value) -> String {
    let mut out = format!(
        "{:<24} {:<8} {:<7} {}\n",
        "NAME", "ENABLED", "LOADED", "VERSION"
    );
    for plugin in list.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<24} {:<8} {:<7} {}\n",
            plugin["name"].as_str().unwrap_or("?"),
            plugin["enabled"].as_bool().unwrap_or(false),
            plugin["loaded"].as_bool().unwrap_or(false),
            plugin["version"].as_str().unwrap_or("-"),
        ));
    }
    out
}
