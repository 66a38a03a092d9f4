//! [`WasmRuntime`]: the engine, the compiled-module cache, fuel calibration, and loading.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use gk_sdk::{GkRegistration, PluginError};
use wasmer::sys::{CompilerConfig, Cranelift, EngineBuilder, NativeEngineExt};
use wasmer::wasmparser::Operator;
use wasmer::{Engine, Imports, Instance, Module, Store};
use wasmer_middlewares::Metering;
use wasmer_middlewares::metering::set_remaining_points;

use crate::abi;
use crate::guard::{Budget, Limit, StopCounters};
use crate::imports::Shared;
use crate::interrupt::Interrupt;
use crate::limits::{FuelRate, LiveLimits};
use crate::plugin::{PluginInner, Work};
use crate::pool::{Pool, Worker};
use crate::screen;
use crate::{WasmError, WasmLimits, WasmPlugin};
use tokio::sync::oneshot;

/// The default largest argument, result or host reply (16 MiB).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 16 << 20;

/// Fuel a module's start function may burn at instantiation, before any budget is set.
const INSTANTIATION_POINTS: u64 = 500_000_000;

/// Part of the compiled-module cache key: changes when the metering or the ABI handling changes
/// what gets compiled.
const COMPILE_TAG: &str = "gk-abi1-meter2-features1-interrupt1";

/// Two loops to measure the fuel rate: an empty one (`spin`), and one of straight-line
/// arithmetic on locals (`dense`), which burns points several times faster; the rate is the
/// faster of the two, so that real code does not outrun its fuel before its deadline.
const CALIBRATION_MODULE: &str = r#"(module
  (func (export "spin") (loop $l (br $l)))
  (func (export "dense") (local $a i32) (local $b i32) (local $c i32)
    (loop $l
      (local.set $a (i32.add (local.get $a) (i32.const 1)))
      (local.set $b (i32.xor (local.get $b) (local.get $a)))
      (local.set $c (i32.add (local.get $c) (local.get $b)))
      (local.set $a (i32.sub (local.get $a) (local.get $c)))
      (local.set $b (i32.or (local.get $b) (i32.const 3)))
      (local.set $c (i32.xor (local.get $c) (local.get $a)))
      (local.set $a (i32.add (local.get $a) (local.get $b)))
      (local.set $b (i32.and (local.get $b) (local.get $c)))
      (br $l))))"#;

/// Settings of the WASM runtime.
#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// Instances per plugin, i.e. calls of one plugin that run at once. Default: the number of
    /// cores.
    pub pool_size: usize,
    /// Where compiled modules are kept across restarts (`None`: in memory only).
    pub cache_dir: Option<PathBuf>,
    /// Largest argument, result or host reply that crosses the boundary.
    pub max_payload_bytes: usize,
    /// Metering points per second of guest time; `None` measures it when the runtime starts.
    pub points_per_second: Option<u64>,
}

impl Default for WasmConfig {
    fn default() -> Self {
        Self {
            pool_size: std::thread::available_parallelism().map_or(2, usize::from),
            cache_dir: None,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            points_per_second: None,
        }
    }
}

/// Loads and runs WASM plugins. One runtime serves every WASM plugin of a host.
pub struct WasmRuntime {
    /// Only for measuring the fuel rate: every module gets an engine of its own, because a
    /// metering middleware instruments exactly one module.
    engine: Engine,
    modules: Arc<DashMap<String, Compiled>>,
    config: WasmConfig,
    fuel: FuelRate,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime")
            .field("config", &self.config)
            .field("points_per_second", &self.fuel.points_per_second)
            .field("cached_modules", &self.modules.len())
            .finish()
    }
}

/// Metering points per operator: one for each operator that does work, none for those that
/// compile to nothing (locals, constants, `nop`, `drop`, block structure), so that the points a
/// guest burns follow the time it takes whatever its code looks like. Every loop iteration and
/// every call still costs at least one point (the branch, the call).
pub(crate) fn cost(operator: &Operator<'_>) -> u64 {
    match operator {
        Operator::Nop
        | Operator::Drop
        | Operator::LocalGet { .. }
        | Operator::LocalSet { .. }
        | Operator::LocalTee { .. }
        | Operator::I32Const { .. }
        | Operator::I64Const { .. }
        | Operator::F32Const { .. }
        | Operator::F64Const { .. }
        | Operator::Block { .. }
        | Operator::Loop { .. }
        | Operator::Else
        | Operator::End => 0,
        _ => 1,
    }
}

/// A compiled module and the engine that owns its code (kept together: the code lives as long
/// as the engine).
#[derive(Clone)]
struct Compiled {
    engine: Engine,
    module: Module,
}

