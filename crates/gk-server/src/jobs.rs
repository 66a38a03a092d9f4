//! Keeps the scheduler in step with the plugins: the jobs of every loaded, enabled plugin run;
//! a plugin disabled, unloaded or removed has its jobs stopped; a reload with other jobs is
//! rescheduled. Plugins load lazily, so a plugin's jobs run once it is loaded (at its first
//! use, or at start with `eager_loading`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gk_core::{Manager, Scheduler};
use gk_sdk::JobSpec;

/// How often the catalog is looked at for changes.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

/// The jobs that should run for `plugin` now: none unless it is loaded and enabled.
fn wanted_jobs(manager: &Manager, plugin: &str) -> Vec<JobSpec> {
    if !manager.is_enabled(plugin).unwrap_or(false) || !manager.is_loaded(plugin).unwrap_or(false) {
        return Vec::new();
    }
    manager
        .registration(plugin)
        .map(|r| r.jobs.into_iter().filter(|j| j.enabled).collect())
        .unwrap_or_default()
}

/// Starts following the manager's catalog; the task ends when it is aborted.
pub(crate) fn follow(manager: Manager, scheduler: Arc<Scheduler>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen_version = None;
        let mut scheduled: HashMap<String, Vec<JobSpec>> = HashMap::new();
        loop {
            let version = manager.catalog_version();
            if seen_version != Some(version) {
                seen_version = Some(version);
                let names = manager.names();
                scheduled.retain(|plugin, _| {
                    let known = names.contains(plugin);
                    if !known {
                        scheduler.unschedule_plugin(plugin);
                    }
                    known
                });
                for plugin in names {
                    let wanted = wanted_jobs(&manager, &plugin);
                    if scheduled
                        .get(&plugin)
                        .map_or(wanted.is_empty(), |jobs| *jobs == wanted)
                    {
                        continue;
                    }
                    if wanted.is_empty() {
                        scheduler.unschedule_plugin(&plugin);
                        tracing::info!(%plugin, "jobs stopped");
                    } else {
                        match scheduler.schedule_plugin(&plugin) {
                            Ok(count) => tracing::info!(%plugin, count, "jobs scheduled"),
                            Err(error) => tracing::warn!(%plugin, %error, "jobs not scheduled"),
                        }
                    }
                    scheduled.insert(plugin, wanted);
                }
            }
            tokio::time::sleep(FOLLOW_INTERVAL).await;
        }
    })
}
