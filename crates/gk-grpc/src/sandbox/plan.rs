//! What an isolated plugin sees: the plan of its new root (binds, tmpfs, `/proc`, `/dev`), its
//! environment, ids and rlimits. Plain data, computed in the host before the process starts;
//! `linux.rs` carries it out.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::config::{HOST_SOCKET_INSIDE, INSIDE_ID, IsolationConfig, TMP_INSIDE};

/// System directories bound read-only (or recreated as the symlinks they are).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32",
];

/// What programs need of `/etc`; nothing else of it is visible.
const ETC_ENTRIES: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "passwd",
    "group",
    "nsswitch.conf",
    "host.conf",
    "hosts",
    "resolv.conf",
    "gai.conf",
    "protocols",
    "services",
    "localtime",
    "timezone",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "alternatives",
    "mime.types",
    "os-release",
];

/// Device nodes of the minimal `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// One step of building the new root; paths are relative to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// A directory (an existing one is fine).
    Mkdir(PathBuf),
    /// An empty file to bind a file over (an existing one is fine).
    Touch(PathBuf),
    /// A symbolic link.
    Symlink {
        /// What it points to.
        target: PathBuf,
        /// Where it is.
        path: PathBuf,
    },
    /// A bind mount of a host path.
    Bind {
        /// The host path.
        source: PathBuf,
        /// Where it appears.
        target: PathBuf,
        /// Remounted read-only (and nosuid, nodev).
        read_only: bool,
    },
    /// A tmpfs with these mount options.
    Tmpfs {
        /// Where.
        target: PathBuf,
        /// Its options (`mode=…,size=…`).
        options: String,
    },
    /// A fresh procfs of the new PID namespace.
    Proc(PathBuf),
}

/// Everything about one isolated process.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// An empty host directory the new root is mounted on.
    pub(crate) stage: PathBuf,
    pub(crate) ops: Vec<Op>,
    /// Its working directory, inside.
    pub(crate) workdir: PathBuf,
    /// The program, inside.
    pub(crate) executable: PathBuf,
    pub(crate) env: Vec<(String, String)>,
    /// Whether it keeps the host's network namespace.
    pub(crate) network: bool,
    /// Whether the server runs as root (so the plugin gets the configured ids).
    pub(crate) outside_root: bool,
    pub(crate) outside_uid: u32,
    pub(crate) outside_gid: u32,
    pub(crate) rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
}

/// What a plugin process is started with.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) executable: &'a Path,
    pub(crate) working_dir: &'a Path,
    /// An empty host directory to mount the new root on (no bound path lies under it).
    pub(crate) stage: &'a Path,
    /// The plugin's host socket, bound at [`HOST_SOCKET_INSIDE`].
    pub(crate) host_socket: Option<&'a Path>,
    pub(crate) env: &'a [(String, String)],
    pub(crate) network: bool,
    pub(crate) memory_bytes: u64,
    pub(crate) config: &'a IsolationConfig,
}

/// `path` relative to `/`.
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

struct Builder {
    ops: Vec<Op>,
    dirs: BTreeSet<PathBuf>,
}

impl Builder {
    fn dir(&mut self, path: &Path) {
        let mut current = PathBuf::new();
        for component in path.components() {
            current.push(component);
            if self.dirs.insert(current.clone()) {
                self.ops.push(Op::Mkdir(current.clone()));
            }
        }
    }

    /// Binds the host path `source` at the same place, recreating a symlink as a symlink.
    fn bind(&mut self, source: &Path, read_only: bool) -> Result<(), String> {
        let metadata =
            std::fs::symlink_metadata(source).map_err(|e| format!("{}: {e}", source.display()))?;
        let target = relative(source);
        if let Some(parent) = target.parent() {
            self.dir(parent);
        }
        if metadata.file_type().is_symlink() {
            let points_to =
                std::fs::read_link(source).map_err(|e| format!("{}: {e}", source.display()))?;
            self.ops.push(Op::Symlink {
                target: points_to,
                path: target,
            });
            return Ok(());
        }
        if metadata.is_dir() {
            self.dir(&target);
        } else {
            self.ops.push(Op::Touch(target.clone()));
        }
        self.ops.push(Op::Bind {
            source: source.to_owned(),
            target,
            read_only,
        });
        Ok(())
    }
}

/// Whether the plugin's ids may read (and search) `path`.
fn readable_by(path: &Path, uid: u32, gid: u32) -> Result<bool, String> {
    let metadata = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bits = if metadata.uid() == uid {
        metadata.mode() >> 6
    } else if metadata.gid() == gid {
        metadata.mode() >> 3
    } else {
        metadata.mode()
    };
    let needed = if metadata.is_dir() { 0o5 } else { 0o4 };
    Ok(bits & needed == needed)
}

