//! gk-wasm: runs `.wasm` plugins in-process with wasmer, sandboxed.
//!
//! - **ABI v1**, the one the Go GoatFlow host defined, so existing plugins load unchanged:
//!   guest exports `memory`, `gk_malloc`, optional `gk_free`, `gk_register`, `gk_call`; host
//!   imports `gk.host_call` and `gk.log`; a minimal `wasi_snapshot_preview1` shim for TinyGo
//!   guests. Optional extensions (`gk.host_error`, `gk.fail`, `gk.clock_ms`) are there for guests
//!   that import them. `docs/ABI.md` describes it byte by byte.
//! - **Limits that hold**: one linear memory, capped by the policy's `memory_mb` (growth past it
//!   fails inside the guest); tables capped; only the WebAssembly proposals the ABI needs; a
//!   wall-clock deadline that stops the guest at its next loop iteration, function call or
//!   import (an interrupt flag the caller raises when it stops waiting, checked at loop headers
//!   and function entries, and the deadline checked at every import); fuel (wasmer metering,
//!   host time charged too) only as a backstop of ten times the timeout at a calibrated rate; no
//!   re-entry into the host from the guest's memory exports; payload lengths capped before
//!   anything is copied. A trap ends the call with an error that names the limit (`deadline`,
//!   `fuel`, `memory`) and how long the call ran, counts it ([`gk_sdk::Plugin::limit_stops`]),
//!   and discards the instance. A policy change applies to the next call
//!   ([`WasmPlugin::set_limits`]).
//! - **Performance**: a module is compiled once per content hash and kept in memory and on disk;
//!   each plugin has a pool of instances so calls run in parallel; guest code runs on blocking
//!   threads and reaches the async host API from there. A short call that only reads runs on
//!   its caller's thread instead (no handoff): a host call the host answers inline at once
//!   without an effect (`gk_sdk::inline`: a read-only SQLite query) stays there; any other
//!   import, a refusal, a slice of fuel used up or a millisecond passed moves the call to a
//!   worker, where it starts again: nothing it did was visible (`inline.rs`).
//!
//! Between calls a plugin must not rely on what it keeps in linear memory: calls are spread over
//! several instances, and an instance is thrown away after a trap. Use the cache host functions
//! for state.
//!
//! It depends on `gk-sdk` only: it receives an `Arc<dyn HostApi>` and returns a `Box<dyn Plugin>`,
//! and never knows the manager, the store or the server.

mod abi;
mod error;
mod guard;
mod host_calls;
mod imports;
mod inline;
mod instance;
mod interrupt;
mod limits;
mod overhead;
mod plugin;
mod pool;
mod runtime;
mod screen;
mod wasi;

pub use error::WasmError;
pub use limits::WasmLimits;
#[doc(hidden)]
pub use overhead::{InterruptOverhead, interrupt_overhead};
pub use plugin::WasmPlugin;
pub use runtime::{DEFAULT_MAX_PAYLOAD_BYTES, WasmConfig, WasmRuntime};
