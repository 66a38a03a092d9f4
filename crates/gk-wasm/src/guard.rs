//! What every host import checks before it does anything, so that a guest cannot outrun its
//! limits through the host: the call's deadline and whether its caller gave up, the fuel its
//! host time costs, and re-entry into the guest while the host is managing its memory.
//!
//! Once a check stops a call, every later import of that call traps at once: the guest stops
//! at its next import, whichever it is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gk_sdk::{CallContext, LimitStops, PluginError};
use wasmer::{AsStoreMut, FunctionEnvMut, Global, Instance, RuntimeError, Value};

use crate::imports::CallEnv;
use crate::interrupt::CallSignal;

/// Fuel every import costs, whatever it does: about what a cheap import takes (tens of
/// nanoseconds of guest code at the usual rates), so that host time counts against the fuel
/// backstop without a loop over cheap imports burning it much faster than guest code does (the
/// deadline, checked by every import, is what stops such a loop).
pub(crate) const IMPORT_POINTS: u64 = 100;

/// Bytes an import copies (either way) per metering point on top of [`IMPORT_POINTS`].
pub(crate) const BYTES_PER_POINT: u64 = 8;

/// Why the host stopped a guest from inside an import.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Stop {
    /// The call's deadline passed.
    #[error("the call's deadline passed")]
    Deadline,
    /// The caller stopped waiting (its deadline, or it went away).
    #[error("the caller stopped waiting for the call")]
    Abandoned,
    /// The call's fuel ran out in an import (host time is charged as fuel).
    #[error("the call used up its fuel")]
    Fuel,
    /// The guest called an import that re-enters the guest while the host was already inside
    /// one of the guest's exports.
    #[error(
        "re-entry refused: the guest called `{import}` from inside `{inside}`, which the host was running {why}"
    )]
    Reentry {
        /// The import the guest called.
        import: &'static str,
        /// The export the host was running, or `host_call`.
        inside: &'static str,
        /// What the host was running it for.
        why: &'static str,
    },
    /// The guest called an import while no call was running (from its start function).
    #[error("the guest called `{0}` outside gk_register and gk_call (from its start function)")]
    OutsideCall(String),
    /// The guest called WASI `proc_exit`.
    #[error("the guest called proc_exit({0})")]
    ProcExit(i32),
    /// The call, running on its caller's thread (see `inline`), needs what only a worker may
    /// do: an import other than a host call the host answers inline, or an inline host call
    /// the host refused. Nothing the host did is visible; the call starts again on a worker.
    #[error("the call moves to a worker thread ({why})")]
    Migrate {
        /// What the guest called.
        why: String,
        /// Whether the function's next call would move too (so it goes to a worker directly).
        lasting: bool,
    },
}

/// The limit that stopped a call, as its error and the plugin's statistics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The call's deadline (`call_timeout`) passed.
    Deadline,
    /// The call's fuel, the backstop behind the deadline, ran out.
    Fuel,
    /// The guest's memory reached its cap (`memory_mb`) and the guest could not go on.
    Memory,
}

impl Limit {
    /// The limit's name in errors: `deadline`, `fuel`, `memory`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Deadline => "deadline",
            Self::Fuel => "fuel",
            Self::Memory => "memory",
        }
    }

    /// The error of a call this limit stopped after it ran for `ran`. Deadline and fuel stops
    /// are timeouts (`call (stopped by its deadline after 1003 ms) timed out after 1000 ms`);
    /// a memory stop is a trap that says what the guest was doing (`detail`).
    pub(crate) fn error(
        self,
        operation: &str,
        ran: Duration,
        timeout: Duration,
        detail: &str,
    ) -> PluginError {
        let ran = ran.as_millis();
        match self {
            Self::Deadline | Self::Fuel => PluginError::Timeout {
                operation: format!(
                    "{operation} (stopped by its {} after {ran} ms)",
                    self.as_str()
                ),
                after: timeout,
            },
            Self::Memory => PluginError::Trap(format!(
                "{operation} stopped by its memory limit after {ran} ms: {detail}"
            )),
        }
    }
}

/// Calls of one plugin stopped by each limit.
#[derive(Debug, Default)]
pub(crate) struct StopCounters {
    deadline: AtomicU64,
    fuel: AtomicU64,
    memory: AtomicU64,
}

impl StopCounters {
    /// Counts a call `limit` stopped.
    pub(crate) fn count(&self, limit: Limit) {
        let counter = match limit {
            Limit::Deadline => &self.deadline,
            Limit::Fuel => &self.fuel,
            Limit::Memory => &self.memory,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> LimitStops {
        LimitStops {
            deadline: self.deadline.load(Ordering::Relaxed),
            fuel: self.fuel.load(Ordering::Relaxed),
            memory: self.memory.load(Ordering::Relaxed),
        }
    }
}

/// The limits of one `gk_register` or `gk_call`.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    /// Metering points the call starts with.
    pub(crate) fuel: u64,
    /// When the call started (its caller began waiting).
    pub(crate) started: Instant,
    /// When the call must be over.
    pub(crate) deadline: Instant,
    /// The timeout the deadline came from (for errors).
    pub(crate) timeout: Duration,
    /// Raised when the caller stops waiting; the guest is stopped at its next loop header,
    /// function entry or import.
    pub(crate) signal: Arc<CallSignal>,
}

impl Budget {
    /// A budget of `timeout` from now.
    pub(crate) fn new(fuel: u64, timeout: Duration) -> Self {
        let started = Instant::now();
        Self {
            fuel,
            started,
            deadline: started + timeout,
            timeout,
            signal: Arc::new(CallSignal::default()),
        }
    }

