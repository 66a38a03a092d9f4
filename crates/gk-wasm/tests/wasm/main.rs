//! gk-wasm against hand-written `.wat` fixtures: the ABI, every failure mode, the limits.

mod abi;
mod c_guest;
mod deadlines;
mod faults;
mod guards;
mod inline;
mod limits;
mod support;
