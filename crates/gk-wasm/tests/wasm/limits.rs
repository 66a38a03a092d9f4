//! Memory and CPU limits that hold.

use std::time::{Duration, Instant};

use gk_sdk::{Plugin, PluginError};

use crate::support::{ctx, limits, load};

#[tokio::test(flavor = "multi_thread")]
async fn memory_growth_stops_at_the_cap_inside_the_guest() {
    let (plugin, _) = load("echo", limits(5_000, 8)).await;
    // The guest grows memory until memory.grow returns -1 and answers with one byte per page.
    let pages = plugin.call(&ctx(), "grow", b"").await.unwrap().len();
    assert!(
        pages <= 128 && pages > 100,
        "8 MiB is 128 pages; the guest reached {pages}"
    );
    let (big, _) = load("echo", limits(5_000, 32)).await;
    let pages = big.call(&ctx(), "grow", b"").await.unwrap().len();
    assert!(
        pages <= 512 && pages > 480,
        "32 MiB is 512 pages; the guest reached {pages}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_loop_is_stopped_and_the_caller_gets_timeout_at_the_deadline() {
    let (plugin, _) = load("echo", limits(300, 16)).await;
    let start = Instant::now();
    let err = plugin.call(&ctx(), "spin", b"").await.unwrap_err();
    let waited = start.elapsed();
    // The deadline stopped it (fuel is a backstop of ten times the timeout).
    assert!(
        matches!(
            &err,
            PluginError::Timeout { operation, after }
                if operation.starts_with("call (stopped by its deadline after ")
                    && *after == Duration::from_millis(300)
        ),
        "{err:?}"
    );
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_millis(1_500),
        "waited {waited:?}"
    );
    // The guest is stopped at the deadline, so the pool recovers and later calls work.
    for _ in 0..8 {
        assert_eq!(
            plugin.call(&ctx(), "echo", b"after").await.unwrap(),
            b"after"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_loops_do_not_exhaust_the_pool() {
    let (plugin, _) = load("echo", limits(200, 16)).await;
    // More spinning calls than the pool has instances; each is stopped at its deadline.
    for _ in 0..6 {
        assert!(matches!(
            plugin.call(&ctx(), "spin", b"").await,
            Err(PluginError::Timeout { .. })
        ));
    }
    assert_eq!(
        plugin.call(&ctx(), "echo", b"alive").await.unwrap(),
        b"alive"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_grow_up_to_the_cap_and_no_further() {
    let (plugin, _) = load("table_grow", limits(2_000, 16)).await;
    // The guest traps unless growing to 100,000 elements worked and one more did not; it
    // answers with one byte per element.
    let elements = plugin.call(&ctx(), "g", b"").await.unwrap().len();
    assert_eq!(elements, 100_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_bound_guests_stop_at_the_deadline_not_at_their_fuel() {
    // One worker and a long timeout: the fuel (several times the timeout) would keep the guest
    // busy for many seconds; the interrupt at the deadline frees the worker for the next call.
    let runtime = crate::support::single_worker_runtime();
    let plugin = runtime
        .load(crate::support::fixture("echo"), limits(1_000, 16))
        .await
        .unwrap();
    plugin
        .init(
            &ctx(),
            std::sync::Arc::new(crate::support::MemoryHost::default()),
        )
        .await
        .unwrap();
    for function in ["spin", "fib"] {
        // Stopped at the deadline, not by the fuel (ten times the timeout's worth).
        let err = plugin.call(&ctx(), function, b"").await.unwrap_err();
        assert!(
            matches!(
                &err,
                PluginError::Timeout { operation, after }
                    if operation.starts_with("call (stopped by its deadline after ")
                        && *after == Duration::from_millis(1_000)
            ),
            "{function}: {err:?}"
        );
        // The next call waits for the only worker; its own deadline is 1 s, and fuel alone
        // would hold the worker for several seconds more.
        assert_eq!(
            plugin.call(&ctx(), "echo", b"free").await,
            Ok(b"free".to_vec()),
            "{function}: the guest was not stopped at its deadline"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_whose_caller_went_away_stops_without_calling_the_host() {
    let runtime = crate::support::single_worker_runtime();
    let plugin = runtime
        .load(crate::support::fixture("echo"), limits(30_000, 16))
        .await
        .unwrap();
    let gave_up =
        tokio::time::timeout(Duration::from_millis(200), plugin.call(&ctx(), "spin", b"")).await;
    assert!(gave_up.is_err(), "{gave_up:?}");
    // A generous bound, far below the 30 s the guest's deadline (and more its fuel) allows.
    let next = tokio::time::timeout(Duration::from_secs(10), plugin.call(&ctx(), "echo", b"x"))
        .await
        .expect("the abandoned guest still holds the worker");
    assert_eq!(next, Ok(b"x".to_vec()));
}
