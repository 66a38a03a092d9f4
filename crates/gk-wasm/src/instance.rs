//! One instance of a plugin's module, with its own store, and the ABI calls made on it.

use std::sync::Arc;
use std::time::Instant;

use gk_sdk::{CallContext, PluginError};
use wasmer::{
    Engine, FunctionEnv, Imports, Instance, Memory, Module, RuntimeError, Store, TypedFunction,
};

use crate::abi::{self, GuestExports};
use crate::guard::{ActiveCall, Budget, Limit, Meter, Stop};
use crate::imports::{self, CallEnv, Shared};
use crate::inline::INLINE_WALL;
use crate::interrupt::{Armed, InterruptFlag};
use crate::{WasmError, wasi};

/// An instantiated module ready to take calls. Not shared between threads at once.
pub(crate) struct GuestInstance {
    store: Store,
    /// The instance itself, kept with its store (what is called is held below as handles).
    _instance: Instance,
    env: FunctionEnv<CallEnv>,
    memory: Memory,
    malloc: TypedFunction<i32, i32>,
    free: Option<TypedFunction<i32, ()>>,
    register: TypedFunction<(), i64>,
    call: TypedFunction<(i32, i32, i32, i32), i64>,
    interrupt: InterruptFlag,
    /// The metering globals: the call's fuel.
    meter: Meter,
    shared: Arc<Shared>,
    /// The memory cap this instance was made under, in pages.
    max_pages: u32,
    /// The generation of the plugin's limits this instance was made under.
    pub(crate) generation: u64,
    /// The limit that stopped the current call, once one did.
    stopped_by: Option<Limit>,
}

/// The outcome of a call, and whether the instance may take more calls.
pub(crate) struct Outcome {
    pub(crate) result: Result<Vec<u8>, PluginError>,
    pub(crate) reusable: bool,
    /// The limit that stopped the call, if one did.
    pub(crate) stopped_by: Option<Limit>,
}

