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
    let (mixed, only_a, only_b) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );

    // An OS thread, so that the swaps do not depend on how tokio schedules the callers.
    let updater = {
        let (sb, stop) = (sb.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u32;
            while !stop.load(Ordering::Relaxed) {
                sb.update_policy(if swaps % 2 == 0 { b.clone() } else { a.clone() })
                    .unwrap();
                swaps += 1;
                std::thread::yield_now();
            }
            swaps
        })
    };
    let callers: Vec<_> = (0..8)
        .map(|i| {
            let (sb, mixed, only_a, only_b) =
                (sb.clone(), mixed.clone(), only_a.clone(), only_b.clone());
            tokio::spawn(async move {
                // At least 400 rounds each, and on until both versions have been seen (bounded).
                for n in 0..20_000 {
                    if n >= 400
                        && only_a.load(Ordering::Relaxed) > 0
                        && only_b.load(Ordering::Relaxed) > 0
                    {
                        break;
                    }
                    let query = match (i + n) % 3 {
                        0 => "SELECT * FROM a JOIN b ON a.id = b.id",
                        1 => "SELECT * FROM a",
                        _ => "SELECT * FROM b",
                    };
                    if sb.db_query(&ctx(), query, &[]).await.is_ok() {
                        match (i + n) % 3 {
                            0 => mixed.fetch_add(1, Ordering::Relaxed),
                            1 => only_a.fetch_add(1, Ordering::Relaxed),
                            _ => only_b.fetch_add(1, Ordering::Relaxed),
                        };
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
    let swaps = updater.join().expect("the updater did not panic");

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
        swaps > 10,
        "the policy changed during the run ({swaps} swaps)"
    );
    assert!(sb.policy_version() > 10);
    let reached_db = host
        .reached
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.function == "db_query")
        .count();
    assert_eq!(
        reached_db,
        only_a.load(Ordering::Relaxed) + only_b.load(Ordering::Relaxed)
    );
}
