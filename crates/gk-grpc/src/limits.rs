//! [`GrpcLimits`]: what one plugin process runs under, and the runtime's defaults.

use std::time::Duration;

use gk_sdk::ResourcePolicy;

/// The largest message either side of a plugin's gRPC connections accepts or sends, by default
/// (host calls and their replies, and calls to the plugin and theirs): 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = gk_sdk::handshake::DEFAULT_MAX_MESSAGE_BYTES;

/// How often a running plugin's health is checked, by default.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);

/// The limits one plugin process runs under, usually taken from its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcLimits {
    /// Deadline of one call.
    pub call_timeout: Duration,
    /// Deadline of the handshake, `Register` and `Init`.
    pub init_timeout: Duration,
    /// Grace period of each step of shutdown.
    pub shutdown_timeout: Duration,
    /// Whether the plugin keeps the host's network. Never set from a policy: a plugin's `http`
    /// permission is for the host's `http_request`, which applies its scope, rate limit and the
    /// internal-address wall; a process on the host's network would bypass all three. Without
    /// it the process runs in a network namespace of its own (no network at all, where
    /// namespaces are available) and is told so with `GOATFLOW_NO_NETWORK=1`. Only an embedder
    /// that trusts a plugin sets it.
    pub network: bool,
    /// Memory cap in MiB; 0 = none. Enforced as `memory.max` of a cgroup v2 of the process's
    /// own where the host may create one, and always as `RLIMIT_DATA` (private writable memory:
    /// the `PROT_NONE` address reservations of Go and Java runtimes do not count, so they start,
    /// which `RLIMIT_AS` would prevent).
    pub memory_mb: u32,
    /// How often the plugin's `Health` is checked; a plugin that does not answer is restarted.
    pub health_interval: Duration,
}

impl GrpcLimits {
    /// The limits of a policy.
    pub fn from_policy(policy: &ResourcePolicy) -> Self {
        Self {
            call_timeout: policy.call_timeout,
            init_timeout: policy.init_timeout,
            shutdown_timeout: policy.shutdown_timeout,
            network: false,
            memory_mb: policy.memory_mb,
            health_interval: DEFAULT_HEALTH_INTERVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gk_sdk::{Access, Permission, PermissionType};

    #[test]
    fn an_http_permission_never_opens_the_hosts_network() {
        let mut policy = ResourcePolicy::default_for("p");
        policy.permissions =
            vec![Permission::new(PermissionType::Http, Access::Read).with_scope(["*"])];
        assert!(!GrpcLimits::from_policy(&policy).network);
    }
}
