//! The rows of the plugin list: every plugin the loader knows of ([`gk_core::Loader::inventory`]),
//! each state as a class (for the stylesheet and tests) and a label (for people).

use gk_core::signing::SignatureState;
use gk_core::{Lifecycle, PluginOverview};
use gk_sdk::PolicyStatus;
use serde::Serialize;

/// A state shown as a badge: `key` names its class (`state-<key>`), `label` is what it says.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(super) struct Badge {
    key: &'static str,
    label: &'static str,
    /// More, shown on hover (an invalid signature's reason).
    detail: Option<String>,
}

fn badge(key: &'static str, label: &'static str) -> Badge {
    Badge {
        key,
        label,
        detail: None,
    }
}

/// One row of the plugin list.
#[derive(Debug, Serialize)]
pub(super) struct PluginRow {
    name: String,
    description: String,
    runtime: String,
    version: Option<String>,
    /// Known to the manager: it has a page and can be enabled or disabled.
    known: bool,
    enabled: bool,
    lifecycle: Badge,
    review: Option<Badge>,
    /// `None` for a refused file: it was not taken far enough to say.
    signature: Option<Badge>,
    problem: Option<String>,
    calls: Option<u64>,
    errors: Option<u64>,
    mean_micros: Option<u64>,
}

fn lifecycle(lifecycle: Lifecycle) -> Badge {
    match lifecycle {
        Lifecycle::Loaded => badge("loaded", "loaded"),
        Lifecycle::NotLoaded => badge("not_loaded", "not loaded yet"),
        Lifecycle::Failed => badge("failed", "failed to load"),
        Lifecycle::Refused => badge("refused", "refused"),
    }
}

fn review(status: PolicyStatus) -> Badge {
    match status {
        PolicyStatus::PendingReview => badge("pending_review", "pending review"),
        PolicyStatus::Approved => badge("approved", "approved"),
        PolicyStatus::Restricted => badge("restricted", "restricted"),
        PolicyStatus::Blocked => badge("blocked", "blocked"),
    }
}

fn signature(state: SignatureState) -> Badge {
    match state {
        SignatureState::Verified => badge("verified", "verified"),
        SignatureState::Unsigned => badge("unsigned", "unsigned"),
        SignatureState::Invalid(why) => Badge {
            detail: Some(why),
            ..badge("invalid", "invalid")
        },
        SignatureState::NotChecked => badge("not_checked", "not checked"),
        SignatureState::Embedded => badge("embedded", "no file"),
    }
}

impl From<PluginOverview> for PluginRow {
    fn from(plugin: PluginOverview) -> Self {
        let known = plugin.lifecycle != Lifecycle::Refused;
        Self {
            runtime: plugin
                .runtime
                .unwrap_or_else(|| if known { "embedded" } else { "—" }.to_owned()),
            version: plugin.version,
            description: plugin.description,
            known,
            enabled: plugin.enabled,
            lifecycle: lifecycle(plugin.lifecycle),
            review: plugin.review.map(review),
            signature: known.then(|| signature(plugin.signature)),
            problem: plugin.problem,
            calls: plugin.stats.as_ref().map(|s| s.calls),
            errors: plugin.stats.as_ref().map(|s| s.errors),
            mean_micros: plugin.stats.as_ref().map(|s| s.mean_micros),
            name: plugin.name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_its_own_class_and_label() {
        let keys: Vec<&str> = [
            Lifecycle::Loaded,
            Lifecycle::NotLoaded,
            Lifecycle::Failed,
            Lifecycle::Refused,
        ]
        .into_iter()
        .map(|l| lifecycle(l).key)
        .chain(
            [
                PolicyStatus::PendingReview,
                PolicyStatus::Approved,
                PolicyStatus::Restricted,
                PolicyStatus::Blocked,
            ]
            .into_iter()
            .map(|s| review(s).key),
        )
        .collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
        let invalid = signature(SignatureState::Invalid("tampered".into()));
        assert_eq!(
            (invalid.key, invalid.detail.as_deref()),
            ("invalid", Some("tampered"))
        );
    }
}
