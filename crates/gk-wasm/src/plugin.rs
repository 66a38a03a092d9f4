//! [`WasmPlugin`]: a loaded module behind the [`Plugin`] trait.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use gk_sdk::{
    CallContext, GkRegistration, HostApi, LimitStops, Plugin, PluginError, ResourcePolicy,
};
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError, oneshot};
use wasmer::{Engine, Module};

use crate::WasmLimits;
use crate::abi::GuestExports;
use crate::guard::{Budget, Limit, StopCounters};
use crate::imports::Shared;
use crate::inline::{self, InlineState};
use crate::instance::{GuestInstance, Outcome};
use crate::limits::FuelRate;
use crate::pool::{Job, Pool, Worker};

/// A WASM plugin, ready to be initialised and called.
#[derive(Clone)]
pub struct WasmPlugin {
    inner: Arc<PluginInner>,
}

pub(crate) struct PluginInner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) engine: Engine,
    pub(crate) module: Module,
    pub(crate) exports: GuestExports,
    pub(crate) fuel: FuelRate,
    pub(crate) pool: Pool,
    /// Calls stopped by each limit.
    pub(crate) stops: StopCounters,
    /// Set once `gk_register` has answered.
    pub(crate) registration: OnceLock<GkRegistration>,
    /// Calls run on their caller's thread (see `inline`).
    pub(crate) inline: InlineState,
}

impl fmt::Debug for WasmPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmPlugin")
            .field("name", &self.inner.shared.name())
            .field("limits", &self.inner.shared.limits.get())
            .finish_non_exhaustive()
    }
}

/// How long a caller polls for the answer before it awaits it (and its task sleeps).
const CALLER_SPIN: std::time::Duration = std::time::Duration::from_micros(20);

/// What a job does on an instance.
pub(crate) type Work = Box<dyn FnOnce(&mut GuestInstance) -> Outcome + Send>;

/// A worker's answer: the call's result, and the limit that stopped it if one did.
pub(crate) type Answer = (Result<Vec<u8>, PluginError>, Option<Limit>);

impl PluginInner {
    /// Runs `work` on a worker's instance (creating the instance first if needed) and answers
    /// through `reply`. The worker returns to the pool when the guest is done, even if the
    /// caller stopped waiting at its deadline.
    pub(crate) fn dispatch(
        self: &Arc<Self>,
        worker: Worker,
        permit: Option<OwnedSemaphorePermit>,
        work: Work,
        reply: oneshot::Sender<Answer>,
    ) -> Result<(), PluginError> {
        let inner = Arc::clone(self);
        let returned = worker.clone();

        let job: Job = Box::new(move |slot: &mut Option<GuestInstance>| {
            let permit = permit;
            // An instance made under another memory cap makes way for one under the new cap.
            if slot
                .as_ref()
                .is_some_and(|instance| instance.generation != inner.shared.limits.generation())
            {
                *slot = None;
            }
            if slot.is_none() {
                match GuestInstance::new(
                    &inner.engine,
                    &inner.module,
                    inner.exports,
                    inner.shared.clone(),
                ) {
                    Ok(instance) => *slot = Some(instance),
                    Err(error) => {
                        let _ =
                            reply.send((Err(PluginError::Unavailable(error.to_string())), None));
                        inner.pool.release(returned);
                        return;
                    }
                }
            }
            if let Some(instance) = slot.as_mut() {
                let outcome = work(instance);
                if !outcome.reusable {
                    *slot = None;
                }
                // Worker and permit are free before the caller hears back, so that its next
                // call finds them (the worker's queue runs that job after this one).
                inner.pool.release(returned);
                drop(permit);
                let _ = reply.send((outcome.result, outcome.stopped_by));
            } else {
                inner.pool.release(returned);
            }
        });
        match worker.send(job) {
            Ok(()) => Ok(()),
            // An idle worker whose thread died (a panic in a host function): start another.
            Err(job) => {
                let fresh = Worker::spawn(self.shared.name()).map_err(PluginError::Unavailable)?;
                fresh
                    .send(job)
                    .map_err(|_| PluginError::Crashed("the plugin's worker thread stopped".into()))
            }
        }
    }
}

impl WasmPlugin {
    pub(crate) fn new(inner: Arc<PluginInner>) -> Self {
        Self { inner }
    }

    /// The limits the plugin runs under now.
    pub fn limits(&self) -> WasmLimits {
        self.inner.shared.limits.get()
    }

    /// Changes the plugin's limits while it is loaded, without a call failing: the call
    /// timeout (and the fuel derived from it) applies from the next call; a new memory cap
    /// applies to each instance from its next call (the instance is replaced by one made under
    /// the new cap; calls running keep theirs). `init_timeout` is kept for the record: the
    /// plugin registered when it loaded.
    pub fn set_limits(&self, limits: WasmLimits) {
        self.inner.shared.limits.set(limits);
        tracing::debug!(plugin = %self.inner.shared.name(), ?limits, "WASM limits changed");
    }

