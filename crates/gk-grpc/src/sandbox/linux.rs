//! All OS isolation of a plugin process (Linux).
//!
//! The host `clone(2)`s the child straight into new user, mount, PID, IPC, UTS and (without
//! `http`) network namespaces, sharing the host's memory until its exec (`shared_clone.rs`), so
//! the child is PID 1 of its own PID namespace and still the host's direct child (its exit is
//! watched with a pidfd). The host writes the child's `uid_map`/`gid_map` and lets it go on:
//! the plugin's uid inside is [`INSIDE_ID`], outside it is the configured unprivileged uid when
//! the server is root (root inside is then root outside too, for building the root only), else
//! the server's own uid. The child, with every signal blocked and only system calls on memory
//! prepared before the `clone` (nothing allocates or writes the host's memory after it), builds
//! a new root on a tmpfs from read-only binds of host paths (read-only with every mount below
//! them: `mount_setattr` with `AT_RECURSIVE`; on kernels before 5.12 a remount of the top
//! mount, and the plugin is refused when a host path it gets read-only has mounts below it), a
//! private `/tmp`, a fresh `/proc`, a minimal `/dev` and its host socket, `pivot_root`s into
//! it, empties its capability bounding and ambient sets, takes its ids (which empties the
//! rest), sets `no_new_privs`, its rlimits and `PR_SET_PDEATHSIG`, closes the descriptors it
//! inherited, and execs the plugin (again for about half a second while the executable is open
//! for writing somewhere, `ETXTBSY`: usually by a child another thread is starting). A
//! failing step is reported to the host through a close-on-exec pipe as the step's name and
//! `errno`; a child that has not exec'd within `EXEC_DEADLINE` is killed.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::child::{ChildFds, Prepared, PreparedOp, ReadOnly};
use super::config::{BUSY_EXECUTABLE_HINT, INSIDE_ID};
use super::plan::{Op, Plan};
use super::shared_clone::{ChildMemory, clone_sharing_memory, kill_and_reap};

/// A child started in its namespaces: killed and reaped when dropped, unless taken apart
/// ([`Child::into_parts`]) by whoever watches it from then on.
pub(crate) struct Child {
    parts: ChildParts,
}

/// The parts of a started child.
pub(crate) struct ChildParts {
    /// Its pid, as the host sees it.
    pub(crate) pid: u32,
    /// A pidfd of it, readable once it has exited.
    pub(crate) pidfd: OwnedFd,
    /// The read end of its stdout.
    pub(crate) stdout: OwnedFd,
    /// The read end of its stderr.
    pub(crate) stderr: OwnedFd,
}

impl Child {
    /// The child's parts; the caller reaps it from then on.
    pub(crate) fn into_parts(self) -> ChildParts {
        let child = std::mem::ManuallyDrop::new(self);
        // SAFETY: `child` is never dropped, and its parts are moved out of it once.
        unsafe { std::ptr::read(&child.parts) }
    }
}

impl Drop for Child {
    /// A child nobody took (its start was given up) does not run on unwatched. Reaping may wait
    /// (up to a second for a child stuck in the kernel): off an async runtime's workers.
    fn drop(&mut self) {
        let Ok(pid) = libc::pid_t::try_from(self.parts.pid) else {
            return;
        };
        let reap = move || {
            if !kill_and_reap(pid) {
                tracing::error!(pid, "an unwanted plugin process could not be reaped");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(reap)),
            Err(_) => reap(),
        }
    }
}

fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// A pipe whose both ends close on exec.
fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_error("pipe2"));
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(read)?, above_stdio(write)?))
}

/// `fd` moved above 0–2 if it is one of them (a host started with a standard descriptor
/// closed gets them from `pipe2`): the child `dup2`s its standard descriptors over 0–2, which
/// would close a pipe end it still needs, and the host would take that end of file for an exec.
fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, String> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: fcntl(2) duplicating a live descriptor to the lowest free one from 3.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if moved < 0 {
        return Err(os_error("moving a pipe above the standard descriptors"));
    }
    // SAFETY: the descriptor was just returned by fcntl; `fd` closes the old one.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// Writes `text` to `/proc/<pid>/<file>`.
