//! Attacks of a native plugin on its host, each refused by the isolation: shell scripts that try
//! and print what they managed on stderr, which the failed handshake quotes back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gk_grpc::{GrpcError, GrpcLimits, GrpcRuntime, IsolationConfig};

fn limits() -> GrpcLimits {
    GrpcLimits {
        call_timeout: Duration::from_secs(5),
        init_timeout: Duration::from_secs(20),
        shutdown_timeout: Duration::from_secs(2),
        network: false,
        memory_mb: 0,
        health_interval: Duration::from_secs(10),
    }
}

/// A directory others may read, as a plugin's directory is.
fn readable_dir(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `body` (a script for `interpreter`) as plugin `attacker` in `plugin_dir` and returns
/// what it printed on stderr (it never completes a handshake, and ends with status 7).
async fn attack(
    runtime: GrpcRuntime,
    plugin_dir: &Path,
    interpreter: &str,
    limits: GrpcLimits,
    body: &str,
) -> String {
    use std::os::unix::fs::PermissionsExt;
    readable_dir(plugin_dir);
    let script = plugin_dir.join("attack");
    std::fs::write(&script, format!("#!{interpreter}\n{body}\nexit 7\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = runtime
        .start("attacker", &script, plugin_dir, limits)
        .await
        .unwrap_err();
    let GrpcError::Handshake { message, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("exit status: 7"), "{message}");
    message.clone()
}

/// Bash that runs each attack and prints one line: `name=DONE` or `name=denied` for each,
/// then the process's ids, capabilities and `no_new_privs`.
fn attacks(attempts: &[(&str, String)]) -> String {
    let mut body = String::from(
        "R=''\ntry() { if (eval \"$2\") >/dev/null 2>&1; then R=\"$R $1=DONE\"; else R=\"$R $1=denied\"; fi; }\n",
    );
    for (name, command) in attempts {
        body.push_str(&format!("try {name} {}\n", shell_quote(command)));
    }
    body.push_str(
        "echo \"RESULT$R uid=$(id -u) $(grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|SigIgn|SigBlk)' /proc/self/status | tr -d '\\t' | tr '\\n' ' ')\" >&2",
    );
    body
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The outcome of each attack in `output`.
fn outcome<'a>(output: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=");
    let start = output
        .find(&key)
        .unwrap_or_else(|| panic!("no `{name}` in {output}"))
        + key.len();
    output[start..].split(' ').next().unwrap_or_default()
}

/// A host laid out like `gk serve`'s: a data directory with the token secret, the database and
/// the runtime's run directory, and a plugins directory with another plugin.
struct Host {
    _root: tempfile::TempDir,
    data: PathBuf,
    run: PathBuf,
    plugins: PathBuf,
}

fn host() -> Host {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    readable_dir(root.path());
    let data = root.path().join("data");
    readable_dir(&data);
    std::fs::write(data.join("jwt-secret"), "the-token-secret").unwrap();
    std::fs::set_permissions(
        data.join("jwt-secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(data.join("goatkit.db"), "SQLite format 3\0").unwrap();
    let run = data.join("run");
    readable_dir(&run);
    let plugins = root.path().join("plugins");
    readable_dir(&plugins.join("other"));
    std::fs::write(plugins.join("other/secret.txt"), "other plugin's").unwrap();
    Host {
        data,
        run,
        plugins,
        _root: root,
    }
}

#[tokio::test]
async fn a_plugin_cannot_reach_the_hosts_files_processes_or_network() {
    let host = host();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let me = host.plugins.join("attacker");
    let (data, run, other) = (
        host.data.display(),
        host.run.display(),
        host.plugins.join("other").display().to_string(),
    );
    let mine = me.display();
    let server = std::process::id();
    let attempts = [
        ("read-own", format!("cat {mine}/attack")),
        (
            "write-tmp",
            "echo x > $TMPDIR/kept && cat $TMPDIR/kept".to_owned(),
        ),
        ("read-secret", format!("cat {data}/jwt-secret")),
        ("read-db", format!("cat {data}/goatkit.db")),
        ("list-data", format!("ls {data}")),
        ("list-run", format!("ls {run}")),
        ("read-other", format!("cat {other}/secret.txt")),
        ("write-own", format!("echo x > {mine}/dropped")),
        ("chmod-own", format!("chmod 777 {mine}")),
        ("write-root", "echo x > /dropped".to_owned()),
        ("write-etc", "echo x > /etc/dropped".to_owned()),
        ("write-usr", "echo x > /usr/dropped".to_owned()),
        ("read-shadow", "cat /etc/shadow".to_owned()),
        ("host-home", "ls /root /home".to_owned()),
        ("see-server", format!("test -e /proc/{server}")),
        (
            "many-processes",
            "test $(ls -d /proc/[0-9]* | wc -l) -gt 12".to_owned(),
        ),
        ("server-environ", format!("cat /proc/{server}/environ")),
        (
            "pid-1-is-not-me",
            "! tr '\\0' ' ' < /proc/1/cmdline | grep -q attack".to_owned(),
        ),
        ("mount", "mount -t tmpfs none /tmp".to_owned()),
        (
            "user-namespace",
            "unshare --user --map-root-user true".to_owned(),
        ),
        ("control-unshare", "unshare --help".to_owned()),
        ("tcp", format!("exec 3<>/dev/tcp/127.0.0.1/{port}")),
    ];
    let output = attack(
        GrpcRuntime::new(&host.run),
        &me,
        "/bin/bash",
        limits(),
        &attacks(&attempts),
    )
    .await;
    for (name, _) in &attempts {
        let expected = if matches!(*name, "read-own" | "write-tmp" | "control-unshare") {
            "DONE"
        } else {
            "denied"
        };
        assert_eq!(outcome(&output, name), expected, "{name}: {output}");
    }
    assert!(output.contains(" uid=65534 "), "runs as nobody: {output}");
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert!(
            output.contains(&format!("{set}:0000000000000000")),
            "no capabilities ({set}): {output}"
        );
    }
    assert!(output.contains("NoNewPrivs:1"), "{output}");
    let ignored = output
        .split("SigIgn:")
        .nth(1)
        .and_then(|rest| u64::from_str_radix(rest.split(' ').next().unwrap_or_default(), 16).ok())
        .unwrap_or_else(|| panic!("{output}"));
    assert_eq!(
        ignored & (1 << (libc::SIGPIPE - 1)),
        0,
        "SIGPIPE is not ignored (the host ignores it): {output}"
    );
    assert!(
        output.contains("SigBlk:0000000000000000"),
        "no signal blocked: {output}"
    );
    assert!(!me.join("dropped").exists(), "nothing written on the host");
    assert_eq!(
        std::fs::read_to_string(host.data.join("jwt-secret")).unwrap(),
        "the-token-secret"
    );

    // Only an embedder's explicit `network` keeps the host's network (the control of `tcp`
    // above); no policy sets it.
    let output = attack(
        GrpcRuntime::new(&host.run),
        &me,
        "/bin/bash",
        GrpcLimits {
            network: true,
            ..limits()
        },
        &attacks(&[("tcp", format!("exec 3<>/dev/tcp/127.0.0.1/{port}"))]),
    )
    .await;
    assert_eq!(outcome(&output, "tcp"), "DONE", "{output}");
    drop(listener);
}

/// A host path the operator made read-only stays read-only with what is mounted below it: a
/// writable file system mounted inside it (here a tmpfs anyone may write) is read-only too.
#[tokio::test]
async fn mounts_below_a_read_only_path_are_read_only_too() {
    let host = host();
    let shared = host.data.join("shared");
    let below = shared.join("below");
    readable_dir(&below);
    let target = std::ffi::CString::new(below.display().to_string()).unwrap();
    // SAFETY: mount(2) of a new tmpfs on a directory this test made.
    let mounted = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"mode=1777,size=1m".as_ptr().cast(),
        )
    };
    if mounted != 0 {
        eprintln!(
            "cannot mount a tmpfs here ({}): this test needs root",
            std::io::Error::last_os_error()
        );
        return;
    }
    /// Unmounts the tmpfs however the test ends.
    struct Unmount(std::ffi::CString);
    impl Drop for Unmount {
        fn drop(&mut self) {
            // SAFETY: umount2(2) of the tmpfs this test mounted.
            unsafe {
                libc::umount2(self.0.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
    let unmount = Unmount(target);
    std::fs::write(below.join("seen"), "from the host").unwrap();
    let (shared_path, below_path) = (shared.display(), below.display());
    let attempts = [
        ("read-below", format!("cat {below_path}/seen")),
        ("write-below", format!("echo x > {below_path}/dropped")),
        ("write-shared", format!("echo x > {shared_path}/dropped")),
    ];
    let output = attack(
        GrpcRuntime::new(&host.run).with_isolation(IsolationConfig {
            read_only_paths: vec![shared.clone()],
            ..IsolationConfig::default()
        }),
        &host.plugins.join("attacker"),
        "/bin/bash",
        limits(),
        &attacks(&attempts),
    )
    .await;
    let written = below.join("dropped").exists();
    drop(unmount);
    assert_eq!(outcome(&output, "read-below"), "DONE", "{output}");
    assert_eq!(outcome(&output, "write-below"), "denied", "{output}");
    assert_eq!(outcome(&output, "write-shared"), "denied", "{output}");
    assert!(!written, "nothing written below the read-only path");
}

/// Processes running as `uid` whose command is `comm`.
fn processes_of(uid: u32, comm: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            status.lines().any(|l| l == format!("Name:\t{comm}"))
                && status
                    .lines()
                    .any(|l| l.starts_with(&format!("Uid:\t{uid}\t")))
        })
        .count()
}

#[tokio::test]
async fn a_fork_bomb_stops_at_the_process_limit_and_dies_with_the_plugin() {
    let host = host();
    let runtime = GrpcRuntime::new(&host.run).with_isolation(IsolationConfig {
        max_processes: 40,
        ..IsolationConfig::default()
    });
    // dash gives up on the first fork that fails (bash would retry for half a minute).
    let output = attack(
        runtime,
        &host.plugins.join("attacker"),
        "/bin/sh",
        limits(),
        "( i=0; while [ $i -lt 2000 ]; do sleep 300 & i=$((i+1)); echo $i > $TMPDIR/n; done ) 2>/dev/null\n\
         echo \"FORKED=$(cat $TMPDIR/n)\" >&2",
    )
    .await;
    let forked: u32 = output
        .split("FORKED=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{output}"));
    assert!(
        (5..40).contains(&forked),
        "forks work, up to the limit of 40 processes: {forked}"
    );
    // SAFETY: geteuid cannot fail.
    let plugin_uid = match unsafe { libc::geteuid() } {
        0 => 65_534,
        server => server,
    };
    assert_eq!(
        processes_of(plugin_uid, "sleep"),
        0,
        "the plugin's processes ended with it"
    );
    assert!(
        std::process::Command::new("true")
            .status()
            .unwrap()
            .success(),
        "the host still forks"
    );
}

#[tokio::test]
async fn without_isolation_native_plugins_are_refused_unless_the_operator_allows_them() {
    let host = host();
    let unavailable = IsolationConfig {
        assume_unavailable: true,
        ..IsolationConfig::default()
    };
    let me = host.plugins.join("attacker");
    readable_dir(&me);
    let script = me.join("attack");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"RAN uid=$(id -u)\" >&2\nexit 7\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let err = GrpcRuntime::new(&host.run)
        .with_isolation(unavailable.clone())
        .start("attacker", &script, &me, limits())
        .await
        .unwrap_err();
    assert!(matches!(err, GrpcError::Unisolated { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "native plugin attacker cannot be isolated here (the configuration says isolation is not \
         available (assume_unavailable)); it does not start unless \
         `allow_unisolated_native_plugins = true` (GOATKIT_ALLOW_UNISOLATED_NATIVE_PLUGINS=1) \
         lets it run unisolated, as the server's user"
    );
    let leftovers = std::fs::read_dir(&host.run).unwrap().count();
    assert_eq!(leftovers, 0, "nothing was started or prepared");

    let output = attack(
        GrpcRuntime::new(&host.run).with_isolation(IsolationConfig {
            allow_unisolated_native_plugins: true,
            ..unavailable
        }),
        &me,
        "/bin/sh",
        limits(),
        "echo \"RAN uid=$(id -u)\" >&2",
    )
    .await;
    // SAFETY of the claim: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        output.contains(&format!("RAN uid={euid}")),
        "allowed, it runs as the server's user: {output}"
    );
}

/// Run by `run_by_an_ordinary_user_the_server_still_isolates_its_plugins` as `nobody`: lays out
/// a host in the directory it is given, runs the attacks and prints their outcome.
#[tokio::test]
async fn helper_unprivileged_host() {
    let Some(root) = std::env::var_os("GK_GRPC_UNPRIVILEGED_HOST") else {
        return;
    };
    let root = PathBuf::from(root);
    let port = std::env::var("GK_GRPC_PORT").unwrap();
    let data = root.join("data");
    readable_dir(&data);
    std::fs::write(data.join("jwt-secret"), "the-token-secret").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("jwt-secret"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let run = data.join("run");
    readable_dir(&run);
    let me = root.join("plugins/attacker");
    let server = std::process::id();
    let attempts = [
        ("read-own", format!("cat {}/attack", me.display())),
        ("read-secret", format!("cat {}/jwt-secret", data.display())),
        ("list-data", format!("ls {}", data.display())),
        ("write-own", format!("echo x > {}/dropped", me.display())),
        ("see-server", format!("test -e /proc/{server}")),
        ("server-environ", format!("cat /proc/{server}/environ")),
        ("tcp", format!("exec 3<>/dev/tcp/127.0.0.1/{port}")),
    ];
    let output = attack(
        GrpcRuntime::new(&run),
        &me,
        "/bin/bash",
        limits(),
        &attacks(&attempts),
    )
    .await;
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    println!("SERVER_UID={euid}");
    println!("OUTPUT={output}");
}

#[tokio::test]
async fn run_by_an_ordinary_user_the_server_still_isolates_its_plugins() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the tests as root, which can drop to nobody"
        );
        eprintln!("skipping: dropping to nobody needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(root.path(), Some(65_534), Some(65_534)).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_unprivileged_host",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GK_GRPC_UNPRIVILEGED_HOST", root.path())
        .env("GK_GRPC_PORT", port.to_string())
        .env(
            "GOATKIT_TOKEN_SECRET",
            "a-secret-in-the-servers-environment",
        )
        .output()
        .expect("setpriv (util-linux) runs the helper as nobody");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("SERVER_UID=65534"), "{stdout}");
    let line = stdout
        .lines()
        .find_map(|l| l.split("OUTPUT=").nth(1))
        .unwrap_or_else(|| panic!("{stdout}"));
    for (name, expected) in [
        ("read-own", "DONE"),
        ("read-secret", "denied"),
        ("list-data", "denied"),
        ("write-own", "denied"),
        ("see-server", "denied"),
        ("server-environ", "denied"),
        ("tcp", "denied"),
    ] {
        assert_eq!(outcome(line, name), expected, "{name}: {line}");
    }
    assert!(line.contains(" uid=65534 "), "{line}");
    assert!(line.contains("CapEff:0000000000000000"), "{line}");
    assert!(line.contains("NoNewPrivs:1"), "{line}");
    drop(listener);
}

/// A plugin script `name` in the host's plugins directory that prints `RAN` and exits 7.
fn exiting_script(host: &Host, name: &str) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = host.plugins.join(name);
    readable_dir(&dir);
    let script = dir.join("plugin");
    std::fs::write(&script, "#!/bin/sh\necho RAN >&2\nexit 7\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, script)
}

/// Starts `script` while it is open for writing for `open_for` (on a thread of its own, as
/// when another thread's child inherited the descriptor until its own exec), and returns why
/// the start failed (the script never completes a handshake).
async fn start_while_open_for(
    runtime: &GrpcRuntime,
    dir: &Path,
    script: &Path,
    open_for: Duration,
) -> GrpcError {
    let writer = std::fs::OpenOptions::new()
        .append(true)
        .open(script)
        .unwrap();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(open_for);
        drop(writer);
    });
    let err = runtime
        .start("busy", script, dir, limits())
        .await
        .unwrap_err();
    closer.join().unwrap();
    err
}

#[tokio::test]
async fn an_executable_open_for_writing_is_waited_for_a_moment_then_refused_saying_why() {
    let host = host();
    let runtime = GrpcRuntime::new(&host.run);
    let (dir, script) = exiting_script(&host, "busy");
    // Open for writing a moment: the start waits and the plugin runs.
    let err = start_while_open_for(&runtime, &dir, &script, Duration::from_millis(30)).await;
    let GrpcError::Handshake { message, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("RAN"), "{message}");
    assert!(message.contains("exit status: 7"), "{message}");

    // Open for writing throughout: refused, saying why.
    let text = start_while_open_for(&runtime, &dir, &script, Duration::from_secs(2))
        .await
        .to_string();
    assert!(
        text.contains("Text file busy")
            && text.contains("stayed open for writing through every try"),
        "{text}"
    );
}
