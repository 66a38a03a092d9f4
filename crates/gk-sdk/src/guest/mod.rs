//! The Rust guest SDK: write a WASM plugin as a plain Rust type (feature `guest`, target
//! `wasm32-unknown-unknown`).
//!
//! ```ignore
//! use gk_sdk::guest::{GuestError, GuestPlugin, host};
//! use gk_sdk::{GkRegistration, RouteSpec};
//!
//! struct Hello;
//!
//! impl GuestPlugin for Hello {
//!     fn register() -> GkRegistration {
//!         GkRegistration {
//!             name: "hello".into(),
//!             version: "0.1.0".into(),
//!             routes: vec![RouteSpec { method: "GET".into(), path: "/api/plugins/hello".into(), handler: "hello".into(), ..Default::default() }],
//!             ..Default::default()
//!         }
//!     }
//!
//!     fn call(function: &str, _args: &[u8]) -> Result<Vec<u8>, GuestError> {
//!         match function {
//!             "hello" => {
//!                 gk_sdk::info!("saying hello");
//!                 let visits = host::cache_get("visits")?.map_or(0, |v| v.len());
//!                 Ok(format!(r#"{{"message":"hello","visits":{visits}}}"#).into_bytes())
//!             }
//!             other => Err(GuestError::unknown_function(other)),
//!         }
//!     }
//! }
//!
//! gk_sdk::export_plugin!(Hello);
//! ```
//!
//! [`export_plugin!`](crate::export_plugin) generates the ABI exports (`gk_malloc`, `gk_free`,
//! `gk_register`, `gk_call`, `gk_abi_version`); [`host`] wraps every host function; the
//! [`info!`](crate::info) family of macros writes to the plugin's log. The author writes no
//! `unsafe` code.

pub mod host;
#[doc(hidden)]
pub mod rt;

use crate::{GkRegistration, HostError};

/// A WASM plugin written in Rust.
pub trait GuestPlugin {
    /// What the plugin provides; called once when the host loads it.
    fn register() -> GkRegistration;

    /// Runs `function` with JSON `args` (empty when there are none) and returns its JSON result.
    fn call(function: &str, args: &[u8]) -> Result<Vec<u8>, GuestError>;
}

/// A failure a plugin function reports; the host sees it as a typed error with the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestError {
    /// One of the plugin's declared error codes (without the plugin prefix), or empty.
    pub code: String,
    /// What went wrong.
    pub message: String,
}

impl GuestError {
    /// A failure with one of the plugin's error codes.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The plugin has no such function.
    pub fn unknown_function(function: &str) -> Self {
        Self::new("unknown_function", format!("no function `{function}`"))
    }

    /// The arguments could not be read.
    pub fn bad_arguments(problem: impl std::fmt::Display) -> Self {
        Self::new("bad_arguments", problem.to_string())
    }
}

impl From<HostError> for GuestError {
    fn from(error: HostError) -> Self {
        Self::new(format!("host_{}", error.kind().as_str()), error.to_string())
    }
}

impl From<serde_json::Error> for GuestError {
    fn from(error: serde_json::Error) -> Self {
        Self::bad_arguments(error)
    }
}

/// Generates the ABI exports for a type implementing [`GuestPlugin`].
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn gk_malloc(size: i32) -> i32 {
            $crate::guest::rt::malloc(size)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn gk_free(ptr: i32) {
            $crate::guest::rt::free(ptr)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn gk_register() -> i64 {
            $crate::guest::rt::register(<$plugin as $crate::guest::GuestPlugin>::register)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn gk_call(fn_ptr: i32, fn_len: i32, args_ptr: i32, args_len: i32) -> i64 {
            $crate::guest::rt::call(
                <$plugin as $crate::guest::GuestPlugin>::call,
                fn_ptr,
                fn_len,
                args_ptr,
                args_len,
            )
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn gk_abi_version() -> i32 {
            1
        }
    };
}

/// Writes a message to the plugin's log at a level: `gk_sdk::log!(gk_sdk::LogLevel::Warn, "x = {}", x)`.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::guest::host::log($level, &::std::format!($($arg)+))
    };
}

/// Writes a debug message to the plugin's log.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log!($crate::LogLevel::Debug, $($arg)+) };
}

/// Writes an info message to the plugin's log.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log!($crate::LogLevel::Info, $($arg)+) };
}

/// Writes a warning to the plugin's log.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log!($crate::LogLevel::Warn, $($arg)+) };
}

/// Writes an error to the plugin's log.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log!($crate::LogLevel::Error, $($arg)+) };
}
