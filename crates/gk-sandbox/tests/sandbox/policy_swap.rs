//! Policy updates under concurrent load: no panic, and every call judged by one whole version.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use gk_sdk::{Access, HostApi, PermissionType};

use crate::support::{approved, ctx, perm, sandbox};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_call_sees_one_whole_policy_version() {
    // Version A grants table `a` (read) and cache read; version B grants table `b` and cache
    // write. A query joining `a` and `b` needs both, so only a call judged half by A and half by
    // B could pass it; the single-table queries pass under exactly one version.
    let a = approved(vec![
        perm(PermissionType::Db, Access::Read, &["a"]),
        perm(PermissionType::Cache, Access::Read, &[]),
    ]);
    let b = approved(vec![
        perm(PermissionType::Db, Access::Read, &["b"]),
        perm(PermissionType::Cache, Access::Write, &[]),
    ]);
    let (sb, host) = sandbox(a.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    let mixed = Arc::new(AtomicUsize::new(0));
    let only_a = Arc::new(AtomicUsize::new(0));
    let only_b = Arc::new(AtomicUsize::new(0));

    // An OS thread, so that the swaps do not depend on how tokio schedules the callers.
    let updater = {
        let (sb, stop, swaps) = (sb.clone(), stop.clone(), swaps.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = swaps.fetch_add(1, Ordering::Relaxed);
                sb.update_policy(if n % 2 == 0 { b.clone() } else { a.clone() })
                    .unwrap();
                std::thread::yield_now();
            }
        })
    };
    let callers: Vec<_> = (0..8)
        .map(|i| {
            let (sb, swaps) = (sb.clone(), swaps.clone());
            let (mixed, only_a, only_b) = (mixed.clone(), only_a.clone(), only_b.clone());
            tokio::spawn(async move {
                // At least 400 rounds each, and on (bounded) until both versions have been seen
                // and the policy has changed many times.
                for n in 0..50_000 {
                    let seen_both =
                        only_a.load(Ordering::Relaxed) > 0 && only_b.load(Ordering::Relaxed) > 0;
                    if n >= 400 && seen_both && swaps.load(Ordering::Relaxed) >= 100 {
                        break;
                    }
                    let (query, counter) = match (i + n) % 3 {
                        0 => ("SELECT * FROM a JOIN b ON a.id = b.id", &mixed),
                        1 => ("SELECT * FROM a", &only_a),
                        _ => ("SELECT * FROM b", &only_b),
                    };
                    if sb.db_query(&ctx(), query, &[]).await.is_ok() {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    // Cache read is granted by A only and write by B only: never both at once.
                    let _ = sb.cache_get(&ctx(), "k").await;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("no caller panicked");
    }
    stop.store(true, Ordering::Relaxed);
    updater.join().expect("the updater did not panic");
    let swaps = swaps.load(Ordering::Relaxed);

    assert_eq!(
        mixed.load(Ordering::Relaxed),
        0,
        "a join of `a` and `b` passed: a call mixed two versions"
    );
    assert!(
        only_a.load(Ordering::Relaxed) > 0 && only_b.load(Ordering::Relaxed) > 0,
        "both versions were in force during the run: a {only_a:?}, b {only_b:?}"
    );
    assert!(
        swaps >= 100,
        "the policy changed during the run ({swaps} swaps)"
    );
    assert!(sb.policy_version() >= 100);
    let reached_db = host
        .reached()
        .iter()
        .filter(|r| r.function == "db_query")
        .count();
    assert_eq!(
        reached_db,
        only_a.load(Ordering::Relaxed) + only_b.load(Ordering::Relaxed)
    );
}
