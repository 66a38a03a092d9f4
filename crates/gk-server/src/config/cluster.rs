//! `[cluster]`: running several nodes as one platform (see docs/CLUSTER.md).

use std::time::Duration;

use gk_core::cluster::ClusterConfig;
use serde::Deserialize;

use super::parse::{parse_bool, parse_timeout, value_error};
use super::{ConfigError, Environment};

/// How this node takes part in a cluster (`[cluster]`, `GOATKIT_CLUSTER_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Join a cluster (`cluster.enabled`, `GOATKIT_CLUSTER_ENABLED`). Needs a PostgreSQL or
    /// MariaDB store every node shares; Redis (`redis_url`), when set, carries the control
    /// messages, the shared rate limits and the job claims.
    pub enabled: bool,
    /// This node's id (`cluster.node_id`, `GOATKIT_NODE_ID`, `gk serve --node-id`); `None` is
    /// the host name and the listen port.
    pub node_id: Option<String>,
    /// The prefix of the cluster's Redis keys and channel (`cluster.prefix`,
    /// `GOATKIT_CLUSTER_PREFIX`): nodes sharing a store and a prefix are one cluster.
    pub prefix: String,
    /// How often a node reconciles every plugin with the store, messages or not
    /// (`cluster.reconcile_every`, `GOATKIT_CLUSTER_RECONCILE_EVERY`).
    pub reconcile_every: Duration,
    /// How often a node writes its heartbeat (`cluster.heartbeat_every`,
    /// `GOATKIT_CLUSTER_HEARTBEAT_EVERY`).
    pub heartbeat_every: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            node_id: None,
            prefix: "goatkit".to_owned(),
            reconcile_every: ClusterConfig::RECONCILE_EVERY,
            heartbeat_every: ClusterConfig::HEARTBEAT_EVERY,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCluster {
    enabled: Option<bool>,
    node_id: Option<String>,
    prefix: Option<String>,
    reconcile_every: Option<String>,
    heartbeat_every: Option<String>,
}

/// A node id or prefix: printable, no spaces or `:` (it is part of Redis keys and channels).
fn name(key: &str, value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    if value.is_empty()
        || value.len() > 200
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':')
    {
        return Err(value_error(
            key,
            format!("`{value}` is not a name: 1 to 200 characters, no spaces or `:`"),
        ));
    }
    Ok(value.to_owned())
}

impl ClusterSettings {
    pub(super) fn apply_file(&mut self, file: FileCluster) -> Result<(), ConfigError> {
        if let Some(enabled) = file.enabled {
            self.enabled = enabled;
        }
        if let Some(id) = file.node_id {
            self.node_id = Some(name("cluster.node_id", &id)?);
        }
        if let Some(prefix) = file.prefix {
            self.prefix = name("cluster.prefix", &prefix)?;
        }
        if let Some(every) = file.reconcile_every {
            self.reconcile_every = parse_timeout("cluster.reconcile_every", &every)?;
        }
        if let Some(every) = file.heartbeat_every {
            self.heartbeat_every = parse_timeout("cluster.heartbeat_every", &every)?;
        }
        Ok(())
    }

    pub(super) fn apply_env(&mut self, env: &Environment) -> Result<(), ConfigError> {
        if let Some(enabled) = env.get("GOATKIT_CLUSTER_ENABLED") {
            self.enabled = parse_bool("GOATKIT_CLUSTER_ENABLED", &enabled)?;
        }
        if let Some(id) = env.get("GOATKIT_NODE_ID") {
            self.node_id = Some(name("GOATKIT_NODE_ID", &id)?);
        }
        if let Some(prefix) = env.get("GOATKIT_CLUSTER_PREFIX") {
            self.prefix = name("GOATKIT_CLUSTER_PREFIX", &prefix)?;
        }
        if let Some(every) = env.get("GOATKIT_CLUSTER_RECONCILE_EVERY") {
            self.reconcile_every = parse_timeout("GOATKIT_CLUSTER_RECONCILE_EVERY", &every)?;
        }
        if let Some(every) = env.get("GOATKIT_CLUSTER_HEARTBEAT_EVERY") {
            self.heartbeat_every = parse_timeout("GOATKIT_CLUSTER_HEARTBEAT_EVERY", &every)?;
        }
        Ok(())
    }

    /// Sets the node id given on the command line (`gk serve --node-id`).
    pub fn set_node_id(&mut self, id: &str) -> Result<(), ConfigError> {
        self.node_id = Some(name("--node-id", id)?);
        Ok(())
    }

    /// This node's id: the configured one, else the host name and `port`.
    pub fn node_id_or_default(&self, port: u16) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "node".to_owned());
            format!("{host}-{port}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_and_prefixes_are_names() {
        let mut settings = ClusterSettings::default();
        settings
            .apply_env(&Environment::from_pairs([
                ("GOATKIT_CLUSTER_ENABLED", "true"),
                ("GOATKIT_NODE_ID", "node-a"),
                ("GOATKIT_CLUSTER_RECONCILE_EVERY", "2s"),
            ]))
            .expect("valid");
        assert!(settings.enabled);
        assert_eq!(settings.node_id.as_deref(), Some("node-a"));
        assert_eq!(settings.reconcile_every, Duration::from_secs(2));
        assert_eq!(settings.node_id_or_default(8080), "node-a");
        for bad in ["", "a b", "a:b"] {
            let error = settings.set_node_id(bad).expect_err(bad);
            assert!(error.to_string().starts_with("--node-id: "), "{error}");
        }
        let unset = ClusterSettings::default();
        assert!(unset.node_id_or_default(8081).ends_with("-8081"));
    }
}
