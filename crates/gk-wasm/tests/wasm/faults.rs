//! Malformed, hostile and failing modules: each gives its own clear error, the host goes on.

use gk_sdk::{Plugin, PluginError};
use gk_wasm::WasmError;

use crate::support::{ctx, limits, load, runtime, try_load};

async fn load_error(name: &str) -> String {
    match try_load(name, limits(500, 16)).await {
        Ok(_) => panic!("{name} loaded"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_modules_are_refused_with_the_problem_named() {
    for (fixture, expected) in [
        (
            "missing_call",
            "the module does not export `gk_call`, which every GoatKit plugin must (the host calls plugin functions through it)",
        ),
        (
            "wrong_signature",
            "the export `gk_malloc` has type function [I64] -> [I32], but the ABI needs function [I32] -> [I32]",
        ),
        (
            "unknown_import",
            "the module imports `env.system`, which the host does not provide",
        ),
        (
            "metering_export",
            "the export `wasmer_metering_remaining_points` has type global",
        ),
        (
            "huge_memory",
            "the module's memory starts at 100 pages (6 MiB), above the plugin's cap of 64 pages (4 MiB)",
        ),
        (
            "huge_table",
            "the module's table starts with 5000000 elements; at most 100000 are allowed",
        ),
        (
            "interrupt_export",
            "the export `gk_host_interrupt` has type global, but the ABI needs no export of that name (the host's limits use it)",
        ),
        (
            "two_memories",
            "the module exceeds its limits: the module has 2 memories; a plugin has exactly one (`memory`), which `memory_mb` caps",
        ),
        (
            "shared_memory",
            "the module uses a WebAssembly feature GoatKit does not enable: threads (shared memory, atomics) (",
        ),
        (
            "reg_not_json",
            "gk_register failed: the registration is not valid JSON of a registration",
        ),
        (
            "reg_out_of_bounds",
            "gk_register failed: plugin broke the protocol: the result at 65000..66000 lies outside guest memory of 65536 bytes",
        ),
        (
            "reg_spins",
            // "register (stopped by its deadline after 501 ms) timed out after 500 ms"
            "timed out after 500 ms",
        ),
    ] {
        let limits = if fixture == "huge_memory" {
            limits(500, 4)
        } else {
            limits(500, 16)
        };
        let error = match try_load(fixture, limits).await {
            Ok(_) => panic!("{fixture} loaded"),
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains(expected),
            "{fixture}:\n  expected: {expected}\n  actual:   {error}"
        );
    }
    let not_wasm = runtime()
        .load(b"\0asm\x01\0\0\0garbage".to_vec(), limits(500, 16))
        .await
        .unwrap_err();
    assert!(matches!(not_wasm, WasmError::Compile(_)), "{not_wasm}");
    let _ = load_error;
}

#[tokio::test(flavor = "multi_thread")]
async fn traps_end_the_call_and_the_next_call_gets_a_fresh_instance() {
    let (plugin, _) = load("echo", limits(2_000, 16)).await;
    let err = plugin.call(&ctx(), "trap", b"").await.unwrap_err();
    assert!(
        matches!(&err, PluginError::Trap(m) if m.contains("unreachable")),
        "{err:?}"
    );
    let err = plugin.call(&ctx(), "recurse", b"").await.unwrap_err();
    assert!(
        matches!(&err, PluginError::Trap(m) if m.contains("stack")),
        "{err:?}"
    );
    assert_eq!(plugin.call(&ctx(), "echo", b"ok").await.unwrap(), b"ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_result_pointers_are_protocol_errors() {
    let (plugin, _) = load("echo", limits(2_000, 16)).await;
    let err = plugin.call(&ctx(), "bad_ptr", b"").await.unwrap_err();
    assert_eq!(
        err,
        PluginError::Protocol(
            "the result at 4294901760..4294901770 lies outside guest memory of 65536 bytes".into()
        )
    );
    let err = plugin.call(&ctx(), "huge_len", b"").await.unwrap_err();
    assert_eq!(
        err,
        PluginError::Protocol(
            "the result of 4294967295 bytes is larger than the 16777216 bytes allowed".into()
        ),
        "the length is capped before the range is looked at"
    );
    assert_eq!(plugin.call(&ctx(), "echo", b"ok").await.unwrap(), b"ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_whose_malloc_fails() {
    let (plugin, _) = load("malloc_fails", limits(2_000, 16)).await;
    let err = plugin.call(&ctx(), "anything", b"{}").await.unwrap_err();
    assert_eq!(
        err,
        PluginError::Protocol(
            "gk_malloc(8) returned 0 (guest memory: 1 of at most 256 pages, the plugin's memory_mb)"
                .into()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_arguments_fail_inside_the_guest_not_the_host() {
    let (plugin, _) = load("echo", limits(2_000, 1)).await;
    // 2 MiB of arguments cannot fit a 1 MiB memory: the guest's allocator says 0.
    let err = plugin
        .call(&ctx(), "echo", &vec![b'x'; 2 << 20])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PluginError::Protocol(m) if m.contains("returned 0")),
        "{err:?}"
    );
    assert_eq!(
        plugin.call(&ctx(), "echo", b"small").await.unwrap(),
        b"small"
    );
}
