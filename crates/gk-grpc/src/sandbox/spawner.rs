//! The thread isolated plugin processes are started from.
//!
//! A child's parent-death signal (`PR_SET_PDEATHSIG`, which kills a plugin when its host
//! dies) fires when the *thread* that created the child ends, not the host process: a plugin
//! started from a thread that later ends (tokio's blocking pool ends threads idle for 10 s; a
//! caller's own short-lived thread) would be killed then. So every isolated plugin is started
//! from one thread that lives as long as the process. The caller's task waits for it without
//! holding a runtime worker while the child builds its root (1–2 ms).

use std::sync::{Mutex, mpsc};

use tokio::sync::oneshot;

use super::linux::{self, Child};
use super::plan::Plan;

/// One start asked of the spawner thread, and where its outcome goes.
struct Job {
    plan: Plan,
    reply: oneshot::Sender<Result<Child, String>>,
}

/// The spawner thread's queue, started on first use.
static QUEUE: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

/// Starts the plugin of `plan` in its namespaces, from the spawner thread.
pub(crate) async fn spawn(plan: Plan) -> Result<Child, String> {
    let ended = || "the thread starting plugin processes has ended".to_owned();
    let (reply, outcome) = oneshot::channel();
    queue()?.send(Job { plan, reply }).map_err(|_| ended())?;
    outcome.await.map_err(|_| ended())?
}

/// The spawner thread's queue, starting the thread on first use. The thread never ends: its
/// queue's sender stays here, and it catches a start that panics.
fn queue() -> Result<mpsc::Sender<Job>, String> {
    let mut queue = QUEUE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(sender) = queue.as_ref() {
        return Ok(sender.clone());
    }
    let (sender, jobs) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("gk-plugin-spawner".into())
        .spawn(move || run(jobs))
        .map_err(|e| format!("cannot start the thread that starts plugin processes: {e}"))?;
    *queue = Some(sender.clone());
    Ok(sender)
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
