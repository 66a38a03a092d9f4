//! Every name of the host-call table reaches the right `HostApi` method with the right values
//! and answers the documented JSON; unknown names and malformed input are typed errors.

use std::collections::BTreeMap;
use std::sync::Arc;

use gk_sdk::testing::{MemoryHost, RecordingHost};
use gk_sdk::{CallContext, HostCallName, HostError, HttpResponse};
use serde_json::{Value, json};

use super::{DispatchError, dispatch};

/// The kit's memory host with the answers these tests read back, behind a recorder.
fn host() -> (RecordingHost, Arc<MemoryHost>) {
    let memory = Arc::new(
        MemoryHost::default()
            .with_config("app.name", "GoatFlow")
            .with_http_answer(
                "api.example.com",
                HttpResponse {
                    status: 201,
                    headers: BTreeMap::from([("content-type".into(), "text/plain".into())]),
                    body: b"created \x00\xff".to_vec(),
                },
            )
            .with_plugin_answer("stats.overview", br#"{"answer":42}"#),
    );
    (RecordingHost::wrapping(memory.clone()), memory)
}

/// The method and arguments of the last call that reached the host.
fn last(host: &RecordingHost) -> (&'static str, Value) {
    let reached = host.last().expect("a call reached the host");
    assert_eq!(reached.ctx.plugin, "tester");
    (reached.function, reached.args)
}

async fn call(host: &RecordingHost, name: &str, args: Value) -> Result<Value, DispatchError> {
    let ctx = CallContext::for_plugin("tester");
    let out = dispatch(host, &ctx, name, args.to_string().as_bytes()).await?;
    Ok(serde_json::from_slice(&out).unwrap())
}

#[tokio::test]
async fn db_query_returns_rows() {
    let (host, _) = host();
    let rows = call(
        &host,
        "db_query",
        json!({"query": "SELECT * FROM ticket WHERE id = ?", "args": [1, "x", null, true, 1.5]}),
    )
    .await
    .unwrap();
    let args = json!([1, "x", null, true, 1.5]);
    assert_eq!(
        rows,
        json!([{"query": "SELECT * FROM ticket WHERE id = ?", "args": args}]),
        "the host's rows come back as JSON objects"
    );
    assert_eq!(
        last(&host),
        (
            "db_query",
            json!({"query": "SELECT * FROM ticket WHERE id = ?", "args": args})
        )
    );
    call(&host, "db_query", json!({"query": "SELECT 1"}))
        .await
        .unwrap();
    assert_eq!(
        last(&host),
        ("db_query", json!({"query": "SELECT 1", "args": []})),
        "args are optional"
    );
}

#[tokio::test]
async fn db_exec_returns_affected() {
    let (host, _) = host();
    let out = call(
        &host,
        "db_exec",
        json!({"query": "UPDATE t SET a = ? WHERE b = ?", "args": [1, 2]}),
    )
    .await
    .unwrap();
    assert_eq!(out, json!({"affected": 2}));
    assert_eq!(
        last(&host),
        (
            "db_exec",
            json!({"query": "UPDATE t SET a = ? WHERE b = ?", "args": [1, 2]})
        )
    );
}

#[tokio::test]
async fn cache_round_trip_in_base64() {
    let (host, memory) = host();
    assert_eq!(
        call(&host, "cache_get", json!({"key": "k"})).await.unwrap(),
        json!({"value": null, "found": false})
    );
    // "hello\0" in base64, as Go's []byte marshals it.
    assert_eq!(
        call(
            &host,
            "cache_set",
            json!({"key": "k", "value": "aGVsbG8A", "ttl": 60})
        )
        .await
        .unwrap(),
        json!({"ok": true})
    );
    assert_eq!(
        last(&host),
        (
            "cache_set",
            json!({"key": "k", "value": "hello\0", "ttl_secs": 60})
        )
    );
    assert_eq!(memory.cache_entry("k").unwrap(), b"hello\0");
    assert_eq!(
        call(&host, "cache_get", json!({"key": "k"})).await.unwrap(),
        json!({"value": "aGVsbG8A", "found": true})
    );
    assert_eq!(
        call(&host, "cache_delete", json!({"key": "k"}))
            .await
            .unwrap(),
        json!({"ok": true})
    );
    assert_eq!(last(&host), ("cache_delete", json!({"key": "k"})));
    assert_eq!(
        call(&host, "cache_get", json!({"key": "k"})).await.unwrap()["found"],
        json!(false)
    );
    call(&host, "cache_set", json!({"key": "n"})).await.unwrap();
    assert_eq!(
        last(&host),
        ("cache_set", json!({"key": "n", "value": "", "ttl_secs": 0})),
        "value and ttl default to empty and no expiry"
    );
}

#[tokio::test]
async fn http_request_bodies_travel_in_base64() {
    let (host, _) = host();
    let out = call(&host, "http_request", json!({"method": "POST", "url": "https://api.example.com/x", "headers": {"x-a": "1"}, "body": "eyJhIjoxfQ=="})).await.unwrap();
    assert_eq!(
        last(&host),
        (
            "http_request",
            json!({"method": "POST", "url": "https://api.example.com/x", "headers": {"x-a": "1"}, "body": r#"{"a":1}"#})
        )
    );
    assert_eq!(
        out,
        json!({"status": 201, "headers": {"content-type": "text/plain"}, "body": "Y3JlYXRlZCAA/w=="})
    );
}

#[tokio::test]
async fn send_email_log_config_translate() {
    let (host, _) = host();
    let email = json!({"to": "a@example.com", "subject": "Hi", "body": "<b>x</b>", "html": true});
    assert_eq!(
        call(&host, "send_email", email.clone()).await.unwrap(),
        json!({"ok": true})
    );
    assert_eq!(last(&host), ("send_email", email));
    assert_eq!(
        call(
            &host,
            "log",
            json!({"level": "warning", "message": "disk low", "fields": {"free_mb": 12}})
        )
        .await
        .unwrap(),
        json!({"ok": true})
    );
    assert_eq!(
        last(&host),
        (
            "log",
            json!({"level": "warn", "message": "disk low", "fields": {"free_mb": 12}})
        ),
        "Go's `warning` is the warn level"
    );
    assert_eq!(
        call(&host, "config_get", json!({"key": "app.name"}))
            .await
            .unwrap(),
        json!({"value": "GoatFlow"})
    );
    assert_eq!(
        call(
            &host,
            "translate",
            json!({"key": "stats.title", "args": ["a", 2]})
        )
        .await
        .unwrap(),
        json!({"value": "stats.title"})
    );
    assert_eq!(
        last(&host),
        ("translate", json!({"key": "stats.title", "args": ["a", 2]}))
    );
    call(
        &host,
        "translate",
        json!({"key": "greet", "args": {"name": "Ann"}}),
    )
    .await
    .unwrap();
    assert_eq!(
        last(&host),
        (
            "translate",
            json!({"key": "greet", "args": {"name": "Ann"}})
        )
    );
}

#[tokio::test]
async fn plugin_call_passes_raw_json_both_ways() {
    let (host, _) = host();
    let ctx = CallContext::for_plugin("tester");
    let out = dispatch(
        &host,
        &ctx,
        "plugin_call",
        br#"{"plugin":"stats","function":"overview","args":{"range": "7d"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(out, br#"{"answer":42}"#);
    assert_eq!(
        last(&host),
        (
            "call_plugin",
            json!({"plugin": "stats", "function": "overview", "args": r#"{"range": "7d"}"#})
        ),
        "args are passed through byte for byte"
    );
    dispatch(
        &host,
        &ctx,
        "plugin_call",
        br#"{"plugin":"stats","function":"overview"}"#,
    )
    .await
    .unwrap();
    assert_eq!(
        last(&host),
        (
            "call_plugin",
            json!({"plugin": "stats", "function": "overview", "args": ""})
        )
    );
}

#[tokio::test]
async fn every_name_in_the_table_is_dispatched() {
    let (host, _) = host();
    let args = |name: HostCallName| match name {
        HostCallName::DbQuery | HostCallName::DbExec => json!({"query": "SELECT 1"}),
        HostCallName::HttpRequest => json!({"url": "https://api.example.com"}),
        HostCallName::SendEmail => json!({"to": "a@example.com"}),
        HostCallName::Log => json!({"message": "m"}),
        HostCallName::ConfigGet => json!({"key": "app.name"}),
        HostCallName::PluginCall => json!({"plugin": "stats", "function": "overview"}),
        _ => json!({"key": "k"}),
    };
    for name in HostCallName::ALL {
        let before = host.count();
        call(&host, name.as_str(), args(*name))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(host.count(), before + 1, "{name} reached the host once");
    }
    assert_eq!(HostCallName::ALL.len(), 11);
}

#[tokio::test]
async fn unknown_names_and_malformed_input_are_typed_errors() {
    let (host, _) = host();
    let ctx = CallContext::for_plugin("tester");
    let err = dispatch(&host, &ctx, "db_drop_everything", b"{}")
        .await
        .unwrap_err();
    assert!(matches!(err, DispatchError::UnknownFunction(_)));
    assert_eq!(
        err.to_string(),
        "unknown host function `db_drop_everything` (expected one of: db_query, db_exec, cache_get, cache_set, cache_delete, http_request, send_email, log, config_get, translate, plugin_call)"
    );
    for (name, input, problem) in [
        ("db_query", &b"{not json"[..], "key must be a string"),
        (
            "db_query",
            b"[1,2]",
            "invalid type: integer `1`, expected a string",
        ),
        ("db_query", b"", "missing field `query`"),
        (
            "cache_set",
            br#"{"key":"k","value":"***"}"#,
            "not valid base64",
        ),
        (
            "cache_set",
            br#"{"key":"k","ttl":-5}"#,
            "invalid value: integer `-5`",
        ),
        (
            "cache_get",
            br#"{"key": 5}"#,
            "invalid type: integer `5`, expected a string",
        ),
        (
            "http_request",
            br#"{"url":"https://x","headers":{"a":1}}"#,
            "invalid type: integer `1`",
        ),
        ("send_email", b"\xff\xfe", "expected value"),
        (
            "plugin_call",
            br#"{"plugin":"p"}"#,
            "missing field `function`",
        ),
    ] {
        let err = dispatch(&host, &ctx, name, input).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, DispatchError::MalformedArguments { .. }),
            "{name}: {err:?}"
        );
        assert!(
            text.starts_with(&format!("malformed arguments for `{name}`: ")),
            "{text}"
        );
        assert!(
            text.contains(problem),
            "{name} {:?}: {text}",
            String::from_utf8_lossy(input)
        );
        assert!(matches!(HostError::from(err), HostError::InvalidInput(_)));
    }
}

#[tokio::test]
async fn host_errors_pass_through_unchanged() {
    let (host, _) = host();
    let err = call(
        &host,
        "http_request",
        json!({"url": "https://elsewhere.example.org/"}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        DispatchError::Host(HostError::denied(
            "http",
            "host `elsewhere.example.org` is not in the http scope"
        ))
    );
    let err = call(&host, "config_get", json!({"key": "nope"}))
        .await
        .unwrap_err();
    assert_eq!(
        HostError::from(err),
        HostError::NotFound("config key `nope`".into())
    );
}
