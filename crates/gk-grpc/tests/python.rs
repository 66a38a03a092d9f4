//! A plugin written in Python with grpcio, its code generated from `proto/` at test time: the
//! proto files are all a polyglot author needs. Needs python3 with grpcio and grpcio-tools
//! and grpcio-status (scripts/install-deps.sh installs them).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gk_grpc::{GrpcLimits, GrpcRuntime, IsolationConfig};
use gk_sdk::{CallContext, HostError, LogLevel, Plugin, PluginError};
use serde_json::{Value, json};

use gk_sdk::testing::MemoryHost;

/// Copies the example into `dir` and generates its gRPC code there from `proto/`.
fn prepare(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::copy(
        root.join("examples/python-grpc-plugin/plugin.py"),
        dir.join("plugin.py"),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("plugin.py"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    let proto = root.join("proto");
    let status = std::process::Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", dir.display()))
        .arg(format!("--grpc_python_out={}", dir.display()))
        .arg(proto.join("goatkit/plugin/v1/plugin.proto"))
        .arg(proto.join("goatkit/plugin/v1/host.proto"))
        .status()
        .expect("python3 is needed for this test");
    assert!(
        status.success(),
        "grpc_tools.protoc failed: is grpcio-tools installed? (scripts/install-deps.sh)"
    );
}

/// What an isolated Python plugin needs to see besides the system directories: the prefix of
/// the `python3` on `PATH` (a pyenv install lives under the host's home), and the root of the
/// tool that installed it when `python3` is a shim (pyenv's shims run `pyenv exec`).
fn python_paths() -> Vec<PathBuf> {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; print(sys.base_prefix); print(sys.prefix)",
        ])
        .output()
        .expect("python3 is needed for this test");
    let mut paths: Vec<PathBuf> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("python3"))
        .find(|python| python.is_file());
    if let Some(shims) = on_path.as_deref().and_then(Path::parent)
        && shims.ends_with("shims")
        && let Some(root) = shims.parent()
    {
        paths.push(root.to_owned());
    }
    paths.retain(|p| p.is_absolute() && !p.starts_with("/usr") && p != Path::new("/"));
    paths
}

#[tokio::test]
async fn a_python_plugin_registers_answers_calls_back_and_decodes_rich_errors() {
    let dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    prepare(dir.path());
    let limits = GrpcLimits {
        call_timeout: Duration::from_secs(5),
        init_timeout: Duration::from_secs(20),
        shutdown_timeout: Duration::from_secs(2),
        network: false,
        memory_mb: 0,
        health_interval: Duration::from_secs(10),
    };
    let plugin = GrpcRuntime::new(dir.path())
        .with_isolation(IsolationConfig {
            read_only_paths: python_paths(),
            ..IsolationConfig::default()
        })
        .start(
            "python-hello",
            &dir.path().join("plugin.py"),
            dir.path(),
            limits,
        )
        .await
        .unwrap();
    let reg = plugin.register().await.unwrap();
    assert_eq!(reg.name, "python-hello");
    assert_eq!(reg.routes[0].handler, "remember");
    let host = Arc::new(MemoryHost::default());
    let ctx = CallContext::for_plugin("python-hello");
    plugin.init(&ctx, host.clone()).await.unwrap();

    // What it printed right after the handshake (stdout) and during Register (stderr), before
    // it had a host, is in its log.
    let logged = |level: LogLevel, prefix: &str| {
        host.logs
            .lock()
            .unwrap()
            .iter()
            .any(|(p, l, m)| p == "python-hello" && *l == level && m.starts_with(prefix))
    };
    for _ in 0..100 {
        if logged(LogLevel::Info, "listening on ") && logged(LogLevel::Warn, "registering") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        logged(LogLevel::Info, "listening on /") && logged(LogLevel::Warn, "registering"),
        "{:?}",
        host.logs.lock().unwrap()
    );

    // Init told it the host's version and its directories, as plugin.proto promises.
    let reply: Value =
        serde_json::from_slice(&plugin.call(&ctx, "config", b"").await.unwrap()).unwrap();
    let config = &reply["config"];
    assert_eq!(config["host_version"], env!("CARGO_PKG_VERSION"), "{reply}");
    assert_eq!(
        config["plugin_dir"],
        dir.path().canonicalize().unwrap().display().to_string(),
        "{reply}"
    );
    assert_eq!(reply["plugin_dir_is_cwd"], true, "{reply}");
    assert!(
        config["work_dir"]
            .as_str()
            .is_some_and(|d| d.starts_with('/')),
        "{reply}"
    );
    assert_eq!(reply["work_dir_writable"], true, "{reply}");

    let reply: Value = serde_json::from_slice(
        &plugin
            .call(&ctx, "remember", br#"{"value":"green"}"#)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        reply,
        json!({"remembered": "green", "found": true, "language": "python"})
    );
    assert_eq!(
        host.cache_entry("memory").as_deref(),
        Some(&b"green"[..]),
        "the cache was reached through the host"
    );
    assert_eq!(
        host.logs.lock().unwrap().last().unwrap(),
        &(
            "python-hello".to_owned(),
            LogLevel::Info,
            "remembered green".to_owned()
        )
    );

    let refused: Value =
        serde_json::from_slice(&plugin.call(&ctx, "forbidden", b"").await.unwrap()).unwrap();
    assert_eq!(
        refused["outcome"],
        "PERMISSION_DENIED: permission denied: `http` is required: host `example.com` is not in the http scope"
    );
    // grpcio-status decodes the google.rpc.Status and unpacks the HostErrorDetail from its Any.
    assert_eq!(
        refused["detail"],
        json!({
            "type_url": "type.googleapis.com/goatkit.plugin.v1.HostErrorDetail",
            "code": 7,
            "kind": "permission_denied",
            "message": "host `example.com` is not in the http scope",
            "permission": "http",
            "limit": "",
            "retry_after_ms": 0,
        }),
        "{refused}"
    );
    // The other way: a plugin that aborts its call with the host's status passes the host
    // error on, and the host decodes it as such.
    let passed_on = plugin.call(&ctx, "pass_on", b"").await.unwrap_err();
    assert_eq!(
        passed_on,
        PluginError::Host(HostError::denied(
            "http",
            "host `example.com` is not in the http scope"
        ))
    );
    assert!(
        !plugin.calls_streamed(),
        "a plugin without the Calls stream (UNIMPLEMENTED) gets unary calls"
    );
    let err = plugin.call(&ctx, "fly", b"").await.unwrap_err();
    assert_eq!(
        err,
        PluginError::failed("unknown_function", "no function `fly`")
    );

    let pid = plugin.pid();
    plugin.shutdown(&ctx).await.unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "no process left"
    );
}