/// An engine with fresh metering and interrupt middlewares and only the proposals plugins may
/// use, for compiling or loading one module.
fn metered_engine() -> Engine {
    let mut compiler = Cranelift::default();
    compiler.push_middleware(Arc::new(Metering::new(INSTANTIATION_POINTS, cost)));
    // After metering, so that its checks are not metered.
    compiler.push_middleware(Arc::new(Interrupt::default()));
    EngineBuilder::new(compiler)
        .set_features(Some(screen::engine_features()))
        .into()
}

impl WasmRuntime {
    /// Builds the engine (Cranelift with metering) and measures the fuel rate unless the
    /// configuration gives it.
    pub fn new(config: WasmConfig) -> Result<Self, WasmError> {
        let engine = metered_engine();
        let mut runtime = Self {
            engine,
            modules: Arc::new(DashMap::new()),
            config,
            fuel: FuelRate {
                points_per_second: 1,
            },
        };
        runtime.fuel.points_per_second = match runtime.config.points_per_second {
            Some(rate) => rate.max(1),
            None => runtime.calibrate()?,
        };
        tracing::debug!(
            points_per_second = runtime.fuel.points_per_second,
            "WASM fuel rate"
        );
        Ok(runtime)
    }

    /// Metering points a guest burns per second here (the faster of an empty loop and a loop
    /// of arithmetic). A call's fuel is ten times its timeout at this rate: the deadline stops
    /// the guest (interrupt checks at loop headers, function entries and imports), fuel is the
    /// backstop.
    pub fn points_per_second(&self) -> u64 {
        self.fuel.points_per_second
    }

    fn calibrate(&self) -> Result<u64, WasmError> {
        const POINTS: u64 = 20_000_000;
        let module = Module::new(&self.engine, CALIBRATION_MODULE)
            .map_err(|e| WasmError::Compile(e.to_string()))?;
        let mut store = Store::new(self.engine.clone());
        let instance = Instance::new(&mut store, &module, &Imports::new())
            .map_err(|e| WasmError::Instantiate(e.to_string()))?;
        let mut rate = 1;
        for name in ["spin", "dense"] {
            let run = instance
                .exports
                .get_typed_function::<(), ()>(&store, name)
                .map_err(|e| WasmError::Instantiate(e.to_string()))?;
            let mut fastest = Duration::MAX;
            for _ in 0..3 {
                set_remaining_points(&mut store, &instance, POINTS);
                let start = Instant::now();
                let _exhausted = run.call(&mut store);
                fastest = fastest.min(start.elapsed());
            }
            let nanos = fastest.as_nanos().max(1);
            let measured = u128::from(POINTS) * 1_000_000_000 / nanos;
            rate = rate.max(u64::try_from(measured).unwrap_or(u64::MAX));
        }
        Ok(rate)
    }

    /// Compiles `wasm`, or takes it from the cache (memory, then disk) by content hash.
    pub fn compile(&self, wasm: &[u8]) -> Result<Module, WasmError> {
        compile_cached(&self.modules, self.config.cache_dir.as_deref(), wasm).map(|c| c.module)
    }

    /// Whether a module with these bytes is compiled and kept in memory.
    pub fn is_cached(&self, wasm: &[u8]) -> bool {
        self.modules.contains_key(&cache_key(wasm))
    }

    /// Loads a plugin from a file.
    pub async fn load_file(
        &self,
        path: &Path,
        limits: WasmLimits,
    ) -> Result<WasmPlugin, WasmError> {
        let wasm = tokio::fs::read(path)
            .await
            .map_err(|source| WasmError::Io {
                path: path.display().to_string(),
                source,
            })?;
        self.load(wasm, limits).await
    }