fn write_proc(pid: libc::pid_t, file: &str, text: &str) -> Result<(), String> {
    std::fs::write(format!("/proc/{pid}/{file}"), text)
        .map_err(|e| format!("writing {file} of the plugin process: {e}"))
}

fn c_string(text: impl Into<Vec<u8>>) -> Result<CString, String> {
    CString::new(text).map_err(|_| "a path holds a NUL byte".to_owned())
}

fn c_path(path: &Path) -> Result<CString, String> {
    c_string(path.as_os_str().as_bytes())
}

/// The mount points of this process's mount namespace (`/proc/self/mountinfo`, unescaped).
fn mount_points() -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|escaped| PathBuf::from(unescape_mount_point(escaped)))
        .collect()
}

/// A mount point as `mountinfo` writes it, with its octal escapes (`\040` for a space) undone.
fn unescape_mount_point(escaped: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|text| u8::from_str_radix(text, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

/// Whether this kernel has `mount_setattr` (5.12 and later), checked once. With it, the child
/// makes each read-only bind read-only with every mount below it, and what only the older
/// remount needs (each source's mount flags, the host's mount table) is not read at each start.
fn has_mount_setattr() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        // SAFETY: mount_setattr(2) with no descriptor and no attributes fails at once, with
        // ENOSYS only where the kernel lacks the call.
        let result = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                -1,
                c"".as_ptr(),
                0,
                std::ptr::null::<libc::mount_attr>(),
                0usize,
            )
        };
        !(result == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
    })
}

fn prepare(plan: &Plan) -> Result<Prepared, String> {
    // The host's mount table (and each source's flags) are read only for the remount of
    // kernels without `mount_setattr`.
    let fallback_mounts = (!has_mount_setattr()).then(mount_points);
    let mut ops = Vec::new();
    for op in &plan.ops {
        ops.push(match op {
            Op::Mkdir(path) => PreparedOp::Mkdir(c_path(path)?),
            Op::Touch(path) => PreparedOp::Touch(c_path(path)?),
            Op::Symlink { target, path } => PreparedOp::Symlink {
                target: c_path(target)?,
                path: c_path(path)?,
            },
            Op::Bind {
                source,
                target,
                read_only,
            } => PreparedOp::Bind {
                source: c_path(source)?,
                target: c_path(target)?,
                read_only: read_only_bind(*read_only, source, fallback_mounts.as_deref())?,
            },
            Op::Tmpfs { target, options } => PreparedOp::Tmpfs {
                target: c_path(target)?,
                options: c_string(options.as_str())?,
            },
            Op::Proc(path) => PreparedOp::Proc(c_path(path)?),
        });
    }
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(63);
    let prepared = Prepared {
        ops,
        root_options: c_string(format!("mode=0755,size=1m,uid={INSIDE_ID},gid={INSIDE_ID}"))?,
        workdir: c_path(&plan.workdir)?,
        executable: c_path(&plan.executable)?,
        argv: vec![c_path(&plan.executable)?],
        envp: plan
            .env
            .iter()
            .map(|(k, v)| c_string(format!("{k}={v}")))
            .collect::<Result<_, _>>()?,
        clear_groups: plan.outside_root,
        stage: c_path(&plan.stage)?,
        last_cap,
        rlimits: plan
            .rlimits
            .iter()
            .map(|(resource, value)| (*resource, *value))
            .collect(),
    };
    Ok(prepared)
}

/// How a bind of `source` is made read-only (if `read_only`): `fallback_mounts` is the host's
/// mount table where the kernel lacks `mount_setattr` (`None` where it has it, and no fallback
/// is needed); a source with mounts below it gets none, as a remount would leave them writable.
fn read_only_bind(
    read_only: bool,
    source: &Path,
    fallback_mounts: Option<&[PathBuf]>,
) -> Result<ReadOnly, String> {
    if !read_only {
        return Ok(ReadOnly::No);
    }
    let fallback = match fallback_mounts {
        Some(mounts)
            if !mounts
                .iter()
                .any(|point| point != source && point.starts_with(source)) =>
        {
            Some(remount_flags(source)?)
        }
        _ => None,
    };
    Ok(ReadOnly::Yes { fallback })
}

