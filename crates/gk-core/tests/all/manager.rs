//! The manager with test plugins on the real production host (SQLite, memory cache).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gk_core::ManagerError;
use gk_sdk::{Access, HostError, Permission, PermissionType, PolicyStatus};
use serde_json::{Value, json};

use crate::common::{TestPlugin, fixture, fixture_at, who};

fn approved(name: &str, permissions: Vec<Permission>) -> gk_sdk::ResourcePolicy {
    let mut policy = gk_sdk::ResourcePolicy::default_for(name);
    policy.status = PolicyStatus::Approved;
    policy.permissions = permissions;
    policy
}

#[tokio::test]
async fn register_call_and_the_default_policy_is_stored() {
    let f = fixture().await;
    let reg = f
        .manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    assert_eq!(reg.name, "alpha");
    assert_eq!(
        who(&f.manager, "alpha").await,
        json!({"plugin": "alpha", "caller": null, "depth": 0, "version": "1"})
    );
    assert_eq!(
        f.store.plugin_policy("alpha").await.unwrap(),
        Some(gk_sdk::ResourcePolicy::default_for("alpha"))
    );
    let stats = f.manager.stats("alpha").unwrap();
    assert_eq!((stats.calls, stats.errors), (1, 0));
    assert!(matches!(
        f.manager.call("nobody", "who", b"").await,
        Err(ManagerError::NotFound(_))
    ));
    f.manager.call("alpha", "nope", b"").await.unwrap_err();
    assert_eq!(f.manager.stats("alpha").unwrap().errors, 1);
}

#[tokio::test]
async fn disabled_state_is_persisted_and_survives_a_restart() {
    let f = fixture().await;
    f.manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    f.manager
        .set_enabled("alpha", false, "admin")
        .await
        .unwrap();
    assert!(matches!(
        f.manager.call("alpha", "who", b"").await,
        Err(ManagerError::Disabled(_))
    ));
    // A new manager on the same database: a restart.
    let again = fixture_at(f._dir).await;
    again
        .manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    assert!(!again.manager.is_enabled("alpha").unwrap());
    again
        .manager
        .set_enabled("alpha", true, "admin")
        .await
        .unwrap();
    assert_eq!(who(&again.manager, "alpha").await["version"], "1");
    let _ = again.url;
}

#[tokio::test]
async fn a_policy_change_applies_to_the_next_host_call() {
    let f = fixture().await;
    f.manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    f.manager.call("alpha", "cache", b"").await.unwrap();
    f.manager
        .set_policy(approved("alpha", vec![]), "admin")
        .await
        .unwrap();
    let err = f.manager.call("alpha", "cache", b"").await.unwrap_err();
    assert!(err.to_string().contains("cache:write"), "{err}");
    assert_eq!(
        f.manager.policy("alpha").await.unwrap().status,
        PolicyStatus::Approved
    );
    f.manager
        .set_policy(
            approved(
                "alpha",
                vec![Permission::new(PermissionType::Cache, Access::ReadWrite)],
            ),
            "admin",
        )
        .await
        .unwrap();
    f.manager.call("alpha", "cache", b"").await.unwrap();
    assert_eq!(f.manager.stats("alpha").unwrap().host.denied, 1);
}

#[tokio::test]
async fn plugin_calls_go_through_the_callers_sandbox() {
    let f = fixture().await;
    f.manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    f.manager
        .register(Arc::new(TestPlugin::new("beta", "1")))
        .await
        .unwrap();
    let call_beta = br#"{"target": "beta", "function": "who", "args": {}}"#;
    let err = f
        .manager
        .call("alpha", "call", call_beta)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("plugin `beta` is not in the plugin_call scope"),
        "{err}"
    );
    f.manager
        .set_policy(
            approved(
                "alpha",
                vec![
                    Permission::new(PermissionType::PluginCall, Access::Read).with_scope(["beta"]),
                ],
            ),
            "admin",
        )
        .await
        .unwrap();
    let reply: Value =
        serde_json::from_slice(&f.manager.call("alpha", "call", call_beta).await.unwrap()).unwrap();
    assert_eq!(
        reply,
        json!({"plugin": "beta", "caller": "alpha", "depth": 1, "version": "1"})
    );
}

