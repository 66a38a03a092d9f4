//! The plugin process between `clone(2)` and `exec(2)` (see `linux.rs`): only system
//! calls on memory the host prepared before the clone, so nothing allocates, takes a lock or
//! writes the host's memory, which the child shares until its exec (`CLONE_VM`, on a stack of
//! its own); the C library's id-changing wrappers (which would signal threads that do not exist
//! here) are bypassed with raw `syscall`s.

use std::ffi::CString;
use std::os::fd::RawFd;

use super::config::{BUSY_EXECUTABLE_PAUSES_MS, INSIDE_ID};

/// Everything the child needs, prepared before the clone.
pub(crate) struct Prepared {
    pub(crate) ops: Vec<PreparedOp>,
    pub(crate) root_options: CString,
    pub(crate) workdir: CString,
    pub(crate) executable: CString,
    pub(crate) argv: Vec<CString>,
    pub(crate) envp: Vec<CString>,
    pub(crate) clear_groups: bool,
    /// An empty host directory the new root is mounted on.
    pub(crate) stage: CString,
    pub(crate) last_cap: libc::c_ulong,
    pub(crate) rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
}

/// One step of building the new root, with its paths as C strings.
pub(crate) enum PreparedOp {
    Mkdir(CString),
    Touch(CString),
    Symlink {
        target: CString,
        path: CString,
    },
    Bind {
        source: CString,
        target: CString,
        read_only: ReadOnly,
    },
    Tmpfs {
        target: CString,
        options: CString,
    },
    Proc(CString),
}

/// Whether and how a bind is made read-only.
pub(crate) enum ReadOnly {
    /// Writable (the device nodes).
    No,
    /// Read-only with every mount below it (`mount_setattr` with `AT_RECURSIVE`). Where the
    /// kernel lacks that call, a remount of the top mount with `fallback`'s flags; without a
    /// fallback (something is mounted below it, or the host found the call there), the start
    /// is refused rather than leave a mount below writable.
    Yes { fallback: Option<libc::c_ulong> },
}

/// The descriptors the child uses.
pub(crate) struct ChildFds {
    pub(crate) go: RawFd,
    pub(crate) error: RawFd,
    pub(crate) stdin: RawFd,
    pub(crate) stdout: RawFd,
    pub(crate) stderr: RawFd,
}

