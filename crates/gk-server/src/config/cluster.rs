//! `[cluster]`: running several nodes as one platform (see docs/CLUSTER.md).

use std::time::Duration;

use super::ConfigError;
use super::parse::value_error;
use gk_core::cluster::ClusterConfig;

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
    /// The `host:port` other nodes reach this node's HTTP at, to merge logs
    /// (`cluster.advertise`, `GOATKIT_CLUSTER_ADVERTISE`); `None` is the listen address.
    pub advertise: Option<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            node_id: None,
            prefix: "goatkit".to_owned(),
            reconcile_every: ClusterConfig::RECONCILE_EVERY,
            heartbeat_every: ClusterConfig::HEARTBEAT_EVERY,
            advertise: None,
        }
    }
}

/// The longest prefix: the PostgreSQL channel `gk-cluster:<prefix>:control` must stay within
/// PostgreSQL's 63-byte identifiers.
const MAX_PREFIX_BYTES: usize = 40;

/// A node id or prefix: printable, no spaces or `:` (it is part of Redis keys and channels), at
/// most `max` bytes.
fn name_of_at_most(key: &str, value: &str, max: usize) -> Result<String, ConfigError> {
    let value = value.trim();
    if value.is_empty()
        || value.len() > max
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':')
    {
        return Err(value_error(
            key,
            format!("`{value}` is not a name: 1 to {max} bytes, no spaces or `:`"),
        ));
    }
    Ok(value.to_owned())
}

/// `cluster.node_id`.
pub(super) fn name(key: &str, value: &str) -> Result<String, ConfigError> {
    name_of_at_most(key, value, 200)
}

/// `cluster.prefix`.
pub(super) fn prefix(key: &str, value: &str) -> Result<String, ConfigError> {
    name_of_at_most(key, value, MAX_PREFIX_BYTES)
}

/// A `host:port` another node can connect to.
pub(super) fn host_port(key: &str, value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    let parsed = url::Url::parse(&format!("http://{value}/"))
        .ok()
        .filter(|url| url.host_str().is_some() && url.path() == "/");
    // An explicit port (`Url::port` hides 80, the scheme's default).
    let has_port = value
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    let parsed = parsed.filter(|_| has_port);
    match parsed {
        Some(_) if !value.contains(['/', '@', '?', '#']) => Ok(value.to_owned()),
        _ => Err(value_error(
            key,
            format!("`{value}` is not a host:port other nodes can reach"),
        )),
    }
}

impl ClusterSettings {
    /// The namespace of the cluster's Redis keys and channel, `gk-cluster:<prefix>`: apart from
    /// the plugin cache's keys (`plugin:…`, `gk:…`), whatever the prefix.
    pub fn namespace(&self) -> String {
        format!("gk-cluster:{}", self.prefix)
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
    use crate::config::{Environment, ServeConfig};

    #[test]
    fn node_ids_and_prefixes_are_names() {
        let mut settings = ServeConfig::load(
            None,
            &Environment::from_pairs([
                ("GOATKIT_CLUSTER_ENABLED", "true"),
                ("GOATKIT_NODE_ID", "node-a"),
                ("GOATKIT_CLUSTER_RECONCILE_EVERY", "2s"),
            ]),
        )
        .expect("valid")
        .cluster;
        assert!(settings.enabled);
        assert_eq!(settings.node_id.as_deref(), Some("node-a"));
        assert_eq!(settings.reconcile_every, Duration::from_secs(2));
        assert_eq!(settings.node_id_or_default(8080), "node-a");
        assert!(host_port("k", "10.0.0.11:8080").is_ok());
        assert!(host_port("k", "node-1.internal:80").is_ok());
        for bad in ["10.0.0.11", "http://x:1", "x:1/path", "a@x:1"] {
            assert!(host_port("k", bad).is_err(), "{bad}");
        }
        for bad in ["", "a b", "a:b"] {
            let error = settings.set_node_id(bad).expect_err(bad);
            assert!(error.to_string().starts_with("--node-id: "), "{error}");
        }
        let unset = ClusterSettings::default();
        assert!(unset.node_id_or_default(8081).ends_with("-8081"));
    }
}