#[tokio::test]
async fn a_plugin_calling_itself_does_not_deadlock_and_stops_at_the_depth_limit() {
    let f = fixture().await;
    f.manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    f.manager
        .set_policy(
            approved(
                "alpha",
                vec![
                    Permission::new(PermissionType::PluginCall, Access::Read).with_scope(["alpha"]),
                ],
            ),
            "admin",
        )
        .await
        .unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        f.manager.call("alpha", "recurse", b""),
    )
    .await
    .expect("no deadlock");
    let err = outcome.unwrap_err().to_string();
    assert!(
        err.contains("plugin call depth exceeded: at most 10 nested plugin calls"),
        "{err}"
    );
}

#[tokio::test]
async fn replace_under_load_fails_no_call() {
    let f = fixture().await;
    let old = TestPlugin::new("alpha", "1");
    let old_shutdowns = old.shutdowns.clone();
    f.manager.register(Arc::new(old)).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (manager, stop, calls, failures) = (
                f.manager.clone(),
                stop.clone(),
                calls.clone(),
                failures.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match manager.call("alpha", "slow", b"").await {
                        Ok(_) => calls.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failures.fetch_add(1, Ordering::Relaxed),
                    };
                    // A refused call (while disabled) returns at once: without a yield, these
                    // tasks would starve the test's own task on the single-threaded runtime.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.manager
        .set_enabled("alpha", false, "admin")
        .await
        .unwrap();
    f.manager.set_enabled("alpha", true, "admin").await.unwrap();
    let before = failures.load(Ordering::Relaxed);
    f.manager
        .replace(Arc::new(TestPlugin::new("alpha", "2")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        before,
        "no call failed during the swap"
    );
    assert!(calls.load(Ordering::Relaxed) > 20);
    assert_eq!(who(&f.manager, "alpha").await["version"], "2");
    assert_eq!(
        old_shutdowns.load(Ordering::SeqCst),
        1,
        "the old instance was shut down once, after its calls"
    );
}

#[tokio::test]
async fn a_disabled_plugin_can_be_replaced_and_stays_disabled() {
    let f = fixture().await;
    f.manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    f.manager
        .set_enabled("alpha", false, "admin")
        .await
        .unwrap();
    f.manager
        .replace(Arc::new(TestPlugin::new("alpha", "2")))
        .await
        .unwrap();
    assert!(!f.manager.is_enabled("alpha").unwrap());
    assert_eq!(f.manager.registration("alpha").unwrap().version, "2");
}

#[tokio::test]
async fn bad_registrations_are_refused() {
    let f = fixture().await;
    let mut first = TestPlugin::new("alpha", "1");
    first.route = Some("/api/plugins/shared".into());
    f.manager.register(Arc::new(first)).await.unwrap();
    let mut second = TestPlugin::new("beta", "1");
    second.route = Some("/api/plugins/shared".into());
    let err = f
        .manager
        .register(Arc::new(second))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "plugin `beta` cannot be registered: route GET /api/plugins/shared is already declared by plugin `alpha`"
    );
    let err = f
        .manager
        .register(Arc::new(TestPlugin::new("Bad Name", "1")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a valid plugin name"), "{err}");
}

#[tokio::test]
async fn a_slow_init_times_out_without_blocking_other_plugins() {
    let f = fixture().await;
    let mut slow = TestPlugin::new("slow", "1");
    slow.slow_init = true;
    let mut policy = gk_sdk::ResourcePolicy::default_for("slow");
    policy.init_timeout = Duration::from_millis(200);
    f.store.set_plugin_policy(&policy, "admin").await.unwrap();
    f.manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    let manager = f.manager.clone();
    let pending = tokio::spawn(async move { manager.register(Arc::new(slow)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        who(&f.manager, "alpha").await["version"],
        "1",
        "calls to others go on during a slow init"
    );
    let err = pending.await.unwrap().unwrap_err().to_string();
    assert_eq!(err, "plugin `slow`: init timed out after 200 ms");
    let _ = HostError::NotFound(String::new());
}

/// A WASM guest whose `spin` never returns (any other function echoes).
const SPINNER: &str = r#"(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"name\":\"spinner\",\"version\":\"1\"}")
  (func (export "gk_malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "gk_register") (result i64) (i64.const 0x1000000020))
  (func (export "gk_call") (param $fp i32) (param $fl i32) (param $ap i32) (param $al i32) (result i64)
    (if (i32.eq (i32.load8_u (local.get $fp)) (i32.const 115)) (then (loop $l (br $l))))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ap)) (i64.const 32)) (i64.extend_i32_u (local.get $al)))))"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_call_timeout_change_applies_to_the_next_call_of_a_loaded_wasm_plugin() {
    use gk_wasm::{WasmConfig, WasmLimits, WasmRuntime};
    let f = fixture().await;
    let runtime = WasmRuntime::new(WasmConfig {
        pool_size: 1,
        ..WasmConfig::default()
    })
    .unwrap();
    let limits = WasmLimits::from_policy(&gk_sdk::ResourcePolicy::default_for("spinner"));
    let plugin = runtime
        .load(wat::parse_str(SPINNER).unwrap(), limits)
        .await
        .unwrap();
    f.manager.register(Arc::new(plugin)).await.unwrap();
    assert_eq!(f.manager.call("spinner", "echo", b"1").await.unwrap(), b"1");

    let mut policy = approved("spinner", vec![]);
    policy.call_timeout = Duration::from_millis(300);
    let applied = f.manager.set_policy(policy, "admin").await.unwrap();
    // Applied to the loaded plugin: nothing left for a reload or the next load.
    assert_eq!(applied, gk_core::PolicyApplied::default());
    let start = std::time::Instant::now();
    let error = f.manager.call("spinner", "spin", b"").await.unwrap_err();
    let waited = start.elapsed();
    assert!(
        matches!(
            &error,
            ManagerError::Plugin { source: gk_sdk::PluginError::Timeout { operation, after }, .. }
                if operation.starts_with("call (stopped by its deadline after ")
                    && *after == Duration::from_millis(300)
        ),
        "{error:?}"
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1_500),
        "the 30 s default still applied: {waited:?}"
    );
    // The guest stopped (the only worker answers) and the stats say which limit stopped it.
    assert_eq!(f.manager.call("spinner", "echo", b"2").await.unwrap(), b"2");
    let stats = f.manager.stats("spinner").unwrap();
    assert_eq!(
        stats.stopped_by,
        gk_sdk::LimitStops {
            deadline: 1,
            ..Default::default()
        }
    );
    assert_eq!((stats.calls, stats.errors), (3, 1));
}