/// Reports `step` and `errno` to the host and exits. Async-signal-safe.
unsafe fn fail(fds: &ChildFds, step: &[u8]) -> ! {
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut buffer = [0u8; 64];
    let mut length = 0;
    for byte in step.iter().take(40) {
        buffer[length] = *byte;
        length += 1;
    }
    buffer[length] = b':';
    length += 1;
    let mut digits = [0u8; 12];
    let mut count = 0;
    let mut value = errno.unsigned_abs();
    loop {
        digits[count] = b'0' + (value % 10) as u8;
        count += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    while count > 0 {
        count -= 1;
        buffer[length] = digits[count];
        length += 1;
    }
    // SAFETY: write(2) and _exit(2) are async-signal-safe.
    unsafe {
        libc::write(fds.error, buffer.as_ptr().cast(), length);
        libc::_exit(126)
    }
}

/// Runs `call`; on -1 reports `step` and exits.
macro_rules! check {
    ($fds:expr, $step:literal, $call:expr) => {
        if $call == -1 {
            fail($fds, $step.as_bytes());
        }
    };
}

/// The child after the clone: only system calls on prepared memory. Never returns.
pub(crate) unsafe fn child(
    prepared: &Prepared,
    fds: &ChildFds,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // SAFETY (whole body): every call is a system call (raw `syscall` where the C library
    // would coordinate threads that do not exist in this child) on memory prepared before the
    // clone; nothing allocates or takes a lock.
    unsafe {
        let mut byte = [0u8; 1];
        if libc::read(fds.go, byte.as_mut_ptr().cast(), 1) != 1 {
            libc::_exit(125);
        }
        check!(fds, "setsid", libc::setsid());
        let root = c"/";
        check!(
            fds,
            "make mounts private",
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null()
            )
        );
        let stage = &prepared.stage;
        check!(
            fds,
            "mount the new root",
            libc::mount(
                c"tmpfs".as_ptr(),
                stage.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                prepared.root_options.as_ptr().cast()
            )
        );
        check!(fds, "chdir to the new root", libc::chdir(stage.as_ptr()));
        for op in &prepared.ops {
            run_op(fds, op);
        }
        // No user namespaces inside the plugin's own (the limit is per user namespace, and
        // only its root may change it): without one, it can never hold a capability again.
        // Best effort: a kernel without the knob has nothing to limit.
        let knob = libc::open(
            c"proc/sys/user/max_user_namespaces".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if knob >= 0 {
            libc::write(knob, c"0".as_ptr().cast(), 1);
            libc::close(knob);
        }
        let dot = c".";
        check!(
            fds,
            "pivot_root",
            libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr())
        );
        check!(
            fds,
            "detach the old root",
            libc::umount2(dot.as_ptr(), libc::MNT_DETACH)
        );
        check!(fds, "chdir /", libc::chdir(root.as_ptr()));
        check!(
            fds,
            "make the root read-only",
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                std::ptr::null()
            )
        );
        check!(
            fds,
            "chdir to the plugin directory",
            libc::chdir(prepared.workdir.as_ptr())
        );
        for cap in 0..=prepared.last_cap {
            check!(
                fds,
                "drop the bounding set",
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0)
            );
        }
        check!(
            fds,
            "clear ambient capabilities",
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0
            )
        );
        let id = INSIDE_ID as libc::c_long;
        if prepared.clear_groups {
            check!(fds, "setgroups", libc::syscall(libc::SYS_setgroups, 0, 0));
        }
        check!(
            fds,
            "setresgid",
            libc::syscall(libc::SYS_setresgid, id, id, id)
        );
        check!(
            fds,
            "setresuid",
            libc::syscall(libc::SYS_setresuid, id, id, id)
        );
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData::default(); 2];
        check!(
            fds,
            "capset",
            libc::syscall(libc::SYS_capset, &header, data.as_ptr())
        );
        check!(
            fds,
            "no_new_privs",
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        );
        for (resource, value) in &prepared.rlimits {
            let limit = libc::rlimit {
                rlim_cur: *value,
                rlim_max: *value,
            };
            check!(fds, "setrlimit", libc::setrlimit(*resource, &limit));
        }
        // Every signal is still blocked (the host blocked them around the clone): no handler
        // of the host, whose memory this child shares, may run here once they are unblocked.
        // So each caught signal goes back to its default (as `posix_spawn` does), and, as
        // std's Command does, SIGPIPE too (Rust ignores it in the host).
        for signal in 1..=libc::SIGRTMAX() {
            let mut action: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut action) == 0
                && (action.sa_sigaction != libc::SIG_IGN || signal == libc::SIGPIPE)
                && action.sa_sigaction != libc::SIG_DFL
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                check!(
                    fds,
                    "reset a signal handler",
                    libc::sigaction(signal, &default, std::ptr::null_mut())
                );
            }
        }
        let mut no_signals: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut no_signals);
        check!(
            fds,
            "unblock signals",
            libc::sigprocmask(libc::SIG_SETMASK, &no_signals, std::ptr::null_mut())
        );
        check!(fds, "stdin", libc::dup2(fds.stdin, 0));
        check!(fds, "stdout", libc::dup2(fds.stdout, 1));
        check!(fds, "stderr", libc::dup2(fds.stderr, 2));
        // After every change of ids: those clear the parent-death signal.
        check!(
            fds,
            "pdeathsig",
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0)
        );
        // The host keeps its end of `go` open until this exec: closed, the host died before
        // the parent-death signal was set (the host thread waits for the exec meanwhile, so
        // only the whole host can have gone).
        let mut host = libc::pollfd {
            fd: fds.go,
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut host, 1, 0) > 0 && host.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            libc::_exit(125);
        }
        // The descriptors inherited from the host (all opened close-on-exec by the host's own
        // code) would close at the exec anyway; closed now (all but the report pipe), a file
        // another thread of the host had open for writing at the clone (the plugin's own
        // executable, if it was being copied) no longer holds the exec off. Where
        // `close_range` is missing (before Linux 5.9) the exec closes the close-on-exec ones.
        if let Ok(report) = libc::c_uint::try_from(fds.error)
            && report >= 3
        {
            if report > 3 {
                libc::syscall(libc::SYS_close_range, 3, report - 1, 0);
            }
            libc::syscall(libc::SYS_close_range, report + 1, libc::c_uint::MAX, 0);
        }
        libc::execve(prepared.executable.as_ptr(), argv.as_ptr(), envp.as_ptr());
        for pause_ms in BUSY_EXECUTABLE_PAUSES_MS {
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::ETXTBSY) {
                break;
            }
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::c_long::from(pause_ms) * 1_000_000,
            };
            libc::syscall(
                libc::SYS_clock_nanosleep,
                libc::CLOCK_MONOTONIC,
                0,
                &pause,
                std::ptr::null_mut::<libc::timespec>(),
            );
            libc::execve(prepared.executable.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
        fail(fds, b"exec");
    }
}

