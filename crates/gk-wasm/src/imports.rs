//! The host side of module `gk`: `host_call` and `log` (ABI v1), and the extensions
//! `host_error`, `fail` and `clock_ms`.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use gk_sdk::{HostApi, HostCallName, HostError, LogLevel};
use serde_json::json;
use wasmer::{
    Function, FunctionEnv, FunctionEnvMut, Imports, Memory, RuntimeError, Store, TypedFunction,
};

use crate::abi::{self, HOST_MODULE};
use crate::guard::{self, ActiveCall, BYTES_PER_POINT, Meter, Stop};
use crate::host_calls::{DispatchError, dispatch};
use crate::limits::LiveLimits;

/// The longest log line a guest may write in one `log` call.
pub(crate) const MAX_LOG_BYTES: usize = 64 * 1024;

/// The longest function name a guest may pass to `host_call`.
const MAX_HOST_FUNCTION_NAME: usize = 256;

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
    /// The plugin's limits as they are now (a policy change applies to the next call).
    pub(crate) limits: LiveLimits,
}

impl Shared {
    pub(crate) fn name(&self) -> &str {
        self.name.get().map_or("(registering)", String::as_str)
    }
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
    /// The instance's metering globals, to charge host time.
    pub(crate) meter: Option<Meter>,
    /// Why an import stopped this call; every later import traps with it.
    pub(crate) stopped: Option<Stop>,
    /// A `host_call` is being served.
    pub(crate) in_host_call: bool,
    /// The guest export the host is running to manage guest memory (`gk_malloc`, `gk_free`),
    /// and what for.
    pub(crate) managing: Option<(&'static str, &'static str)>,
    /// The call runs on its caller's thread (see `inline`) until this time at most: imports
    /// with an effect stop it with `Stop::Migrate`, and a host call is tried inline or moves it.
    pub(crate) inline: Option<std::time::Instant>,
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
            meter: None,
            stopped: None,
            in_host_call: false,
            managing: None,
            inline: None,
        }
    }

    /// The call's deadline, for host work that may block.
    fn deadline(&self) -> Option<std::time::Instant> {
        self.active.as_ref().map(|a| a.budget.deadline)
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
        Function::new_typed_with_env(store, env, clock_ms),
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
    guard::charge(env, u64::from(len) / BYTES_PER_POINT)?;
    // An empty reply still gets a (non-zero) buffer, since a packed 0 means failure. The guest's
    // gk_malloc may not call back into the host for another reply (re-entry is refused).
    let outer = env
        .data_mut()
        .managing
        .replace(("gk_malloc", "to place a host reply"));
    let allocated = malloc.call(env, len.max(1) as i32);
    env.data_mut().managing = outer;
    let ptr = allocated? as u32;
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
    let declared = u64::from(fn_len as u32) + u64::from(args_len as u32);
    guard::enter(&mut env, "host_call", declared)?;
    guard::refuse_reentry(&mut env, "host_call")?;
    env.data_mut().in_host_call = true;
    let result = serve_host_call(&mut env, fn_ptr, fn_len, args_ptr, args_len);
    env.data_mut().in_host_call = false;
    result
}

