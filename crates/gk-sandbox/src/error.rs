//! Errors of building a sandbox from a policy.

use gk_sdk::PermissionType;

/// Why a policy cannot be enforced as written. The live policy stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A scope entry of a permission cannot be understood.
    #[error("policy of `{plugin}`: {permission} scope {problem}")]
    InvalidScope {
        /// The plugin.
        plugin: String,
        /// The permission type whose scope is wrong.
        permission: PermissionType,
        /// The entry and what is wrong with it.
        problem: String,
    },
    /// The policy names another plugin.
    #[error("policy of `{policy_plugin}` cannot be applied to plugin `{plugin}`")]
    WrongPlugin {
        /// The sandbox's plugin.
        plugin: String,
        /// The plugin the policy names.
        policy_plugin: String,
    },
}
