//! `gk serve` runs the jobs of loaded, enabled plugins and stops them when a plugin is disabled.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::common::config_for;
use async_trait::async_trait;
use gk_sdk::{CallContext, GkRegistration, HostApi, JobSpec, Plugin, PluginError};

/// A plugin with a job every second that counts its runs.
struct Ticker(Arc<AtomicU64>);

#[async_trait]
impl Plugin for Ticker {
    async fn register(&self) -> Result<GkRegistration, PluginError> {
        Ok(GkRegistration {
            name: "ticker".into(),
            version: "1.0.0".into(),
            jobs: vec![JobSpec {
                id: "tick".into(),
                handler: "tick".into(),
                schedule: "* * * * * *".into(),
                enabled: true,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    async fn init(&self, _: &CallContext, _: Arc<dyn HostApi>) -> Result<(), PluginError> {
        Ok(())
    }

    async fn call(
        &self,
        _: &CallContext,
        function: &str,
        _: &[u8],
    ) -> Result<Vec<u8>, PluginError> {
        assert_eq!(function, "tick");
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(b"{}".to_vec())
    }

    async fn shutdown(&self, _: &CallContext) -> Result<(), PluginError> {
        Ok(())
    }
}

#[tokio::test]
async fn jobs_run_while_their_plugin_is_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let server = gk_server::start(&config_for(dir.path())).await.unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    server
        .manager
        .register(Arc::new(Ticker(ticks.clone())))
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(3500)).await;
    let running = ticks.load(Ordering::SeqCst);
    assert!(running >= 2, "the job ran {running} times in 3.5 s");
    let stats = server
        .scheduler
        .job_stats("ticker", "tick")
        .expect("scheduled");
    assert!(stats.runs >= 2, "{stats:?}");

    server
        .manager
        .set_enabled("ticker", false, "test")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let stopped = ticks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        ticks.load(Ordering::SeqCst),
        stopped,
        "no run after the plugin was disabled"
    );
    assert!(server.scheduler.job_stats("ticker", "tick").is_none());
    server.shutdown().await;
}
