//! [`GrpcPlugin`]: a supervised plugin process behind the [`Plugin`] trait.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gk_sdk::proto::{host_error_from_status, pb};
use gk_sdk::{CallContext, GkRegistration, HostApi, Plugin, PluginError};
use tokio::sync::Notify;

use crate::process::{Process, Spec, signal_group, tail};
use crate::sandbox::TMP_INSIDE;
use gk_sdk::handshake::INIT_MAX_MESSAGE_BYTES;

/// The `InitRequest.config` key of the host's version (the `gk` release).
pub const INIT_HOST_VERSION: &str = "host_version";
/// The `InitRequest.config` key of the plugin's own directory (absolute, as the plugin sees it).
pub const INIT_PLUGIN_DIR: &str = "plugin_dir";
/// The `InitRequest.config` key of the plugin's writable directory (absolute, as the plugin
/// sees it; its `TMPDIR`, private to the process and removed when it ends).
pub const INIT_WORK_DIR: &str = "work_dir";

/// Crash accounting of a plugin.
#[derive(Debug, Default)]
pub(crate) struct Supervision {
    /// When the recent crashes happened.
    pub(crate) crashes: VecDeque<Instant>,
    /// Why the plugin stays down, once it is failed.
    pub(crate) failed: Option<String>,
}

/// Everything about one plugin, shared by its handle and its supervisor.
pub(crate) struct Inner {
    /// How its processes start.
    pub(crate) spec: Spec,
    pub(crate) server_stop: Arc<Notify>,
    pub(crate) registration: OnceLock<GkRegistration>,
    /// The running process; `None` while restarting or failed.
    pub(crate) current: RwLock<Option<Arc<Process>>>,
    pub(crate) supervision: Mutex<Supervision>,
    /// Signalled when a restarted process is up (or the plugin failed).
    pub(crate) restarted: Notify,
    pub(crate) stopped: AtomicBool,
}

impl Inner {
    pub(crate) fn current(&self) -> Option<Arc<Process>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_current(&self, process: Option<Arc<Process>>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = process;
    }

    fn failed(&self) -> Option<String> {
        self.supervision
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failed
            .clone()
    }

    /// The process to call, waiting (until `deadline`) for a restart in progress.
    async fn process(&self, deadline: Instant) -> Result<Arc<Process>, PluginError> {
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return Err(PluginError::Unavailable(
                    "the plugin has been shut down".into(),
                ));
            }
            if let Some(reason) = self.failed() {
                return Err(PluginError::Unavailable(reason));
            }
            let restarted = self.restarted.notified();
            if let Some(process) = self.current().filter(|p| !p.has_exited()) {
                return Ok(process);
            }
            if tokio::time::timeout_at(deadline.into(), restarted)
                .await
                .is_err()
            {
                return Err(PluginError::Unavailable("the plugin is restarting".into()));
            }
        }
    }

    /// What `InitRequest.config` tells a process, as plugin.proto promises: `host_version`,
    /// and as absolute paths the process sees, `plugin_dir` (its own directory, read-only when
    /// isolated) and `work_dir` (a writable directory of its own, its `TMPDIR`).
    fn init_config(&self, process: &Process) -> HashMap<String, String> {
        let work_dir = if self.spec.sandbox.is_some() {
            PathBuf::from(TMP_INSIDE)
        } else {
            process.tmp_dir.clone()
        };
        HashMap::from([
            (
                INIT_HOST_VERSION.to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ),
            (
                INIT_PLUGIN_DIR.to_owned(),
                self.spec.working_dir.display().to_string(),
            ),
            (INIT_WORK_DIR.to_owned(), work_dir.display().to_string()),
            (
                INIT_MAX_MESSAGE_BYTES.to_owned(),
                self.spec.max_message_bytes.to_string(),
            ),
        ])
    }

    /// Calls `Init` on a process with the plugin's host.
    pub(crate) async fn init_process(
        &self,
        process: &Process,
        ctx: &CallContext,
    ) -> Result<(), PluginError> {
        let mut request = tonic::Request::new(pb::InitRequest {
            context: Some(ctx.into()),
            config: self.init_config(process),
        });
        let budget = self.spec.limits.init_timeout;
        request.set_timeout(budget);
        // The process's transport has no timeout of its own: a process that never answers is
        // bounded here.
        match tokio::time::timeout(budget, process.client.clone().init(request)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(failure(process, "init", status, budget).await),
            Err(_) => Err(PluginError::Timeout {
                operation: "init".to_owned(),
                after: budget,
            }),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.server_stop.notify_one();
        let _ = std::fs::remove_dir_all(&self.spec.host_dir);
    }
}

