//! gk-wasm against hand-written `.wat` fixtures: the ABI, every failure mode, the limits.

mod abi;
mod faults;
mod limits;
mod support;
