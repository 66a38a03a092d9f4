//! The environment the configuration reads: `GOATKIT_*` variables, the Go host's
//! `GOATFLOW_REQUIRE_SIGNATURES` and `GOATFLOW_PLUGIN_<NAME>_<KEY>`.

use std::collections::BTreeMap;

/// A snapshot of environment variables. The process's own ([`Environment::process`]) in
/// `gk serve`; any pairs in tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    variables: BTreeMap<String, String>,
}

impl Environment {
    /// The variables of this process (those that are valid UTF-8).
    pub fn process() -> Self {
        Self::from_pairs(std::env::vars())
    }

    /// The given variables.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            variables: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Sets one variable (the server puts back the token secret it took out of its own
    /// environment at start).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.variables.insert(key.into(), value.into());
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.variables.get(key).cloned()
    }

    /// Every variable, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.variables.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Every variable whose name starts with `prefix`: the rest of its name, and its value.
    pub fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.variables
            .range(prefix.to_owned()..)
            .map_while(move |(k, v)| Some((k.strip_prefix(prefix)?, v.as_str())))
    }
}