/// The error for a failed RPC: a crash when the process is gone, else the status.
async fn failure(
    process: &Process,
    operation: &str,
    status: tonic::Status,
    after: Duration,
) -> PluginError {
    // A status with a host error's detail is the plugin passing on a host call's failure
    // (rate limited, denied…): it keeps its kind.
    if let Some(error) = host_error_from_status(&status) {
        return PluginError::Host(error);
    }
    let deadline = matches!(
        status.code(),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    );
    let mut exit = process.exit.clone();
    if !deadline {
        // A broken connection usually means the process died: give its exit a moment to be
        // recorded, so the error can say how it ended.
        let _ =
            tokio::time::timeout(Duration::from_millis(300), exit.wait_for(Option::is_some)).await;
    }
    if let Some(exit) = exit.borrow().clone() {
        return PluginError::Crashed(format!(
            "the process ended ({exit}); stderr: {}",
            tail(&process.stderr_tail)
        ));
    }
    if deadline {
        return PluginError::Timeout {
            operation: operation.to_owned(),
            after,
        };
    }
    PluginError::Unavailable(format!("{operation}: {}", status.message()))
}

/// A running plugin process behind the [`Plugin`] trait.
#[derive(Clone)]
pub struct GrpcPlugin {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GrpcPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcPlugin")
            .field("name", &self.inner.spec.name)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

impl GrpcPlugin {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// The process id of the current process (0 while none runs).
    pub fn pid(&self) -> u32 {
        self.inner.current().map_or(0, |p| p.pid)
    }

    /// The host socket this plugin's callbacks arrive on (for diagnostics).
    pub fn host_socket(&self) -> PathBuf {
        self.inner.spec.host_dir.join("host.sock")
    }

    /// The socket the current process serves `PluginService` on (for diagnostics and
    /// benchmarks).
    pub fn plugin_socket(&self) -> Option<PathBuf> {
        self.inner.current().map(|p| p.socket.clone())
    }

    /// The current process's private `TMPDIR`, as the host reaches it (for an isolated
    /// process, its `/tmp` through `/proc/<pid>/root`).
    pub fn tmp_dir(&self) -> Option<PathBuf> {
        self.inner.current().map(|p| p.tmp_dir.clone())
    }

    /// How the current process ended, once it has.
    pub fn exit_status(&self) -> Option<String> {
        self.inner.current().and_then(|p| p.exit.borrow().clone())
    }

    /// Why the plugin stays down (after 5 crashes in 60 s), if it does.
    pub fn failure_reason(&self) -> Option<String> {
        self.inner.failed()
    }

    /// Whether calls to the current process travel on its `Calls` stream: not while the stream
    /// opens (just after a start), for a plugin that does not serve one, nor after it ended;
    /// those calls are unary.
    pub fn calls_streamed(&self) -> bool {
        self.inner.current().is_some_and(|p| p.calls_streamed())
    }
}

#[async_trait]
impl Plugin for GrpcPlugin {
    async fn register(&self) -> Result<GkRegistration, PluginError> {
        self.inner
            .registration
            .get()
            .cloned()
            .ok_or_else(|| PluginError::Unavailable("not registered".into()))
    }

