//! Memory and CPU limits: capping linear memory through wasmer's `Tunables`, and turning a time
//! budget into metering points.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use gk_sdk::ResourcePolicy;
use wasmer::sys::vm::{VMMemory, VMMemoryDefinition, VMTable, VMTableDefinition};
use wasmer::sys::{BaseTunables, Tunables};
use wasmer::{MemoryError, MemoryStyle, TableStyle};
use wasmer::{MemoryType, Pages, TableType};

/// Bytes in one WebAssembly page.
pub(crate) const WASM_PAGE_BYTES: u64 = 65_536;

/// The most elements a table may hold, at the start or after `table.grow` (function tables of
/// real programs hold a few thousand).
pub(crate) const MAX_TABLE_ELEMENTS: u32 = 100_000;

/// The most tables a module may have (toolchains emit one; reference types allow more).
pub(crate) const MAX_TABLES: usize = 4;

/// The limits one plugin runs under, usually taken from its [`ResourcePolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WasmLimits {
    /// Cap on linear memory, in bytes (rounded down to whole 64 KiB pages).
    pub memory_bytes: u64,
    /// Deadline of one `gk_call`.
    pub call_timeout: Duration,
    /// Deadline of `gk_register`.
    pub init_timeout: Duration,
}

impl WasmLimits {
    /// The limits of a policy: `memory_mb`, `call_timeout`, `init_timeout`.
    pub fn from_policy(policy: &ResourcePolicy) -> Self {
        Self {
            memory_bytes: policy.memory_bytes(),
            call_timeout: policy.call_timeout,
            init_timeout: policy.init_timeout,
        }
    }

    /// The memory cap in pages (at least 1).
    pub(crate) fn max_pages(&self) -> u32 {
        u32::try_from(self.memory_bytes / WASM_PAGE_BYTES)
            .unwrap_or(u32::MAX)
            .clamp(1, 65_536)
    }
}

impl Default for WasmLimits {
    fn default() -> Self {
        Self::from_policy(&ResourcePolicy::default_for(""))
    }
}

/// A plugin's limits, changeable while it is loaded: the timeouts (and the fuel derived from
/// them) apply from the next call, the memory cap from the next instance.
#[derive(Debug)]
pub(crate) struct LiveLimits {
    memory_bytes: AtomicU64,
    call_timeout_nanos: AtomicU64,
    init_timeout_nanos: AtomicU64,
    /// The memory cap in pages, read by the tunables whenever an instance's memory is created.
    max_pages: Arc<AtomicU32>,
    /// Changes with the memory cap: an instance made under another cap is replaced before its
    /// next call.
    generation: AtomicU64,
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl LiveLimits {
    pub(crate) fn new(limits: WasmLimits) -> Self {
        Self {
            memory_bytes: AtomicU64::new(limits.memory_bytes),
            call_timeout_nanos: AtomicU64::new(nanos(limits.call_timeout)),
            init_timeout_nanos: AtomicU64::new(nanos(limits.init_timeout)),
            max_pages: Arc::new(AtomicU32::new(limits.max_pages())),
            generation: AtomicU64::new(0),
        }
    }

    /// The limits now.
    pub(crate) fn get(&self) -> WasmLimits {
        WasmLimits {
            memory_bytes: self.memory_bytes.load(Ordering::Relaxed),
            call_timeout: self.call_timeout(),
            init_timeout: Duration::from_nanos(self.init_timeout_nanos.load(Ordering::Relaxed)),
        }
    }

    /// The deadline of the next `gk_call`.
    pub(crate) fn call_timeout(&self) -> Duration {
        Duration::from_nanos(self.call_timeout_nanos.load(Ordering::Relaxed))
    }

    /// Replaces the limits; a new memory cap starts a new generation of instances.
    pub(crate) fn set(&self, limits: WasmLimits) {
        self.call_timeout_nanos
            .store(nanos(limits.call_timeout), Ordering::Relaxed);
        self.init_timeout_nanos
            .store(nanos(limits.init_timeout), Ordering::Relaxed);
        self.memory_bytes
            .store(limits.memory_bytes, Ordering::Relaxed);
        let pages = limits.max_pages();
        if self.max_pages.swap(pages, Ordering::SeqCst) != pages {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The memory cap in pages now.
    pub(crate) fn max_pages(&self) -> u32 {
        self.max_pages.load(Ordering::SeqCst)
    }

    /// The generation of instances the current memory cap makes.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Tunables that cap memories at this cap, as it is when each memory is created.
    pub(crate) fn tunables(&self) -> LimitingTunables {
        LimitingTunables {
            base: BaseTunables::new(),
            max_pages: self.max_pages.clone(),
        }
    }
}

/// Tunables that cap every memory at `max_pages` (read when the memory is created) and every
/// table at [`MAX_TABLE_ELEMENTS`]. A module whose memory or table starts above its cap fails to
/// instantiate; `memory.grow` and `table.grow` past the cap return -1 in the guest. A module has
/// at most one memory (checked before compiling), so the memory cap is the plugin's whole
/// `memory_mb`.
#[derive(Clone)]
pub(crate) struct LimitingTunables {
    base: BaseTunables,
    max_pages: Arc<AtomicU32>,
}

impl LimitingTunables {
    fn cap(&self, ty: &MemoryType) -> Result<MemoryType, MemoryError> {
        let max_pages = self.max_pages.load(Ordering::SeqCst);
        if ty.minimum.0 > max_pages {
            return Err(MemoryError::Generic(format!(
                "the module's memory starts at {} pages ({} MiB), above the plugin's cap of {} pages ({} MiB)",
                ty.minimum.0,
                (u64::from(ty.minimum.0) * WASM_PAGE_BYTES) >> 20,
                max_pages,
                (u64::from(max_pages) * WASM_PAGE_BYTES) >> 20
            )));
        }
        let maximum = ty.maximum.map_or(max_pages, |m| m.0.min(max_pages));
        Ok(MemoryType {
            maximum: Some(Pages(maximum)),
            ..*ty
        })
    }

    /// The table type with its maximum lowered to the cap, or why the table is refused.
    fn cap_table(ty: &TableType) -> Result<TableType, String> {
        if ty.minimum > MAX_TABLE_ELEMENTS {
            return Err(format!(
                "the module's table starts with {} elements; at most {MAX_TABLE_ELEMENTS} are allowed",
                ty.minimum
            ));
        }
        let maximum = ty
            .maximum
            .map_or(MAX_TABLE_ELEMENTS, |m| m.min(MAX_TABLE_ELEMENTS));
        Ok(TableType {
            maximum: Some(maximum),
            ..*ty
        })
    }
}

impl Tunables for LimitingTunables {
    fn memory_style(&self, memory: &MemoryType) -> MemoryStyle {
        self.base.memory_style(memory)
    }

    fn table_style(&self, table: &TableType) -> TableStyle {
        self.base.table_style(table)
    }

    fn create_host_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
    ) -> Result<VMMemory, MemoryError> {
        self.base.create_host_memory(&self.cap(ty)?, style)
    }

    unsafe fn create_vm_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
        vm_definition_location: NonNull<VMMemoryDefinition>,
    ) -> Result<VMMemory, MemoryError> {
        let ty = self.cap(ty)?;
        // SAFETY: the location comes from wasmer unchanged; only the type's maximum was lowered.
        unsafe {
            self.base
                .create_vm_memory(&ty, style, vm_definition_location)
        }
    }

    fn create_host_table(&self, ty: &TableType, style: &TableStyle) -> Result<VMTable, String> {
        self.base.create_host_table(&Self::cap_table(ty)?, style)
    }

    unsafe fn create_vm_table(
        &self,
        ty: &TableType,
        style: &TableStyle,
        vm_definition_location: NonNull<VMTableDefinition>,
    ) -> Result<VMTable, String> {
        let ty = Self::cap_table(ty)?;
        // SAFETY: the location comes from wasmer unchanged; only the type's maximum was lowered.
        unsafe {
            self.base
                .create_vm_table(&ty, style, vm_definition_location)
        }
    }
}

/// Converts time budgets into metering points at a measured rate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FuelRate {
    /// Metering points a guest burns per second in a tight loop on this machine.
    pub(crate) points_per_second: u64,
}

