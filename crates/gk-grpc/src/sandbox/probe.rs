//! The one-time probe of whether this kernel and this user can isolate plugin processes.

use super::config::IsolationConfig;
use super::linux;
use super::plan::{Request, plan};

/// Whether plugins can be isolated here: `Err(why not)` when not. The kernel is probed once
/// per process, by starting `true` in the sandbox, on the caller's thread (a few ms, once).
pub(crate) fn available(config: &IsolationConfig) -> Result<(), String> {
    if config.assume_unavailable {
        return Err(
            "the configuration says isolation is not available (assume_unavailable)".into(),
        );
    }
    static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    PROBE.get_or_init(|| probe(config)).clone()
}

fn probe(config: &IsolationConfig) -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return Err("native plugin isolation needs Linux".into());
    }
    let truth = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .map(std::path::Path::new)
        .find(|p| p.is_file())
        .ok_or("no `true` program to probe with")?;
    let stage = std::env::temp_dir().join(format!("gk-isolation-probe-{}", std::process::id()));
    std::fs::create_dir_all(&stage).map_err(|e| format!("{}: {e}", stage.display()))?;
    let outcome = probe_in(config, truth, &stage);
    let _ = std::fs::remove_dir(&stage);
    outcome
}

fn probe_in(
    config: &IsolationConfig,
    truth: &std::path::Path,
    stage: &std::path::Path,
) -> Result<(), String> {
    let plan = plan(&Request {
        executable: truth,
        working_dir: truth.parent().unwrap_or(std::path::Path::new("/usr/bin")),
        stage,
        host_socket: None,
        env: &[],
        network: false,
        memory_bytes: 0,
        config,
    })?;
    let child = linux::spawn(&plan)?.into_parts();
    let pid = libc::pid_t::try_from(child.pid).map_err(|e| e.to_string())?;
    let mut status = 0;
    // SAFETY: waitpid(2) of our own child.
    let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
    let exited_well = reaped == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if exited_well {
        Ok(())
    } else {
        Err(format!(
            "a sandboxed test process failed (wait status {status})"
        ))
    }
}