fn serve_host_call(
    env: &mut FunctionEnvMut<'_, CallEnv>,
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
    let Some(memory) = data.memory.clone() else {
        return Ok(data.record(&HostError::Unavailable("the instance is not ready".into())));
    };
    let view = memory.view(&store);
    let max = data.shared.max_payload;
    let request = abi::read_str(
        &view,
        fn_ptr as u32,
        fn_len as u32,
        MAX_HOST_FUNCTION_NAME,
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
    if let Some(until) = data.inline {
        let reply = match try_inline(host.as_ref(), &runtime, &active, until, &name, &args) {
            Ok(reply) => reply,
            Err(stop) => return Err(guard::halt(env, stop)),
        };
        return finish_host_call(env, &name, reply, max);
    }
    // The timer is created inside the runtime's context: this is a worker thread, not a tokio one.
    let outcome = runtime.block_on(async {
        tokio::time::timeout_at(
            active.budget.deadline.into(),
            dispatch(host.as_ref(), &active.ctx, &name, &args),
        )
        .await
    });
    match outcome {
        Err(_elapsed) => Err(guard::halt(env, Stop::Deadline)),
        Ok(reply) => finish_host_call(env, &name, reply, max),
    }
}

/// Hands the guest the host's reply (or records its error for `host_error`).
fn finish_host_call(
    env: &mut FunctionEnvMut<'_, CallEnv>,
    name: &str,
    reply: Result<Vec<u8>, DispatchError>,
    max: usize,
) -> Result<i64, RuntimeError> {
    match reply {
        Err(error) => Ok(env.data_mut().record(&HostError::from(error))),
        Ok(reply) if reply.len() > max => {
            Ok(env.data_mut().record(&HostError::InvalidInput(format!(
                "the reply of {name} has {} bytes, more than the {max} a guest may receive",
                reply.len()
            ))))
        }
        Ok(reply) => write_to_guest(env, &reply),
    }
}

/// A host call of a call running on its caller's thread (see `inline`), which must not wait
/// and must be over by `until`: the host's future is polled once as an inline attempt
/// (`gk_sdk::inline`, answered by `until`) if the host takes such attempts of this function.
/// Its answer, or the stop that moves the call to a worker when the host does not take them,
/// refused, or did not answer at once (its future is dropped; a host that takes attempts did
/// nothing visible), or `until` has passed.
fn try_inline(
    host: &dyn HostApi,
    runtime: &tokio::runtime::Handle,
    active: &ActiveCall,
    until: std::time::Instant,
    name: &str,
    args: &[u8],
) -> Result<Result<Vec<u8>, DispatchError>, Stop> {
    let moved = |why: String, lasting: bool| Stop::Migrate { why, lasting };
    let function = name.parse::<HostCallName>().ok();
    if !function.is_some_and(|function| host.answers_inline(function)) {
        return Err(moved(
            format!("the host does not answer `{name}` inline"),
            true,
        ));
    }
    if std::time::Instant::now() >= until {
        return Err(moved(
            format!("its time on the caller's thread was over before `{name}`"),
            false,
        ));
    }
    // Timers the host creates need the runtime's context (this thread may be any caller's).
    let _runtime = runtime.enter();
    let mut call = std::pin::pin!(dispatch(host, &active.ctx, name, args));
    let mut context = Context::from_waker(Waker::noop());
    let (polled, refusal) = gk_sdk::inline::attempt(until, || call.as_mut().poll(&mut context));
    match (polled, refusal) {
        (_, Some(refusal)) => Err(moved(
            format!("the host refused `{name}` inline: {}", refusal.reason),
            refusal.lasting,
        )),
        (Poll::Ready(reply), None) => Ok(reply),
        (Poll::Pending, None) => {
            // A host that takes attempts refuses instead of waiting: say so, without holding
            // it against the function.
            tracing::warn!(
                function = name,
                "the host neither answered nor refused an inline host call"
            );
            Err(moved(
                format!("the host did not answer `{name}` at once"),
                false,
            ))
        }
    }
}

fn log(
    mut env: FunctionEnvMut<'_, CallEnv>,
    level: i32,
    ptr: i32,
    len: i32,
) -> Result<(), RuntimeError> {
    // Charged for what it may copy (at most the cap), not for a length the guest made up.
    let declared = u64::from(len as u32).min(MAX_LOG_BYTES as u64);
    guard::enter(&mut env, "log", declared)?;
    let (data, store) = env.data_and_store_mut();
    let Some(memory) = data.memory.clone() else {
        return Ok(());
    };
    let message = match abi::read(
        &memory.view(&store),
        ptr as u32,
        len as u32,
        MAX_LOG_BYTES,
        "log message",
    ) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(problem) => format!("(unreadable log message: {problem})"),
    };
    emit(data, LogLevel::from_abi(level), &message).map_err(|stop| guard::halt(&mut env, stop))
}

/// Writes a guest's log line to the plugin's log through the host, or to tracing before init.
/// The host's log may take until the call's deadline, no longer.
pub(crate) fn emit(data: &CallEnv, level: LogLevel, message: &str) -> Result<(), Stop> {
    match (data.shared.host.get(), &data.active, data.deadline()) {
        (Some(host), Some(active), Some(deadline)) => {
            let fields = serde_json::Map::new();
            let logged = data.shared.runtime.block_on(async {
                tokio::time::timeout_at(
                    deadline.into(),
                    host.log(&active.ctx, level, message, &fields),
                )
                .await
            });
            match logged {
                Err(_elapsed) => return Err(Stop::Deadline),
                Ok(Err(error)) => {
                    tracing::debug!(plugin = %data.shared.name(), %error, "the host refused a log line")
                }
                Ok(Ok(())) => {}
            }
        }
        _ => tracing::info!(plugin = %data.shared.name(), level = %level, "{message}"),
    }
    Ok(())
}

fn host_error(mut env: FunctionEnvMut<'_, CallEnv>) -> Result<i64, RuntimeError> {
    guard::enter(&mut env, "host_error", 0)?;
    guard::refuse_reentry(&mut env, "host_error")?;
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
    let declared = u64::from(code_len as u32).min(256) + u64::from(msg_len as u32).min(64 * 1024);
    guard::enter(&mut env, "fail", declared)?;
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

fn clock_ms(mut env: FunctionEnvMut<'_, CallEnv>) -> Result<i64, RuntimeError> {
    guard::enter(&mut env, "clock_ms", 0)?;
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64))
}