/// The flags of a read-only remount of a bind of `source`, for kernels without
/// `mount_setattr`: a bind keeps its source's locked flags (noexec here), and a remount that
/// dropped one would be refused.
fn remount_flags(source: &Path) -> Result<libc::c_ulong, String> {
    let c_source = c_path(source)?;
    // SAFETY: an all-zero statvfs is a valid value for statvfs(3) to fill.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs(3) fills the struct it is given.
    if unsafe { libc::statvfs(c_source.as_ptr(), &mut stat) } != 0 {
        return Err(os_error(&format!("statvfs {}", source.display())));
    }
    Ok(libc::MS_REMOUNT
        | libc::MS_BIND
        | libc::MS_RDONLY
        | libc::MS_NOSUID
        | libc::MS_NODEV
        | (stat.f_flag & libc::ST_NOEXEC))
}

/// The namespaces of a plugin (`clone(2)` flags).
fn clone_flags(network: bool) -> libc::c_int {
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    if !network {
        flags |= libc::CLONE_NEWNET;
    }
    flags
}

/// How long a child may take from its clone to its `exec` (normally about a millisecond; a
/// host path on a hung network file system, or a child stopped by a signal, would hold every
/// start up, as starts are made one at a time). What runs before the clone (`prepare`, which
/// reads the host paths' mount flags) has no deadline.
const EXEC_DEADLINE: Duration = Duration::from_secs(10);

/// Starts the plugin of `plan` in its namespaces.
pub(crate) fn spawn(plan: &Plan) -> Result<Child, String> {
    let prepared = prepare(plan)?;
    let (go_read, go_write) = pipe()?;
    let (error_read, error_write) = pipe()?;
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    let dev_null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let fds = ChildFds {
        go: go_read.as_raw_fd(),
        error: error_write.as_raw_fd(),
        stdin: dev_null.as_raw_fd(),
        stdout: stdout_write.as_raw_fd(),
        stderr: stderr_write.as_raw_fd(),
    };
    let memory = ChildMemory::new(prepared, fds)?;
    let child = clone_sharing_memory(memory, clone_flags(plan.network))
        .map_err(|e| format!("clone with new namespaces: {e}"))?;
    drop(go_read);
    drop(error_write);
    drop(stdout_write);
    drop(stderr_write);
    drop(dev_null);
    let pid = child.pid();
    let (uid, gid) = (plan.outside_uid, plan.outside_gid);
    if plan.outside_root {
        // Root inside is root outside only while the child builds its root (as root it
        // reaches the host paths it binds); it then becomes INSIDE_ID for good and loses
        // every capability before the plugin runs.
        write_proc(pid, "uid_map", &format!("0 0 1\n{INSIDE_ID} {uid} 1\n"))?;
        write_proc(pid, "gid_map", &format!("0 0 1\n{INSIDE_ID} {gid} 1\n"))?;
    } else {
        // Another user may only map itself: the child is INSIDE_ID from the start.
        write_proc(pid, "setgroups", "deny")?;
        write_proc(pid, "uid_map", &format!("{INSIDE_ID} {uid} 1\n"))?;
        write_proc(pid, "gid_map", &format!("{INSIDE_ID} {gid} 1\n"))?;
    }
    // SAFETY: pidfd_open(2) of our own child, which nobody else reaps.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(os_error("pidfd_open"));
    }
    // SAFETY: the descriptor was just returned by pidfd_open.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    let go = [1u8];
    // SAFETY: write(2) of one byte from a live buffer.
    if unsafe { libc::write(go_write.as_raw_fd(), go.as_ptr().cast(), 1) } != 1 {
        return Err(os_error("starting the plugin process"));
    }
    // `go_write` stays open until the child has exec'd: a child that finds it closed after
    // setting its parent-death signal knows the host died before it could be signalled.
    let mut report = [0u8; 64];
    // Only an end of file means the exec happened; anything else kills the child (`child`).
    let read = match read_until_closed(error_read.as_raw_fd(), &mut report, EXEC_DEADLINE) {
        Report::Closed(read) => read,
        Report::TimedOut => {
            return Err(format!(
                "the isolated process did not reach its exec within {} s",
                EXEC_DEADLINE.as_secs()
            ));
        }
        Report::Failed(error) => {
            return Err(format!("waiting for the isolated process's exec: {error}"));
        }
    };
    drop(go_write);
    if read > 0 {
        let text = String::from_utf8_lossy(&report[..read]);
        let (step, errno) = text.split_once(':').unwrap_or((&text, "0"));
        let errno = errno.trim_end_matches('\0').parse().unwrap_or(0);
        let error = std::io::Error::from_raw_os_error(errno);
        return Err(if step == "exec" && errno == libc::ETXTBSY {
            format!("the isolated process failed at `{step}`: {error}: {BUSY_EXECUTABLE_HINT}")
        } else {
            format!("the isolated process failed at `{step}`: {error}")
        });
    }
    let pid = child.exec_seen();
    Ok(Child {
        parts: ChildParts {
            pid,
            pidfd,
            stdout: stdout_read,
            stderr: stderr_read,
        },
    })
}

