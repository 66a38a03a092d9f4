//! Policies: the stored policy of each plugin, changes applied to its live sandbox, and
//! approving what a plugin requests.

use gk_sdk::{PolicyStatus, ResourcePolicy, ResourceRequest};

use super::{Manager, ManagerError};

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

    /// Stores a plugin's policy and applies it to the live sandbox on its next host call.
    pub async fn set_policy(&self, policy: ResourcePolicy, by: &str) -> Result<(), ManagerError> {
        let name = policy.plugin_name.clone();
        if let Ok(slot) = self.slot(&name)
            && let Some(loaded) = slot.loaded.load_full()
        {
            // Checked by compiling it before anything is stored.
            loaded.sandbox.update_policy(policy.clone())?;
        }
        self.inner.store.set_plugin_policy(&policy, by).await?;
        Ok(())
    }

    /// A plugin's policy (stored, or the default).
    pub async fn policy(&self, name: &str) -> Result<ResourcePolicy, ManagerError> {
        self.policy_for(name).await
    }

    /// What a plugin asks for: its registration's `resources` once loaded, else its
    /// manifest's; a plugin with neither is loaded to read its registration.
    pub async fn requested_resources(&self, name: &str) -> Result<ResourceRequest, ManagerError> {
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

    /// Grants a plugin what it requests ([`ResourcePolicy::approving`]), whatever its policy
    /// was; returns the new policy.
    pub async fn approve_requested(
        &self,
        name: &str,
        by: &str,
    ) -> Result<ResourcePolicy, ManagerError> {
        let request = self.requested_resources(name).await?;
        let policy = ResourcePolicy::approving(name, &request);
        self.set_policy(policy.clone(), by).await?;
        tracing::info!(plugin = %name, %by, "plugin approved with the resources it requests");
        Ok(policy)
    }

    /// Every stored policy.
    pub async fn all_policies(&self) -> Result<Vec<ResourcePolicy>, ManagerError> {
        Ok(self.inner.store.all_policies().await?)
    }
}
