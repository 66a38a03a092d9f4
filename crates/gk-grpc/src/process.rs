//! The plugin process: started with a minimal environment in its own process group, tied to
//! the host's life (`PR_SET_PDEATHSIG`), its handshake read from stdout, its output forwarded
//! line by line, its exit watched.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gk_sdk::handshake::{Handshake, parse_handshake};
use gk_sdk::{CallContext, LogLevel};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use crate::GrpcError;
use crate::host_server::HostSide;

/// Stderr lines kept for crash reports.
const STDERR_TAIL: usize = 20;

/// A started plugin process.
pub(crate) struct Spawned {
    pub(crate) pid: u32,
    pub(crate) handshake: Handshake,
    /// `Some(description)` once the process has exited.
    pub(crate) exit: watch::Receiver<Option<String>>,
    pub(crate) stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

/// The last stderr lines, for error messages.
pub(crate) fn tail(lines: &Mutex<VecDeque<String>>) -> String {
    let lines = lines.lock().unwrap_or_else(|p| p.into_inner());
    if lines.is_empty() {
        "(nothing on stderr)".to_owned()
    } else {
        lines.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

/// Sends `signal` to the plugin's whole process group.
pub(crate) fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory.
    unsafe {
        libc::kill(-pid, signal);
    }
}

/// Starts `executable` and waits for its handshake line up to `timeout`.
pub(crate) async fn spawn(
    side: &Arc<HostSide>,
    executable: &Path,
    working_dir: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Spawned, GrpcError> {
    let plugin = side.plugin.clone();
    let mut command = Command::new(executable);
    command
        .current_dir(working_dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
    // which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| GrpcError::Spawn {
        path: executable.display().to_string(),
        message: e.to_string(),
    })?;
    let pid = child.id().unwrap_or(0);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
    if let Some(stderr) = stderr {
        tokio::spawn(forward(
            stderr,
            side.clone(),
            LogLevel::Warn,
            Some(stderr_tail.clone()),
        ));
    }
    let (exit_tx, exit) = watch::channel(None);
    tokio::spawn(async move {
        let description = match child.wait().await {
            Ok(status) => status.to_string(),
            Err(e) => format!("unknown exit ({e})"),
        };
        let _ = exit_tx.send(Some(description));
    });

    let Some(stdout) = stdout else {
        signal_group(pid, libc::SIGKILL);
        return Err(GrpcError::Handshake {
            plugin,
            message: "no stdout".into(),
        });
    };
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(timeout, lines.next_line()).await;
    let failure = |message: String| {
        signal_group(pid, libc::SIGKILL);
        GrpcError::Handshake {
            plugin: plugin.clone(),
            message,
        }
    };
    let line = match first {
        Err(_) => {
            return Err(failure(format!(
                "no handshake line within {} ms (init_timeout)",
                timeout.as_millis()
            )));
        }
        Ok(Err(e)) => return Err(failure(format!("reading its stdout: {e}"))),
        Ok(Ok(None)) => {
            let mut exit = exit.clone();
            let _ =
                tokio::time::timeout(Duration::from_secs(1), exit.wait_for(Option::is_some)).await;
            let status = exit
                .borrow()
                .clone()
                .unwrap_or_else(|| "still running".into());
            return Err(failure(format!(
                "it exited before the handshake ({status}); stderr: {}",
                tail(&stderr_tail)
            )));
        }
        Ok(Ok(Some(line))) => line,
    };
    let handshake = parse_handshake(&line).map_err(failure)?;
    let rest = lines.into_inner();
    tokio::spawn(forward(rest, side.clone(), LogLevel::Info, None));
    Ok(Spawned {
        pid,
        handshake,
        exit,
        stderr_tail,
    })
}

/// Forwards a stream line by line to the plugin's log (through its host once initialised).
async fn forward(
    stream: impl AsyncRead + Unpin,
    side: Arc<HostSide>,
    level: LogLevel,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(tail) = &tail {
            let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line.clone());
        }
        match side.host.get() {
            Some(host) => {
                let ctx = CallContext::for_plugin(side.plugin.clone());
                let _ = host.log(&ctx, level, &line, &serde_json::Map::new()).await;
            }
            None => tracing::info!(plugin = %side.plugin, stream = %level, "{line}"),
        }
    }
}
