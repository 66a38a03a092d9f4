//! The host functions, typed, for Rust guests. Every call goes through the plugin's sandbox on
//! the host: a refused call returns its [`HostError`] (permission denied, rate limited, …).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::dispatch::wire::{
    CacheGetResult, CacheSetArgs, DbArgs, DbExecResult, HttpRequestArgs, HttpResponseResult,
    KeyArgs, LogArgs, SendEmailArgs, ValueResult,
};
use crate::guest::rt;
use crate::{
    Email, HostError, HostResult, HttpRequest, HttpResponse, LogLevel, Row, TranslateArgs,
};

/// Turns the host's error detail (`{"kind", "message", …}`) back into a [`HostError`].
fn host_error(detail: &[u8]) -> HostError {
    let detail: Value = serde_json::from_slice(detail).unwrap_or(Value::Null);
    let text = |key: &str| {
        detail
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let message = text("message");
    match detail
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
    {
        "permission_denied" => HostError::PermissionDenied {
            permission: text("permission"),
            reason: message,
        },
        "rate_limited" => HostError::RateLimited {
            limit: text("limit"),
            retry_after: Duration::from_millis(
                detail
                    .get("retry_after_ms")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            ),
        },
        "not_found" => HostError::NotFound(message),
        "invalid_input" => HostError::InvalidInput(message),
        "timeout" => HostError::Timeout(message),
        "unavailable" => HostError::Unavailable(message),
        "call_depth_exceeded" => HostError::CallDepthExceeded {
            max: crate::MAX_CALL_DEPTH,
        },
        "plugin_failed" => HostError::PluginFailed(message),
        _ if message.is_empty() => HostError::Backend("the host call failed".to_owned()),
        _ => HostError::Backend(message),
    }
}

fn call<A: Serialize, R: DeserializeOwned>(function: &str, args: &A) -> HostResult<R> {
    let args = serde_json::to_vec(args).map_err(|e| HostError::InvalidInput(e.to_string()))?;
    let reply = rt::host_call(function, &args).map_err(|detail| host_error(&detail))?;
    serde_json::from_slice(&reply)
        .map_err(|e| HostError::Backend(format!("unreadable reply to {function}: {e}")))
}

/// Runs a read query with `?` placeholders; prefix `@name:` for a named database.
pub fn db_query(query: &str, args: &[Value]) -> HostResult<Vec<Row>> {
    call(
        "db_query",
        &DbArgs {
            query: query.to_owned(),
            args: args.to_vec(),
        },
    )
}

/// Runs a write statement; returns the number of affected rows.
pub fn db_exec(query: &str, args: &[Value]) -> HostResult<u64> {
    call::<_, DbExecResult>(
        "db_exec",
        &DbArgs {
            query: query.to_owned(),
            args: args.to_vec(),
        },
    )
    .map(|r| r.affected)
}

/// Reads one of the plugin's cache entries.
pub fn cache_get(key: &str) -> HostResult<Option<Vec<u8>>> {
    call::<_, CacheGetResult>(
        "cache_get",
        &KeyArgs {
            key: key.to_owned(),
        },
    )
    .map(|r| if r.found { r.value } else { None })
}

/// Writes one of the plugin's cache entries; a zero `ttl` means no expiry.
pub fn cache_set(key: &str, value: &[u8], ttl: Duration) -> HostResult<()> {
    call::<_, Value>(
        "cache_set",
        &CacheSetArgs {
            key: key.to_owned(),
            value: value.to_vec(),
            ttl: ttl.as_secs(),
        },
    )
    .map(|_| ())
}

/// Deletes one of the plugin's cache entries.
pub fn cache_delete(key: &str) -> HostResult<()> {
    call::<_, Value>(
        "cache_delete",
        &KeyArgs {
            key: key.to_owned(),
        },
    )
    .map(|_| ())
}

/// Makes an outbound HTTP request (redirects are returned, not followed).
pub fn http_request(request: HttpRequest) -> HostResult<HttpResponse> {
    let args = HttpRequestArgs {
        method: request.method,
        url: request.url,
        headers: request.headers,
        body: request.body,
    };
    call::<_, HttpResponseResult>("http_request", &args).map(|r| HttpResponse {
        status: r.status,
        headers: r.headers,
        body: r.body,
    })
}

/// Sends an email.
pub fn send_email(email: Email) -> HostResult<()> {
    let args = SendEmailArgs {
        to: email.to,
        subject: email.subject,
        body: email.body,
        html: email.html,
    };
    call::<_, Value>("send_email", &args).map(|_| ())
}

/// Reads a configuration value.
pub fn config_get(key: &str) -> HostResult<String> {
    call::<_, ValueResult>(
        "config_get",
        &KeyArgs {
            key: key.to_owned(),
        },
    )
    .map(|r| r.value)
}

/// Translates a key into the current user's language.
pub fn translate(key: &str, args: &TranslateArgs) -> HostResult<String> {
    call::<_, ValueResult>("translate", &json!({"key": key, "args": args.to_json()}))
        .map(|r| r.value)
}

/// Calls a function of another plugin with JSON arguments and returns its JSON result.
pub fn call_plugin(plugin: &str, function: &str, args: &[u8]) -> HostResult<Vec<u8>> {
    let args: Value = if args.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(args)
            .map_err(|e| HostError::InvalidInput(format!("plugin call arguments: {e}")))?
    };
    let request = json!({"plugin": plugin, "function": function, "args": args});
    let bytes = serde_json::to_vec(&request).map_err(|e| HostError::InvalidInput(e.to_string()))?;
    rt::host_call("plugin_call", &bytes).map_err(|detail| host_error(&detail))
}

/// Writes to the plugin's log (what the `info!` family of macros calls).
pub fn log(level: LogLevel, message: &str) {
    let abi_level = match level {
        LogLevel::Debug => 0,
        LogLevel::Info => 1,
        LogLevel::Warn => 2,
        LogLevel::Error => 3,
    };
    rt::log(abi_level, message);
}

/// Writes to the plugin's log with structured fields.
pub fn log_with_fields(
    level: LogLevel,
    message: &str,
    fields: BTreeMap<String, Value>,
) -> HostResult<()> {
    let args = LogArgs {
        level: level.as_str().to_owned(),
        message: message.to_owned(),
        fields: fields.into_iter().collect(),
    };
    call::<_, Value>("log", &args).map(|_| ())
}

/// The host's wall clock, in milliseconds since the Unix epoch (guests have no clock of their
/// own on `wasm32-unknown-unknown`).
pub fn now_ms() -> i64 {
    rt::clock_ms()
}
