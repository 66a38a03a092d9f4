//! The scheduler: jobs from registrations on their cron schedules.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::{TestPlugin, fixture};

fn job(id: &str, handler: &str, timeout_ms: Option<u64>) -> gk_sdk::JobSpec {
    gk_sdk::JobSpec {
        id: id.into(),
        handler: handler.into(),
        schedule: "* * * * * *".into(),
        enabled: true,
        timeout: timeout_ms.map(Duration::from_millis),
        ..Default::default()
    }
}

#[tokio::test]
async fn scheduled_jobs_run_time_out_do_not_overlap_and_stop_when_disabled() {
    let f = fixture().await;
    let mut plugin = TestPlugin::new("cron", "1");
    plugin.jobs = vec![
        job("every-second", "tick", None),
        job("too-slow", "long", Some(300)),
        job("long-runner", "long", Some(10_000)),
        gk_sdk::JobSpec {
            enabled: false,
            ..job("off", "tick", None)
        },
    ];
    let ticks = plugin.ticks.clone();
    f.manager.register(Arc::new(plugin)).await.unwrap();
    let scheduler = gk_core::Scheduler::new(f.manager.clone());
    assert_eq!(
        scheduler.schedule_plugin("cron").unwrap(),
        3,
        "the disabled job is not scheduled"
    );
    tokio::time::sleep(Duration::from_millis(3_600)).await;

    let every = scheduler.job_stats("cron", "every-second").unwrap();
    assert!(every.runs >= 2 && every.failures == 0, "{every:?}");
    assert_eq!(ticks.load(Ordering::SeqCst) as u64, every.runs);
    let slow = scheduler.job_stats("cron", "too-slow").unwrap();
    assert!(
        slow.runs >= 2 && slow.failures == slow.runs,
        "each run timed out after 300 ms: {slow:?}"
    );
    let long = scheduler.job_stats("cron", "long-runner").unwrap();
    assert!(
        long.skipped >= 1,
        "a run of 1.5 s on a 1 s schedule skips occurrences: {long:?}"
    );
    assert!(scheduler.job_stats("cron", "off").is_none());

    f.manager.set_enabled("cron", false, "admin").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = ticks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(
        ticks.load(Ordering::SeqCst),
        before,
        "a disabled plugin's jobs do not run"
    );
    scheduler.unschedule_plugin("cron");
    assert!(scheduler.job_stats("cron", "every-second").is_none());
}

#[tokio::test]
async fn bad_cron_schedules_are_refused_at_registration() {
    let f = fixture().await;
    let mut plugin = TestPlugin::new("cron", "1");
    plugin.jobs = vec![gk_sdk::JobSpec {
        schedule: "every tuesday".into(),
        ..job("bad", "tick", None)
    }];
    let err = f
        .manager
        .register(Arc::new(plugin))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("plugin `cron` cannot be registered: job `bad`: schedule `every tuesday` is not a cron expression"), "{err}");
    assert!(gk_core::parse_schedule("0 8 * * 1").is_ok(), "five fields");
    assert!(
        gk_core::parse_schedule("*/10 * * * * *").is_ok(),
        "six fields"
    );
}