    /// A guard that marks the call abandoned when dropped: hold it while waiting for the answer.
    pub(crate) fn abandon_on_drop(&self) -> AbandonOnDrop {
        AbandonOnDrop(self.signal.clone())
    }

    /// Why the call must stop now, if it must.
    pub(crate) fn stop(&self) -> Option<Stop> {
        if self.signal.is_abandoned() {
            Some(Stop::Abandoned)
        } else if Instant::now() >= self.deadline {
            Some(Stop::Deadline)
        } else {
            None
        }
    }
}

/// Marks a call abandoned when the caller's wait ends, answered or not (an answered call is
/// over, so the mark changes nothing for it).
#[derive(Debug)]
pub(crate) struct AbandonOnDrop(Arc<CallSignal>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

/// The call an instance is running.
#[derive(Debug, Clone)]
pub(crate) struct ActiveCall {
    pub(crate) ctx: CallContext,
    pub(crate) budget: Budget,
}

/// The metering globals of an instance, to charge host time from inside imports.
#[derive(Clone)]
pub(crate) struct Meter {
    remaining: Global,
    exhausted: Global,
}

impl Meter {
    /// The metering globals the middleware added to `instance`.
    pub(crate) fn of(instance: &Instance) -> Option<Self> {
        Some(Self {
            remaining: instance
                .exports
                .get_global("wasmer_metering_remaining_points")
                .ok()?
                .clone(),
            exhausted: instance
                .exports
                .get_global("wasmer_metering_points_exhausted")
                .ok()?
                .clone(),
        })
    }

    /// Gives the instance `points` of fuel, as wasmer's `set_remaining_points` does without
    /// looking both globals up by name each time.
    pub(crate) fn fill(&self, store: &mut impl AsStoreMut, points: u64) {
        // The middleware's globals are mutable i64/i32: setting them cannot fail.
        let _ = self.remaining.set(store, Value::I64(points as i64));
        let _ = self.exhausted.set(store, Value::I32(0));
    }

    /// Whether the instance ran out of fuel.
    pub(crate) fn is_exhausted(&self, store: &mut impl AsStoreMut) -> bool {
        matches!(self.exhausted.get(store), Value::I32(flag) if flag != 0)
    }
}

/// The imports a call running on its caller's thread may make: `host_call` (which moves the
/// call unless the host answers that function inline), and those that change nothing outside
/// the guest.
const INLINE_IMPORTS: [&str; 4] = ["host_call", "host_error", "fail", "clock_ms"];

/// Records why the call stops and returns the trap that stops it.
pub(crate) fn halt(env: &mut FunctionEnvMut<'_, CallEnv>, stop: Stop) -> RuntimeError {
    env.data_mut().stopped = Some(stop.clone());
    RuntimeError::user(Box::new(stop))
}

/// The first thing every import does: traps when the call was stopped already, runs outside a
/// call, passed its deadline or was abandoned; otherwise charges [`IMPORT_POINTS`] plus the
/// bytes the guest asks to move.
pub(crate) fn enter(
    env: &mut FunctionEnvMut<'_, CallEnv>,
    import: &str,
    bytes: u64,
) -> Result<(), RuntimeError> {
    let data = env.data();
    let stop = match (&data.stopped, &data.active) {
        (Some(stop), _) => Some(stop.clone()),
        // On the caller's thread only imports without an effect outside the guest run (a host
        // call is judged by `host_call`): the call moves before anything reaches the host.
        (None, Some(_)) if data.inline.is_some() && !INLINE_IMPORTS.contains(&import) => {
            Some(Stop::Migrate {
                why: format!("the guest called `{import}`"),
                lasting: true,
            })
        }
        (None, None) => Some(Stop::OutsideCall(import.to_owned())),
        (None, Some(active)) => active.budget.stop(),
    };
    if let Some(stop) = stop {
        return Err(halt(env, stop));
    }
    charge(env, IMPORT_POINTS.saturating_add(bytes / BYTES_PER_POINT))
}

/// Takes `points` of fuel, or traps with [`Stop::Fuel`] (leaving the instance exhausted) when
/// there are not that many left.
pub(crate) fn charge(
    env: &mut FunctionEnvMut<'_, CallEnv>,
    points: u64,
) -> Result<(), RuntimeError> {
    let Some(meter) = env.data().meter.clone() else {
        return Ok(());
    };
    let exhausted = matches!(meter.exhausted.get(env), Value::I32(flag) if flag != 0);
    let remaining = match meter.remaining.get(env) {
        Value::I64(points) => points as u64,
        _ => 0,
    };
    if !exhausted && remaining >= points {
        let _ = meter
            .remaining
            .set(env, Value::I64((remaining - points) as i64));
        return Ok(());
    }
    let _ = meter.remaining.set(env, Value::I64(0));
    let _ = meter.exhausted.set(env, Value::I32(1));
    Err(halt(env, Stop::Fuel))
}

/// Refuses `import` (one that makes the host call into the guest) while the host is already
/// running one of the guest's exports for itself or serving a `host_call`.
pub(crate) fn refuse_reentry(
    env: &mut FunctionEnvMut<'_, CallEnv>,
    import: &'static str,
) -> Result<(), RuntimeError> {
    let data = env.data();
    let (inside, why) = match (data.managing, data.in_host_call) {
        (Some(running), _) => running,
        (None, true) => ("host_call", "for the guest"),
        (None, false) => return Ok(()),
    };
    Err(halt(
        env,
        Stop::Reentry {
            import,
            inside,
            why,
        },
    ))
}
