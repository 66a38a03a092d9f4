//! gk-wasm: runs `.wasm` plugins in-process with wasmer.
//!
//! It will own the engine and the compiled-module cache, memory and CPU/time limits, the
//! GoatFlow-compatible ABI (guest exports, host imports) and the instance pool. A runtime receives
//! an `Arc<dyn HostApi>` and returns a `Box<dyn Plugin>`.
//!
//! It depends on `gk-sdk` only: it never knows the manager, the store or the server.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
