//! The manager as one node of many: it tells a [`ChangeListener`] of every change it makes to a
//! plugin's stored state, and applies what another node stored ([`Manager::apply_stored_state`]).
//!
//! The store is the source of truth; a change message only says which plugin to look at again.
//! Applying is idempotent, so a message received twice, late, or never (the periodic
//! reconciliation reads every plugin) leaves the node as the store says.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use gk_sdk::ResourcePolicy;
use serde::{Deserialize, Serialize};

use super::{Manager, ManagerError, PolicyApplied};

/// What changed about a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateChange {
    /// Its enabled state or its policy (an approval, a block, new limits).
    State,
    /// Its installed package: installed, upgraded or removed.
    Package,
}

/// Told of every change this node makes to a plugin's stored state, after it is stored.
pub trait ChangeListener: Send + Sync + std::fmt::Debug {
    /// `plugin`'s stored state changed in the way `change` says.
    fn changed(&self, plugin: &str, change: StateChange);
}

/// What [`Manager::apply_stored_state`] changed on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoredStateApplied {
    /// The enabled state changed (to the stored one).
    pub enabled_changed: bool,
    /// The loaded plugin's policy changed (to the stored one), and what that did.
    pub policy: Option<PolicyApplied>,
}

impl StoredStateApplied {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        self.enabled_changed || self.policy.is_some()
    }
}

impl Manager {
    /// Tells `listener` of every change this manager makes to a plugin's stored state from now
    /// on. Set once; later calls are ignored (and logged).
    pub fn set_change_listener(&self, listener: Arc<dyn ChangeListener>) {
        if self.inner.listener.set(listener).is_err() {
            tracing::warn!("the manager already has a change listener; ignoring another");
        }
    }

    /// Tells the listener, if any, that `plugin` changed.
    pub(crate) fn announce(&self, plugin: &str, change: StateChange) {
        if let Some(listener) = self.inner.listener.get() {
            listener.changed(plugin, change);
        }
    }

    /// The store this manager keeps its state in.
    pub(crate) fn store(&self) -> &crate::Store {
        &self.inner.store
    }

    /// The counters of the rate limiter the nodes share, when one is set
    /// ([`gk_sandbox::SandboxConfig::with_shared_limiter`]).
    pub fn shared_limit_stats(&self) -> Option<gk_sandbox::SharedLimitStats> {
        self.inner.sandbox_config.shared_limit_stats()
    }

    /// Whether a change listener is set (the node is part of a cluster).
    pub(crate) fn announces(&self) -> bool {
        self.inner.listener.get().is_some()
    }

    /// Makes this node's copy of a known plugin's state match the store, which another node
    /// may have changed: its enabled state, and the policy of its loaded sandbox (live, or by a
    /// blue-green reload for load-time settings). Writes nothing and announces nothing.
    pub async fn apply_stored_state(&self, name: &str) -> Result<StoredStateApplied, ManagerError> {
        let slot = self.slot(name)?;
        let _state = slot.state_lock.lock().await;
        let mut applied = StoredStateApplied::default();
        let enabled = self.inner.store.plugin_enabled(name).await?;
        if slot.enabled.swap(enabled, Ordering::SeqCst) != enabled {
            self.catalog_changed();
            applied.enabled_changed = true;
            tracing::info!(plugin = %name, enabled, "plugin enabled state taken from the store");
        }
        if let Some(loaded) = slot.loaded.load_full() {
            let stored = self
                .inner
                .store
                .plugin_policy(name)
                .await?
                .unwrap_or_else(|| ResourcePolicy::default_for(name));
            let live = loaded.sandbox.policy();
            if live != stored {
                loaded.sandbox.update_policy(stored.clone())?;
                let policy = self
                    .finish_policy_change(&live, &stored, Some(loaded))
                    .await;
                tracing::info!(plugin = %name, ?policy, "plugin policy taken from the store");
                applied.policy = Some(policy);
            }
        }
        Ok(applied)
    }
}