impl Outcome {
    fn new(result: Result<Vec<u8>, PluginError>, reusable: bool) -> Self {
        Self {
            result,
            reusable,
            stopped_by: None,
        }
    }
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
        // Read before the memory is created: a cap changed meanwhile replaces this instance.
        let generation = shared.limits.generation();
        let max_pages = shared.limits.max_pages();
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
        let meter = Meter::of(&instance)
            .ok_or_else(|| WasmError::Instantiate("the module has no metering globals".into()))?;
        let interrupt = InterruptFlag::of(&mut store, &instance)
            .ok_or_else(|| WasmError::Instantiate("the module has no interrupt flag".into()))?;
        let data = env.as_mut(&mut store);
        data.memory = Some(memory.clone());
        data.malloc = Some(malloc.clone());
        data.meter = Some(meter.clone());
        Ok(Self {
            meter,
            store,
            _instance: instance,
            env,
            memory,
            malloc,
            free,
            register,
            call,
            interrupt,
            shared,
            max_pages,
            generation,
            stopped_by: None,
        })
    }

    /// Runs `gk_register` and returns the registration JSON.
    pub(crate) fn register(&mut self, budget: Budget) -> Outcome {
        let ctx = CallContext::for_plugin(self.shared.name());
        let _armed = self.begin(ctx, &budget);
        let result = self.register.call(&mut self.store);
        let mut outcome = match result {
            Err(error) => Outcome::new(Err(self.classify(error, "register", &budget)), false),
            Ok(0) => Outcome::new(
                Err(PluginError::Protocol("gk_register returned 0".into())),
                true,
            ),
            Ok(packed) => self.take_result(packed, "register", &budget),
        };
        self.end(&mut outcome);
        outcome
    }

    /// Runs `gk_call(function, args)`.
    pub(crate) fn call(
        &mut self,
        ctx: CallContext,
        function: &str,
        args: &[u8],
        budget: Budget,
    ) -> Outcome {
        let _armed = self.begin(ctx, &budget);
        let mut outcome = self.call_inner(function, args, &budget);
        self.end(&mut outcome);
        outcome
    }

    /// Runs `gk_call` on the caller's thread (see `inline`). `Err(lasting)` when the call
    /// must run again on a worker (this instance is spent): the guest called an import only a
    /// worker may serve, or used up `budget`'s fuel; `lasting` says whether the function's next
    /// call would move too.
    pub(crate) fn call_inline(
        &mut self,
        ctx: CallContext,
        function: &str,
        args: &[u8],
        budget: &Budget,
    ) -> Result<Outcome, bool> {
        self.env.as_mut(&mut self.store).inline = Some(Instant::now() + INLINE_WALL);
        let outcome = self.call(ctx, function, args, budget.clone());
        self.env.as_mut(&mut self.store).inline = None;
        match &self.env.as_ref(&self.store).stopped {
            Some(Stop::Migrate { why, lasting }) => {
                tracing::trace!(function, why, "an inline call moves to a worker");
                Err(*lasting)
            }
            _ if outcome.stopped_by == Some(Limit::Fuel) => Err(true),
            _ => Ok(outcome),
        }
    }

    fn call_inner(&mut self, function: &str, args: &[u8], budget: &Budget) -> Outcome {
        let name = match self.write(function.as_bytes(), budget) {
            Ok(name) => name,
            Err(error) => return Outcome::new(Err(error), false),
        };
        let arguments = if args.is_empty() {
            (0, 0)
        } else {
            match self.write(args, budget) {
                Ok(arguments) => arguments,
                Err(error) => return Outcome::new(Err(error), false),
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
                return Outcome::new(Err(self.classify(error, "call", budget)), false);
            }
            Ok(0) => Outcome::new(Ok(Vec::new()), true),
            Ok(packed) => self.take_result(packed, "call", budget),
        };
        for ptr in [name.0, arguments.0] {
            self.release(ptr, &mut outcome, "call", budget);
        }
        if outcome.result.is_ok()
            && let Some((code, message)) = self.env.as_mut(&mut self.store).failure.take()
        {
            outcome.result = Err(PluginError::Failed {
                code: Some(code).filter(|c| !c.is_empty()),
                message,
            });
        }
        outcome
    }

    /// Sets the call's fuel and limits; the caller may interrupt the guest until the returned
    /// guard is dropped (after `end`).
    #[must_use]
    fn begin(&mut self, ctx: CallContext, budget: &Budget) -> Armed {
        self.meter.fill(&mut self.store, budget.fuel);
        self.interrupt.lower(&mut self.store);
        let data = self.env.as_mut(&mut self.store);
        data.active = Some(ActiveCall {
            ctx,
            budget: budget.clone(),
        });
        data.last_error = None;
        data.failure = None;
        data.stopped = None;
        data.in_host_call = false;
        data.managing = None;
        self.stopped_by = None;
        budget.signal.arm(&self.interrupt)
    }

    /// Ends the call: the outcome learns which limit stopped it, if one did.
    fn end(&mut self, outcome: &mut Outcome) {
        let data = self.env.as_mut(&mut self.store);
        data.active = None;
        data.last_error = None;
        outcome.stopped_by = self.stopped_by.take().filter(|_| outcome.result.is_err());
    }

    /// Whether the guest's memory has reached the plugin's cap.
    fn at_memory_cap(&self) -> bool {
        self.memory.view(&self.store).size().0 >= self.max_pages
    }

    /// The guest's memory cap, for errors.
    fn memory_cap(&self) -> String {
        format!(
            "{} pages ({} MiB, the plugin's memory_mb)",
            self.max_pages,
            (u64::from(self.max_pages) * crate::limits::WASM_PAGE_BYTES) >> 20
        )
    }

    /// Copies `bytes` into memory from `gk_malloc`.
    fn write(&mut self, bytes: &[u8], budget: &Budget) -> Result<(u32, u32), PluginError> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| PluginError::Protocol("argument larger than 4 GiB".into()))?;
        let allocated = self.managing(
            ("gk_malloc", "to pass the call's input"),
            |store, malloc, _| malloc.call(store, len as i32),
        );
        let ptr = match allocated {
            Ok(ptr) => ptr as u32,
            Err(error) => {
                return Err(match self.stop_reason(&error) {
                    Some(_) => self.classify(error, "call", budget),
                    None => {
                        PluginError::Trap(format!("gk_malloc({len}) trapped: {}", error.message()))
                    }
                });
            }
        };
        if ptr == 0 {
            let pages = self.memory.view(&self.store).size().0;
            if self.at_memory_cap() {
                self.stopped_by = Some(Limit::Memory);
                let detail = format!(
                    "gk_malloc({len}) returned 0 with the guest's memory at its cap of {}",
                    self.memory_cap()
                );
                return Err(Limit::Memory.error(
                    "call",
                    budget.started.elapsed(),
                    budget.timeout,
                    &detail,
                ));
            }
            return Err(PluginError::Protocol(format!(
                "gk_malloc({len}) returned 0 (guest memory: {pages} of at most {} pages, the plugin's memory_mb)",
                self.max_pages
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
        self.managing(
            ("gk_free", "to free a buffer"),
            |store, _, free| match free {
                Some(free) => free.call(store, ptr as i32),
                None => Ok(()),
            },
        )
    }

    /// Runs one of the guest's memory exports for the host; while it runs, imports that would
    /// re-enter the guest are refused.
    fn managing<T>(
        &mut self,
        export: (&'static str, &'static str),
        run: impl FnOnce(
            &mut Store,
            &TypedFunction<i32, i32>,
            Option<&TypedFunction<i32, ()>>,
        ) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        self.env.as_mut(&mut self.store).managing = Some(export);
        let result = run(&mut self.store, &self.malloc, self.free.as_ref());
        self.env.as_mut(&mut self.store).managing = None;
        result
    }

    /// The reason an import gave for stopping the call, if one did.
    fn stop_reason(&self, error: &RuntimeError) -> Option<Stop> {
        self.env
            .as_ref(&self.store)
            .stopped
            .clone()
            .or_else(|| error.downcast_ref::<Stop>().cloned())
    }

    /// Frees `ptr` (0: nothing) with `gk_free`. If that traps the instance is not reused, and
    /// if an import stopped it (re-entry, deadline, fuel) the call fails with that reason.
    fn release(&mut self, ptr: u32, outcome: &mut Outcome, operation: &str, budget: &Budget) {
        if ptr == 0 {
            return;
        }
        if let Err(error) = self.free(ptr) {
            outcome.reusable = false;
            if self.stop_reason(&error).is_some() {
                outcome.result = Err(self.classify(error, operation, budget));
            }
        }
    }

    /// Reads a packed result and frees it.
    fn take_result(&mut self, packed: i64, operation: &str, budget: &Budget) -> Outcome {
        let (ptr, len) = abi::unpack(packed);
        let read = abi::read(
            &self.memory.view(&self.store),
            ptr,
            len,
            self.shared.max_payload,
            "the result",
        );
        match read {
            Err(problem) => Outcome::new(Err(PluginError::Protocol(problem)), false),
            Ok(bytes) => {
                let mut outcome = Outcome::new(Ok(bytes), true);
                self.release(ptr, &mut outcome, operation, budget);
                outcome
            }
        }
    }

    /// Turns a trap into the error the caller sees, naming the limit that stopped the call
    /// (and noting it for the outcome): the deadline (an import saw it pass, or the caller raised
    /// the interrupt flag), the fuel, or the memory cap (the guest trapped with its memory at
    /// the cap, as a guest whose allocation failed does).
    fn classify(&mut self, error: RuntimeError, operation: &str, budget: &Budget) -> PluginError {
        let stop = self.stop_reason(&error).or_else(|| {
            // The caller raised the interrupt flag: at the deadline, or when it went away.
            self.interrupt
                .is_raised(&mut self.store)
                .then(|| budget.stop().unwrap_or(Stop::Abandoned))
        });
        let limit = match stop {
            Some(Stop::Deadline | Stop::Abandoned) => Limit::Deadline,
            Some(Stop::Fuel) => Limit::Fuel,
            Some(stop @ (Stop::Reentry { .. } | Stop::OutsideCall(_) | Stop::Migrate { .. })) => {
                return PluginError::Protocol(stop.to_string());
            }
            Some(Stop::ProcExit(code)) => {
                return PluginError::Failed {
                    code: None,
                    message: format!("the guest called proc_exit({code})"),
                };
            }
            None if self.meter.is_exhausted(&mut self.store) => Limit::Fuel,
            None if self.at_memory_cap() => Limit::Memory,
            None => return PluginError::Trap(error.message()),
        };
        self.stopped_by = Some(limit);
        let detail = format!(
            "the guest trapped ({}) with its memory at its cap of {}",
            error.message(),
            self.memory_cap()
        );
        limit.error(operation, budget.started.elapsed(), budget.timeout, &detail)
    }
}
