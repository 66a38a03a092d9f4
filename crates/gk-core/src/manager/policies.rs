//! Policies: the stored policy of each plugin, changes applied to its live sandbox, and
//! approving what a plugin requests.
//!
//! Most of a policy applies on the plugin's next host call. What a runtime may fix when the
//! plugin loads ([`LOAD_TIME_SETTINGS`]: its memory cap, its call timeout, and whether it has
//! network access at all) is first offered to the loaded plugin ([`Plugin::apply_limits`]: the
//! WASM runtime applies memory cap and timeouts to the next call); what it cannot apply live
//! needs a reload: a change of those reloads a loaded plugin blue-green from its source, and
//! [`PolicyApplied`] says whether that happened or the change waits for the next load.
//!
//! [`Plugin::apply_limits`]: gk_sdk::Plugin::apply_limits

use gk_sdk::{PermissionType, PolicyStatus, ResourcePolicy, ResourceRequest};
use serde::Serialize;

use super::{Manager, ManagerError};

/// The policy settings a runtime fixes when it loads a plugin.
pub const LOAD_TIME_SETTINGS: [&str; 3] = ["memory_mb", "call_timeout", "network"];

/// What a policy change did beyond the live sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PolicyApplied {
    /// The changed settings fixed at load time (see [`LOAD_TIME_SETTINGS`]) that the loaded
    /// plugin could not apply live; empty when the whole change applied live.
    pub load_time_changes: Vec<String>,
    /// The loaded plugin was reloaded (blue-green) with the new policy.
    pub reloaded: bool,
    /// The load-time changes apply when the plugin next loads: it is not loaded, it has no
    /// source to reload from (registered in-process), or the reload failed.
    pub at_next_load: bool,
    /// Why the reload failed, when it did (the running version stays).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload_error: Option<String>,
}

/// The settings of [`LOAD_TIME_SETTINGS`] a plugin whose runtime applies its limits live
/// ([`gk_sdk::Plugin::apply_limits`]) takes without a reload.
const LIVE_LIMITS: [&str; 2] = ["memory_mb", "call_timeout"];

/// The settings of [`LOAD_TIME_SETTINGS`] that differ between `old` and `new`.
fn load_time_changes(old: &ResourcePolicy, new: &ResourcePolicy) -> Vec<String> {
    let network = |p: &ResourcePolicy| p.permissions.iter().any(|p| p.kind == PermissionType::Http);
    [
        old.memory_mb != new.memory_mb,
        old.call_timeout != new.call_timeout,
        network(old) != network(new),
    ]
    .into_iter()
    .zip(LOAD_TIME_SETTINGS)
    .filter(|(changed, _)| *changed)
    .map(|(_, name)| name.to_owned())
    .collect()
}

impl Manager {
    /// The stored policy of `name`, or the default one, stored at once.
    pub(super) async fn policy_for(&self, name: &str) -> Result<ResourcePolicy, ManagerError> {
        if let Some(policy) = self.inner.store.plugin_policy(name).await? {
            return Ok(policy);
        }
        let policy = ResourcePolicy::default_for(name);
        self.inner
            .store
            .set_plugin_policy(&policy, "system")
            .await?;
        Ok(policy)
    }

    /// Stores a plugin's policy and applies it to the live sandbox on its next host call; a
    /// change of a load-time setting reloads a loaded plugin (see the module).
    pub async fn set_policy(
        &self,
        policy: ResourcePolicy,
        by: &str,
    ) -> Result<PolicyApplied, ManagerError> {
        let name = policy.plugin_name.clone();
        let slot = self.slot(&name).ok();
        let _state = match &slot {
            Some(slot) => Some(slot.state_lock.lock().await),
            None => None,
        };
        let previous = self.inner.store.plugin_policy(&name).await?;
        let loaded = slot.as_ref().and_then(|slot| slot.loaded.load_full());
        if let Some(loaded) = &loaded {
            // Checked by compiling it before anything is stored.
            loaded.sandbox.update_policy(policy.clone())?;
        }
        self.inner.store.set_plugin_policy(&policy, by).await?;
        self.announce(&name, super::StateChange::State);
        let old = previous.unwrap_or_else(|| ResourcePolicy::default_for(&name));
        Ok(self.finish_policy_change(&old, &policy, loaded).await)
    }

    /// Applies what a policy change from `old` to `policy` needs beyond the live sandbox (which
    /// has it already): the loaded plugin's live limits, else a blue-green reload.
    pub(super) async fn finish_policy_change(
        &self,
        old: &ResourcePolicy,
        policy: &ResourcePolicy,
        loaded: Option<std::sync::Arc<super::Loaded>>,
    ) -> PolicyApplied {
        let name = policy.plugin_name.clone();
        let mut applied = PolicyApplied {
            load_time_changes: load_time_changes(old, policy),
            ..PolicyApplied::default()
        };
        if let Some(loaded) = &loaded
            && loaded.plugin.apply_limits(policy)
        {
            applied
                .load_time_changes
                .retain(|setting| !LIVE_LIMITS.contains(&setting.as_str()));
        }
        if applied.load_time_changes.is_empty() {
            return applied;
        }
        let source = self.source(&name).ok().flatten();
        match (loaded, source) {
            (Some(_), Some(found)) => match self.reload(found).await {
                Ok(_) => {
                    tracing::info!(plugin = %name, changed = ?applied.load_time_changes, "plugin reloaded to apply its policy");
                    applied.reloaded = true;
                }
                Err(error) => {
                    tracing::warn!(plugin = %name, %error, "the plugin could not be reloaded; its policy's load-time settings apply at its next load");
                    applied.at_next_load = true;
                    applied.reload_error = Some(error.to_string());
                }
            },
            _ => applied.at_next_load = true,
        }
        applied
    }

