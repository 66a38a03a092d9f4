//! The host side of module `gk`: `host_call` and `log` (ABI v1), and the extensions
//! `host_error`, `fail` and `clock_ms`.

use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use gk_sdk::{CallContext, HostApi, HostError, LogLevel, dispatch};
use serde_json::json;
use wasmer::{
    Function, FunctionEnv, FunctionEnvMut, Imports, Memory, RuntimeError, Store, TypedFunction,
};

use crate::abi::{self, HOST_MODULE};

/// What every instance of one plugin shares.
pub(crate) struct Shared {
    /// The plugin's name (from its registration once known).
    pub(crate) name: OnceLock<String>,
    /// The sandboxed host, set by `init`.
    pub(crate) host: OnceLock<Arc<dyn HostApi>>,
    /// The tokio runtime host calls are run on.
    pub(crate) runtime: tokio::runtime::Handle,
    /// Largest argument, result or host reply that crosses the boundary.
    pub(crate) max_payload: usize,
}

impl Shared {
    pub(crate) fn name(&self) -> &str {
        self.name.get().map_or("(registering)", String::as_str)
    }
}

/// Why the host stopped a guest from inside an import.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Stop {
    /// The call's deadline passed.
    #[error("the call's deadline passed")]
    Deadline,
    /// The guest called WASI `proc_exit`.
    #[error("the guest called proc_exit({0})")]
    ProcExit(i32),
}

/// The call an instance is running.
#[derive(Debug, Clone)]
pub(crate) struct ActiveCall {
    pub(crate) ctx: CallContext,
    pub(crate) deadline: Instant,
}

/// The per-instance state host functions see.
pub(crate) struct CallEnv {
    pub(crate) shared: Arc<Shared>,
    pub(crate) memory: Option<Memory>,
    pub(crate) malloc: Option<TypedFunction<i32, i32>>,
    pub(crate) active: Option<ActiveCall>,
    /// The error of the last failed `host_call`, as JSON, for `host_error`.
    pub(crate) last_error: Option<Vec<u8>>,
    /// A failure the guest reported with `fail` during this call.
    pub(crate) failure: Option<(String, String)>,
}

impl CallEnv {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            memory: None,
            malloc: None,
            active: None,
            last_error: None,
            failure: None,
        }
    }

    fn record(&mut self, error: &HostError) -> i64 {
        let mut detail = json!({"kind": error.kind().as_str(), "message": error.to_string()});
        match error {
            HostError::PermissionDenied { permission, .. } => {
                detail["permission"] = json!(permission)
            }
            HostError::RateLimited { limit, retry_after } => {
                detail["limit"] = json!(limit);
                detail["retry_after_ms"] = json!(retry_after.as_millis() as u64);
            }
            _ => {}
        }
        tracing::debug!(plugin = %self.shared.name(), %error, "host_call failed");
        self.last_error = Some(detail.to_string().into_bytes());
        0
    }
}

/// Defines every function of module `gk` in `imports`.
pub(crate) fn define(store: &mut Store, env: &FunctionEnv<CallEnv>, imports: &mut Imports) {
    imports.define(
        HOST_MODULE,
        "host_call",
        Function::new_typed_with_env(store, env, host_call),
    );
    imports.define(
        HOST_MODULE,
        "log",
        Function::new_typed_with_env(store, env, log),
    );
    imports.define(
        HOST_MODULE,
        "host_error",
        Function::new_typed_with_env(store, env, host_error),
    );
    imports.define(
        HOST_MODULE,
        "fail",
        Function::new_typed_with_env(store, env, fail),
    );
    imports.define(
        HOST_MODULE,
        "clock_ms",
        Function::new_typed(store, clock_ms),
    );
}

/// Copies `bytes` into guest memory allocated with `gk_malloc` and returns the packed pointer,
/// or 0 (with the reason recorded) when the guest cannot take it.
pub(crate) fn write_to_guest(
    env: &mut FunctionEnvMut<'_, CallEnv>,
    bytes: &[u8],
) -> Result<i64, RuntimeError> {
    let (Some(malloc), Some(memory)) = (env.data().malloc.clone(), env.data().memory.clone())
    else {
        return Ok(env
            .data_mut()
            .record(&HostError::Unavailable("the instance is not ready".into())));
    };
    let Ok(len) = u32::try_from(bytes.len()) else {
        return Ok(env.data_mut().record(&HostError::InvalidInput(
            "the reply is larger than 4 GiB".into(),
        )));
    };
    // An empty reply still gets a (non-zero) buffer, since a packed 0 means failure.
    let ptr = malloc.call(env, len.max(1) as i32)? as u32;
    if ptr == 0 {
        return Ok(env.data_mut().record(&HostError::Unavailable(format!(
            "gk_malloc({len}) returned 0"
        ))));
    }
    if let Err(e) = memory.view(env).write(u64::from(ptr), bytes) {
        return Ok(env.data_mut().record(&HostError::InvalidInput(format!(
            "gk_malloc returned {ptr}, which cannot hold {len} bytes: {e}"
        ))));
    }
    Ok(abi::pack(ptr, len))
}

