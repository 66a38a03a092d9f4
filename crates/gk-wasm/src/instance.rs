//! One instance of a plugin's module, with its own store, and the ABI calls made on it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gk_sdk::{CallContext, PluginError};
use wasmer::{
    Engine, FunctionEnv, Imports, Instance, Memory, Module, RuntimeError, Store, TypedFunction,
};
use wasmer_middlewares::metering::{MeteringPoints, get_remaining_points, set_remaining_points};

use crate::abi::{self, GuestExports};
use crate::imports::{self, ActiveCall, CallEnv, Shared, Stop};
use crate::{WasmError, wasi};

/// An instantiated module ready to take calls. Not shared between threads at once.
pub(crate) struct GuestInstance {
    store: Store,
    instance: Instance,
    env: FunctionEnv<CallEnv>,
    memory: Memory,
    malloc: TypedFunction<i32, i32>,
    free: Option<TypedFunction<i32, ()>>,
    register: TypedFunction<(), i64>,
    call: TypedFunction<(i32, i32, i32, i32), i64>,
    shared: Arc<Shared>,
}

/// The outcome of a call, and whether the instance may take more calls.
pub(crate) struct Outcome {
    pub(crate) result: Result<Vec<u8>, PluginError>,
    pub(crate) reusable: bool,
}

fn export_error(error: impl std::fmt::Display) -> WasmError {
    WasmError::Instantiate(error.to_string())
}

impl GuestInstance {
    /// Instantiates `module` (running its start function, if any, within the engine's initial
    /// fuel).
    pub(crate) fn new(
        engine: &Engine,
        module: &Module,
        exports: GuestExports,
        shared: Arc<Shared>,
    ) -> Result<Self, WasmError> {
        let mut store = Store::new(engine.clone());
        let env = FunctionEnv::new(&mut store, CallEnv::new(shared.clone()));
        let mut imports = Imports::new();
        imports::define(&mut store, &env, &mut imports);
        wasi::define(&mut store, &env, module, &mut imports);
        let instance = Instance::new(&mut store, module, &imports)
            .map_err(|e| WasmError::Instantiate(e.to_string()))?;
        let memory = instance
            .exports
            .get_memory("memory")
            .map_err(export_error)?
            .clone();
        let malloc = instance
            .exports
            .get_typed_function(&store, "gk_malloc")
            .map_err(export_error)?;
        let free = if exports.has_free {
            Some(
                instance
                    .exports
                    .get_typed_function(&store, "gk_free")
                    .map_err(export_error)?,
            )
        } else {
            None
        };
        let register = instance
            .exports
            .get_typed_function(&store, "gk_register")
            .map_err(export_error)?;
        let call = instance
            .exports
            .get_typed_function(&store, "gk_call")
            .map_err(export_error)?;
        let data = env.as_mut(&mut store);
        data.memory = Some(memory.clone());
        data.malloc = Some(malloc.clone());
        Ok(Self {
            store,
            instance,
            env,
            memory,
            malloc,
            free,
            register,
            call,
            shared,
        })
    }

    /// Runs `gk_register` and returns the registration JSON.
    pub(crate) fn register(&mut self, fuel: u64, deadline: Instant, budget: Duration) -> Outcome {
        let ctx = CallContext::for_plugin(self.shared.name());
        self.begin(ctx, fuel, deadline);
        let result = self.register.call(&mut self.store);
        let outcome = match result {
            Err(error) => Outcome {
                result: Err(self.classify(error, "register", budget)),
                reusable: false,
            },
            Ok(0) => Outcome {
                result: Err(PluginError::Protocol("gk_register returned 0".into())),
                reusable: true,
            },
            Ok(packed) => self.take_result(packed),
        };
        self.end();
        outcome
    }

    /// Runs `gk_call(function, args)`.
    pub(crate) fn call(
        &mut self,
        ctx: CallContext,
        function: &str,
        args: &[u8],
        fuel: u64,
        deadline: Instant,
        budget: Duration,
    ) -> Outcome {
        self.begin(ctx, fuel, deadline);
        let outcome = self.call_inner(function, args, budget);
        self.end();
        outcome
    }