/// The plan of `request`.
pub(crate) fn plan(request: &Request<'_>) -> Result<Plan, String> {
    let config = request.config;
    // SAFETY: geteuid(2) and getegid(2) read the caller's ids; they cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let outside_root = euid == 0;
    let (outside_uid, outside_gid) = if outside_root {
        (config.uid, config.gid)
    } else {
        (euid, egid)
    };
    if outside_root && (outside_uid == 0 || outside_gid == 0) {
        return Err("plugins cannot run as root: configure another uid and gid".into());
    }
    let working_dir = request
        .working_dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", request.working_dir.display()))?;
    let executable = request
        .executable
        .canonicalize()
        .map_err(|e| format!("{}: {e}", request.executable.display()))?;
    for path in [&working_dir, &executable] {
        if !readable_by(path, outside_uid, outside_gid)? {
            return Err(format!(
                "{} is not readable by the plugin's user (uid {outside_uid}, gid {outside_gid}): \
                 make it readable by others (chmod o+rX)",
                path.display()
            ));
        }
    }

    let mut builder = Builder {
        ops: Vec::new(),
        dirs: BTreeSet::new(),
    };
    builder.dir(Path::new("proc"));
    builder.ops.push(Op::Proc("proc".into()));
    let tmp = relative(Path::new(TMP_INSIDE));
    builder.dir(&tmp);
    builder.ops.push(Op::Tmpfs {
        target: tmp,
        options: format!(
            "mode=0700,size={}m,uid={INSIDE_ID},gid={INSIDE_ID}",
            config.tmp_size_mb.max(1)
        ),
    });
    for dir in SYSTEM_DIRS {
        let path = Path::new(dir);
        if path.symlink_metadata().is_ok() {
            builder.bind(path, true)?;
        }
    }
    builder.dir(Path::new("etc"));
    for entry in ETC_ENTRIES {
        let path = Path::new("/etc").join(entry);
        if path.symlink_metadata().is_ok() {
            builder.bind(&path, true)?;
        }
    }
    builder.dir(Path::new("dev"));
    for device in DEVICES {
        let path = Path::new("/dev").join(device);
        if path.exists() {
            builder.bind(&path, false)?;
        }
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        builder.ops.push(Op::Symlink {
            target: target.into(),
            path: Path::new("dev").join(name),
        });
    }
    for path in &config.read_only_paths {
        let path = path
            .canonicalize()
            .map_err(|e| format!("read-only path {}: {e}", path.display()))?;
        builder.bind(&path, true)?;
    }
    builder.bind(&working_dir, true)?;
    if !executable.starts_with(&working_dir) {
        builder.bind(&executable, true)?;
    }
    let mut env: Vec<(String, String)> = request
        .env
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "HOME" | "TMPDIR"))
        .cloned()
        .collect();
    env.push(("HOME".into(), TMP_INSIDE.into()));
    env.push(("TMPDIR".into(), TMP_INSIDE.into()));
    if let Some(socket) = request.host_socket {
        let target = relative(Path::new(HOST_SOCKET_INSIDE));
        if let Some(parent) = target.parent() {
            builder.dir(parent);
        }
        builder.ops.push(Op::Touch(target.clone()));
        // Read-only: connecting needs no write access, and the plugin (whose user owns the
        // socket) cannot change the host's inode through it.
        builder.ops.push(Op::Bind {
            source: socket.to_owned(),
            target,
            read_only: true,
        });
        for (key, value) in &mut env {
            if key == gk_sdk::handshake::HOST_SOCKET_ENV {
                *value = HOST_SOCKET_INSIDE.into();
            }
        }
    }
    let mut rlimits = vec![
        (libc::RLIMIT_NPROC, config.max_processes),
        (libc::RLIMIT_NOFILE, config.max_open_files),
        (libc::RLIMIT_CORE, 0),
    ];
    if request.memory_bytes > 0 {
        rlimits.push((libc::RLIMIT_DATA, request.memory_bytes));
    }
    Ok(Plan {
        stage: request.stage.to_owned(),
        ops: builder.ops,
        workdir: working_dir,
        executable,
        env,
        network: request.network,
        outside_root,
        outside_uid,
        outside_gid,
        rlimits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_holds_the_system_the_plugin_and_its_socket_and_nothing_of_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("plugins/hello");
        std::fs::create_dir_all(&plugin).unwrap();
        std::fs::write(plugin.join("run"), "#!/bin/sh\n").unwrap();
        let socket = dir.path().join("host.sock");
        std::fs::write(&socket, "").unwrap();
        let config = IsolationConfig::default();
        let plan = plan(&Request {
            executable: &plugin.join("run"),
            working_dir: &plugin,
            stage: dir.path(),
            host_socket: Some(&socket),
            env: &[
                ("HOME".into(), "/root".into()),
                ("GOATKIT_HOST_SOCKET".into(), socket.display().to_string()),
            ],
            network: false,
            memory_bytes: 0,
            config: &config,
        })
        .unwrap();
        let binds: Vec<(String, bool)> = plan
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Bind {
                    source, read_only, ..
                } => Some((source.display().to_string(), *read_only)),
                _ => None,
            })
            .collect();
        let plugin = plugin.canonicalize().unwrap();
        assert!(
            binds.contains(&(plugin.display().to_string(), true)),
            "{binds:?}"
        );
        assert!(binds.contains(&("/usr".into(), true)), "{binds:?}");
        assert!(binds.contains(&("/dev/null".into(), false)), "{binds:?}");
        assert!(
            binds.iter().all(|(source, read_only)| *read_only
                || source.starts_with("/dev/")
                || source == &socket.display().to_string()),
            "only devices and the socket are writable: {binds:?}"
        );
        assert!(
            !binds.iter().any(|(source, _)| source == "/"
                || source == "/etc"
                || source.starts_with("/root")
                || source.starts_with("/home")
                || source == &dir.path().canonicalize().unwrap().display().to_string()),
            "{binds:?}"
        );
        assert!(plan.env.contains(&("HOME".into(), "/tmp".into())));
        assert!(plan.env.contains(&("TMPDIR".into(), "/tmp".into())));
        assert!(
            plan.env
                .contains(&("GOATKIT_HOST_SOCKET".into(), HOST_SOCKET_INSIDE.into()))
        );
        assert!(!plan.network);
        assert!(plan.rlimits.contains(&(libc::RLIMIT_CORE, 0)));
    }
}
