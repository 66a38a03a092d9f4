//! Memory and CPU limits: capping linear memory through wasmer's `Tunables`, and turning a time
//! budget into metering points.

use std::ptr::NonNull;
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

/// Tunables that cap every memory at `max_pages` and every table at [`MAX_TABLE_ELEMENTS`]. A
/// module whose memory or table starts above its cap fails to instantiate; `memory.grow` and
/// `table.grow` past the cap return -1 in the guest. A module has at most one memory (checked
/// before compiling), so the memory cap is the plugin's whole `memory_mb`.
#[derive(Clone)]
pub(crate) struct LimitingTunables {
    base: BaseTunables,
    max_pages: u32,
}

impl LimitingTunables {
    pub(crate) fn new(max_pages: u32) -> Self {
        Self {
            base: BaseTunables::new(),
            max_pages,
        }
    }

    fn cap(&self, ty: &MemoryType) -> Result<MemoryType, MemoryError> {
        if ty.minimum.0 > self.max_pages {
            return Err(MemoryError::Generic(format!(
                "the module's memory starts at {} pages ({} MiB), above the plugin's cap of {} pages ({} MiB)",
                ty.minimum.0,
                (u64::from(ty.minimum.0) * WASM_PAGE_BYTES) >> 20,
                self.max_pages,
                (u64::from(self.max_pages) * WASM_PAGE_BYTES) >> 20
            )));
        }
        let maximum = ty
            .maximum
            .map_or(self.max_pages, |m| m.0.min(self.max_pages));
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
/// interrupt checks at loop headers and function entries, and every import); fuel is the
/// backstop for a deadline that could not be delivered, so it must not run out first on a
/// machine that measured its rate while busy.
pub(crate) const FUEL_BACKSTOP: u64 = 3;

impl FuelRate {
    /// The points for `budget`: [`FUEL_BACKSTOP`] times what the calibration loop burns in it.
    pub(crate) fn points_for(&self, budget: Duration) -> u64 {
        let points =
            u128::from(self.points_per_second) * u128::from(FUEL_BACKSTOP) * budget.as_nanos()
                / 1_000_000_000;
        u64::try_from(points).unwrap_or(u64::MAX).max(10_000)
    }
}