    async fn init(&self, ctx: &CallContext, host: Arc<dyn HostApi>) -> Result<(), PluginError> {
        self.inner.spec.side.set_host(host).await?;
        let process = self
            .inner
            .process(Instant::now() + self.inner.spec.limits.init_timeout)
            .await?;
        self.inner.init_process(&process, ctx).await
    }

    async fn call(
        &self,
        ctx: &CallContext,
        function: &str,
        args: &[u8],
    ) -> Result<Vec<u8>, PluginError> {
        let limit = self.inner.spec.max_message_bytes;
        if args.len() > limit {
            return Err(PluginError::failed(
                "message_too_large",
                format!(
                    "the call's arguments are {} bytes, over the {limit}-byte message limit",
                    args.len()
                ),
            ));
        }
        let budget = self.inner.spec.limits.call_timeout;
        let deadline = Instant::now() + budget;
        let process = self.inner.process(deadline).await?;
        // The manager's `gk.plugin.call` span is current: say which process answered.
        tracing::Span::current().record("grpc.pid", process.pid);
        // Counted until the call ends, even when its future is dropped (an outer timeout).
        let in_flight = self.inner.spec.side.depths.enter(ctx.depth);
        let call = pb::CallRequest {
            context: Some(ctx.into()),
            function: function.to_owned(),
            args_json: args.to_vec(),
        };
        let budget_left = deadline.saturating_duration_since(Instant::now());
        let outcome =
            tokio::time::timeout_at(deadline.into(), process.call(call, budget_left)).await;
        drop(in_flight);
        match outcome {
            Err(_) => Err(PluginError::Timeout {
                operation: "call".into(),
                after: budget,
            }),
            Ok(Err(status)) => Err(failure(&process, "call", status, budget).await),
            Ok(Ok(response)) => match response.failure {
                Some(failure) => Err(PluginError::from(failure)),
                None => Ok(response.result_json),
            },
        }
    }

    async fn shutdown(&self, ctx: &CallContext) -> Result<(), PluginError> {
        let inner = &self.inner;
        inner.stopped.store(true, Ordering::SeqCst);
        inner.restarted.notify_waiters();
        if let Some(process) = inner.current() {
            let grace = inner.spec.limits.shutdown_timeout;
            let mut request = tonic::Request::new(pb::ShutdownRequest {
                context: Some(ctx.into()),
            });
            request.set_timeout(grace);
            let _ = tokio::time::timeout(grace, process.client.clone().shutdown(request)).await;
            let mut exit = process.exit.clone();
            for signal in [None, Some(libc::SIGTERM), Some(libc::SIGKILL)] {
                if let Some(signal) = signal {
                    signal_group(process.pid, signal);
                }
                if tokio::time::timeout(grace, exit.wait_for(Option::is_some))
                    .await
                    .is_ok()
                {
                    break;
                }
            }
            if process.owns_tmp {
                let _ = std::fs::remove_dir_all(&process.tmp_dir);
            }
        }
        inner.server_stop.notify_one();
        let _ = std::fs::remove_dir_all(&inner.spec.host_dir);
        Ok(())
    }

    async fn health(&self) -> Result<(), PluginError> {
        let process = self
            .inner
            .process(Instant::now() + self.inner.spec.limits.call_timeout)
            .await?;
        let budget = self.inner.spec.limits.call_timeout;
        let mut request = tonic::Request::new(pb::HealthRequest {});
        request.set_timeout(budget);
        match tokio::time::timeout(budget, process.client.clone().health(request)).await {
            Ok(Ok(response)) if response.get_ref().healthy => Ok(()),
            Ok(Ok(response)) => Err(PluginError::Unavailable(response.into_inner().message)),
            Ok(Err(status)) => Err(failure(&process, "health", status, budget).await),
            Err(_) => Err(PluginError::Timeout {
                operation: "health".to_owned(),
                after: budget,
            }),
        }
    }
}