    fn call_inner(&mut self, function: &str, args: &[u8], budget: Duration) -> Outcome {
        let name = match self.write(function.as_bytes()) {
            Ok(name) => name,
            Err(error) => {
                return Outcome {
                    result: Err(error),
                    reusable: false,
                };
            }
        };
        let arguments = if args.is_empty() {
            (0, 0)
        } else {
            match self.write(args) {
                Ok(arguments) => arguments,
                Err(error) => {
                    return Outcome {
                        result: Err(error),
                        reusable: false,
                    };
                }
            }
        };
        let result = self.call.call(
            &mut self.store,
            name.0 as i32,
            name.1 as i32,
            arguments.0 as i32,
            arguments.1 as i32,
        );
        let mut outcome = match result {
            Err(error) => {
                return Outcome {
                    result: Err(self.classify(error, "call", budget)),
                    reusable: false,
                };
            }
            Ok(0) => Outcome {
                result: Ok(Vec::new()),
                reusable: true,
            },
            Ok(packed) => self.take_result(packed),
        };
        for ptr in [name.0, arguments.0] {
            if ptr != 0 && self.free(ptr).is_err() {
                outcome.reusable = false;
            }
        }
        if let Some((code, message)) = self.env.as_mut(&mut self.store).failure.take() {
            outcome.result = Err(PluginError::Failed {
                code: Some(code).filter(|c| !c.is_empty()),
                message,
            });
        }
        outcome
    }

    fn begin(&mut self, ctx: CallContext, fuel: u64, deadline: Instant) {
        set_remaining_points(&mut self.store, &self.instance, fuel);
        let data = self.env.as_mut(&mut self.store);
        data.active = Some(ActiveCall { ctx, deadline });
        data.last_error = None;
        data.failure = None;
    }

    fn end(&mut self) {
        let data = self.env.as_mut(&mut self.store);
        data.active = None;
        data.last_error = None;
    }

    /// Copies `bytes` into memory from `gk_malloc`.
    fn write(&mut self, bytes: &[u8]) -> Result<(u32, u32), PluginError> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| PluginError::Protocol("argument larger than 4 GiB".into()))?;
        let ptr =
            self.malloc.call(&mut self.store, len as i32).map_err(|e| {
                PluginError::Trap(format!("gk_malloc({len}) trapped: {}", e.message()))
            })? as u32;
        if ptr == 0 {
            return Err(PluginError::Protocol(format!(
                "gk_malloc({len}) returned 0"
            )));
        }
        self.memory
            .view(&self.store)
            .write(u64::from(ptr), bytes)
            .map_err(|e| {
                PluginError::Protocol(format!(
                    "gk_malloc({len}) returned {ptr}, outside guest memory: {e}"
                ))
            })?;
        Ok((ptr, len))
    }

    fn free(&mut self, ptr: u32) -> Result<(), RuntimeError> {
        match &self.free {
            Some(free) => free.call(&mut self.store, ptr as i32),
            None => Ok(()),
        }
    }

    /// Reads a packed result and frees it.
    fn take_result(&mut self, packed: i64) -> Outcome {
        let (ptr, len) = abi::unpack(packed);
        let read = abi::read(
            &self.memory.view(&self.store),
            ptr,
            len,
            self.shared.max_payload,
            "the result",
        );
        match read {
            Err(problem) => Outcome {
                result: Err(PluginError::Protocol(problem)),
                reusable: false,
            },
            Ok(bytes) => {
                let reusable = ptr == 0 || self.free(ptr).is_ok();
                Outcome {
                    result: Ok(bytes),
                    reusable,
                }
            }
        }
    }

    /// Turns a trap into the error the caller sees.
    fn classify(&mut self, error: RuntimeError, operation: &str, budget: Duration) -> PluginError {
        let timeout = || PluginError::Timeout {
            operation: operation.to_owned(),
            after: budget,
        };
        match error.downcast_ref::<Stop>() {
            Some(Stop::Deadline) => return timeout(),
            Some(Stop::ProcExit(code)) => {
                return PluginError::Failed {
                    code: None,
                    message: format!("the guest called proc_exit({code})"),
                };
            }
            None => {}
        }
        if matches!(
            get_remaining_points(&mut self.store, &self.instance),
            MeteringPoints::Exhausted
        ) {
            return timeout();
        }
        PluginError::Trap(error.message())
    }
}