/// How the wait for a child's report ended.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    /// End of file (the child exec'd, or exited) after this many bytes, or the buffer is full.
    Closed(usize),
    /// The writer neither wrote nor closed in time.
    TimedOut,
    /// `poll` or `read` failed (with every signal blocked, they do not; its `errno` may be the
    /// child's, which shares this thread's).
    Failed(std::io::ErrorKind),
}

/// Reads until end of file or `buffer` is full, at most until `deadline` has passed.
fn read_until_closed(fd: RawFd, buffer: &mut [u8], deadline: Duration) -> Report {
    let until = Instant::now() + deadline;
    let mut total = 0;
    while total < buffer.len() {
        let left = until.saturating_duration_since(Instant::now());
        let mut ready = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout =
            libc::c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
        // SAFETY: poll(2) of one live descriptor.
        let polled = unsafe { libc::poll(&mut ready, 1, timeout) };
        if polled == 0 {
            if Instant::now() >= until {
                return Report::TimedOut;
            }
            continue;
        }
        if polled < 0 {
            return Report::Failed(std::io::Error::last_os_error().kind());
        }
        // SAFETY: read(2) into the unfilled rest of a live buffer.
        let n = unsafe {
            libc::read(
                fd,
                buffer[total..].as_mut_ptr().cast(),
                buffer.len() - total,
            )
        };
        match usize::try_from(n) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(_) => return Report::Failed(std::io::Error::last_os_error().kind()),
        }
    }
    Report::Closed(total)
}

