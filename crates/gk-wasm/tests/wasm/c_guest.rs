//! A guest written in C against the ABI by hand, built with clang: the ABI is language-neutral.

use std::path::Path;
use std::process::Command;

use gk_sdk::{Plugin, PluginError};
use serde_json::{Value, json};

use crate::support::{ctx, limits, runtime};

fn build_c_guest() -> Vec<u8> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/c-guest/plugin.c");
    let output = std::env::temp_dir().join(format!("gk-c-guest-{}.wasm", std::process::id()));
    let status = Command::new("clang")
        .args(["--target=wasm32", "-O2", "-nostdlib", "-Wl,--no-entry", "-o"])
        .arg(&output)
        .arg(&source)
        .status()
        .expect("clang is needed for this test: scripts/install-deps.sh installs it (apt-get install clang lld)");
    assert!(
        status.success(),
        "clang failed to build {}",
        source.display()
    );
    let wasm = std::fs::read(&output).unwrap();
    std::fs::remove_file(&output).unwrap();
    wasm
}

#[tokio::test(flavor = "multi_thread")]
async fn a_c_guest_registers_and_calls_the_host() {
    let plugin = runtime()
        .load(build_c_guest(), limits(2_000, 16))
        .await
        .unwrap();
    let reg = plugin.register().await.unwrap();
    assert_eq!(reg.name, "c-guest");
    assert_eq!(reg.routes[0].path, "/api/plugins/c-guest/greet");
    let host = std::sync::Arc::new(crate::support::MemoryHost::default());
    host.cache
        .lock()
        .unwrap()
        .insert("greeting".into(), b"hallo".to_vec());
    plugin.init(&ctx(), host.clone()).await.unwrap();
    let reply: Value =
        serde_json::from_slice(&plugin.call(&ctx(), "greet", b"").await.unwrap()).unwrap();
    assert_eq!(
        reply,
        json!({"from": "c", "host_reply": {"value": "aGFsbG8=", "found": true}})
    );
    assert_eq!(
        host.logs.lock().unwrap().last().unwrap().2,
        "greeting from C"
    );
    assert_eq!(
        plugin.call(&ctx(), "other", b"").await.unwrap(),
        b"",
        "unknown functions answer nothing"
    );
    let _ = PluginError::Trap(String::new());
}
