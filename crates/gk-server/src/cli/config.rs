//! The server configuration as `gk serve` and `gk token` read it, and the token secret that
//! `main` takes out of the environment before anything else runs.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;
use gk_server::ServeConfig;

/// The environment variable holding the token secret.
const TOKEN_SECRET_VAR: &str = "GOATKIT_TOKEN_SECRET";

/// [`TOKEN_SECRET_VAR`] as the process started with it. It is taken out of the environment at
/// the start of `main`, so that no child process inherits it and `/proc/<pid>/environ` does
/// not show it.
static TOKEN_SECRET_ENV: OnceLock<Option<String>> = OnceLock::new();

/// Takes [`TOKEN_SECRET_VAR`] out of the environment and keeps it for [`load_config`]. Call it
/// first thing in `main`, before the async runtime or any other thread exists.
pub(crate) fn take_token_secret() {
    TOKEN_SECRET_ENV.get_or_init(take_token_secret_from_environment);
}

/// The configuration: `file` or ./goatkit.toml when it exists, then the environment.
pub(crate) fn load_config(file: Option<&Path>) -> anyhow::Result<ServeConfig> {
    let default = Path::new(gk_server::config::DEFAULT_CONFIG_FILE);
    let file = file.or_else(|| default.is_file().then_some(default));
    let mut environment = gk_server::config::Environment::process();
    if let Some(secret) = TOKEN_SECRET_ENV.get().cloned().flatten() {
        environment.set(TOKEN_SECRET_VAR, secret);
    }
    ServeConfig::load(file, &environment).context("the configuration cannot be used")
}

/// Reads [`TOKEN_SECRET_VAR`], wipes its value in the process's initial environment block
/// (what `/proc/<pid>/environ` reads) and removes it from the environment.
fn take_token_secret_from_environment() -> Option<String> {
    let value = std::env::var(TOKEN_SECRET_VAR).ok();
    unsafe extern "C" {
        static environ: *const *mut std::ffi::c_char;
    }
    let prefix = format!("{TOKEN_SECRET_VAR}=");
    // SAFETY: this runs first thing in `main`, before the async runtime or any other thread
    // exists, so nothing else reads or writes the environment meanwhile. `environ` is the C
    // library's NULL-terminated array of NUL-terminated strings; only the bytes of the matching
    // entry after its `=` are overwritten, up to (not including) its terminating NUL.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let text = *entry;
            if std::ffi::CStr::from_ptr(text)
                .to_bytes()
                .starts_with(prefix.as_bytes())
            {
                let mut byte = text.add(prefix.len());
                while *byte != 0 {
                    *byte = 0;
                    byte = byte.add(1);
                }
            }
            entry = entry.add(1);
        }
        std::env::remove_var(TOKEN_SECRET_VAR);
    }
    value
}
