//! gk-sdk: the public vocabulary of GoatKit, the plugin platform of GoatFlow.
//!
//! Everything a plugin and the host agree on lives here, and nothing else:
//!
//! - [`Plugin`]: what every plugin is, whichever runtime carries it (WASM or gRPC).
//! - [`HostApi`]: the eleven host functions a plugin may use, and [`CallContext`], which says who
//!   is calling and how deep in a chain of plugin-to-plugin calls.
//! - [`GkRegistration`]: what a plugin provides (routes, widgets, menu items, jobs, templates,
//!   translations, error codes, requested resources), JSON-compatible with the plugins written for
//!   the Go GoatFlow host.
//! - [`ResourcePolicy`] and [`Permission`]: what an admin grants a plugin.
//! - [`PluginManifest`]: the `plugin.yaml` beside a plugin's module or binary.
//! - [`dispatch`]: the table of host-call names ([`HostCallName`]) and JSON shapes
//!   ([`dispatch::wire`]) a WASM guest uses to reach the host, shared by the guest SDKs and
//!   gk-wasm (which carries the calls out; gRPC plugins use `proto/`'s `HostService`).
//! - `guest` (feature `guest`): the Rust SDK for WASM plugins: a trait, an export macro, typed
//!   host functions and log macros.
//! - `proto` (feature `proto`): code generated from `proto/goatkit/plugin/v1` and conversions
//!   between the wire types and the types above; `grpc` adds `serve()`, the plugin side of a
//!   gRPC plugin process. No feature is on by default: an author of a WASM plugin compiles
//!   neither tonic nor prost nor protox. `unix-channel` (part of `grpc`) holds what both ends
//!   of a gRPC plugin's connection use: `unix_channel` (HTTP/2 on a Unix socket) and
//!   `call_stream` (calls as messages on one stream).
//! - [`inline`]: how a runtime tries a host call on a thread that must not wait, and what a host
//!   that answers such attempts promises.
//! - `testing` (feature `testing`): hosts for tests, `MemoryHost` and `RecordingHost`.
//!
//! This crate depends on no other GoatKit crate. It does not enforce policies (gk-sandbox), run
//! plugins (gk-wasm, gk-grpc) or manage them (gk-core).

#[cfg(feature = "unix-channel")]
pub mod call_stream;
mod context;
mod database;
pub mod dispatch;
mod duration;
mod error;
#[cfg(feature = "guest")]
pub mod guest;
#[cfg(feature = "proto")]
pub mod handshake;
mod host;
pub mod inline;
mod manifest;
mod noop_host;
mod plugin;
mod policy;
#[cfg(feature = "proto")]
pub mod proto;
mod registration;
#[cfg(feature = "grpc")]
mod serve;
mod string_enum;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "unix-channel")]
pub mod unix_channel;

pub use context::{CallContext, MAX_CALL_DEPTH};
pub use database::{
    DEFAULT_DATABASE, DatabasePrefixError, TableAccess, TableScope, split_database,
};
pub use dispatch::HostCallName;
pub use duration::{DurationError, format_duration, parse_duration};
pub use error::{HostError, HostErrorKind, ManifestError, PluginError};
pub use host::{Email, HostApi, HttpRequest, HttpResponse, LogLevel, Row, TranslateArgs};
pub use manifest::{
    MANIFEST_FILE_NAMES, PluginManifest, PluginNameError, Runtime, validate_plugin_name,
};
pub use noop_host::NoopHost;
pub use plugin::{LimitStops, Plugin};
pub use policy::{
    Access, Permission, PermissionType, PolicyStatus, ResourcePolicy, ResourceRequest,
};
pub use registration::{
    ErrorCodeSpec, GkRegistration, I18nSpec, JobSpec, MenuItemSpec, RouteSpec, TemplateSpec,
    WidgetSpec,
};
#[cfg(feature = "grpc")]
pub use serve::{ServeError, serve};

/// The result type of host functions.
pub type HostResult<T> = Result<T, HostError>;
