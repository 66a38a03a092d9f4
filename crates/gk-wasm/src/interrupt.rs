//! The wall-clock stop of CPU-bound guests (issue #20): a middleware that makes every function
//! entry and every loop header check a flag, and the signal through which a call's caller
//! raises that flag when it stops waiting (at the deadline, or when it goes away).
//!
//! The flag is a global the middleware adds to the module; the host writes it from the
//! caller's thread through its address while the guest runs on a worker thread. Fuel stays as
//! a backstop.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use wasmer::sys::vm::{VMExtern, VMGlobalDefinition};
use wasmer::sys::{FunctionMiddleware, MiddlewareError, MiddlewareReaderState, ModuleMiddleware};
use wasmer::wasmparser::{BlockType, Operator};
use wasmer::{
    AsStoreMut, ExportIndex, Extern, GlobalInit, GlobalType, Instance, LocalFunctionIndex,
    ModuleInfo, Mutability, Type, Value,
};
use wasmer_types::GlobalIndex;

/// The export under which the middleware exposes the flag to the host. Guests may not export
/// a name with this prefix.
pub(crate) const INTERRUPT_EXPORT: &str = "gk_host_interrupt";

/// Adds the flag global and the checks. One instance instruments exactly one module, like
/// wasmer's `Metering`.
#[derive(Debug, Default)]
pub(crate) struct Interrupt {
    flag: Mutex<Option<GlobalIndex>>,
}

impl ModuleMiddleware for Interrupt {
    fn generate_function_middleware<'a>(
        &self,
        _: LocalFunctionIndex,
    ) -> Box<dyn FunctionMiddleware<'a> + 'a> {
        let flag = *self.flag.lock().unwrap_or_else(PoisonError::into_inner);
        Box::new(FunctionInterrupt {
            // `transform_module_info` runs before any function is compiled.
            flag: flag.map_or(u32::MAX, |index| index.as_u32()),
            entered: false,
        })
    }

    fn transform_module_info(&self, info: &mut ModuleInfo) -> Result<(), MiddlewareError> {
        let mut flag = self.flag.lock().unwrap_or_else(PoisonError::into_inner);
        if flag.is_some() {
            return Err(MiddlewareError::new(
                "gk-wasm interrupt",
                "one Interrupt middleware instruments one module",
            ));
        }
        let index = info
            .globals
            .push(GlobalType::new(Type::I32, Mutability::Var));
        info.global_initializers.push(GlobalInit::I32Const(0));
        info.exports
            .insert(INTERRUPT_EXPORT.to_owned(), ExportIndex::Global(index));
        *flag = Some(index);
        Ok(())
    }
}

/// The checks in one function.
#[derive(Debug)]
struct FunctionInterrupt {
    flag: u32,
    entered: bool,
}

impl FunctionInterrupt {
    /// `if (global.get $flag) { unreachable }`
    fn check<'a>(&self, state: &mut MiddlewareReaderState<'a>) {
        state.extend([
            Operator::GlobalGet {
                global_index: self.flag,
            },
            Operator::If {
                blockty: BlockType::Empty,
            },
            Operator::Unreachable,
            Operator::End,
        ]);
    }
}

impl<'a> FunctionMiddleware<'a> for FunctionInterrupt {
    fn feed(
        &mut self,
        operator: Operator<'a>,
        state: &mut MiddlewareReaderState<'a>,
    ) -> Result<(), MiddlewareError> {
        if !self.entered {
            self.entered = true;
            self.check(state);
        }
        let is_loop = matches!(operator, Operator::Loop { .. });
        state.push_operator(operator);
        if is_loop {
            self.check(state);
        }
        Ok(())
    }
}

/// The flag of one instance, used on its worker's thread.
#[derive(Clone)]
pub(crate) struct InterruptFlag {
    global: wasmer::Global,
    address: FlagAddress,
}

impl fmt::Debug for InterruptFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InterruptFlag").finish_non_exhaustive()
    }
}

impl InterruptFlag {
    /// The flag the middleware added to `instance`.
    pub(crate) fn of(store: &mut impl AsStoreMut, instance: &Instance) -> Option<Self> {
        let global = instance.exports.get_global(INTERRUPT_EXPORT).ok()?.clone();
        // The backend is always `sys` here (the only one this crate builds wasmer with).
        let VMExtern::Global(handle) = Extern::Global(global.clone()).to_vm_extern().unwrap_sys()
        else {
            return None;
        };
        let address = FlagAddress(handle.get(store.objects_mut().as_sys()).vmglobal());
        Some(Self { global, address })
    }

    /// Lowers the flag (before a call).
    pub(crate) fn lower(&self, store: &mut impl AsStoreMut) {
        let _ = self.global.set(store, Value::I32(0));
    }

    /// Whether the flag is up (after a trap).
    pub(crate) fn is_raised(&self, store: &mut impl AsStoreMut) -> bool {
        matches!(self.global.get(store), Value::I32(flag) if flag != 0)
    }
}

/// Where a flag lives, for raising it from another thread.
#[derive(Clone, Copy)]
struct FlagAddress(NonNull<VMGlobalDefinition>);

impl fmt::Debug for FlagAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FlagAddress").finish()
    }
}

// SAFETY: the address is only used by `raise`, an atomic store, and only while a `CallSignal`
// has it armed, i.e. while the instance that owns the global runs a call (see `CallSignal`).
unsafe impl Send for FlagAddress {}
// SAFETY: as above: `&FlagAddress` allows nothing but `raise`.
unsafe impl Sync for FlagAddress {}

impl FlagAddress {
    fn raise(self) {
        // SAFETY: `CallSignal` calls this only while the address is armed, so the instance (and
        // the global's storage, which lives as long as it) exists. The storage is a 16-byte
        // aligned raw value whose first four bytes are the i32 the guest reads (little-endian);
        // the store is atomic.
        unsafe {
            AtomicI32::from_ptr(self.0.as_ptr().cast::<i32>()).store(1, Ordering::Relaxed);
        }
    }
}

/// What a call's caller and its worker share: whether the caller stopped waiting, and the flag
/// of the instance running the call while it runs.
#[derive(Debug, Default)]
pub(crate) struct CallSignal {
    abandoned: AtomicBool,
    armed: Mutex<Option<FlagAddress>>,
}

impl CallSignal {
    /// Whether the caller stopped waiting.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// The caller stopped waiting: the guest stops at its next loop header, function entry or
    /// import.
    pub(crate) fn abandon(&self) {
        let armed = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
        self.abandoned.store(true, Ordering::Relaxed);
        if let Some(address) = *armed {
            address.raise();
        }
    }

    /// The worker starts running the call on the instance with `flag` (already lowered); until
    /// the returned guard is dropped the caller may raise it. A call abandoned already is
    /// interrupted at once.
    pub(crate) fn arm(self: &Arc<Self>, flag: &InterruptFlag) -> Armed {
        let mut armed = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_abandoned() {
            flag.address.raise();
        }
        *armed = Some(flag.address);
        Armed(self.clone())
    }
}

/// Disarms the signal when dropped, also when a host function panics: after that nobody writes
/// the flag, and the instance may go.
#[derive(Debug)]
pub(crate) struct Armed(Arc<CallSignal>);

impl Drop for Armed {
    fn drop(&mut self) {
        *self.0.armed.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}
