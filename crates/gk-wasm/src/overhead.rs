//! What the deadline machinery costs one ordinary call, measured for `cargo bench -p gk-wasm`:
//! the checks the interrupt middleware adds to guest code (one per function entry and loop
//! header), and the host's side (arming the call's signal, lowering the flag, disarming).
//! Not part of the API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmer::sys::{CompilerConfig, Cranelift, EngineBuilder};
use wasmer::{Engine, Imports, Instance, Memory, Module, Store, TypedFunction};
use wasmer_middlewares::Metering;
use wasmer_middlewares::metering::set_remaining_points;

use crate::WasmError;
use crate::guard::Budget;
use crate::interrupt::{Interrupt, InterruptFlag};
use crate::screen;

/// An ordinary call's guest: `gk_call` echoes its argument into a buffer from `gk_malloc`.
const ECHO: &str = r#"(module
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 8192))
  (func $malloc (export "gk_malloc") (param $size i32) (result i32)
    (local $p i32)
    (if (i32.gt_u (i32.add (global.get $heap) (local.get $size)) (i32.const 65536))
      (then (global.set $heap (i32.const 8192))))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
  (func (export "gk_call") (param $fp i32) (param $fl i32) (param $ap i32) (param $al i32) (result i64)
    (local $out i32)
    (local.set $out (call $malloc (local.get $al)))
    (memory.copy (local.get $out) (local.get $ap) (local.get $al))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
            (i64.extend_i32_u (local.get $al)))))"#;

/// What the deadline machinery costs one call.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct InterruptOverhead {
    /// An ordinary call's guest code (two `gk_malloc`, one `gk_call`) with the checks.
    pub guest_with_checks: Duration,
    /// The same without them.
    pub guest_without_checks: Duration,
    /// The host's side: a budget with its signal, arming it, lowering the flag, disarming.
    pub host: Duration,
}

impl InterruptOverhead {
    /// What the checks add to a call: the guest's difference plus the host's side.
    pub fn per_call(&self) -> Duration {
        self.guest_with_checks
            .saturating_sub(self.guest_without_checks)
            + self.host
    }
}

fn engine(checks: bool) -> Engine {
    let mut compiler = Cranelift::default();
    compiler.push_middleware(Arc::new(Metering::new(u64::MAX, crate::runtime::cost)));
    if checks {
        compiler.push_middleware(Arc::new(Interrupt::default()));
    }
    EngineBuilder::new(compiler)
        .set_features(Some(screen::engine_features()))
        .into()
}

struct Echo {
    store: Store,
    instance: Instance,
    memory: Memory,
    malloc: TypedFunction<i32, i32>,
    call: TypedFunction<(i32, i32, i32, i32), i64>,
}

impl Echo {
    fn new(checks: bool) -> Result<Self, WasmError> {
        let engine = engine(checks);
        let module = Module::new(&engine, ECHO).map_err(|e| WasmError::Compile(e.to_string()))?;
        let mut store = Store::new(engine);
        let instance = Instance::new(&mut store, &module, &Imports::new())
            .map_err(|e| WasmError::Instantiate(e.to_string()))?;
        let export = |e: wasmer::ExportError| WasmError::Instantiate(e.to_string());
        let memory = instance
            .exports
            .get_memory("memory")
            .map_err(export)?
            .clone();
        let malloc = instance
            .exports
            .get_typed_function(&store, "gk_malloc")
            .map_err(export)?;
        let call = instance
            .exports
            .get_typed_function(&store, "gk_call")
            .map_err(export)?;
        Ok(Self {
            store,
            instance,
            memory,
            malloc,
            call,
        })
    }

    /// One call as the host makes it: name and argument in, the result out.
    fn call(&mut self, function: &[u8], args: &[u8]) -> Result<(), WasmError> {
        let fail = |e: wasmer::RuntimeError| WasmError::Instantiate(e.message());
        set_remaining_points(&mut self.store, &self.instance, u64::MAX / 2);
        let mut passed = [(0, 0); 2];
        for (slot, bytes) in passed.iter_mut().zip([function, args]) {
            let len = bytes.len() as i32;
            let ptr = self.malloc.call(&mut self.store, len).map_err(fail)?;
            self.memory
                .view(&self.store)
                .write(u64::from(ptr as u32), bytes)
                .map_err(|e| WasmError::Instantiate(e.to_string()))?;
            *slot = (ptr, len);
        }
        let [(fp, fl), (ap, al)] = passed;
        let packed = self
            .call
            .call(&mut self.store, fp, fl, ap, al)
            .map_err(fail)?;
        let mut out = vec![0; (packed & 0xffff_ffff) as usize];
        self.memory
            .view(&self.store)
            .read((packed as u64) >> 32, &mut out)
            .map_err(|e| WasmError::Instantiate(e.to_string()))?;
        Ok(())
    }
}

/// The fastest of five rounds of `iterations` runs of `op`, per run.
fn fastest(
    iterations: u32,
    mut op: impl FnMut() -> Result<(), WasmError>,
) -> Result<Duration, WasmError> {
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..iterations {
            op()?;
        }
        best = best.min(start.elapsed() / iterations.max(1));
    }
    Ok(best)
}

/// Measures what the deadline machinery costs an ordinary call (`iterations` calls per round,
/// the fastest of five rounds).
#[doc(hidden)]
pub fn interrupt_overhead(iterations: u32) -> Result<InterruptOverhead, WasmError> {
    let (function, args) = (b"echo".as_slice(), br#"{"id":42}"#.as_slice());
    let mut with = Echo::new(true)?;
    let mut without = Echo::new(false)?;
    // Alternated, so that a busy moment of the machine hits both alike.
    let (mut guest_with_checks, mut guest_without_checks) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        let time = fastest(iterations, || with.call(function, args))?;
        guest_with_checks = guest_with_checks.min(time);
        let time = fastest(iterations, || without.call(function, args))?;
        guest_without_checks = guest_without_checks.min(time);
    }
    let flag = InterruptFlag::of(&mut with.store, &with.instance)
        .ok_or_else(|| WasmError::Instantiate("no interrupt flag".into()))?;
    let host = fastest(iterations, || {
        let budget = Budget::new(1, Duration::from_secs(30));
        let abandon = budget.abandon_on_drop();
        flag.lower(&mut with.store);
        let armed = budget.signal.arm(&flag);
        drop(armed);
        drop(abandon);
        Ok(())
    })?;
    Ok(InterruptOverhead {
        guest_with_checks,
        guest_without_checks,
        host,
    })
}
