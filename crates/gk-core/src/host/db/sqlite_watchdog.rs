//! Stops inline statements at their deadline from outside the statement.
//!
//! A plugin statement's deadline is checked by SQLite's progress handler, which runs between
//! virtual-machine steps; but one step can walk a whole table (`SELECT count(*) FROM t` is a
//! single `OP_Count`, a sort is one step), so a statement tried inline on a thread that must not
//! wait (an async runtime's worker) could hold it for as long as the table is large. The
//! watchdog is one thread that, while inline statements run, looks every [`TICK`] at the
//! connections armed with a deadline and interrupts those past it (`sqlite3_interrupt`, which
//! SQLite lets any thread call on an open connection), at every look until the connection is
//! disarmed: SQLite forgets an interrupt that comes before the statement's first step. It
//! parks after [`IDLE_TICKS`] ticks without a statement armed, so an idle server spends nothing
//! on it.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use libsqlite3_sys as ffi;

/// How often the watchdog looks while statements are armed: a single step of a statement runs
/// at most about this much past its deadline (the progress handler stops the others sooner).
pub(super) const TICK: Duration = Duration::from_millis(1);

/// Ticks without a statement armed after which the watchdog parks.
const IDLE_TICKS: u32 = 100;

/// What the watchdog knows of one connection.
#[derive(Debug, Default)]
struct State {
    /// The open connection; `None` once it is closing.
    handle: Option<NonNull<ffi::sqlite3>>,
    /// When the statement running on it must be interrupted, if one is armed.
    deadline: Option<Instant>,
}

/// One connection as the watchdog sees it.
#[derive(Debug)]
pub(super) struct Watched {
    state: Mutex<State>,
    watchdog: &'static Watchdog,
}

// SAFETY: the handle is only used for `sqlite3_interrupt`, which SQLite documents as safe from
// any thread while the connection is open, and only under the mutex that `close` takes before
// the connection is closed.
unsafe impl Send for Watched {}
// SAFETY: as above; every access to the handle is under the mutex.
unsafe impl Sync for Watched {}

impl Watched {
    /// Registers the open connection `handle`, or `None` when the watchdog thread could not
    /// start (statements are then never run inline).
    pub(super) fn register(handle: NonNull<ffi::sqlite3>) -> Option<Arc<Self>> {
        let watchdog = Watchdog::get()?;
        let watched = Arc::new(Self {
            state: Mutex::new(State {
                handle: Some(handle),
                deadline: None,
            }),
            watchdog,
        });
        let mut list = lock(&watchdog.watched);
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&watched));
        Some(watched)
    }

    /// Interrupts the connection's statement if it still runs at `deadline`.
    pub(super) fn arm(&self, deadline: Instant) {
        lock(&self.state).deadline = Some(deadline);
        self.watchdog.armed.fetch_add(1, Ordering::Relaxed);
        // Pairs with the fence in `Watchdog::run`: either the watchdog's last look before
        // parking sees this deadline, or this sees it parking and wakes it.
        fence(Ordering::SeqCst);
        if self.watchdog.parking.load(Ordering::SeqCst) {
            self.watchdog.thread.unpark();
        }
    }

    /// The statement is over (and reset): nothing to interrupt any more.
    pub(super) fn disarm(&self) {
        lock(&self.state).deadline = None;
    }

    /// The connection is about to close: the watchdog must not touch it any more.
    pub(super) fn close(&self) {
        *lock(&self.state) = State::default();
    }

    /// Interrupts the statement if it is past its deadline at `now` (again at each look until
    /// it is disarmed); whether one is armed.
    fn check(&self, now: Instant) -> bool {
        let state = lock(&self.state);
        match (state.handle, state.deadline) {
            (Some(handle), Some(deadline)) if now >= deadline => {
                // SAFETY: the connection is open (`close` clears the handle under this lock
                // before it closes), and this call is allowed from any thread.
                unsafe { ffi::sqlite3_interrupt(handle.as_ptr()) };
                true
            }
            (_, deadline) => deadline.is_some(),
        }
    }
}

