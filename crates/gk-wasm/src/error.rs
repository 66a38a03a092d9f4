//! Errors of loading a WASM plugin. Errors of calls are [`gk_sdk::PluginError`]s.

/// Why a module could not be loaded as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The bytes are not a valid WebAssembly module.
    #[error("not a valid WebAssembly module: {0}")]
    Compile(String),
    /// A required export is missing.
    #[error("the module does not export `{name}`, which every GoatKit plugin must ({what})")]
    MissingExport {
        /// Export name.
        name: &'static str,
        /// What it is for.
        what: &'static str,
    },
    /// An export has the wrong type.
    #[error("the export `{name}` has type {found}, but the ABI needs {expected}")]
    WrongExport {
        /// Export name.
        name: String,
        /// The ABI's type.
        expected: String,
        /// The module's type.
        found: String,
    },
    /// The module imports something the host does not provide.
    #[error("the module imports `{module}.{name}`, which the host does not provide{hint}")]
    UnknownImport {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
        /// A hint, for imports the host knows under another type.
        hint: String,
    },
    /// The module uses a WebAssembly proposal the host does not enable (threads, multi-memory,
    /// memory64, exceptions, tail calls, …).
    #[error("the module uses a WebAssembly feature GoatKit does not enable: {0}")]
    Unsupported(String),
    /// The module asks for more than its limits allow.
    #[error("the module exceeds its limits: {0}")]
    Limits(String),
    /// Instantiation failed (start function trapped, memory could not be created).
    #[error("the module could not be instantiated: {0}")]
    Instantiate(String),
    /// `gk_register` failed or returned something that is not a registration.
    #[error("gk_register failed: {0}")]
    Register(String),
    /// Reading the module file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