fn host_call(
    mut env: FunctionEnvMut<'_, CallEnv>,
    fn_ptr: i32,
    fn_len: i32,
    args_ptr: i32,
    args_len: i32,
) -> Result<i64, RuntimeError> {
    // Read everything out of the guest first; the guest is re-entered only to write the reply.
    let (data, store) = env.data_and_store_mut();
    data.last_error = None;
    let Some(active) = data.active.clone() else {
        return Ok(data.record(&HostError::Unavailable("host_call outside a call".into())));
    };
    if Instant::now() >= active.deadline {
        return Err(RuntimeError::user(Box::new(Stop::Deadline)));
    }
    let Some(memory) = data.memory.clone() else {
        return Ok(data.record(&HostError::Unavailable("the instance is not ready".into())));
    };
    let view = memory.view(&store);
    let max = data.shared.max_payload;
    let request = abi::read_str(
        &view,
        fn_ptr as u32,
        fn_len as u32,
        256,
        "host_call function name",
    )
    .and_then(|name| {
        let args = if args_len == 0 {
            Vec::new()
        } else {
            abi::read(
                &view,
                args_ptr as u32,
                args_len as u32,
                max,
                "host_call arguments",
            )?
        };
        Ok((name, args))
    });
    let (name, args) = match request {
        Ok(request) => request,
        Err(problem) => return Ok(data.record(&HostError::InvalidInput(problem))),
    };
    let Some(host) = data.shared.host.get().cloned() else {
        return Ok(data.record(&HostError::Unavailable(
            "the plugin has not been initialised".into(),
        )));
    };
    let runtime = data.shared.runtime.clone();
    // The timer is created inside the runtime's context: this is a worker thread, not a tokio one.
    let outcome = runtime.block_on(async {
        tokio::time::timeout_at(
            active.deadline.into(),
            dispatch(host.as_ref(), &active.ctx, &name, &args),
        )
        .await
    });
    match outcome {
        Err(_elapsed) => Err(RuntimeError::user(Box::new(Stop::Deadline))),
        Ok(Err(error)) => Ok(env.data_mut().record(&HostError::from(error))),
        Ok(Ok(reply)) if reply.len() > max => {
            Ok(env.data_mut().record(&HostError::InvalidInput(format!(
                "the reply of {name} has {} bytes, more than the {max} a guest may receive",
                reply.len()
            ))))
        }
        Ok(Ok(reply)) => write_to_guest(&mut env, &reply),
    }
}

fn log(
    mut env: FunctionEnvMut<'_, CallEnv>,
    level: i32,
    ptr: i32,
    len: i32,
) -> Result<(), RuntimeError> {
    let (data, store) = env.data_and_store_mut();
    let Some(memory) = data.memory.clone() else {
        return Ok(());
    };
    let message = match abi::read(
        &memory.view(&store),
        ptr as u32,
        len as u32,
        data.shared.max_payload,
        "log message",
    ) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(problem) => format!("(unreadable log message: {problem})"),
    };
    emit(data, LogLevel::from_abi(level), &message);
    Ok(())
}

/// Writes a guest's log line to the plugin's log through the host, or to tracing before init.
pub(crate) fn emit(data: &CallEnv, level: LogLevel, message: &str) {
    match (data.shared.host.get(), &data.active) {
        (Some(host), Some(active)) => {
            let fields = serde_json::Map::new();
            let _ = data
                .shared
                .runtime
                .block_on(host.log(&active.ctx, level, message, &fields));
        }
        _ => tracing::info!(plugin = %data.shared.name(), level = %level, "{message}"),
    }
}

fn host_error(mut env: FunctionEnvMut<'_, CallEnv>) -> Result<i64, RuntimeError> {
    match env.data_mut().last_error.take() {
        Some(detail) => write_to_guest(&mut env, &detail),
        None => Ok(0),
    }
}

fn fail(
    mut env: FunctionEnvMut<'_, CallEnv>,
    code_ptr: i32,
    code_len: i32,
    msg_ptr: i32,
    msg_len: i32,
) -> Result<(), RuntimeError> {
    let (data, store) = env.data_and_store_mut();
    let Some(memory) = data.memory.clone() else {
        return Ok(());
    };
    let view = memory.view(&store);
    let code = abi::read_str(&view, code_ptr as u32, code_len as u32, 256, "error code")
        .unwrap_or_default();
    let message = abi::read_str(
        &view,
        msg_ptr as u32,
        msg_len as u32,
        64 * 1024,
        "error message",
    )
    .unwrap_or_else(|problem| format!("(unreadable error message: {problem})"));
    data.failure = Some((code, message));
    Ok(())
}

fn clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