/// The host path the host reaches a plugin's socket by: through `/proc/<pid>/root`.
pub(crate) fn socket_from_host(pid: u32, inside: &str) -> Result<PathBuf, String> {
    let path = Path::new(inside);
    if !path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "the socket path `{inside}` must be absolute, without `..`"
        ));
    }
    let host = PathBuf::from(format!("/proc/{pid}/root{inside}"));
    if host.as_os_str().len() > 107 {
        return Err(format!("the socket path `{inside}` is too long"));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::config::IsolationConfig;
    use crate::sandbox::plan::{Request, plan};

    /// Starts `script` (a `/bin/sh` body) isolated, from a directory others may read.
    fn start_script(script: &str) -> (Child, tempfile::TempDir) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let program = dir.path().join("run");
        std::fs::write(&program, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let stage = dir.path().join("stage");
        std::fs::create_dir(&stage).unwrap();
        let config = IsolationConfig::default();
        let plan = plan(&Request {
            executable: &program,
            working_dir: dir.path(),
            stage: &stage,
            host_socket: None,
            env: &[],
            network: false,
            memory_bytes: 0,
            config: &config,
        })
        .unwrap();
        (spawn(&plan).unwrap(), dir)
    }

    fn dumpable() -> libc::c_int {
        // SAFETY: prctl(2) reading a flag of this process.
        unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }
    }

    #[test]
    fn the_host_stays_dumpable_when_a_child_sharing_its_memory_changes_ids() {
        // As root, the child's ids change before its exec, while it shares this memory.
        let before = dumpable();
        let (child, _dir) = start_script("exit 0");
        let child = child.into_parts();
        // SAFETY: waitpid(2) of our own child.
        unsafe { libc::waitpid(child.pid as libc::pid_t, std::ptr::null_mut(), 0) };
        assert_eq!(dumpable(), before);
    }

    #[test]
    fn a_read_only_bind_falls_back_to_a_remount_only_with_nothing_mounted_below() {
        let source = Path::new("/usr");
        let fallback = |mounts: Option<&[PathBuf]>| match read_only_bind(true, source, mounts) {
            Ok(ReadOnly::Yes { fallback }) => fallback,
            Ok(ReadOnly::No) => panic!("a read-only bind came out writable"),
            Err(e) => panic!("{e}"),
        };
        assert!(matches!(
            read_only_bind(false, source, None),
            Ok(ReadOnly::No)
        ));
        // The kernel has `mount_setattr`: no remount to fall back to.
        assert_eq!(fallback(None), None);
        let without_below = [
            PathBuf::from("/"),
            PathBuf::from("/usr"),
            PathBuf::from("/usrx"),
        ];
        let flags = fallback(Some(&without_below)).expect("a remount");
        assert_eq!(
            flags & (libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY),
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY
        );
        let with_below = [PathBuf::from("/usr"), PathBuf::from("/usr/local/share")];
        assert_eq!(fallback(Some(&with_below)), None, "refused, not remounted");
    }

    #[test]
    fn a_report_is_read_until_its_writer_closes_and_a_silent_writer_times_out() {
        let (read, write) = pipe().unwrap();
        let mut buffer = [0u8; 64];
        // Neither written nor closed: the deadline ends the wait.
        let started = Instant::now();
        let waited = read_until_closed(read.as_raw_fd(), &mut buffer, Duration::from_millis(50));
        assert_eq!(waited, Report::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(50));
        // SAFETY: write(2) of a live buffer to our own pipe.
        unsafe { libc::write(write.as_raw_fd(), b"mount:13".as_ptr().cast(), 8) };
        drop(write);
        let read = read_until_closed(read.as_raw_fd(), &mut buffer, Duration::from_secs(5));
        assert_eq!(read, Report::Closed(8));
        assert_eq!(&buffer[..8], b"mount:13");
    }

    #[test]
    fn a_child_nobody_took_is_killed_and_reaped() {
        let gone = |pid: u32| !Path::new(&format!("/proc/{pid}")).exists();
        // Dropped outside an async runtime: reaped at once.
        let (child, _dir) = start_script("sleep 30");
        let pid = child.parts.pid;
        assert!(!gone(pid));
        drop(child);
        assert!(gone(pid), "the child still runs (or is a zombie)");
        // Dropped on a runtime (as a start given up is): reaped on its blocking pool.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (child, _dir) = start_script("sleep 30");
        let pid = child.parts.pid;
        runtime.block_on(async move { drop(child) });
        let dropped = Instant::now();
        while !gone(pid) && dropped.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(gone(pid), "the child dropped on a runtime still runs");
    }

    #[test]
    fn mount_points_are_read_with_their_escapes_undone() {
        assert_eq!(
            unescape_mount_point(r"/mnt/with\040space\011tab\134back"),
            std::ffi::OsString::from("/mnt/with space\ttab\\back")
        );
        assert_eq!(unescape_mount_point(r"/odd\04"), "/odd\\04");
        let points = mount_points();
        assert!(points.contains(&PathBuf::from("/")), "{points:?}");
    }
}
