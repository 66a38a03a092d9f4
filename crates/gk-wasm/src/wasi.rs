//! A minimal, safe `wasi_snapshot_preview1` for guests built by TinyGo's `wasi` target.
//!
//! `fd_write` to stdout and stderr goes to the plugin's log (info and warn), `clock_time_get`
//! and `random_get` work, `proc_exit` ends the call with an error, `args_*` and `environ_*` are
//! empty. Every other function answers `EBADF` (`fd_*`) or `ENOSYS`: there is no filesystem,
//! no socket and no environment.

use std::time::{SystemTime, UNIX_EPOCH};

use gk_sdk::LogLevel;
use ring::rand::{SecureRandom, SystemRandom};
use wasmer::{
    ExternType, Function, FunctionEnv, FunctionEnvMut, Imports, Module, RuntimeError, Store, Type,
    Value,
};

use crate::abi::WASI_MODULE;
use crate::guard::{self, BYTES_PER_POINT, Stop};
use crate::imports::{CallEnv, emit};

const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;

/// The most bytes one `fd_write` or `random_get` handles.
const MAX_IO_BYTES: u32 = 1 << 20;

/// Defines a function for every WASI import of `module`, with exactly the type it imports.
pub(crate) fn define(
    store: &mut Store,
    env: &FunctionEnv<CallEnv>,
    module: &Module,
    imports: &mut Imports,
) {
    for import in module.imports() {
        let (WASI_MODULE, ExternType::Function(ty)) = (import.module(), import.ty()) else {
            continue;
        };
        let name = import.name().to_owned();
        let returns_errno = ty.results() == [Type::I32];
        let function = Function::new_with_env(store, env, ty.clone(), move |mut env, args| {
            let errno = call(&name, &mut env, args)?;
            Ok(if returns_errno {
                vec![Value::I32(errno)]
            } else {
                Vec::new()
            })
        });
        imports.define(WASI_MODULE, import.name(), function);
    }
}

fn arg(args: &[Value], index: usize) -> i32 {
    match args.get(index) {
        Some(Value::I32(v)) => *v,
        _ => 0,
    }
}

fn call(
    name: &str,
    env: &mut FunctionEnvMut<'_, CallEnv>,
    args: &[Value],
) -> Result<i32, RuntimeError> {
    guard::enter(env, name, 0)?;
    Ok(match name {
        "fd_write" => fd_write(
            env,
            arg(args, 0),
            arg(args, 1) as u32,
            arg(args, 2) as u32,
            arg(args, 3) as u32,
        )?,
        "clock_time_get" => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            write_bytes(env, arg(args, 2) as u32, &nanos.to_le_bytes())
        }
        "random_get" => random_get(env, arg(args, 0) as u32, arg(args, 1) as u32)?,
        "proc_exit" => return Err(guard::halt(env, Stop::ProcExit(arg(args, 0)))),
        "args_sizes_get" | "environ_sizes_get" => {
            let first = write_bytes(env, arg(args, 0) as u32, &0u32.to_le_bytes());
            if first != ESUCCESS {
                first
            } else {
                write_bytes(env, arg(args, 1) as u32, &0u32.to_le_bytes())
            }
        }
        "args_get" | "environ_get" | "sched_yield" => ESUCCESS,
        other if other.starts_with("fd_") => EBADF,
        _ => ENOSYS,
    })
}

fn write_bytes(env: &mut FunctionEnvMut<'_, CallEnv>, ptr: u32, bytes: &[u8]) -> i32 {
    let (data, store) = env.data_and_store_mut();
    let Some(memory) = data.memory.clone() else {
        return EFAULT;
    };
    match memory.view(&store).write(u64::from(ptr), bytes) {
        Ok(()) => ESUCCESS,
        Err(_) => EFAULT,
    }
}

fn fd_write(
    env: &mut FunctionEnvMut<'_, CallEnv>,
    fd: i32,
    iovs: u32,
    iovs_len: u32,
    nwritten: u32,
) -> Result<i32, RuntimeError> {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Warn,
        _ => return Ok(EBADF),
    };
    let text = match gather(env, iovs, iovs_len) {
        Ok(text) => text,
        Err(errno) => return Ok(errno),
    };
    guard::charge(env, text.len() as u64 / BYTES_PER_POINT)?;
    let stopped = {
        let data = env.data();
        String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .find_map(|line| emit(data, level, line).err())
    };
    if let Some(stop) = stopped {
        return Err(guard::halt(env, stop));
    }
    Ok(write_bytes(
        env,
        nwritten,
        &(text.len() as u32).to_le_bytes(),
    ))
}

/// The bytes of `iovs_len` iovecs at `iovs`, at most [`MAX_IO_BYTES`] in all (checked before
/// anything is copied).
fn gather(env: &mut FunctionEnvMut<'_, CallEnv>, iovs: u32, iovs_len: u32) -> Result<Vec<u8>, i32> {
    let (data, store) = env.data_and_store_mut();
    let Some(memory) = data.memory.clone() else {
        return Err(EFAULT);
    };
    let view = memory.view(&store);
    let mut text = Vec::new();
    for i in 0..iovs_len.min(1024) {
        let mut iov = [0u8; 8];
        if view
            .read(u64::from(iovs) + u64::from(i) * 8, &mut iov)
            .is_err()
        {
            return Err(EFAULT);
        }
        let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        if text.len() as u64 + u64::from(len) > u64::from(MAX_IO_BYTES) {
            return Err(EINVAL);
        }
        let start = text.len();
        text.resize(start + len as usize, 0);
        if view.read(u64::from(ptr), &mut text[start..]).is_err() {
            return Err(EFAULT);
        }
    }
    Ok(text)
}

fn random_get(
    env: &mut FunctionEnvMut<'_, CallEnv>,
    ptr: u32,
    len: u32,
) -> Result<i32, RuntimeError> {
    if len > MAX_IO_BYTES {
        return Ok(EINVAL);
    }
    guard::charge(env, u64::from(len) / BYTES_PER_POINT)?;
    let mut bytes = vec![0; len as usize];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return Ok(ENOSYS);
    }
    Ok(write_bytes(env, ptr, &bytes))
}
