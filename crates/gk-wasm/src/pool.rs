//! The workers of one plugin. A wasmer `Store` may not move between threads, so each instance
//! lives on a worker thread of its own for its whole life; calls are sent to an idle worker.
//! At most `size` calls of a plugin run at once; a worker thread starts on first need.
//!
//! The handoff is what a call costs beyond the guest itself: an idle worker polls for
//! [`WORKER_SPIN`] before it sleeps (and the caller polls briefly for the answer), so that calls
//! in a row pay no thread wake-ups. That is CPU spent to buy latency, bounded per job.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::instance::GuestInstance;

/// Work for a worker: it gets the worker's instance slot (empty before the first job and after
/// a trap).
pub(crate) type Job = Box<dyn FnOnce(&mut Option<GuestInstance>) + Send>;

/// How long an idle worker polls for its next job before it sleeps: back-to-back calls then
/// skip the futex wake-up of a sleeping thread (several µs each way).
pub(crate) const WORKER_SPIN: Duration = Duration::from_micros(50);

/// Whether polling pays here: on two cores or fewer, polling workers take the CPU the request
/// threads need (measured on 2 cores: 17–18 % less CPU per request, +27 % Stats requests/s
/// without it), so they sleep at once.
pub(crate) fn polling_pays() -> bool {
    static PAYS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PAYS.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 2))
}

/// The next job: polled for [`WORKER_SPIN`] (where [`polling_pays`]), then waited for. `None`
/// when every sender is gone.
fn next_job(inbox: &mpsc::Receiver<Job>) -> Option<Job> {
    let spin = if polling_pays() {
        WORKER_SPIN
    } else {
        Duration::ZERO
    };
    let spin_until = Instant::now() + spin;
    loop {
        match inbox.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) if Instant::now() < spin_until => {
                std::hint::spin_loop();
            }
            Err(mpsc::TryRecvError::Empty) => return inbox.recv().ok(),
        }
    }
}

/// A handle to a worker thread.
#[derive(Clone)]
pub(crate) struct Worker {
    jobs: mpsc::Sender<Job>,
}

impl Worker {
    /// Starts a worker thread.
    pub(crate) fn spawn(plugin: &str) -> Result<Self, String> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("gk-wasm-{plugin}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let mut slot = None;
                while let Some(job) = next_job(&inbox) {
                    job(&mut slot);
                }
            })
            .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        Ok(Self { jobs })
    }

    /// Queues a job; gives it back when the worker has stopped.
    pub(crate) fn send(&self, job: Job) -> Result<(), Job> {
        self.jobs.send(job).map_err(|e| e.0)
    }
}

pub(crate) struct Pool {
    size: usize,
    idle: Mutex<Vec<Worker>>,
    pub(crate) permits: Arc<Semaphore>,
    closed: AtomicBool,
}

impl Pool {
    pub(crate) fn new(size: usize) -> Self {
        let size = size.max(1);
        Self {
            size,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Arc::new(Semaphore::new(size)),
            closed: AtomicBool::new(false),
        }
    }

    /// An idle worker, or a new one.
    pub(crate) fn worker(&self, plugin: &str) -> Result<Worker, String> {
        if let Some(worker) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(worker);
        }
        Worker::spawn(plugin)
    }

    /// Returns a worker after its job. Past `size` idle workers (extra ones for nested calls),
    /// or after shutdown, the handle is dropped and the thread ends.
    pub(crate) fn release(&self, worker: Worker) {
        if self.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.size
        {
            idle.push(worker);
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.permits.close();
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}
