//! `clone(2)` of a child that shares the host's memory until its `exec` (`CLONE_VM` on a stack
//! of its own, as `posix_spawn` does): no copy of the host's page tables (milliseconds for a
//! large host) and no copy-on-write faults in the host after.
//!
//! What that sharing asks for, all kept here:
//! - the child runs only `child::child` on memory made before the clone ([`ChildMemory`]),
//!   which stays allocated until the child has exec'd or is reaped, and is leaked, never freed,
//!   if it cannot be reaped;
//! - no signal handler of the host runs in the child: every signal is blocked on the cloning
//!   thread until the child has exec'd (the child resets caught handlers before unblocking);
//! - the child's change of ids (a server run as root) makes the shared memory non-dumpable
//!   (the kernel's `commit_creds`): the host's dumpable flag is put back after the exec;
//! - always with `CLONE_NEWUSER`: the child's ids change in a user namespace owned by the
//!   host's user, so no other user may open the child's `/proc/<pid>/mem` (the host's memory)
//!   between its change of ids and its exec.
//!
//! The child writes the cloning thread's `errno` (it shares its thread-local storage): the
//! cloning thread is blocked in `read` on the child's pipes whenever the child runs, and the
//! child waits on its `go` pipe whenever the host works. Needs glibc 2.25 or later (older ones
//! wrote the child's pid into the cloning thread's thread block).

use std::time::Duration;

use super::child::{ChildFds, Prepared, child};

/// Everything the child reads, on the heap: stays put until the child has exec'd or died.
pub(crate) struct ChildMemory {
    prepared: Prepared,
    fds: ChildFds,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    stack: ChildStack,
}

