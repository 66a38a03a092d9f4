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
    // The deadline, or the calibrated fuel running out first (when the machine was busier
    // while the rate was measured than now).
    let PluginError::Timeout { operation, after } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*after, Duration::from_millis(300));
    match operation.as_str() {
        "call" => assert!(waited >= Duration::from_millis(290), "waited {waited:?}"),
        "call (out of fuel)" => {}
        other => panic!("{other}"),
    }
    assert!(waited < Duration::from_millis(1_500), "waited {waited:?}");
    // The guest is stopped by fuel, so the pool recovers and later calls work.
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
    // More spinning calls than the pool has instances; each is stopped by its fuel.
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