/// The configuration's `approve` list, read in one go: a plugin awaiting review gets what it
/// requests (once, however often it is listed), a reviewed policy stays as the admin left it,
/// an unknown name is its own error, and a plugin not listed stays pending.
#[tokio::test]
async fn approving_a_list_grants_only_what_awaits_review() {
    let f = fixture().await;
    for name in ["alpha", "beta", "gamma"] {
        f.manager
            .register(Arc::new(TestPlugin::new(name, "1")))
            .await
            .unwrap();
    }
    let mut reviewed = approved("beta", vec![]);
    reviewed.status = PolicyStatus::Blocked;
    f.manager
        .set_policy(reviewed.clone(), "admin")
        .await
        .unwrap();

    let names = ["alpha", "beta", "alpha", "nobody"].map(String::from);
    let approved = f
        .manager
        .approve_unreviewed_all(&names, "configuration")
        .await;
    let listed: Vec<&str> = approved.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        listed,
        ["alpha", "beta", "alpha", "nobody"],
        "one result per name, in order"
    );
    let alpha = approved[0].1.as_ref().unwrap();
    assert_eq!(alpha.status, PolicyStatus::Approved);
    assert_eq!(
        approved[2].1.as_ref().unwrap(),
        alpha,
        "listed twice: the same policy"
    );
    assert_eq!(approved[1].1.as_ref().unwrap(), &reviewed);
    assert!(
        approved[3].1.is_err(),
        "an unknown plugin cannot be approved"
    );

    assert_eq!(f.manager.policy("alpha").await.unwrap(), *alpha);
    assert_eq!(f.manager.policy("beta").await.unwrap(), reviewed);
    assert_eq!(
        f.manager.policy("gamma").await.unwrap().status,
        PolicyStatus::PendingReview
    );

    // A corrupt stored policy fails its own name only: the others are still approved.
    f.manager
        .register(Arc::new(TestPlugin::new("delta", "1")))
        .await
        .unwrap();
    f.store
        .set_setting("Plugin::gamma::Policy", "{not json", "admin")
        .await
        .unwrap();
    let names = ["gamma", "delta"].map(String::from);
    let approved = f
        .manager
        .approve_unreviewed_all(&names, "configuration")
        .await;
    let gamma = approved[0].1.as_ref().unwrap_err().to_string();
    assert!(gamma.contains("`Plugin::gamma::Policy`"), "{gamma}");
    assert_eq!(
        approved[1].1.as_ref().unwrap().status,
        PolicyStatus::Approved,
        "delta is approved all the same"
    );
}
