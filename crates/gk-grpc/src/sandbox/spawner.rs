//! The thread isolated plugin processes are started from.
//!
//! A child's parent-death signal (`PR_SET_PDEATHSIG`, which kills a plugin when its host
//! dies) fires when the *thread* that created the child ends, not the host process: a plugin
//! started from a thread that later ends (tokio's blocking pool ends threads idle for 10 s; a
//! caller's own short-lived thread) would be killed then. So every isolated plugin is started
//! from one thread that lives as long as the process. The caller's task waits for it without
//! holding a runtime worker while the child builds its root (1–2 ms).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};

use tokio::sync::oneshot;

use super::linux::{self, Child};
use super::plan::Plan;

/// One start asked of the spawner thread, and where its outcome goes.
struct Job {
    plan: Plan,
    reply: oneshot::Sender<Result<Child, String>>,
}

/// The spawner thread's queue, started on first use, with its generation (a queue found
/// closed is replaced only by the caller that found it, not one started since).
static QUEUE: Mutex<Option<(u64, mpsc::Sender<Job>)>> = Mutex::new(None);

/// Starts the plugin of `plan` in its namespaces, from the spawner thread.
pub(crate) async fn spawn(plan: Plan) -> Result<Child, String> {
    let (reply, outcome) = oneshot::channel();
    let (generation, sender) = queue()?;
    if sender.send(Job { plan, reply }).is_err() {
        // The thread has ended: the next start makes a new one.
        let mut queue = QUEUE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if queue
            .as_ref()
            .is_some_and(|(current, _)| *current == generation)
        {
            *queue = None;
        }
        return Err("the thread starting plugin processes has ended".to_owned());
    }
    outcome
        .await
        .map_err(|_| "the thread starting plugin processes has ended".to_owned())?
}

/// The spawner thread's queue and its generation, starting the thread if it is not running.
fn queue() -> Result<(u64, mpsc::Sender<Job>), String> {
    static GENERATIONS: AtomicU64 = AtomicU64::new(0);
    let mut queue = QUEUE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((generation, sender)) = queue.as_ref() {
        return Ok((*generation, sender.clone()));
    }
    let (sender, jobs) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("gk-plugin-spawner".into())
        .spawn(move || run(jobs))
        .map_err(|e| format!("cannot start the thread that starts plugin processes: {e}"))?;
    let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
    *queue = Some((generation, sender.clone()));
    Ok((generation, sender))
}

/// The spawner thread: starts each plugin asked for, for as long as the process lives (the
/// queue's sender is kept in [`QUEUE`], so `recv` never ends).
fn run(jobs: mpsc::Receiver<Job>) {
    while let Ok(Job { plan, reply }) = jobs.recv() {
        // This thread must not end: every plugin started from it would get its parent-death
        // signal.
        let started =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| linux::spawn(&plan)))
                .unwrap_or_else(|_| Err("starting the plugin process panicked".to_owned()));
        // A caller that gave up waiting (its task was dropped) drops the child: killed and
        // reaped.
        let _ = reply.send(started);
    }
}