/// One step of building the root.
unsafe fn run_op(fds: &ChildFds, op: &PreparedOp) {
    // SAFETY: system calls on prepared NUL-terminated paths.
    unsafe {
        match op {
            PreparedOp::Mkdir(path) => {
                if libc::mkdir(path.as_ptr(), 0o755) == -1
                    && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
                {
                    fail(fds, b"mkdir");
                }
            }
            PreparedOp::Touch(path) => {
                let mut stat: libc::stat = std::mem::zeroed();
                if libc::lstat(path.as_ptr(), &mut stat) == -1 {
                    check!(
                        fds,
                        "create a mount point",
                        libc::mknod(path.as_ptr(), libc::S_IFREG | 0o600, 0)
                    );
                }
            }
            PreparedOp::Symlink { target, path } => {
                check!(
                    fds,
                    "symlink",
                    libc::symlink(target.as_ptr(), path.as_ptr())
                );
            }
            PreparedOp::Bind {
                source,
                target,
                read_only,
            } => {
                check!(
                    fds,
                    "bind",
                    libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null()
                    )
                );
                if let ReadOnly::Yes { fallback } = read_only {
                    // Read-only with every mount under it (a writable mount below a read-only
                    // host path would stay writable after a remount of the top one alone).
                    // Setting flags clears none, so locked ones (noexec) stay as they are.
                    let attr = libc::mount_attr {
                        attr_set: libc::MOUNT_ATTR_RDONLY
                            | libc::MOUNT_ATTR_NOSUID
                            | libc::MOUNT_ATTR_NODEV,
                        attr_clr: 0,
                        propagation: 0,
                        userns_fd: 0,
                    };
                    let recursive = libc::syscall(
                        libc::SYS_mount_setattr,
                        libc::AT_FDCWD,
                        target.as_ptr(),
                        libc::AT_RECURSIVE,
                        &raw const attr,
                        std::mem::size_of::<libc::mount_attr>(),
                    );
                    if recursive == -1 {
                        // Kernels before 5.12 (or a filter that hides the call): a remount
                        // makes the top mount read-only, and nothing below it.
                        if *libc::__errno_location() != libc::ENOSYS {
                            fail(fds, b"read-only (recursive)");
                        }
                        let Some(flags) = fallback else {
                            fail(fds, b"read-only (no mount_setattr)");
                        };
                        check!(
                            fds,
                            "remount read-only",
                            libc::mount(
                                std::ptr::null(),
                                target.as_ptr(),
                                std::ptr::null(),
                                *flags,
                                std::ptr::null()
                            )
                        );
                    }
                }
            }
            PreparedOp::Tmpfs { target, options } => {
                check!(
                    fds,
                    "mount /tmp",
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        target.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        options.as_ptr().cast()
                    )
                );
            }
            PreparedOp::Proc(path) => {
                check!(
                    fds,
                    "mount /proc",
                    libc::mount(
                        c"proc".as_ptr(),
                        path.as_ptr(),
                        c"proc".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null()
                    )
                );
            }
        }
    }
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
