//! What every host import checks before it does anything, so that a guest cannot outrun its
//! limits through the host: the call's deadline and whether its caller gave up, the fuel its
//! host time costs, and re-entry into the guest while the host is managing its memory.
//!
//! Once a check stops a call, every later import of that call traps at once: the guest stops
//! at its next import, whichever it is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gk_sdk::CallContext;
use wasmer::{FunctionEnvMut, Global, Instance, RuntimeError, Value};

use crate::imports::CallEnv;
use crate::interrupt::CallSignal;

/// Fuel every import costs, whatever it does: about a microsecond of guest code at the usual
/// rates, more than a cheap import takes, so a loop over imports burns fuel at least as fast as
/// a loop of guest code.
pub(crate) const IMPORT_POINTS: u64 = 1_000;

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
}

/// The limits of one `gk_register` or `gk_call`.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    /// Metering points the call starts with.
    pub(crate) fuel: u64,
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
        Self {
            fuel,
            deadline: Instant::now() + timeout,
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
}

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
