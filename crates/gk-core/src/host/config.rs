//! `config_get`: the server's configuration as flat dotted keys (`app.name`, `app.timezone`, …)
//! plus per-plugin settings (`plugins.<name>.<key>`). The server assembles the values (from its
//! file and from `GOATFLOW_PLUGIN_<NAME>_<KEY>` variables); this crate reads no environment.

use std::collections::BTreeMap;

use gk_sdk::{HostError, HostResult};

/// The configuration values plugins may read (the sandbox decides which keys a plugin sees).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigValues {
    values: BTreeMap<String, String>,
}

impl ConfigValues {
    /// Values from dotted keys.
    pub fn new(values: BTreeMap<String, String>) -> Self {
        Self {
            values: values
                .into_iter()
                .map(|(k, v)| (k.trim().to_owned(), v))
                .collect(),
        }
    }

    /// Adds or replaces one value.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.values.insert(key.into(), value.into());
    }

    /// Adds a plugin's setting as `plugins.<plugin>.<key>` (the key lower-cased, as the Go host
    /// did for `GOATFLOW_PLUGIN_<NAME>_<KEY>` variables).
    pub fn set_plugin_setting(&mut self, plugin: &str, key: &str, value: impl Into<String>) {
        self.values.insert(
            format!("plugins.{plugin}.{}", key.to_lowercase()),
            value.into(),
        );
    }

    /// The value of `key`; an unknown key is a not-found error naming it.
    pub fn get(&self, key: &str) -> HostResult<String> {
        self.values
            .get(key.trim())
            .cloned()
            .ok_or_else(|| HostError::NotFound(format!("config key `{key}` is not set")))
    }
}