impl ChildMemory {
    /// The child's memory: `prepared`, `fds`, the argument and environment vectors (pointers
    /// into `prepared`'s strings, which are on the heap), and a stack.
    pub(crate) fn new(prepared: Prepared, fds: ChildFds) -> Result<Box<Self>, String> {
        let vector = |strings: &[std::ffi::CString]| -> Vec<*const libc::c_char> {
            strings
                .iter()
                .map(|a| a.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        let argv = vector(&prepared.argv);
        let envp = vector(&prepared.envp);
        Ok(Box::new(Self {
            prepared,
            fds,
            argv,
            envp,
            stack: ChildStack::new()?,
        }))
    }
}

/// The child's entry point on its own stack.
extern "C" fn child_entry(memory: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `memory` is the `ChildMemory` of `clone_sharing_memory`, which stays allocated
    // until the child has exec'd or died; `child` never returns.
    unsafe {
        let memory = &*memory.cast::<ChildMemory>();
        child(&memory.prepared, &memory.fds, &memory.argv, &memory.envp)
    }
}

/// A child cloned and not yet seen to exec: when dropped before [`Self::exec_seen`], it is
/// killed and reaped (its memory leaked if it cannot be reaped within a second), then the
/// host's signal mask and dumpable flag are put back.
pub(crate) struct Unexeced {
    pid: libc::pid_t,
    exec_seen: bool,
    /// Dropped after the child is gone (fields drop after `Drop::drop`, in this order).
    memory: Option<Box<ChildMemory>>,
    _signals: BlockedSignals,
    _dumpable: DumpableKept,
    /// One such child at a time in the process: the dumpable flag read before one clone must
    /// not be another child's doing.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

/// Held while a child shares the host's memory.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Unexeced {
    /// The child's pid, as the host sees it.
    pub(crate) fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// The child has exec'd (its close-on-exec error pipe closed without a report): its memory
    /// is the host's alone again. Returns its pid.
    pub(crate) fn exec_seen(mut self) -> u32 {
        self.exec_seen = true;
        self.pid as u32
    }
}

impl Drop for Unexeced {
    fn drop(&mut self) {
        if !self.exec_seen && !kill_and_reap(self.pid) {
            tracing::error!(
                pid = self.pid,
                "an isolated plugin process could not be reaped before its exec; its start-up \
                 memory is left allocated"
            );
            if let Some(memory) = self.memory.take() {
                Box::leak(memory);
            }
        }
    }
}

/// Clones a child running `child::child` on `memory`, with `flags` (namespaces; `CLONE_VM` and
/// `SIGCHLD` are added). The child first waits for its `go` pipe.
pub(crate) fn clone_sharing_memory(
    memory: Box<ChildMemory>,
    flags: libc::c_int,
) -> Result<Unexeced, std::io::Error> {
    if flags & libc::CLONE_NEWUSER == 0 {
        // See the module's docs: without a user namespace of its own, another process of the
        // plugin's user could open the child's memory, which is the host's.
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a child sharing the host's memory needs a user namespace of its own",
        ));
    }
    let one_at_a_time = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let signals = BlockedSignals::all()?;
    let dumpable = DumpableKept::now();
    let top = memory.stack.top();
    let argument = (&raw const *memory).cast_mut().cast();
    // SAFETY: the child runs `child_entry` on its own stack with `memory`, which the returned
    // guard keeps (or leaks) until the child has exec'd or died; see the module's docs.
    let pid = unsafe {
        libc::clone(
            child_entry,
            top,
            flags | libc::CLONE_VM | libc::SIGCHLD,
            argument,
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Unexeced {
        pid,
        exec_seen: false,
        memory: Some(memory),
        _signals: signals,
        _dumpable: dumpable,
        _one_at_a_time: one_at_a_time,
    })
}

/// Sends SIGKILL to our child `pid` and reaps it; `false` if it was not reaped within a second
/// (stuck in the kernel, on a hung file system).
pub(crate) fn kill_and_reap(pid: libc::pid_t) -> bool {
    // SAFETY: kill(2) of our own child, not reaped yet (so its pid is still its own).
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let mut pause = Duration::from_micros(100);
    let mut waited = Duration::ZERO;
    loop {
        // SAFETY: waitpid(2) of our own child, without blocking.
        let reaped = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        if reaped == pid || reaped < 0 {
            return true;
        }
        if waited >= Duration::from_secs(1) {
            return false;
        }
        std::thread::sleep(pause);
        waited += pause;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Bytes of the child's stack (it runs only `child`, which keeps a few small buffers).
const CHILD_STACK_BYTES: usize = 256 * 1024;

/// The child's stack: an anonymous mapping with an inaccessible guard page at its low end.
struct ChildStack {
    base: *mut libc::c_void,
}

impl ChildStack {
    fn new() -> Result<Self, String> {
        // SAFETY: an anonymous private mapping of a fixed size; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                CHILD_STACK_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!(
                "a stack for the plugin process: {}",
                std::io::Error::last_os_error()
            ));
        }
        let stack = Self { base };
        // SAFETY: the lowest page of the mapping just made.
        if unsafe { libc::mprotect(base, page_size(), libc::PROT_NONE) } != 0 {
            return Err(format!(
                "the guard page of the plugin process's stack: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(stack)
    }

    /// The stack's top (stacks grow down; the end of the mapping is 16-byte aligned).
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, which `clone` takes as the initial stack
        // pointer.
        unsafe { self.base.cast::<u8>().add(CHILD_STACK_BYTES).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, used by nobody once the child has exec'd or died
        // (a child that could not be reaped leaks its `ChildMemory`, so this never runs).
        unsafe {
            libc::munmap(self.base, CHILD_STACK_BYTES);
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf(3) reads a constant of the system.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// Every signal blocked on this thread until dropped (the mask before is restored).
struct BlockedSignals {
    before: libc::sigset_t,
}

impl BlockedSignals {
    fn all() -> Result<Self, std::io::Error> {
        // SAFETY: sigfillset(3) and pthread_sigmask(3) on local sets.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut before: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let failed = libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before);
            if failed != 0 {
                return Err(std::io::Error::from_raw_os_error(failed));
            }
            Ok(Self { before })
        }
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: pthread_sigmask(3) restoring the set saved in `all`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.before, std::ptr::null_mut());
        }
    }
}

/// The host's dumpable flag, put back when dropped: a child that changes its ids while it
/// shares the host's memory clears the flag of that memory.
struct DumpableKept {
    before: libc::c_int,
}

impl DumpableKept {
    fn now() -> Self {
        // SAFETY: prctl(2) reading a flag of this process.
        let before = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
        Self { before }
    }
}

impl Drop for DumpableKept {
    fn drop(&mut self) {
        // Only 0 and 1 can be set (2, `suid_dumpable`'s, is the kernel's own).
        if matches!(self.before, 0 | 1) {
            // SAFETY: prctl(2) setting a flag of this process.
            let now = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
            if now != self.before {
                // SAFETY: as above.
                unsafe {
                    libc::prctl(libc::PR_SET_DUMPABLE, self.before, 0, 0, 0);
                }
            }
        }
    }
}
