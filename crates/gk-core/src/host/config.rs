//! `config_get`: the server's configuration as flat dotted keys (`app.name`, `app.timezone`, …)
//! plus per-plugin settings (`plugins.<name>.<key>`). The server assembles the values (from its
//! file and from `GOATFLOW_PLUGIN_<NAME>_<KEY>` variables); this crate reads no environment.
//!
//! The values are shared: every clone of a [`ConfigValues`] sees a [`replace`](ConfigValues::replace)
//! at once, so the server reloads them (SIGHUP, a changed file) without restarting a plugin.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use gk_sdk::{HostError, HostResult};

/// The configuration values plugins may read (the sandbox decides which keys a plugin sees).
#[derive(Clone)]
pub struct ConfigValues {
    values: Arc<ArcSwap<Values>>,
    plugin_names: Arc<OnceLock<PluginNames>>,
}

/// Where the names of the plugins the platform knows come from.
pub type PluginNames = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

impl std::fmt::Debug for ConfigValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigValues")
            .field("keys", &self.keys())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
struct Values {
    /// Dotted keys.
    keys: BTreeMap<String, String>,
    /// `GOATFLOW_PLUGIN_<NAME>_<KEY>` variables by what follows `GOATFLOW_PLUGIN_`.
    plugin_variables: BTreeMap<String, String>,
}

impl Default for ConfigValues {
    fn default() -> Self {
        Self::new(BTreeMap::new())
    }
}

/// The prefix of the Go host's per-plugin setting variables.
pub const PLUGIN_VARIABLE_PREFIX: &str = "GOATFLOW_PLUGIN_";

