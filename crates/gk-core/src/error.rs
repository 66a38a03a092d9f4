//! The platform's error type.

/// What went wrong in the platform.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A database could not be opened.
    #[error("database `{name}` ({url}) cannot be opened: {message}")]
    DatabaseOpen {
        /// The database's name (`default`, `analytics`, …).
        name: String,
        /// Its URL with any password removed.
        url: String,
        /// What the driver said.
        message: String,
    },
    /// The configuration is not usable.
    #[error("configuration: {0}")]
    Config(String),
}

/// The result type of the platform.
pub type CoreResult<T> = Result<T, CoreError>;