/// Locks `mutex`, also after a panic elsewhere left it poisoned (its data is a plain state the
/// watchdog and the connection overwrite whole).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The watchdog thread and the connections it watches.
#[derive(Debug)]
struct Watchdog {
    watched: Mutex<Vec<Weak<Watched>>>,
    /// Statements armed so far (to tell a busy spell from an idle one).
    armed: AtomicU64,
    /// The thread is about to park or parked.
    parking: AtomicBool,
    thread: Thread,
}

impl Watchdog {
    /// The process's watchdog, started on first use; `None` if its thread could not start.
    fn get() -> Option<&'static Self> {
        static WATCHDOG: OnceLock<Option<Watchdog>> = OnceLock::new();
        WATCHDOG
            .get_or_init(|| {
                let started = std::thread::Builder::new()
                    .name("gk-sqlite-watchdog".into())
                    .spawn(|| {
                        // Waits until `get` has stored the watchdog, then runs it.
                        loop {
                            if let Some(Some(watchdog)) = WATCHDOG.get() {
                                watchdog.run();
                            }
                            std::thread::sleep(TICK);
                        }
                    });
                match started {
                    Ok(handle) => Some(Self {
                        watched: Mutex::new(Vec::new()),
                        armed: AtomicU64::new(0),
                        parking: AtomicBool::new(false),
                        thread: handle.thread().clone(),
                    }),
                    Err(error) => {
                        tracing::warn!(%error, "the SQLite watchdog thread did not start: plugin statements will not run inline");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Looks at every armed connection; whether any statement is armed.
    fn look(&self) -> bool {
        let watched: Vec<Arc<Watched>> = lock(&self.watched)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let now = Instant::now();
        watched
            .iter()
            .fold(false, |armed, watched| watched.check(now) | armed)
    }

    fn run(&self) -> ! {
        let mut idle = 0;
        let mut seen = self.armed.load(Ordering::Relaxed);
        loop {
            let armed_now = self.look();
            let armed = self.armed.load(Ordering::Relaxed);
            if armed_now || armed != seen {
                idle = 0;
                seen = armed;
            } else {
                idle += 1;
            }
            if idle < IDLE_TICKS {
                std::thread::sleep(TICK);
                continue;
            }
            self.parking.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if !self.look() && self.armed.load(Ordering::Relaxed) == seen {
                std::thread::park();
            }
            self.parking.store(false, Ordering::SeqCst);
            idle = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ptr;

    use super::*;

    /// An open in-memory SQLite connection, closed when dropped.
    struct Memory(NonNull<ffi::sqlite3>);

    impl Memory {
        fn open() -> Self {
            let mut raw = ptr::null_mut();
            // SAFETY: a NUL-terminated name, an out pointer, no VFS name.
            let code = unsafe {
                ffi::sqlite3_open_v2(
                    c":memory:".as_ptr(),
                    &mut raw,
                    ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE,
                    ptr::null(),
                )
            };
            assert_eq!(code, ffi::SQLITE_OK);
            Self(NonNull::new(raw).expect("a connection"))
        }

        fn interrupted(&self) -> bool {
            // SAFETY: an open connection.
            unsafe { ffi::sqlite3_is_interrupted(self.0.as_ptr()) != 0 }
        }
    }

    impl Drop for Memory {
        fn drop(&mut self) {
            // SAFETY: opened by `open`, closed once.
            unsafe { ffi::sqlite3_close(self.0.as_ptr()) };
        }
    }

    /// Waits up to two seconds for `condition`.
    fn eventually(condition: impl Fn() -> bool) -> bool {
        let started = Instant::now();
        while !condition() {
            if started.elapsed() > Duration::from_secs(2) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn an_idle_watchdog_parks_and_an_armed_deadline_wakes_it() {
        let connection = Memory::open();
        let watched = Watched::register(connection.0).expect("the watchdog runs");
        let watchdog = watched.watchdog;
        assert!(
            eventually(|| watchdog.parking.load(Ordering::SeqCst)),
            "nothing armed: the watchdog parks"
        );
        // Armed with a deadline in the future: not interrupted yet.
        watched.arm(Instant::now() + Duration::from_secs(60));
        std::thread::sleep(TICK * 5);
        assert!(!connection.interrupted());
        // Past its deadline: interrupted within a few looks.
        watched.arm(Instant::now());
        assert!(eventually(|| connection.interrupted()));
        watched.close();
    }
}
