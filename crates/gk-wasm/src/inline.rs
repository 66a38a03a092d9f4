//! Calls run on their caller's thread while they stay short and do nothing but read.
//!
//! Handing a call to a worker thread costs two thread wake-ups and context switches, about as
//! much CPU as the rest of an HTTP request; most calls of a route are far shorter than that. So a
//! call first runs on the thread that asks for it, on an instance that thread keeps for the
//! plugin, with extra limits:
//! - **no effect, no waiting**: an import with an effect outside the guest (`log`, WASI) stops
//!   it before anything reaches the host ([`Stop::Migrate`]); so does a `host_call`, unless the
//!   host [answers that function inline](gk_sdk::HostApi::answers_inline): then its future is
//!   polled once as an inline attempt ([`gk_sdk::inline`]), and the host either answers at once
//!   without an effect (a read-only SQLite query within a short budget) or refuses, which
//!   stops the call the same way;
//! - **a slice of fuel**: [`INLINE_SLICE`] at the calibrated rate (the same backstop factor as
//!   a call's fuel) for the guest's own computing;
//! - **a wall-clock bound**: [`INLINE_WALL`] for everything, host calls included: no host call
//!   is tried past it, and the host answers one it tries by then (or refuses). So a guest holds
//!   its caller's thread (an async runtime's worker) for about a millisecond (gk-core's SQLite
//!   interrupts a statement from a watchdog thread that looks every millisecond, so one long
//!   step of a statement may add up to that much; making the thread's instance of the plugin,
//!   once, comes on top).
//!
//! A call stopped by any of them starts again from the beginning on a worker, with its whole
//! fuel and its original deadline: the guest did nothing the host or anyone else could see (its
//! instance is discarded; plugins may not rely on memory between calls anyway; reads it made
//! are made again, and counted again by rate limits and statistics). A function that moved for
//! a reason that would hold next time (an import, its fuel, a lasting refusal) is sent to the
//! workers directly from then on (per thread, up to [`REMEMBERED`] functions); one that moved
//! for a passing reason (every connection busy, a lock, the wall-clock bound) is tried inline
//! again, up to [`PASSING_REFUSALS`] times in a row; then its next [`COOL_DOWN`] calls go to
//! the workers directly before it is tried again. Nested calls (a plugin called by a plugin)
//! always use workers.
//!
//! Every limit of a worker's call holds inline too: the memory cap (same instances), the
//! plugin's concurrency (the same permits: a call waits for one before it starts, and takes it
//! to a worker if it moves), fuel (smaller), the deadline (the slice ends far
//! earlier). At most one instance per thread per plugin, and at most as many threads per plugin
//! as the machine has cores.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use gk_sdk::CallContext;

use crate::guard::Budget;
use crate::instance::GuestInstance;
use crate::plugin::{Answer, PluginInner};

/// How long a call may compute on its caller's thread, as fuel at the calibrated rate.
pub(crate) const INLINE_SLICE: Duration = Duration::from_micros(100);

/// How long a call may hold its caller's thread, host calls included: a host call is not tried
/// inline past it, and one tried is answered by then (or refused).
pub(crate) const INLINE_WALL: Duration = Duration::from_millis(1);

/// Passing refusals in a row after which a function's next [`COOL_DOWN`] calls on the thread go
/// to the workers directly.
pub(crate) const PASSING_REFUSALS: u8 = 8;

/// Calls sent to the workers directly after [`PASSING_REFUSALS`] passing refusals in a row.
pub(crate) const COOL_DOWN: u16 = 256;

/// Functions remembered per plugin and thread as moving to a worker.
pub(crate) const REMEMBERED: usize = 256;

/// What inline calls of one plugin share: an identity for the threads' slots and how many
/// threads hold one.
#[derive(Debug)]
pub(crate) struct InlineState {
    id: u64,
    slots: AtomicUsize,
}

impl Default for InlineState {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            slots: AtomicUsize::new(0),
        }
    }
}

/// The most threads that keep an instance of one plugin.
fn max_threads() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

/// One thread's instance of one plugin.
struct Slot {
    plugin: Weak<PluginInner>,
    /// Boxed: it is taken out and put back at every call, and moving a pointer is cheaper.
    instance: Option<Box<GuestInstance>>,
    to_worker: HashSet<Box<str>>,
    /// Functions whose last calls moved for a passing reason.
    passing: HashMap<Box<str>, Passing>,
}

/// The passing refusals of one function's calls on one thread.
#[derive(Debug, Default)]
struct Passing {
    /// Refusals in a row.
    refused: u8,
    /// Calls still to send to the workers directly.
    cooling: u16,
}

