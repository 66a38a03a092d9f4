//! Every name of the host-call table reaches the right `HostApi` method with the right values
//! and answers the documented JSON; unknown names and malformed input are typed errors.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use gk_sdk::{
    CallContext, Email, HostApi, HostCallName, HostError, HostResult, HttpRequest, HttpResponse,
    LogLevel, Row, TranslateArgs,
};
use serde_json::{Map, Value, json};

use super::{DispatchError, dispatch};

/// An in-memory host that records what it was asked.
#[derive(Default)]
struct MemoryHost {
    cache: Mutex<HashMap<String, (Vec<u8>, Duration)>>,
    calls: Mutex<Vec<String>>,
}

impl MemoryHost {
    fn record(&self, ctx: &CallContext, what: String) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("{}: {what}", ctx.plugin));
    }

    fn last_call(&self) -> String {
        self.calls
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

#[async_trait]
impl HostApi for MemoryHost {
    async fn db_query(
        &self,
        ctx: &CallContext,
        query: &str,
        args: &[Value],
    ) -> HostResult<Vec<Row>> {
        self.record(ctx, format!("db_query {query} {args:?}"));
        if query.contains("missing_table") {
            return Err(HostError::denied("db:missing_table", "table not in scope"));
        }
        let mut row = Map::new();
        row.insert("id".into(), json!(1));
        row.insert("title".into(), json!("Printer on fire"));
        row.insert("score".into(), json!(2.5));
        row.insert("closed".into(), Value::Null);
        Ok(vec![row])
    }

    async fn db_exec(&self, ctx: &CallContext, query: &str, args: &[Value]) -> HostResult<u64> {
        self.record(ctx, format!("db_exec {query} {args:?}"));
        Ok(args.len() as u64)
    }

    async fn cache_get(&self, ctx: &CallContext, key: &str) -> HostResult<Option<Vec<u8>>> {
        self.record(ctx, format!("cache_get {key}"));
        Ok(self.cache.lock().unwrap().get(key).map(|(v, _)| v.clone()))
    }

    async fn cache_set(
        &self,
        ctx: &CallContext,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> HostResult<()> {
        self.record(ctx, format!("cache_set {key} ttl={}s", ttl.as_secs()));
        self.cache
            .lock()
            .unwrap()
            .insert(key.to_owned(), (value.to_vec(), ttl));
        Ok(())
    }

    async fn cache_delete(&self, ctx: &CallContext, key: &str) -> HostResult<()> {
        self.record(ctx, format!("cache_delete {key}"));
        self.cache.lock().unwrap().remove(key);
        Ok(())
    }

    async fn http_request(
        &self,
        ctx: &CallContext,
        request: HttpRequest,
    ) -> HostResult<HttpResponse> {
        self.record(
            ctx,
            format!(
                "http_request {} {} {:?} {}",
                request.method,
                request.url,
                request.headers,
                String::from_utf8_lossy(&request.body)
            ),
        );
        Ok(HttpResponse {
            status: 201,
            headers: BTreeMap::from([("content-type".into(), "text/plain".into())]),
            body: b"created \x00\xff".to_vec(),
        })
    }

    async fn send_email(&self, ctx: &CallContext, email: Email) -> HostResult<()> {
        self.record(
            ctx,
            format!(
                "send_email {} {} {} html={}",
                email.to, email.subject, email.body, email.html
            ),
        );
        Ok(())
    }

    async fn log(
        &self,
        ctx: &CallContext,
        level: LogLevel,
        message: &str,
        fields: &Map<String, Value>,
    ) -> HostResult<()> {
        self.record(
            ctx,
            format!("log {level} {message} {}", Value::Object(fields.clone())),
        );
        Ok(())
    }

    async fn config_get(&self, ctx: &CallContext, key: &str) -> HostResult<String> {
        self.record(ctx, format!("config_get {key}"));
        match key {
            "app.name" => Ok("GoatFlow".into()),
            other => Err(HostError::NotFound(format!("config key `{other}`"))),
        }
    }

    async fn translate(
        &self,
        ctx: &CallContext,
        key: &str,
        args: &TranslateArgs,
    ) -> HostResult<String> {
        self.record(ctx, format!("translate {key} {}", args.to_json()));
        Ok(format!("{key}!"))
    }

    async fn call_plugin(
        &self,
        ctx: &CallContext,
        plugin: &str,
        function: &str,
        args: &[u8],
    ) -> HostResult<Vec<u8>> {
        self.record(
            ctx,
            format!(
                "call_plugin {plugin}.{function} {}",
                String::from_utf8_lossy(args)
            ),
        );
        Ok(br#"{"answer":42}"#.to_vec())
    }
}

async fn call(host: &MemoryHost, name: &str, args: Value) -> Result<Value, DispatchError> {
    let ctx = CallContext::for_plugin("tester");
    let out = dispatch(host, &ctx, name, args.to_string().as_bytes()).await?;
    Ok(serde_json::from_slice(&out).unwrap())
}

#[tokio::test]
async fn db_query_returns_rows() {
    let host = MemoryHost::default();
    let rows = call(
        &host,
        "db_query",
        json!({"query": "SELECT * FROM ticket WHERE id = ?", "args": [1, "x", null, true, 1.5]}),
    )
    .await
    .unwrap();
    assert_eq!(
        rows,
        json!([{"id": 1, "title": "Printer on fire", "score": 2.5, "closed": null}])
    );
    assert_eq!(
        host.last_call(),
        r#"tester: db_query SELECT * FROM ticket WHERE id = ? [Number(1), String("x"), Null, Bool(true), Number(1.5)]"#
    );
    call(&host, "db_query", json!({"query": "SELECT 1"}))
        .await
        .unwrap();
    assert_eq!(
        host.last_call(),
        "tester: db_query SELECT 1 []",
        "args are optional"
    );
}

#[tokio::test]
async fn db_exec_returns_affected() {
    let host = MemoryHost::default();
    let out = call(
        &host,
        "db_exec",
        json!({"query": "UPDATE t SET a = ? WHERE b = ?", "args": [1, 2]}),
    )
    .await
    .unwrap();
    assert_eq!(out, json!({"affected": 2}));
}

#[tokio::test]
async fn cache_round_trip_in_base64() {
    let host = MemoryHost::default();
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
    assert_eq!(host.last_call(), "tester: cache_set k ttl=60s");
    assert_eq!(host.cache.lock().unwrap()["k"].0, b"hello\0");
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
    assert_eq!(
        call(&host, "cache_get", json!({"key": "k"})).await.unwrap()["found"],
        json!(false)
    );
    call(&host, "cache_set", json!({"key": "n"})).await.unwrap();
    assert_eq!(
        host.cache.lock().unwrap()["n"],
        (Vec::new(), Duration::ZERO),
        "value and ttl default to empty and no expiry"
    );
}

#[tokio::test]
async fn http_request_bodies_travel_in_base64() {
    let host = MemoryHost::default();
    let out = call(&host, "http_request", json!({"method": "POST", "url": "https://api.example.com/x", "headers": {"x-a": "1"}, "body": "eyJhIjoxfQ=="})).await.unwrap();
    assert_eq!(
        host.last_call(),
        r#"tester: http_request POST https://api.example.com/x {"x-a": "1"} {"a":1}"#
    );
    assert_eq!(
        out,
        json!({"status": 201, "headers": {"content-type": "text/plain"}, "body": "Y3JlYXRlZCAA/w=="})
    );
}

#[tokio::test]
async fn send_email_log_config_translate() {
    let host = MemoryHost::default();
    assert_eq!(
        call(
            &host,
            "send_email",
            json!({"to": "a@example.com", "subject": "Hi", "body": "<b>x</b>", "html": true})
        )
        .await
        .unwrap(),
        json!({"ok": true})
    );
    assert_eq!(
        host.last_call(),
        "tester: send_email a@example.com Hi <b>x</b> html=true"
    );
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
        host.last_call(),
        r#"tester: log warn disk low {"free_mb":12}"#
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
        json!({"value": "stats.title!"})
    );
    assert_eq!(host.last_call(), r#"tester: translate stats.title ["a",2]"#);
    call(
        &host,
        "translate",
        json!({"key": "greet", "args": {"name": "Ann"}}),
    )
    .await
    .unwrap();
    assert_eq!(
        host.last_call(),
        r#"tester: translate greet {"name":"Ann"}"#
    );
}

#[tokio::test]
async fn plugin_call_passes_raw_json_both_ways() {
    let host = MemoryHost::default();
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
        host.last_call(),
        r#"tester: call_plugin stats.overview {"range": "7d"}"#,
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
    assert_eq!(host.last_call(), "tester: call_plugin stats.overview ");
}

#[tokio::test]
async fn every_name_in_the_table_is_dispatched() {
    let host = MemoryHost::default();
    let args = |name: HostCallName| match name {
        HostCallName::DbQuery | HostCallName::DbExec => json!({"query": "SELECT 1"}),
        HostCallName::HttpRequest => json!({"url": "https://example.com"}),
        HostCallName::SendEmail => json!({"to": "a@example.com"}),
        HostCallName::Log => json!({"message": "m"}),
        HostCallName::ConfigGet => json!({"key": "app.name"}),
        HostCallName::PluginCall => json!({"plugin": "p", "function": "f"}),
        _ => json!({"key": "k"}),
    };
    for name in HostCallName::ALL {
        let before = host.calls.lock().unwrap().len();
        call(&host, name.as_str(), args(*name))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            host.calls.lock().unwrap().len(),
            before + 1,
            "{name} reached the host once"
        );
    }
    assert_eq!(HostCallName::ALL.len(), 11);
}

#[tokio::test]
async fn unknown_names_and_malformed_input_are_typed_errors() {
    let host = MemoryHost::default();
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
    let host = MemoryHost::default();
    let err = call(
        &host,
        "db_query",
        json!({"query": "SELECT * FROM missing_table"}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        DispatchError::Host(HostError::denied("db:missing_table", "table not in scope"))
    );
    let err = call(&host, "config_get", json!({"key": "nope"}))
        .await
        .unwrap_err();
    assert_eq!(
        HostError::from(err),
        HostError::NotFound("config key `nope`".into())
    );
}
