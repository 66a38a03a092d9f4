//! The config guard: which configuration keys a plugin may read.
//!
//! Keys are normalised before they are judged: lower-cased, with `.`, `_`, `-`, `/`, `:` and
//! white space all read as separators, so `Database.Password`, `DATABASE__URL` and
//! `smtp::pass` are all caught. A key is sensitive when its first segment is one of
//! [`SENSITIVE_PREFIXES`], when any segment contains one of [`SENSITIVE_WORDS`], or when it
//! belongs to another plugin (`plugins.<other>.…`). A sensitive key is refused unless a `config`
//! scope entry names it (exactly, or with a pattern; `*` alone does not unlock sensitive keys).
//! A plugin's own settings (`plugins.<self>.<key>`, exactly that form) need no permission: they
//! are what the operator configured for this plugin; the secret-looking ones are readable once
//! an admin has approved (or restricted) the plugin. A scope pattern unlocks sensitive keys
//! only when it names its subtree (`smtp.*`, `plugins.crm.*`); `**` or `plugins.*.key` count
//! as `*`, which unlocks none.

use gk_sdk::{PermissionType, ResourcePolicy};

use crate::scope::{Scope, ScopeMatch};

/// First segments of keys that hold infrastructure settings.
pub const SENSITIVE_PREFIXES: &[&str] = &[
    "database", "db", "mysql", "postgres", "mariadb", "smtp", "mail", "email", "ldap", "oauth",
    "saml", "aws", "gcp", "azure", "cloud",
];

/// Words that make any segment containing them sensitive.
pub const SENSITIVE_WORDS: &[&str] = &[
    "secret",
    "pass",
    "pwd",
    "dsn",
    "webhook",
    "credential",
    "token",
    "key",
    "private",
    "auth",
    "session",
    "cookie",
];

/// The compiled `config` scope.
#[derive(Debug, Default)]
pub(crate) struct ConfigRules {
    scope: Scope,
    /// Whether an admin approved the plugin (`approved` or `restricted`).
    reviewed: bool,
}

/// Whether a scope entry's pattern may unlock sensitive keys: its first segment (and, under
/// `plugins`, its second: the plugin's name) must be written out. `**`, `*.password` or
/// `plugins.*.api_key` would unlock every secret at once and count as `*`.
fn names_its_subtree(segments: &[String]) -> bool {
    let literal =
        |segment: Option<&String>| segment.is_some_and(|s| !s.contains(['*', '?', '[', '{']));
    literal(segments.first())
        && (segments.first().map(String::as_str) != Some("plugins") || literal(segments.get(1)))
}

impl ConfigRules {
    pub(crate) fn compile(policy: &ResourcePolicy) -> Result<Self, String> {
        let entries: Vec<String> = policy
            .permissions_of(PermissionType::Config)
            .flat_map(|p| &p.scope)
            .map(|entry| {
                let segments = normalise(entry);
                if entry.trim() == "*" || !names_its_subtree(&segments) {
                    "*".to_owned()
                } else {
                    segments.join(".")
                }
            })
            .collect();
        Ok(Self {
            scope: Scope::compile(entries.iter().map(String::as_str), Some('.'))?,
            reviewed: matches!(
                policy.status,
                gk_sdk::PolicyStatus::Approved | gk_sdk::PolicyStatus::Restricted
            ),
        })
    }

    /// Checks that `plugin` may read `key`; the error says why not.
    pub(crate) fn check(&self, plugin: &str, key: &str) -> Result<(), String> {
        let segments = normalise(key);
        if segments.is_empty() {
            return Err("the key is empty".to_owned());
        }
        let Some(why) = sensitivity(plugin, key, &segments) else {
            return Ok(());
        };
        if why == OWN_SECRET {
            return if self.reviewed {
                Ok(())
            } else {
                Err(format!(
                    "key `{}` looks like a secret of this plugin's own: readable once an admin has approved the plugin",
                    segments.join(".")
                ))
            };
        }
        let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
        match self.scope.matches(&parts) {
            ScopeMatch::Exact | ScopeMatch::Pattern => Ok(()),
            ScopeMatch::Any | ScopeMatch::No => Err(format!(
                "key `{}` is sensitive ({why}) and not named in the config scope",
                segments.join(".")
            )),
        }
    }
}

/// What [`sensitivity`] says of a plugin's own secret-looking setting.
const OWN_SECRET: &str = "own secret";

fn normalise(key: &str) -> Vec<String> {
    key.split(|c: char| matches!(c, '.' | '_' | '-' | '/' | ':') || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Why a key is sensitive, if it is. `segments` is the normalised key.
fn sensitivity(plugin: &str, key: &str, segments: &[String]) -> Option<String> {
    let first = segments.first()?.as_str();
    // Normalisation blurs `my-plugin` into `my.plugin`, so a plugin's own settings are
    // recognised only in the exact form `plugins.<name>.<key>`. They are the operator's
    // settings for this plugin (an API key, say): readable without any permission, the
    // secret-looking ones once an admin has approved the plugin (a package that merely took
    // the name of a configured plugin does not read its secrets while pending review).
    let lower = key.trim().to_lowercase();
    let own_prefix = format!("plugins.{}.", plugin.to_lowercase());
    if lower.starts_with(&own_prefix) && lower.len() > own_prefix.len() {
        let secret = normalise(&lower[own_prefix.len()..])
            .iter()
            .any(|s| SENSITIVE_WORDS.iter().any(|w| s.contains(*w)));
        return secret.then(|| OWN_SECRET.to_owned());
    }
    if first == "plugins" {
        return Some("another plugin's settings".to_owned());
    }
    if SENSITIVE_PREFIXES.contains(&first) {
        return Some(format!("`{first}` settings"));
    }
    if let Some(word) = segments
        .iter()
        .find_map(|s| SENSITIVE_WORDS.iter().find(|w| s.contains(*w)))
    {
        return Some(format!("contains `{word}`"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_folds_case_and_separators() {
        assert_eq!(normalise("Database__URL"), ["database", "url"]);
        assert_eq!(normalise(" smtp::Pass/word "), ["smtp", "pass", "word"]);
    }

    #[test]
    fn own_plugin_settings_are_not_sensitive() {
        let check = |plugin: &str, key: &str| sensitivity(plugin, key, &normalise(key));
        assert_eq!(check("my-plugin", "plugins.my-plugin.colour"), None);
        assert_eq!(check("my-plugin", "Plugins.My-Plugin.Colour"), None);
        assert!(check("my-plugin", "plugins.other.colour").is_some());
        assert!(
            check("my", "plugins.my-plugin.colour").is_some(),
            "a prefix of another name"
        );
        assert!(
            check("my", "plugins_my_colour").is_some(),
            "only the exact form is the plugin's own"
        );
        assert!(
            check("my-plugin", "plugins.my-plugin").is_some(),
            "the plugin's whole subtree"
        );
        assert_eq!(
            check("my-plugin", "plugins.my-plugin.api_key").as_deref(),
            Some(OWN_SECRET),
            "the operator's secrets for this plugin are its own, once it is approved"
        );
        assert!(check("other", "plugins.my-plugin.api_key").is_some());
    }
}
