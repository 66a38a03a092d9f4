//! Supervision: a plugin process that dies is restarted with exponential backoff; after 5
//! crashes in 60 s the plugin is marked failed and stays down until reloaded. A process that
//! stops answering its health checks is killed, and so restarted.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use gk_sdk::CallContext;
use gk_sdk::proto::pb;

use gk_sdk::handshake::HEALTH_SERVICE;

use crate::plugin::Inner;
use crate::process::{Process, signal_group};

/// Crashes within [`CRASH_WINDOW`] that make a plugin failed.
pub const MAX_CRASHES: usize = 5;
/// The window crashes are counted in.
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// The first restart delay; each further crash in the window doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest restart delay.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Starts the supervisor and the health checker of a plugin.
pub(crate) fn watch(inner: &Arc<Inner>) {
    tokio::spawn(supervise(Arc::downgrade(inner)));
    tokio::spawn(check_health(Arc::downgrade(inner)));
}

async fn supervise(weak: Weak<Inner>) {
    loop {
        let Some(mut exit) = weak
            .upgrade()
            .and_then(|inner| inner.current())
            .map(|p| p.exit.clone())
        else {
            return;
        };
        if exit.wait_for(Option::is_some).await.is_err() {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        if inner.stopped.load(Ordering::SeqCst) {
            return;
        }
        let status = exit.borrow().clone().unwrap_or_default();
        let backoff = {
            let mut supervision = inner.supervision.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            supervision.crashes.push_back(now);
            while supervision
                .crashes
                .front()
                .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
            {
                supervision.crashes.pop_front();
            }
            let crashes = supervision.crashes.len();
            if crashes >= MAX_CRASHES {
                let reason = format!(
                    "the plugin crashed {crashes} times in {} s (last: {status}) and stays down until it is reloaded",
                    CRASH_WINDOW.as_secs()
                );
                tracing::error!(plugin = %inner.spec.name, "{reason}");
                supervision.failed = Some(reason);
                drop(supervision);
                inner.set_current(None);
                inner.restarted.notify_waiters();
                return;
            }
            let exponent = u32::try_from(crashes.saturating_sub(1))
                .unwrap_or(u32::MAX)
                .min(16);
            FIRST_BACKOFF
                .saturating_mul(2u32.saturating_pow(exponent))
                .min(MAX_BACKOFF)
        };
        tracing::warn!(plugin = %inner.spec.name, %status, backoff_ms = backoff.as_millis() as u64, "plugin process ended; restarting");
        inner.set_current(None);
        drop(inner);
        tokio::time::sleep(backoff).await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.stopped.load(Ordering::SeqCst) {
            return;
        }
        match inner.spec.launch().await {
            Ok(process) => {
                if inner.spec.side.host.get().is_some()
                    && let Err(error) = inner
                        .init_process(&process, &CallContext::for_plugin(inner.spec.name.clone()))
                        .await
                {
                    tracing::warn!(plugin = %inner.spec.name, %error, "the restarted plugin failed to initialise");
                }
                inner.set_current(Some(process));
                tracing::info!(plugin = %inner.spec.name, "plugin process restarted");
            }
            Err(error) => {
                tracing::warn!(plugin = %inner.spec.name, %error, "restarting the plugin failed");
                let mut supervision = inner.supervision.lock().unwrap_or_else(|p| p.into_inner());
                supervision.failed = Some(format!("restarting the plugin failed: {error}"));
                drop(supervision);
                inner.restarted.notify_waiters();
                return;
            }
        }
        inner.restarted.notify_waiters();
    }
}

/// Asks the standard `grpc.health.v1` service for `plugin` (go-plugin's convention); a plugin
/// that does not implement it is asked through `PluginService.Health`.
async fn is_healthy(process: &Process) -> bool {
    use gk_sdk::unix_channel::UnixChannel;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let request = tonic_health::pb::HealthCheckRequest {
        service: HEALTH_SERVICE.to_owned(),
    };
    match HealthClient::with_origin(process.channel.clone(), UnixChannel::origin())
        .check(request)
        .await
    {
        Ok(response) => response.get_ref().status == ServingStatus::Serving as i32,
        Err(status) if status.code() == tonic::Code::Unimplemented => process
            .client
            .clone()
            .health(pb::HealthRequest {})
            .await
            .is_ok_and(|response| response.get_ref().healthy),
        Err(_) => false,
    }
}

async fn check_health(weak: Weak<Inner>) {
    loop {
        let Some(interval) = weak
            .upgrade()
            .map(|inner| inner.spec.limits.health_interval)
        else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.stopped.load(Ordering::SeqCst)
            || inner
                .supervision
                .lock()
                .map(|s| s.failed.is_some())
                .unwrap_or(true)
        {
            return;
        }
        let Some(process) = inner.current().filter(|p| !p.has_exited()) else {
            continue;
        };
        let timeout = inner.spec.limits.call_timeout.min(Duration::from_secs(5));
        let healthy = tokio::time::timeout(timeout, is_healthy(&process))
            .await
            .unwrap_or(false);
        if !healthy && !inner.stopped.load(Ordering::SeqCst) {
            tracing::warn!(plugin = %inner.spec.name, "plugin failed its health check; restarting it");
            signal_group(process.pid, libc::SIGKILL);
        }
    }
}
