//! The OS isolation of plugin processes, all of it: the configuration ([`IsolationConfig`]),
//! the one-time probe of whether this kernel can give it (`probe.rs`), the plan of an isolated
//! plugin's root (`plan.rs`), carrying it out with `clone(2)` into new namespaces (`linux.rs`,
//! `child.rs`; the clone sharing the host's memory in `shared_clone.rs`) from one long-lived thread (`spawner.rs`), and starting a process under it
//! (`start.rs`).
//!
//! Submodules depend downwards only: `config` ← `plan` ← `child` ← `shared_clone` ← `linux` ← `probe`,
//! `spawner` ← `start`.
//! Nothing here knows the plugin's gRPC side.

mod child;
mod config;
mod linux;
mod plan;
mod probe;
mod shared_clone;
mod spawner;
mod start;

pub(crate) use config::TMP_INSIDE;
pub use config::{
    ALLOW_UNISOLATED_KEY, DEFAULT_MAX_OPEN_FILES, DEFAULT_MAX_PROCESSES, DEFAULT_PLUGIN_ID,
    DEFAULT_TMP_SIZE_MB, IsolationConfig,
};
pub(crate) use linux::socket_from_host;
pub(crate) use probe::available;
pub(crate) use start::{Isolation, Started, start};
