//! gk-grpc against real processes: the hello-grpc example and shell scripts that misbehave.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gk_grpc::{GrpcLimits, GrpcPlugin, GrpcRuntime};
use gk_sdk::{CallContext, LogLevel, Plugin, PluginError};
use serde_json::{Value, json};

use gk_sdk::testing::MemoryHost;

/// The hello-grpc binary, built with the workspace (`cargo test --workspace` builds it).
fn hello_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = dir.join("hello-grpc");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p hello-grpc` (cargo xtask test does)",
        binary.display()
    );
    binary
}

fn limits(call_ms: u64) -> GrpcLimits {
    GrpcLimits {
        call_timeout: Duration::from_millis(call_ms),
        init_timeout: Duration::from_secs(10),
        shutdown_timeout: Duration::from_secs(2),
        network: false,
        memory_mb: 512,
        health_interval: Duration::from_millis(200),
    }
}

async fn hello(call_ms: u64) -> (GrpcPlugin, Arc<MemoryHost>, tempfile::TempDir) {
    hello_with(limits(call_ms)).await
}

/// A temporary directory the plugin's user may read (an isolated plugin runs as `nobody`).
fn readable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

async fn hello_with(limits: GrpcLimits) -> (GrpcPlugin, Arc<MemoryHost>, tempfile::TempDir) {
    let run = readable_tempdir();
    let plugin = GrpcRuntime::new(run.path())
        .start("hello-grpc", &hello_binary(), run.path(), limits)
        .await
        .unwrap();
    let host = Arc::new(MemoryHost::default());
    plugin
        .init(&CallContext::for_plugin("hello-grpc"), host.clone())
        .await
        .unwrap();
    (plugin, host, run)
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

async fn call(plugin: &GrpcPlugin, function: &str, args: Value) -> Result<Value, PluginError> {
    let bytes = plugin
        .call(
            &CallContext::for_plugin("hello-grpc"),
            function,
            args.to_string().as_bytes(),
        )
        .await?;
    Ok(serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn start_register_call_callback_shutdown() {
    let (plugin, host, run) = hello(5_000).await;
    let reg = plugin.register().await.unwrap();
    assert_eq!(reg.name, "hello-grpc");
    assert_eq!(
        reg.routes
            .iter()
            .map(|r| r.path.as_str())
            .collect::<Vec<_>>(),
        [
            "/api/plugins/hello-grpc/hello",
            "/api/plugins/hello-grpc/env",
            "/api/plugins/hello-grpc/tickets",
            "/api/plugins/hello-grpc/page",
        ]
    );
    assert_eq!(reg.widgets[0].id, "hello_widget");
    // The SDK serves the `Calls` stream: once the host has opened it, calls travel on it.
    let opened = Instant::now();
    while !plugin.calls_streamed() && opened.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        plugin.calls_streamed(),
        "calls travel on the plugin's Calls stream"
    );
    assert_eq!(
        call(&plugin, "greet", json!({"name": "Ann"}))
            .await
            .unwrap(),
        json!({"message": "Hello, Ann!", "greetings": 1})
    );
    assert_eq!(
        call(&plugin, "greet", json!({})).await.unwrap(),
        json!({"message": "Hello, world!", "greetings": 2})
    );
    assert_eq!(
        host.cache_entry("greetings").as_deref(),
        Some(&b"2"[..]),
        "the cache was used through the host"
    );
    assert!(
        host.logs
            .lock()
            .unwrap()
            .iter()
            .any(|(p, l, m)| p == "hello-grpc" && *l == LogLevel::Info && m == "greeted")
    );
    let err = call(&plugin, "nope", json!({})).await.unwrap_err();
    assert_eq!(
        err,
        PluginError::failed("unknown_function", "no function `nope`")
    );
    plugin.health().await.unwrap();

    let pid = plugin.pid();
    let socket = plugin.host_socket();
    let tmp_dir = plugin.tmp_dir().unwrap();
    assert!(alive(pid) && tmp_dir.is_dir());
    plugin
        .shutdown(&CallContext::for_plugin("hello-grpc"))
        .await
        .unwrap();
    assert!(!alive(pid), "no process is left");
    assert!(plugin.exit_status().is_some());
    assert!(
        plugin.failure_reason().is_none(),
        "a shutdown is not a crash"
    );
    assert!(
        !socket.exists() && !socket.parent().unwrap().exists(),
        "the host socket and its directory are gone"
    );
    assert!(
        !std::env::temp_dir()
            .join("goatflow-plugin-hello-grpc")
            .exists(),
        "the plugin's TMPDIR is gone"
    );
    assert!(matches!(
        call(&plugin, "greet", json!({})).await,
        Err(PluginError::Unavailable(_))
    ));
    drop(run);
}

#[tokio::test]
async fn the_plugin_sees_a_minimal_environment() {
    let (plugin, _host, _run) = hello(5_000).await;
    let seen = call(&plugin, "environment", json!({})).await.unwrap();
    let mut names: Vec<String> = serde_json::from_value(seen["variables"].clone()).unwrap();
    names.sort();
    let allowed = [
        "GOATFLOW_NO_NETWORK",
        "GOATKIT_HOST_SOCKET",
        "GOATKIT_HOST_TOKEN",
        "GOATKIT_PLUGIN",
        "HOME",
        "PATH",
        "TMPDIR",
        "TZ",
    ];
    assert!(
        names.iter().all(|n| allowed.contains(&n.as_str())),
        "unexpected variables: {names:?}"
    );
    assert!(
        names.contains(&"GOATFLOW_NO_NETWORK".to_owned()),
        "no http permission, so no network: {names:?}"
    );
    assert!(
        std::env::vars().any(|(k, _)| k.starts_with("CARGO")),
        "the test itself has CARGO_* variables that must not leak"
    );
    plugin
        .shutdown(&CallContext::for_plugin("hello-grpc"))
        .await
        .unwrap();
}

#[tokio::test]
async fn another_process_cannot_use_the_host_socket() {
    use gk_sdk::proto::pb;
    use gk_sdk::proto::pb::host_service_client::HostServiceClient;
    let (plugin, host, _run) = hello(5_000).await;
    let socket = plugin.host_socket();
    let channel = tonic::transport::Endpoint::try_from("http://x.invalid")
        .unwrap()
        .connect_with_connector(tower_service(socket))
        .await
        .unwrap();
    let mut client = HostServiceClient::new(channel);
    let forged = pb::CacheSetRequest {
        context: Some(pb::CallContext {
            plugin: "admin".into(),
            ..Default::default()
        }),
        key: "k".into(),
        value: b"v".to_vec(),
        ttl_seconds: 0,
    };
    let err = client.cache_set(forged.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(forged);
    wrong
        .metadata_mut()
        .insert("x-goatkit-token", "0000".parse().unwrap());
    assert_eq!(
        client.cache_set(wrong).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    assert!(
        host.cache.lock().unwrap().is_empty(),
        "nothing reached the host"
    );
    plugin
        .shutdown(&CallContext::for_plugin("hello-grpc"))
        .await
        .unwrap();
}

fn tower_service(
    socket: PathBuf,
) -> impl tower_service_trait::Service<
    tonic::transport::Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future: Send,
> + Send
+ Clone
+ 'static {
    tower_service_trait::service_fn(move |_| {
        let socket = socket.clone();
        async move {
            tokio::net::UnixStream::connect(socket)
                .await
                .map(hyper_util::rt::TokioIo::new)
        }
    })
}

mod tower_service_trait {
    pub(super) use tower::{Service, service_fn};
}

#[tokio::test]
async fn a_crash_mid_call_is_reported_and_the_host_goes_on() {
    let (plugin, _host, _run) = hello(5_000).await;
    let start = Instant::now();
    let err = call(&plugin, "crash", json!({})).await.unwrap_err();
    let PluginError::Crashed(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "in-flight calls fail at once"
    );
    let (other, _, _run2) = hello(5_000).await;
    assert_eq!(
        call(&other, "greet", json!({})).await.unwrap()["greetings"],
        1
    );
    other
        .shutdown(&CallContext::for_plugin("hello-grpc"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_hanging_call_times_out_at_its_deadline_without_blocking_others() {
    let (plugin, _host, _run) = hello(500).await;
    let plugin = Arc::new(plugin);
    let slow = {
        let plugin = plugin.clone();
        tokio::spawn(async move { call(&plugin, "sleep", json!({})).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        call(&plugin, "greet", json!({})).await.unwrap()["greetings"],
        1,
        "calls are concurrent"
    );
    let start = Instant::now();
    let err = slow.await.unwrap().unwrap_err();
    assert_eq!(
        err,
        PluginError::Timeout {
            operation: "call".into(),
            after: Duration::from_millis(500)
        }
    );
    assert!(start.elapsed() < Duration::from_millis(600));
    plugin
        .shutdown(&CallContext::for_plugin("hello-grpc"))
        .await
        .unwrap();
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn handshake_faults_give_clear_errors() {
    let dir = readable_tempdir();
    let runtime = GrpcRuntime::new(dir.path());
    let quick = GrpcLimits {
        init_timeout: Duration::from_millis(700),
        ..limits(1_000)
    };
    for (name, body, expected) in [
        (
            "bad-line",
            "echo hello there; sleep 5",
            "the plugin printed `hello there`; a handshake line is `1|1|unix|/path/to/socket|grpc`",
        ),
        (
            "wrong-version",
            "echo '1|7|unix|/tmp/x.sock|grpc'; sleep 5",
            "app protocol version `7`",
        ),
        (
            "silent",
            "sleep 5",
            "no handshake line within 700 ms (init_timeout)",
        ),
        (
            "exits",
            "echo 'missing config file' >&2; exit 4",
            "it exited before the handshake (exit status: 4); stderr: missing config file",
        ),
    ] {
        let executable = script(dir.path(), name, body);
        let err = runtime
            .start(name, &executable, dir.path(), quick)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("handshake with {name} failed: ")),
            "{name}: {err}"
        );
        assert!(
            err.contains(expected),
            "{name}:\n  expected: {expected}\n  actual:   {err}"
        );
    }
    let err = runtime
        .start(
            "nowhere",
            Path::new("/nonexistent/plugin"),
            dir.path(),
            quick,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cannot start /nonexistent/plugin:"),
        "{err}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("gk-host-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "socket directories are removed after failures: {leftovers:?}"
    );
}

#[tokio::test]
async fn started_by_hand_the_plugin_says_what_it_is() {
    let output = std::process::Command::new(hello_binary())
        .env_remove("GOATKIT_PLUGIN")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("This is a GoatKit plugin"));
}

/// Whether this machine can make namespaces (root, util-linux `unshare`): CI's can.
fn namespaces_here() -> bool {
    std::process::Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--net",
            "--kill-child",
            "true",
        ])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn the_plugin_runs_in_its_own_pid_namespace_without_network() {
    if !namespaces_here() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI machines run as root and can make namespaces"
        );
        eprintln!("skipping: no namespaces here");
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();

    let (isolated, _host, _run) = hello(5_000).await;
    let seen = call(&isolated, "environment", json!({})).await.unwrap();
    assert_eq!(seen["pid"], 1, "PID 1 of its own namespace");
    assert!(
        seen["visible_processes"].as_u64().unwrap() <= 3,
        "the host's processes are invisible: {seen}"
    );
    assert_eq!(
        call(&isolated, "tcp", json!({"address": address}))
            .await
            .unwrap()["connected"],
        false,
        "no network without http"
    );
    isolated
        .shutdown(&CallContext::for_plugin("hello-grpc"))
        .await
        .unwrap();

    let (networked, _host, _run) = hello_with(GrpcLimits {
        network: true,
        ..limits(5_000)
    })
    .await;
    assert_eq!(
        call(&networked, "tcp", json!({"address": address}))
            .await
            .unwrap()["connected"],
        true,
        "with http, the network is there"
    );
    networked
        .shutdown(&CallContext::for_plugin("hello-grpc"))
        .await
        .unwrap();
}

/// Run as a helper process by `killing_the_host_kills_the_plugin`: starts hello-grpc, prints
/// its pid and waits to be killed.
#[tokio::test]
async fn helper_host_process() {
    if std::env::var_os("GK_GRPC_HELPER_HOST").is_none() {
        return;
    }
    let (plugin, _host, _run) = hello(5_000).await;
    println!("PLUGIN_PID={}", plugin.pid());
    tokio::time::sleep(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn killing_the_host_kills_the_plugin() {
    use std::io::{BufRead, BufReader};
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_host_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GK_GRPC_HELPER_HOST", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = helper.stdout.take().unwrap();
    let pid: u32 = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            // libtest may print `test helper_host_process ... ` on the same line first.
            line.split("PLUGIN_PID=")
                .nth(1)
                .and_then(|p| p.trim().parse().ok())
        })
        .expect("the helper host started the plugin");
    assert!(alive(pid));
    helper.kill().unwrap();
    helper.wait().unwrap();
    let start = Instant::now();
    while alive(pid) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "the plugin died with its host");
}

#[tokio::test]
async fn a_crashed_plugin_is_restarted_and_keeps_its_host() {
    let (plugin, host, _run) = hello(5_000).await;
    assert_eq!(
        call(&plugin, "greet", json!({})).await.unwrap()["greetings"],
        1
    );
    let first = plugin.pid();
    assert!(matches!(
        call(&plugin, "crash", json!({})).await,
        Err(PluginError::Crashed(_))
    ));
    // The next call waits for the restart and runs on the new process, initialised again.
    assert_eq!(
        call(&plugin, "greet", json!({})).await.unwrap()["greetings"],
        2
    );
    assert_ne!(plugin.pid(), first);
    assert!(!alive(first));
    assert_eq!(host.cache_entry("greetings").as_deref(), Some(&b"2"[..]));
    plugin
        .shutdown(&CallContext::for_plugin("hello-grpc"))
        .await
        .unwrap();
}

/// A child's parent-death signal fires when the *thread* that made it ends: a plugin started
/// from a thread that has ended since (a caller's own thread; tokio's blocking pool ends idle
/// threads after 10 s) still runs, unrestarted, and answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_outlives_the_thread_that_started_it() {
    let run = readable_tempdir();
    let dir = run.path().to_owned();
    let runtime = tokio::runtime::Handle::current();
    let plugin = std::thread::spawn(move || {
        runtime.block_on(GrpcRuntime::new(&dir).start(
            "hello-grpc",
            &hello_binary(),
            &dir,
            limits(5_000),
        ))
    })
    .join()
    .unwrap()
    .unwrap();
    let first = plugin.pid();
    // A signal sent as the thread ended has been delivered by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        alive(first),
        "the plugin died with the thread that started it"
    );
    let host = Arc::new(MemoryHost::default());
    plugin
        .init(&CallContext::for_plugin("hello-grpc"), host)
        .await
        .unwrap();
    assert_eq!(
        call(&plugin, "greet", json!({})).await.unwrap()["greetings"],
        1
    );
    assert_eq!(plugin.pid(), first, "the plugin was restarted");
    plugin
        .shutdown(&CallContext::for_plugin("hello-grpc"))
        .await
        .unwrap();
}

#[tokio::test]
async fn five_crashes_in_a_minute_mark_the_plugin_failed() {
    let (plugin, _host, _run) = hello(5_000).await;
    for _ in 0..5 {
        assert!(matches!(
            call(&plugin, "crash", json!({})).await,
            Err(PluginError::Crashed(_))
        ));
    }
    let err = call(&plugin, "greet", json!({})).await.unwrap_err();
    let PluginError::Unavailable(reason) = &err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("crashed 5 times in 60 s"), "{reason}");
    assert_eq!(plugin.failure_reason().as_deref(), Some(reason.as_str()));
    assert_eq!(plugin.pid(), 0, "no process runs");
}

#[tokio::test]
async fn a_plugin_that_fails_its_health_checks_is_restarted() {
    let (plugin, _host, _run) = hello(5_000).await;
    let first = plugin.pid();
    call(&plugin, "unhealthy", json!({})).await.unwrap();
    let start = Instant::now();
    while (plugin.pid() == first || plugin.pid() == 0) && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(
        plugin.pid(),
        first,
        "restarted after failing a health check"
    );
    assert_eq!(
        call(&plugin, "greet", json!({})).await.unwrap()["message"],
        "Hello, world!"
    );
    plugin
        .shutdown(&CallContext::for_plugin("hello-grpc"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_plugin_cannot_claim_another_name() {
    let (plugin, host, _run) = hello(5_000).await;
    call(&plugin, "impersonate", json!({})).await.unwrap();
    assert!(host.cache_entry("owned").is_some(), "{:?}", host.cache);
    let contexts = host.contexts.lock().unwrap().clone();
    assert!(
        !contexts.is_empty() && contexts.iter().all(|c| c.plugin == "hello-grpc"),
        "the host stamped the real plugin: {contexts:?}"
    );
    plugin
        .shutdown(&CallContext::for_plugin("hello-grpc"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_plugin_registering_under_another_name_is_refused() {
    let run = readable_tempdir();
    let err = GrpcRuntime::new(run.path())
        .start("stats", &hello_binary(), run.path(), limits(5_000))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "stats registered as `hello-grpc`: a plugin registers under the name it was installed as"
    );
    let leftovers: Vec<_> = std::fs::read_dir(run.path())
        .unwrap()
        .filter_map(Result::ok)
        .collect();
    assert!(
        leftovers.is_empty(),
        "its process and sockets are gone: {leftovers:?}"
    );
}

#[tokio::test]
async fn calls_over_the_message_size_cap_are_refused() {
    let run = readable_tempdir();
    let plugin = GrpcRuntime::new(run.path())
        .with_max_message_bytes(64 << 10)
        .start("hello-grpc", &hello_binary(), run.path(), limits(5_000))
        .await
        .unwrap();
    let ctx = CallContext::for_plugin("hello-grpc");
    plugin
        .init(&ctx, Arc::new(MemoryHost::default()))
        .await
        .unwrap();
    let small = vec![b'a'; 1_000];
    assert_eq!(plugin.call(&ctx, "echo", &small).await.unwrap(), small);
    // With a cap other than the default, the plugin's connection back to the host is made at
    // `Init` (not the one it made at start): its host calls work.
    assert_eq!(
        call(&plugin, "greet", json!({})).await.unwrap()["greetings"],
        1
    );
    let big = vec![b'a'; 100 << 10];
    let err = plugin.call(&ctx, "echo", &big).await.unwrap_err();
    assert_eq!(
        err,
        PluginError::failed(
            "message_too_large",
            "the call's arguments are 102400 bytes, over the 65536-byte message limit"
        )
    );
    assert_eq!(
        plugin.call(&ctx, "echo", &small).await.unwrap(),
        small,
        "the plugin goes on"
    );
    plugin.shutdown(&ctx).await.unwrap();
}