/// How many times its timeout's worth of fuel a call gets. The deadline stops a guest (the
/// interrupt checks at loop headers and function entries, and every import); fuel is only the
/// backstop for a deadline that could not be delivered, so it must not run out first: not for
/// code that burns points faster than the calibration loops (straight-line arithmetic runs
/// several points per nanosecond), nor on a machine that measured its rate while busy (the
/// rate measured twice on one machine varied 2x).
pub(crate) const FUEL_BACKSTOP: u64 = 10;

impl FuelRate {
    /// The points for `budget`: [`FUEL_BACKSTOP`] times what the calibration loops burn in it.
    pub(crate) fn points_for(&self, budget: Duration) -> u64 {
        let points =
            u128::from(self.points_per_second) * u128::from(FUEL_BACKSTOP) * budget.as_nanos()
                / 1_000_000_000;
        u64::try_from(points).unwrap_or(u64::MAX).max(10_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_memory_cap_starts_a_new_generation_and_timeouts_apply_at_once() {
        let mb = |n: u64| n << 20;
        let mut limits = WasmLimits {
            memory_bytes: mb(16),
            call_timeout: Duration::from_secs(1),
            init_timeout: Duration::from_secs(2),
        };
        let live = LiveLimits::new(limits);
        assert_eq!(live.get(), limits);
        assert_eq!((live.max_pages(), live.generation()), (256, 0));
        limits.call_timeout = Duration::from_millis(300);
        live.set(limits);
        assert_eq!(live.call_timeout(), Duration::from_millis(300));
        assert_eq!(live.generation(), 0, "same memory cap, same instances");
        limits.memory_bytes = mb(8);
        live.set(limits);
        assert_eq!((live.max_pages(), live.generation()), (128, 1));
        assert_eq!(live.get(), limits);
    }

    #[test]
    fn fuel_is_ten_times_the_timeout_at_the_calibrated_rate() {
        let rate = FuelRate {
            points_per_second: 2_000_000_000,
        };
        assert_eq!(rate.points_for(Duration::from_secs(1)), 20_000_000_000);
        assert_eq!(rate.points_for(Duration::ZERO), 10_000);
    }
}
