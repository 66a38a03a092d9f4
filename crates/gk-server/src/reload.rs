//! Reading the configuration again while serving: on SIGHUP and when the configuration file
//! changes, the values plugins read with `config_get` (`[app]`, `[config]`, `[plugins.*]`,
//! `GOATFLOW_PLUGIN_*`) are replaced for every plugin at once. A file that no longer reads keeps
//! the values in force, and the error is logged; every other key needs a restart.

use std::path::PathBuf;
use std::time::Duration;

use gk_core::host::ConfigValues;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::ServeConfig;
use crate::config::Environment;

/// Edits arrive as bursts of events: wait this long after the first one.
const SETTLE: Duration = Duration::from_millis(200);

/// What keeps the reloading alive; dropping it stops it.
#[derive(Debug)]
pub(crate) struct ConfigReload {
    _watcher: Option<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConfigReload {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts reloading `values` from `running`'s file and the process environment.
pub(crate) fn follow(
    running: &ServeConfig,
    values: ConfigValues,
) -> Result<ConfigReload, notify::Error> {
    let (wake, mut woken) = mpsc::channel::<&'static str>(4);
    let watcher = match &running.config_file {
        Some(file) => Some(watch_file(file.clone(), wake.clone())?),
        None => None,
    };
    // Only the watcher sends; without a file, SIGHUP alone wakes the task.
    drop(wake);
    let running = running.clone();
    let task = tokio::spawn(async move {
        let mut signals = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        ) {
            Ok(signals) => Some(signals),
            Err(error) => {
                tracing::warn!(%error, "SIGHUP cannot be caught: the configuration reloads only when its file changes");
                None
            }
        };
        loop {
            let cause = tokio::select! {
                Some(cause) = woken.recv() => cause,
                Some(()) = async { match signals.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => "SIGHUP",
                else => return,
            };
            tokio::time::sleep(SETTLE).await;
            while woken.try_recv().is_ok() {}
            reload(&running, &values, cause);
        }
    });
    Ok(ConfigReload {
        _watcher: watcher,
        task,
    })
}

/// Reads the file and the environment again and swaps the values plugins read.
fn reload(running: &ServeConfig, values: &ConfigValues, cause: &str) {
    // An editor that truncates and then writes shows an empty file for a moment: reading it
    // would drop every value. A file emptied on purpose applies at the next start.
    if let Some(file) = &running.config_file
        && std::fs::metadata(file).is_ok_and(|m| m.len() == 0)
    {
        tracing::warn!(%cause, file = %file.display(), "the configuration file is empty: the values in force stay");
        return;
    }
    match ServeConfig::load(running.config_file.as_deref(), &Environment::process()) {
        Ok(mut fresh) => {
            fresh.listen = running.listen;
            values.replace(&fresh.config_values());
            tracing::info!(%cause, keys = values.len(), "configuration values for plugins reloaded");
            let restart_only = [
                ("http", fresh.http != running.http),
                ("email", fresh.email != running.email),
                ("databases", fresh.databases != running.databases),
                (
                    "database",
                    fresh.database_url != running.database_url
                        || fresh.database_limits != running.database_limits,
                ),
                ("redis_url", fresh.redis_url != running.redis_url),
            ];
            for (section, changed) in restart_only {
                if changed {
                    tracing::warn!(%section, "changed in the configuration, but applies only at the next start: the server still runs with the old value");
                }
            }
        }
        Err(error) => {
            tracing::warn!(%cause, %error, "the configuration does not read: the values in force stay");
        }
    }
}

/// Watches the directory of `file` (editors replace files) for changes to it.
fn watch_file(
    file: PathBuf,
    wake: mpsc::Sender<&'static str>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    let directory = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file.file_name().map(ToOwned::to_owned);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let ours = event
            .paths
            .iter()
            .any(|path| path.file_name().map(ToOwned::to_owned) == name);
        if ours && (event.kind.is_modify() || event.kind.is_create()) {
            let _ = wake.try_send("file changed");
        }
    })?;
    watcher.watch(&directory, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_swaps_the_values_and_keeps_them_when_the_file_does_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("goatkit.toml");
        std::fs::write(&file, "[app]\nname = \"One\"\n").unwrap();
        let running = ServeConfig::load(Some(&file), &Environment::default()).unwrap();
        let values = running.config_values();
        let name = || values.get("app.name").unwrap();
        assert_eq!(name(), "One");

        std::fs::write(&file, "[app]\nname = \"Two\"\n").unwrap();
        reload(&running, &values, "test");
        assert_eq!(name(), "Two", "a good file is applied");

        std::fs::write(&file, "[app\nname = ").unwrap();
        reload(&running, &values, "test");
        assert_eq!(name(), "Two", "a file that does not read changes nothing");

        std::fs::write(&file, "").unwrap();
        reload(&running, &values, "test");
        assert_eq!(
            name(),
            "Two",
            "an empty file (a write in progress) changes nothing"
        );
    }
}
