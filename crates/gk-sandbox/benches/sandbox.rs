//! What the sandbox adds to one allowed host call, against calling the inner host directly.
//!
//! `cargo bench -p gk-sandbox` prints ns/call for: a cache read, a `db_query` whose decision is
//! cached, and a `db_query` never seen before (parsed and judged). Goal: under 1 µs added for
//! the first two on a 2-core machine.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use futures::executor::block_on;
use gk_sandbox::SandboxedHostApi;
use gk_sdk::{
    Access, CallContext, HostApi, NoopHost, Permission, PermissionType, PolicyStatus,
    ResourcePolicy,
};

/// Median ns per call of `f` over 7 rounds of `iterations` calls.
fn measure(iterations: u32, mut f: impl FnMut(u32)) -> f64 {
    for i in 0..iterations / 10 {
        f(i);
    }
    let mut rounds: Vec<f64> = (0..7)
        .map(|round| {
            let start = Instant::now();
            for i in 0..iterations {
                f(round * iterations + i);
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[3]
}

fn main() {
    let mut policy = ResourcePolicy::default_for("bench");
    policy.status = PolicyStatus::Approved;
    policy.permissions = vec![
        Permission::new(PermissionType::Db, Access::Read).with_scope(["ticket*", "queue"]),
        Permission::new(PermissionType::Cache, Access::ReadWrite),
    ];
    policy.max_calls_per_second = 0;
    policy.max_db_queries_per_min = 0;
    let inner: Arc<dyn HostApi> = Arc::new(NoopHost);
    let sandbox = SandboxedHostApi::new("bench", inner.clone(), policy).expect("policy compiles");
    let ctx = CallContext::for_plugin("bench");
    let args = [serde_json::json!("open")];
    let query = "SELECT t.id, t.title, q.name FROM tickets t JOIN queue q ON q.id = t.queue_id WHERE t.state = ? ORDER BY t.id DESC LIMIT 20";

    // Every measured call must be an allowed one, not a refusal.
    assert!(block_on(sandbox.db_query(&ctx, query, &args)).is_ok());
    let cache_direct = measure(200_000, |_| {
        black_box(block_on(inner.cache_get(&ctx, "plugin:bench:key")).ok());
    });
    let cache_sandboxed = measure(200_000, |_| {
        black_box(block_on(sandbox.cache_get(&ctx, "key")).ok());
    });
    let db_direct = measure(200_000, |_| {
        black_box(block_on(inner.db_query(&ctx, query, &args)).ok());
    });
    let db_cached = measure(200_000, |_| {
        black_box(block_on(sandbox.db_query(&ctx, query, &args)).ok());
    });
    let db_first_seen = measure(2_000, |i| {
        let fresh = format!("{query} OFFSET {i}");
        black_box(block_on(sandbox.db_query(&ctx, &fresh, &args)).ok());
    });
    let fresh_direct = measure(2_000, |i| {
        let fresh = format!("{query} OFFSET {i}");
        black_box(block_on(inner.db_query(&ctx, &fresh, &args)).ok());
    });

    println!("gk-sandbox: cost added to one allowed host call (median of 7 rounds)");
    println!(
        "{:<32} {:>12} {:>12} {:>12}",
        "call", "direct ns", "sandbox ns", "added ns"
    );
    for (name, direct, sandboxed) in [
        ("cache_get", cache_direct, cache_sandboxed),
        ("db_query, cached decision", db_direct, db_cached),
        ("db_query, first seen (parse)", fresh_direct, db_first_seen),
    ] {
        println!(
            "{name:<32} {direct:>12.0} {sandboxed:>12.0} {:>12.0}",
            sandboxed - direct
        );
    }
}
