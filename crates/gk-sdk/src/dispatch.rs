//! The host-call table: the names ([`HostCallName`]) and JSON shapes ([`wire`]) a WASM guest
//! uses to reach the host through `gk.host_call`. The guest SDK writes them; gk-wasm's host side
//! reads them and turns each into a [`HostApi`](crate::HostApi) call (gRPC plugins use the
//! `HostService` of `proto/` instead). Kept here because both sides, and guests in other
//! languages, must agree on them.
//!
//! | name | arguments | result |
//! |---|---|---|
//! | `db_query` | `{query, args}` | array of row objects |
//! | `db_exec` | `{query, args}` | `{affected}` |
//! | `cache_get` | `{key}` | `{value, found}` |
//! | `cache_set` | `{key, value, ttl}` | `{ok}` |
//! | `cache_delete` | `{key}` | `{ok}` |
//! | `http_request` | `{method, url, headers, body}` | `{status, headers, body}` |
//! | `send_email` | `{to, subject, body, html}` | `{ok}` |
//! | `log` | `{level, message, fields}` | `{ok}` |
//! | `config_get` | `{key}` | `{value}` |
//! | `translate` | `{key, args}` | `{value}` |
//! | `plugin_call` | `{plugin, function, args}` | the called function's raw JSON result |
//!
//! Byte values (`value`, `body`) travel as standard base64 with padding, as Go's `[]byte` does.
//! `ttl` is in seconds, 0 meaning no expiry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::string_enum::string_enum;

string_enum! {
    /// The name of a host function as a guest writes it.
    pub enum HostCallName as "host function" {
        /// Read query.
        DbQuery = "db_query",
        /// Write statement.
        DbExec = "db_exec",
        /// Cache read.
        CacheGet = "cache_get",
        /// Cache write.
        CacheSet = "cache_set",
        /// Cache delete.
        CacheDelete = "cache_delete",
        /// Outbound HTTP.
        HttpRequest = "http_request",
        /// Email.
        SendEmail = "send_email",
        /// Log entry.
        Log = "log",
        /// Configuration read.
        ConfigGet = "config_get",
        /// Translation.
        Translate = "translate",
        /// Call into another plugin.
        PluginCall = "plugin_call",
    }
}

/// Serde adapters for bytes as standard base64 (Go's `[]byte` JSON form). `null` reads as empty.
pub mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes bytes as a base64 string.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    /// Reads a base64 string (or `null`) as bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            None => Ok(Vec::new()),
            Some(text) => STANDARD
                .decode(text.as_bytes())
                .map_err(|e| serde::de::Error::custom(format!("not valid base64: {e}"))),
        }
    }
}

/// The JSON shapes of the table, shared by the host (gk-wasm) and guest SDKs.
pub mod wire {
    use super::*;

    /// `db_query` and `db_exec` arguments.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct DbArgs {
        /// SQL with `?` placeholders, optionally prefixed `@database:`.
        pub query: String,
        /// Placeholder values.
        #[serde(default)]
        pub args: Vec<Value>,
    }

    /// `db_exec` result.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DbExecResult {
        /// Rows affected.
        pub affected: u64,
    }

    /// `cache_get` and `cache_delete` arguments; `config_get` too.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct KeyArgs {
        /// The key.
        pub key: String,
    }

    /// `cache_get` result.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CacheGetResult {
        /// The value (base64); `null` when not found.
        #[serde(with = "option_base64")]
        pub value: Option<Vec<u8>>,
        /// Whether the key was found.
        pub found: bool,
    }

    /// `cache_set` arguments.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CacheSetArgs {
        /// The key.
        pub key: String,
        /// The value (base64).
        #[serde(default, with = "base64_bytes")]
        pub value: Vec<u8>,
        /// Time to live in seconds; 0 means no expiry.
        #[serde(default)]
        pub ttl: u64,
    }

    /// `{ok: true}`, the result of calls that return nothing else.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct OkResult {
        /// Always true on success.
        pub ok: bool,
    }

    /// `http_request` arguments.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct HttpRequestArgs {
        /// Method; empty means GET.
        #[serde(default)]
        pub method: String,
        /// Absolute URL.
        pub url: String,
        /// Request headers.
        #[serde(default)]
        pub headers: BTreeMap<String, String>,
        /// Body (base64).
        #[serde(default, with = "base64_bytes")]
        pub body: Vec<u8>,
    }

    /// `http_request` result.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct HttpResponseResult {
        /// Status code.
        pub status: u16,
        /// Response headers.
        #[serde(default)]
        pub headers: BTreeMap<String, String>,
        /// Body (base64).
        #[serde(default, with = "base64_bytes")]
        pub body: Vec<u8>,
    }

    /// `send_email` arguments.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SendEmailArgs {
        /// Recipient.
        pub to: String,
        /// Subject.
        #[serde(default)]
        pub subject: String,
        /// Body.
        #[serde(default)]
        pub body: String,
        /// Whether the body is HTML.
        #[serde(default)]
        pub html: bool,
    }

    /// `log` arguments.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct LogArgs {
        /// `debug`, `info`, `warn` or `error`; anything else is `info`.
        #[serde(default)]
        pub level: String,
        /// The message.
        pub message: String,
        /// Structured fields.
        #[serde(default)]
        pub fields: Map<String, Value>,
    }

    /// `config_get` and `translate` result.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ValueResult {
        /// The value.
        pub value: String,
    }

    /// `translate` arguments.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct TranslateCallArgs {
        /// Translation key.
        pub key: String,
        /// Array (positional) or object (named) arguments.
        #[serde(default)]
        pub args: Value,
    }

    /// `plugin_call` arguments.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct PluginCallArgs {
        /// Target plugin.
        pub plugin: String,
        /// Target function.
        pub function: String,
        /// JSON arguments passed through unchanged.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub args: Option<Box<RawValue>>,
    }

    mod option_base64 {
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD;
        use serde::{Deserialize, Deserializer, Serializer};

        pub(super) fn serialize<S: Serializer>(
            value: &Option<Vec<u8>>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(bytes) => serializer.serialize_str(&STANDARD.encode(bytes)),
                None => serializer.serialize_none(),
            }
        }

        pub(super) fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Vec<u8>>, D::Error> {
            Option::<String>::deserialize(deserializer)?
                .map(|text| {
                    STANDARD
                        .decode(text.as_bytes())
                        .map_err(|e| serde::de::Error::custom(format!("not valid base64: {e}")))
                })
                .transpose()
        }
    }
}