    /// Runs `work` on an instance; the caller gets `Timeout` at the deadline. When this future
    /// ends, answered or not, the call is marked abandoned and its interrupt flag raised, so a
    /// guest still running stops at its next loop iteration, function call or import (and its
    /// instance is discarded). `permit`: the call's permit ([`permit`](Self::permit)).
    async fn run(
        &self,
        budget: &Budget,
        work: Work,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<Vec<u8>, PluginError> {
        let answer = self.wait(budget, work, permit).await;
        self.counted(answer)
    }

    /// The result of an answer, its stop (if a limit stopped it) counted.
    fn counted(&self, (result, stopped_by): Answer) -> Result<Vec<u8>, PluginError> {
        if let Some(limit) = stopped_by {
            self.inner.stops.count(limit);
        }
        result
    }

    /// One of the plugin's permits (its calls at once), waited for until the call's deadline;
    /// `None` for a nested call when none is free (a plugin calling itself through the host
    /// gets an extra worker rather than waiting for the one its caller holds).
    async fn permit(
        &self,
        ctx: &CallContext,
        budget: &Budget,
    ) -> Result<Option<OwnedSemaphorePermit>, Answer> {
        let permits = &self.inner.pool.permits;
        match permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(TryAcquireError::Closed) => Err((Err(closed()), None)),
            Err(TryAcquireError::NoPermits) if ctx.depth > 0 => Ok(None),
            Err(TryAcquireError::NoPermits) => {
                let waited = tokio::time::timeout_at(
                    budget.deadline.into(),
                    permits.clone().acquire_owned(),
                )
                .await;
                match waited {
                    Ok(Ok(permit)) => Ok(Some(permit)),
                    Ok(Err(_)) => Err((Err(closed()), None)),
                    Err(_) => Err(timed_out(budget)),
                }
            }
        }
    }

    /// [`run`](Self::run) without the counting.
    async fn wait(
        &self,
        budget: &Budget,
        work: Work,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Answer {
        let _abandon = budget.abandon_on_drop();
        let deadline = budget.deadline;
        let inner = &self.inner;
        let crashed = || {
            let problem = "the guest's worker stopped during the call";
            (Err(PluginError::Crashed(problem.into())), None)
        };
        if inner.pool.is_closed() {
            return (Err(closed()), None);
        }
        let worker = match inner.pool.worker(inner.shared.name()) {
            Ok(worker) => worker,
            Err(problem) => return (Err(PluginError::Unavailable(problem)), None),
        };
        let (reply, mut answer) = oneshot::channel();
        if let Err(error) = inner.dispatch(worker, permit, work, reply) {
            return (Err(error), None);
        }
        // A short call answers within a few µs: poll for that long before parking the task,
        // which would cost a wake-up of this thread when the answer comes.
        let spin = if crate::pool::polling_pays() {
            CALLER_SPIN
        } else {
            std::time::Duration::ZERO
        };
        let spin_until = Instant::now() + spin;
        loop {
            match answer.try_recv() {
                Ok(answer) => return answer,
                Err(oneshot::error::TryRecvError::Empty) if Instant::now() < spin_until => {
                    std::hint::spin_loop();
                }
                Err(oneshot::error::TryRecvError::Empty) => break,
                Err(oneshot::error::TryRecvError::Closed) => return crashed(),
            }
        }
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Err(_elapsed) => timed_out(budget),
            Ok(Err(_dropped)) => crashed(),
            Ok(Ok(answer)) => answer,
        }
    }
}

#[async_trait]
impl Plugin for WasmPlugin {
    async fn register(&self) -> Result<GkRegistration, PluginError> {
        self.inner
            .registration
            .get()
            .cloned()
            .ok_or_else(|| PluginError::Unavailable("the plugin is not registered".into()))
    }

    async fn init(&self, _ctx: &CallContext, host: Arc<dyn HostApi>) -> Result<(), PluginError> {
        self.inner
            .shared
            .host
            .set(host)
            .map_err(|_| PluginError::Unavailable("the plugin was initialised already".into()))
    }

    async fn call(
        &self,
        ctx: &CallContext,
        function: &str,
        args: &[u8],
    ) -> Result<Vec<u8>, PluginError> {
        let timeout = self.inner.shared.limits.call_timeout();
        let budget = Budget::new(self.inner.fuel.points_for(timeout), timeout);
        // Short calls without host calls answer on this thread; the others go to a worker.
        // The manager's `gk.plugin.call` span is current: say which path answered.
        let span = tracing::Span::current();
        // The permit is taken before either path (and handed to a worker if the call moves),
        // so that calls queued for a permit do not push later ones off their caller's thread.
        let permit = match self.permit(ctx, &budget).await {
            Ok(permit) => permit,
            Err(refused) => {
                span.record("wasm.inline", false);
                return self.counted(refused);
            }
        };
        if let Some(answer) = inline::run(&self.inner, ctx, function, args, &budget) {
            span.record("wasm.inline", true);
            return self.counted(answer);
        }
        span.record("wasm.inline", false);
        let (call_ctx, function, args) = (ctx.clone(), function.to_owned(), args.to_vec());
        let guest_budget = budget.clone();
        // Entered on the worker too, so that the host calls the guest makes (run there) are
        // children of the call's span.
        let work: Work = Box::new(move |instance| {
            let _entered = span.enter();
            instance.call(call_ctx, &function, &args, guest_budget)
        });
        self.run(&budget, work, permit).await
    }

    async fn shutdown(&self, _ctx: &CallContext) -> Result<(), PluginError> {
        self.inner.pool.close();
        Ok(())
    }

    fn apply_limits(&self, policy: &ResourcePolicy) -> bool {
        self.set_limits(WasmLimits::from_policy(policy));
        true
    }

    fn limit_stops(&self) -> LimitStops {
        self.inner.stops.snapshot()
    }

    async fn health(&self) -> Result<(), PluginError> {
        if self.inner.pool.is_closed() {
            return Err(PluginError::Unavailable(
                "the plugin has been shut down".into(),
            ));
        }
        Ok(())
    }
}

/// The error of a call to a plugin that has been shut down.
fn closed() -> PluginError {
    PluginError::Unavailable("the plugin has been shut down".into())
}

/// The answer of a call whose deadline passed before it was answered.
fn timed_out(budget: &Budget) -> Answer {
    let ran = budget.started.elapsed();
    let error = Limit::Deadline.error("call", ran, budget.timeout, "");
    (Err(error), Some(Limit::Deadline))
}
