//! Read-only answers about one plugin's lifecycle: where it comes from, whether it is loaded,
//! and why its last load failed.

use crate::discovery::Discovered;

use super::{Manager, ManagerError};

impl Manager {
    /// Where a discovered plugin comes from (its runtime, directory, entry and manifest);
    /// `None` for a plugin registered directly.
    pub fn source(&self, name: &str) -> Result<Option<Discovered>, ManagerError> {
        Ok(self.slot(name)?.source.load_full().map(|s| (*s).clone()))
    }

    /// Whether a known plugin is loaded.
    pub fn is_loaded(&self, name: &str) -> Result<bool, ManagerError> {
        Ok(self.slot(name)?.loaded.load().is_some())
    }

    /// Why the last attempt to load a plugin failed (its runtime refused it, `init` failed,
    /// it registered under another name); `None` once it loads, or before it is first tried.
    pub fn load_error(&self, name: &str) -> Result<Option<String>, ManagerError> {
        Ok(self
            .slot(name)?
            .load_error
            .load_full()
            .map(|e| e.as_ref().clone()))
    }

    /// A plugin's review status: its stored policy's, or `pending_review` when no policy is
    /// stored yet (what it gets on first load). Stores nothing.
    pub async fn review_status(&self, name: &str) -> Result<gk_sdk::PolicyStatus, ManagerError> {
        self.slot(name)?;
        Ok(match self.inner.store.plugin_policy(name).await? {
            Some(policy) => policy.status,
            None => gk_sdk::ResourcePolicy::default_for(name).status,
        })
    }
}