/// `GOATFLOW_PLUGIN_<NAME>_<KEY>` read as the Go host read it: upper case, `-` and `.` as `_`.
fn variable_form(plugin: &str, key: &str) -> String {
    format!("{plugin}_{key}")
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

impl ConfigValues {
    /// Values from dotted keys.
    pub fn new(values: BTreeMap<String, String>) -> Self {
        Self {
            values: Arc::new(ArcSwap::from_pointee(Values {
                keys: values
                    .into_iter()
                    .map(|(k, v)| (k.trim().to_owned(), v))
                    .collect(),
                plugin_variables: BTreeMap::new(),
            })),
            plugin_names: Arc::new(OnceLock::new()),
        }
    }

    /// Tells the values which plugins exist, so that a `GOATFLOW_PLUGIN_*` variable is read by
    /// the plugin it names: `GOATFLOW_PLUGIN_HELLO_GRPC_URL` belongs to `hello-grpc` when that
    /// plugin exists, and plugin `hello` does not read it as its `grpc_url`. Set once.
    pub fn set_plugin_names(&self, names: PluginNames) {
        let _ = self.plugin_names.set(names);
    }

    /// The variable `plugin` reads for `setting`: only when no other known plugin's name could
    /// also claim it. `GOATFLOW_PLUGIN_STATS_API_KEY` with plugins `stats` and `stats-api` both
    /// known (or `hello-grpc` and `hello_grpc`, whose variable names are the same) is ambiguous
    /// and goes to neither: a plugin cannot pick a name that reads another's variables.
    fn plugin_variable<'a>(
        &self,
        values: &'a Values,
        plugin: &str,
        setting: &str,
    ) -> Option<&'a String> {
        let wanted = variable_form(plugin, setting);
        let value = values.plugin_variables.get(&wanted)?;
        let Some(names) = self.plugin_names.get() else {
            return Some(value);
        };
        let own = variable_form(plugin, "");
        let claimants: Vec<String> = names()
            .iter()
            .map(|name| variable_form(name, ""))
            .filter(|prefix| wanted.starts_with(prefix.as_str()))
            .collect();
        if claimants.len() == 1 && claimants[0] == own {
            return Some(value);
        }
        tracing::warn!(
            plugin,
            variable = %format!("{PLUGIN_VARIABLE_PREFIX}{wanted}"),
            "a GOATFLOW_PLUGIN_ variable more than one plugin's name could claim is given to none: configure it as [plugins.<name>] in goatkit.toml"
        );
        None
    }

    /// Adds or replaces one value.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        self.values.rcu(|current| {
            let mut next = Values::clone(current);
            next.keys.insert(key.trim().to_owned(), value.clone());
            next
        });
    }

    /// Adds the process's `GOATFLOW_PLUGIN_<NAME>_<KEY>` variables (given whole, with their
    /// prefix; others are ignored). Plugin `hello-grpc` reads `GOATFLOW_PLUGIN_HELLO_GRPC_API_URL`
    /// as `plugins.hello-grpc.api_url`; a variable wins over the same key set otherwise.
    pub fn set_plugin_variables<I, K, V>(&mut self, variables: I)
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let found: Vec<(String, String)> = variables
            .into_iter()
            .filter_map(|(name, value)| {
                let rest = name.as_ref().strip_prefix(PLUGIN_VARIABLE_PREFIX)?;
                Some((rest.to_ascii_uppercase(), value.into()))
            })
            .collect();
        self.values.rcu(|current| {
            let mut next = Values::clone(current);
            next.plugin_variables.extend(found.iter().cloned());
            next
        });
    }

    /// Adds a plugin's setting as `plugins.<plugin>.<key>` (the key lower-cased, as the Go host
    /// did for `GOATFLOW_PLUGIN_<NAME>_<KEY>` variables).
    pub fn set_plugin_setting(&mut self, plugin: &str, key: &str, value: impl Into<String>) {
        self.set(format!("plugins.{plugin}.{}", key.to_lowercase()), value);
    }

    /// Replaces every value with those of `other`, for every clone at once (a reload).
    pub fn replace(&self, other: &ConfigValues) {
        self.values.store(other.values.load_full());
    }

    /// The value of `key`; an unknown key is a not-found error naming it.
    pub fn get(&self, key: &str) -> HostResult<String> {
        let values = self.values.load();
        let key = key.trim();
        let variable = key
            .strip_prefix("plugins.")
            .and_then(|rest| rest.split_once('.'))
            .filter(|(plugin, setting)| !plugin.is_empty() && !setting.is_empty())
            .and_then(|(plugin, setting)| self.plugin_variable(&values, plugin, setting));
        variable
            .or_else(|| values.keys.get(key))
            .cloned()
            .ok_or_else(|| HostError::NotFound(format!("config key `{key}` is not set")))
    }

    /// Every dotted key, sorted (values are not shown: some are secrets).
    pub fn keys(&self) -> Vec<String> {
        self.values.load().keys.keys().cloned().collect()
    }

    /// How many dotted keys and plugin variables there are.
    pub fn len(&self) -> usize {
        let values = self.values.load();
        values.keys.len() + values.plugin_variables.len()
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_reaches_every_clone() {
        let mut values = ConfigValues::default();
        values.set("app.name", "GoatFlow");
        values.set_plugin_setting("stats", "API_URL", "https://a.example");
        let served = values.clone();
        assert_eq!(
            served.get("plugins.stats.api_url").unwrap(),
            "https://a.example"
        );

        let mut reloaded = ConfigValues::default();
        reloaded.set("app.name", "GoatFlow 2");
        values.replace(&reloaded);
        assert_eq!(served.get("app.name").unwrap(), "GoatFlow 2");
        let missing = served.get("plugins.stats.api_url").unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("`plugins.stats.api_url` is not set")
        );
        assert_eq!(served.keys(), ["app.name"]);
    }

    #[test]
    fn go_host_variables_are_plugin_settings() {
        let mut values = ConfigValues::default();
        values.set("plugins.hello-grpc.api_url", "from the file");
        values.set("plugins.hello-grpc.colour", "blue");
        values.set_plugin_variables([
            ("GOATFLOW_PLUGIN_HELLO_GRPC_API_URL", "from the environment"),
            ("GOATFLOW_PLUGIN_STATS_PAGE_SIZE", "20"),
            ("GOATFLOW_PLUGIN_HELLO_GRPC_TOKEN", "t"),
            ("PATH", "/usr/bin"),
        ]);
        assert_eq!(
            values.get("plugins.hello-grpc.api_url").unwrap(),
            "from the environment"
        );
        assert_eq!(values.get("plugins.hello-grpc.colour").unwrap(), "blue");
        assert_eq!(values.get("plugins.stats.page_size").unwrap(), "20");
        assert_eq!(values.get("plugins.stats.page.size").unwrap(), "20");
        assert!(values.get("plugins.stats.").is_err());
        assert!(values.get("path").is_err());

        // Plugin `hello` must not read hello-grpc's variable as its own `grpc_api_url`.
        assert!(
            values.get("plugins.hello.grpc_api_url").is_ok(),
            "no names known yet"
        );
        // With both names known the variable is ambiguous and goes to neither.
        let names = Arc::new(std::sync::Mutex::new(vec!["hello-grpc".to_owned()]));
        let known = names.clone();
        values.set_plugin_names(Arc::new(move || known.lock().unwrap().clone()));
        assert!(values.get("plugins.hello-grpc.api_url").is_ok());
        assert_eq!(values.get("plugins.hello-grpc.token").unwrap(), "t");
        assert!(
            values.get("plugins.hello.grpc_api_url").is_err(),
            "not a known plugin"
        );
        names.lock().unwrap().push("hello".into());
        assert!(values.get("plugins.hello.grpc_api_url").is_err());
        assert_eq!(
            values.get("plugins.hello-grpc.api_url").unwrap(),
            "from the file",
            "ambiguous: the variable goes to neither"
        );
        // Names whose variable forms are equal.
        *names.lock().unwrap() = vec!["stats".into(), "hello-grpc".into(), "hello_grpc".into()];
        assert!(values.get("plugins.hello_grpc.token").is_err());
        assert!(values.get("plugins.hello-grpc.token").is_err());
        assert_eq!(values.get("plugins.stats.page_size").unwrap(), "20");
    }
}