    /// A plugin's policy (stored, or the default).
    pub async fn policy(&self, name: &str) -> Result<ResourcePolicy, ManagerError> {
        self.policy_for(name).await
    }

    /// What a plugin asks for: its registration's `resources` once loaded, else its
    /// manifest's; a plugin with neither is loaded to read its registration. Permissions are
    /// read as requests mean them ([`gk_sdk::Permission::as_requested`]: no scope is `*`).
    pub async fn requested_resources(&self, name: &str) -> Result<ResourceRequest, ManagerError> {
        let mut request = self.declared_resources(name).await?;
        request.permissions = request
            .permissions
            .iter()
            .map(gk_sdk::Permission::as_requested)
            .collect();
        Ok(request)
    }

    async fn declared_resources(&self, name: &str) -> Result<ResourceRequest, ManagerError> {
        let slot = self.slot(name)?;
        if let Some(request) = slot
            .loaded
            .load_full()
            .and_then(|l| l.registration.resources.clone())
        {
            return Ok(request);
        }
        if let Some(manifest) = slot.source.load_full().and_then(|s| s.manifest.clone()) {
            return Ok(manifest.resources);
        }
        Ok(self.load(name).await?.resources.unwrap_or_default())
    }

    /// Grants a plugin what it requests ([`ResourcePolicy::approving`]) unless an admin has
    /// reviewed it already: only a missing or `pending_review` policy is replaced. Returns the
    /// policy now in force.
    pub async fn approve_unreviewed(
        &self,
        name: &str,
        by: &str,
    ) -> Result<ResourcePolicy, ManagerError> {
        let stored = self.inner.store.plugin_policy(name).await?;
        if let Some(policy) = stored
            && policy.status != PolicyStatus::PendingReview
        {
            return Ok(policy);
        }
        self.approve_requested(name, by).await
    }

    /// [`Manager::approve_unreviewed`] for each of `names`, the reviewed ones found with one
    /// read of the stored policies (a restart that approves hundreds of plugins from the
    /// configuration read them one store round trip each); one result per name, in order.
    pub async fn approve_unreviewed_all(
        &self,
        names: &[String],
        by: &str,
    ) -> Vec<(String, Result<ResourcePolicy, ManagerError>)> {
        // Where they cannot be read at once (a corrupt one, say), each is read on its own.
        let stored = self
            .inner
            .store
            .plugin_policies(names)
            .await
            .unwrap_or_default();
        let mut approved = Vec::with_capacity(names.len());
        for name in names {
            let result = match stored.get(name) {
                Some(policy) if policy.status != PolicyStatus::PendingReview => Ok(policy.clone()),
                // Read again before it is replaced: approving the names before it may have
                // loaded plugins for seconds, and an admin may have reviewed it meanwhile.
                _ => self.approve_unreviewed(name, by).await,
            };
            approved.push((name.clone(), result));
        }
        approved
    }

    /// Grants a plugin what it requests ([`ResourcePolicy::approving`]), whatever its policy
    /// was; returns the new policy.
    pub async fn approve_requested(
        &self,
        name: &str,
        by: &str,
    ) -> Result<ResourcePolicy, ManagerError> {
        let request = self.requested_resources(name).await?;
        let policy = ResourcePolicy::approving(name, &request);
        let applied = self.set_policy(policy.clone(), by).await?;
        tracing::info!(plugin = %name, %by, ?applied, "plugin approved with the resources it requests");
        Ok(policy)
    }

    /// Every stored policy.
    pub async fn all_policies(&self) -> Result<Vec<ResourcePolicy>, ManagerError> {
        Ok(self.inner.store.all_policies().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gk_sdk::{Access, Permission};
    use std::time::Duration;

    #[test]
    fn load_time_settings_are_memory_timeout_and_network() {
        let old = ResourcePolicy::default_for("p");
        assert!(load_time_changes(&old, &old).is_empty());
        let mut new = old.clone();
        new.max_calls_per_second += 1;
        new.permissions = vec![Permission::new(PermissionType::Cache, Access::Read)];
        assert!(load_time_changes(&old, &new).is_empty(), "applied live");
        new.memory_mb += 1;
        new.call_timeout = Duration::from_secs(1);
        new.permissions
            .push(Permission::new(PermissionType::Http, Access::Read));
        assert_eq!(
            load_time_changes(&old, &new),
            ["memory_mb", "call_timeout", "network"]
        );
    }
}