    /// Compiles (or finds) the module, checks it against the ABI, instantiates it under `limits`
    /// and runs `gk_register` within `limits.init_timeout`.
    pub async fn load(&self, wasm: Vec<u8>, limits: WasmLimits) -> Result<WasmPlugin, WasmError> {
        abi::refuse_reserved_exports(&wasm)?;
        screen::check_structure(&wasm)?;
        let (modules, dir) = (self.modules.clone(), self.config.cache_dir.clone());
        let Compiled { engine, module } =
            tokio::task::spawn_blocking(move || compile_cached(&modules, dir.as_deref(), &wasm))
                .await
                .map_err(|e| WasmError::Compile(format!("the compiler thread failed: {e}")))??;
        let exports = abi::validate(&module)?;
        let live = LiveLimits::new(limits);
        let mut engine = engine.clone();
        engine.set_tunables(live.tunables());
        let shared = Arc::new(Shared {
            name: OnceLock::new(),
            host: OnceLock::new(),
            runtime: tokio::runtime::Handle::current(),
            max_payload: self.config.max_payload_bytes,
            limits: live,
        });

        let budget = Budget::new(
            self.fuel.points_for(limits.init_timeout),
            limits.init_timeout,
        );
        let deadline = budget.deadline;
        let pool = Pool::new(self.config.pool_size);
        let inner = Arc::new(PluginInner {
            shared: shared.clone(),
            engine,
            module,
            exports,
            fuel: self.fuel,
            pool,
            stops: StopCounters::default(),
            registration: OnceLock::new(),
            inline: crate::inline::InlineState::default(),
        });
        // Register on the worker that will keep the instance for the first calls.
        let worker = Worker::spawn("register").map_err(WasmError::Instantiate)?;
        let (reply, answer) = oneshot::channel();
        let _abandon = budget.abandon_on_drop();
        let guest_budget = budget.clone();
        let work: Work = Box::new(move |instance| instance.register(guest_budget));
        inner
            .dispatch(worker, None, work, reply)
            .map_err(|e| WasmError::Instantiate(e.to_string()))?;
        let json = match tokio::time::timeout_at(deadline.into(), answer).await {
            Err(_) => {
                let ran = budget.started.elapsed();
                let error = Limit::Deadline.error("register", ran, budget.timeout, "");
                return Err(WasmError::Register(error.to_string()));
            }
            Ok(Err(_)) => return Err(WasmError::Register("the guest's worker stopped".into())),
            Ok(Ok((Err(PluginError::Unavailable(problem)), _))) => {
                return Err(WasmError::Instantiate(problem));
            }
            Ok(Ok((result, _))) => result.map_err(|e| WasmError::Register(e.to_string()))?,
        };
        let registration = GkRegistration::from_json(&json).map_err(|e| {
            WasmError::Register(format!(
                "the registration is not valid JSON of a registration: {e}"
            ))
        })?;
        if registration.name.is_empty() {
            return Err(WasmError::Register("the registration has no name".into()));
        }
        let _ = shared.name.set(registration.name.clone());
        let _ = inner.registration.set(registration);
        Ok(WasmPlugin::new(inner))
    }
}

fn compile_cached(
    modules: &DashMap<String, Compiled>,
    cache_dir: Option<&Path>,
    wasm: &[u8],
) -> Result<Compiled, WasmError> {
    let key = cache_key(wasm);
    if let Some(compiled) = modules.get(&key) {
        return Ok(compiled.clone());
    }
    let engine = metered_engine();
    let file = cache_dir.map(|dir| dir.join(format!("{key}.bin")));
    if let Some(file) = &file
        && file.is_file()
    {
        // SAFETY: the file was written by `Module::serialize` of this runtime under a name that
        // includes the content hash, the wasmer version and the compile settings; wasmer also
        // checks the artifact's header and refuses an incompatible one.
        match unsafe { engine.deserialize_from_mmapped_file(file) } {
            Ok(module) => {
                let compiled = Compiled { engine, module };
                modules.insert(key, compiled.clone());
                return Ok(compiled);
            }
            Err(error) => {
                tracing::warn!(file = %file.display(), %error, "ignoring an unreadable compiled module");
                let _ = std::fs::remove_file(file);
            }
        }
    }
    screen::check_proposals(wasm)?;
    let module = Module::new(&engine, wasm).map_err(|e| WasmError::Compile(e.to_string()))?;
    if let Some(file) = &file {
        store_compiled(&module, file);
    }
    let compiled = Compiled { engine, module };
    modules.insert(key, compiled.clone());
    Ok(compiled)
}

/// Content hash, wasmer version and compile settings: what a compiled module depends on.
fn cache_key(wasm: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, wasm);
    format!(
        "{}-wasmer{}-{COMPILE_TAG}",
        hex::encode(digest),
        wasmer_types::VERSION
    )
}

/// Writes a compiled module next to its final name, then renames it, so a reader never sees a
/// half-written file. Failure only costs a recompile later.
fn store_compiled(module: &Module, file: &Path) {
    let result = (|| -> Result<(), String> {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        let temporary = file.with_extension(format!("tmp{}", std::process::id()));
        module
            .serialize_to_file(&temporary)
            .map_err(|e| e.to_string())?;
        std::fs::rename(&temporary, file).map_err(|e| e.to_string())
    })();
    if let Err(error) = result {
        tracing::warn!(file = %file.display(), %error, "could not keep the compiled module on disk");
    }
}
