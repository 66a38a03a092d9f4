//! The host side of `gk.host_call`: [`dispatch`] reads a guest's call by the table of
//! [`gk_sdk::dispatch`] (names and JSON shapes, which the guest SDKs write) and carries it out
//! on the plugin's [`HostApi`]. Only this runtime uses it: a gRPC plugin reaches the host through
//! the `HostService` of `proto/`.

use std::time::Duration;

use gk_sdk::dispatch::wire::*;
use gk_sdk::{
    CallContext, Email, HostApi, HostCallName, HostError, HttpRequest, LogLevel, TranslateArgs,
};

#[cfg(test)]
mod tests;

/// The JSON of a result. The result types hold only strings, numbers, booleans, byte strings
/// and JSON values, which always serialise.
macro_rules! encode {
    ($value:expr) => {
        serde_json::to_vec($value).unwrap_or_default()
    };
}

/// Why a host call from a guest could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DispatchError {
    /// The name is not in the table.
    #[error("{0}")]
    UnknownFunction(String),
    /// The arguments are not JSON of the function's shape.
    #[error("malformed arguments for `{function}`: {problem}")]
    MalformedArguments {
        /// The host function.
        function: HostCallName,
        /// What the JSON parser said.
        problem: String,
    },
    /// The host function ran and failed.
    #[error(transparent)]
    Host(#[from] HostError),
}

impl From<DispatchError> for HostError {
    fn from(error: DispatchError) -> Self {
        match error {
            DispatchError::UnknownFunction(message) => HostError::NotFound(message),
            DispatchError::MalformedArguments { .. } => HostError::InvalidInput(error.to_string()),
            DispatchError::Host(host) => host,
        }
    }
}

/// Carries out the host call `name` with JSON arguments `json` on `host` and returns the JSON
/// result. Unknown names and malformed JSON are errors, never panics.
pub(crate) async fn dispatch(
    host: &dyn HostApi,
    ctx: &CallContext,
    name: &str,
    json: &[u8],
) -> Result<Vec<u8>, DispatchError> {
    let function: HostCallName = name.parse().map_err(DispatchError::UnknownFunction)?;
    let json = if json.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        json
    };
    match function {
        HostCallName::DbQuery => {
            let a: DbArgs = serde_json::from_slice(json).map_err(malformed(function))?;
            let rows = host.db_query(ctx, &a.query, &a.args).await?;
            Ok(encode!(&rows))
        }
        HostCallName::DbExec => {
            let a: DbArgs = serde_json::from_slice(json).map_err(malformed(function))?;
            let affected = host.db_exec(ctx, &a.query, &a.args).await?;
            Ok(encode!(&DbExecResult { affected }))
        }
        HostCallName::CacheGet => {
            let a: KeyArgs = serde_json::from_slice(json).map_err(malformed(function))?;
            let value = host.cache_get(ctx, &a.key).await?;
            Ok(encode!(&CacheGetResult {
                found: value.is_some(),
                value,
            }))
        }
        HostCallName::CacheSet => {
            let a: CacheSetArgs = serde_json::from_slice(json).map_err(malformed(function))?;
            host.cache_set(ctx, &a.key, &a.value, Duration::from_secs(a.ttl))
                .await?;
            Ok(encode!(&OkResult { ok: true }))
        }
        HostCallName::CacheDelete => {
            let a: KeyArgs = serde_json::from_slice(json).map_err(malformed(function))?;
            host.cache_delete(ctx, &a.key).await?;
            Ok(encode!(&OkResult { ok: true }))
        }
        HostCallName::HttpRequest => {
            let a: HttpRequestArgs = serde_json::from_slice(json).map_err(malformed(function))?;
            let response = host
                .http_request(
                    ctx,
                    HttpRequest {
                        method: a.method,
                        url: a.url,
                        headers: a.headers,
                        body: a.body,
                        internal_allowed: false,
                    },
                )
                .await?;
            Ok(encode!(&HttpResponseResult {
                status: response.status,
                headers: response.headers,
                body: response.body,
            }))
        }
        HostCallName::SendEmail => {
            let a: SendEmailArgs = serde_json::from_slice(json).map_err(malformed(function))?;
            host.send_email(
                ctx,
                Email {
                    to: a.to,
                    subject: a.subject,
                    body: a.body,
                    html: a.html,
                },
            )
            .await?;
            Ok(encode!(&OkResult { ok: true }))
        }
        HostCallName::Log => {
            let a: LogArgs = serde_json::from_slice(json).map_err(malformed(function))?;
            host.log(ctx, LogLevel::from_name(&a.level), &a.message, &a.fields)
                .await?;
            Ok(encode!(&OkResult { ok: true }))
        }
        HostCallName::ConfigGet => {
            let a: KeyArgs = serde_json::from_slice(json).map_err(malformed(function))?;
            let value = host.config_get(ctx, &a.key).await?;
            Ok(encode!(&ValueResult { value }))
        }
        HostCallName::Translate => {
            let a: TranslateCallArgs = serde_json::from_slice(json).map_err(malformed(function))?;
            let value = host
                .translate(ctx, &a.key, &TranslateArgs::from_json(a.args))
                .await?;
            Ok(encode!(&ValueResult { value }))
        }
        HostCallName::PluginCall => {
            let a: PluginCallArgs = serde_json::from_slice(json).map_err(malformed(function))?;
            let args = a
                .args
                .as_deref()
                .map(|raw| raw.get().as_bytes())
                .unwrap_or_default();
            Ok(host.call_plugin(ctx, &a.plugin, &a.function, args).await?)
        }
    }
}

/// The error for arguments that are not JSON of `function`'s shape.
fn malformed(function: HostCallName) -> impl FnOnce(serde_json::Error) -> DispatchError {
    move |e| DispatchError::MalformedArguments {
        function,
        problem: e.to_string(),
    }
}