impl Slot {
    fn alive(&self) -> bool {
        self.plugin
            .upgrade()
            .is_some_and(|plugin| !plugin.pool.is_closed())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(plugin) = self.plugin.upgrade() {
            plugin.inline.slots.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

thread_local! {
    /// This thread's slots by plugin id (foldhash: looked up twice per call, and the ids are
    /// the runtime's own).
    static SLOTS: RefCell<HashMap<u64, Slot, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

/// Whether this thread may run `function` of the plugin inline, and its instance if it has
/// one: `None` for no, `Some(None)` for yes without an instance yet.
fn take(inner: &Arc<PluginInner>, function: &str) -> Option<Option<Box<GuestInstance>>> {
    SLOTS
        .try_with(|slots| {
            let mut slots = slots.try_borrow_mut().ok()?;
            if let Some(slot) = slots.get_mut(&inner.inline.id) {
                if slot.to_worker.contains(function) {
                    return None;
                }
                if let Some(passing) = slot.passing.get_mut(function)
                    && passing.cooling > 0
                {
                    passing.cooling -= 1;
                    return None;
                }
                return Some(slot.instance.take());
            }
            // A new slot: first drop those of plugins shut down since.
            slots.retain(|_, slot| slot.alive());
            let claimed = inner.inline.slots.fetch_add(1, Ordering::Relaxed);
            if claimed >= max_threads() {
                inner.inline.slots.fetch_sub(1, Ordering::Relaxed);
                return None;
            }
            slots.insert(
                inner.inline.id,
                Slot {
                    plugin: Arc::downgrade(inner),
                    instance: None,
                    to_worker: HashSet::new(),
                    passing: HashMap::new(),
                },
            );
            Some(None)
        })
        .ok()
        .flatten()
}

/// How an inline call ended, for the function's next call on this thread.
enum Ended {
    /// It answered.
    Answered,
    /// It moved; `lasting`: for a reason that would hold next time.
    Moved { lasting: bool },
}

/// Gives the instance back (if it may take more calls) and notes how `function`'s call ended:
/// a function that moved for a lasting reason goes to the workers from then on; one that moved
/// for passing ones [`PASSING_REFUSALS`] times in a row, for its next [`COOL_DOWN`] calls.
fn give_back(
    inner: &PluginInner,
    instance: Option<Box<GuestInstance>>,
    function: &str,
    ended: Ended,
) {
    let _ = SLOTS.try_with(|slots| {
        let Ok(mut slots) = slots.try_borrow_mut() else {
            return;
        };
        let Some(slot) = slots.get_mut(&inner.inline.id) else {
            return;
        };
        slot.instance = instance;
        let lasting = match ended {
            Ended::Answered => {
                if !slot.passing.is_empty() {
                    slot.passing.remove(function);
                }
                false
            }
            Ended::Moved { lasting: true } => true,
            Ended::Moved { lasting: false } => {
                if slot.passing.len() >= REMEMBERED {
                    slot.passing.clear();
                }
                let passing = slot.passing.entry(function.into()).or_default();
                passing.refused += 1;
                if passing.refused >= PASSING_REFUSALS {
                    *passing = Passing {
                        refused: 0,
                        cooling: COOL_DOWN,
                    };
                }
                false
            }
        };
        if lasting {
            slot.passing.remove(function);
            if slot.to_worker.len() >= REMEMBERED {
                slot.to_worker.clear();
            }
            slot.to_worker.insert(function.into());
        }
    });
}

/// Runs the call on this thread if it can, under one of the plugin's permits the caller holds:
/// its answer, or `None` when it must run on a worker (nothing the guest did is visible).
pub(crate) fn run(
    inner: &Arc<PluginInner>,
    ctx: &CallContext,
    function: &str,
    args: &[u8],
    budget: &Budget,
) -> Option<Answer> {
    if ctx.depth > 0 || inner.pool.is_closed() {
        return None;
    }
    let kept = take(inner, function)?;
    // An instance made under another memory cap makes way for one under the new cap.
    let kept = kept.filter(|i| i.generation == inner.shared.limits.generation());
    let mut instance = match kept {
        Some(instance) => instance,
        None => match GuestInstance::new(
            &inner.engine,
            &inner.module,
            inner.exports,
            inner.shared.clone(),
        ) {
            Ok(instance) => Box::new(instance),
            // The worker makes its own, and reports the error if it fails there too.
            Err(_) => return None,
        },
    };
    let slice = Budget {
        fuel: inner.fuel.points_for(INLINE_SLICE).min(budget.fuel),
        ..budget.clone()
    };
    match instance.call_inline(ctx.clone(), function, args, &slice) {
        Ok(outcome) => {
            let reusable = outcome.reusable.then_some(instance);
            give_back(inner, reusable, function, Ended::Answered);
            Some((outcome.result, outcome.stopped_by))
        }
        Err(lasting) => {
            give_back(inner, None, function, Ended::Moved { lasting });
            None
        }
    }
}
