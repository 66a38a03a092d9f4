//! What a plugin provides to the host: the document `gk_register` (WASM) and `Register` (gRPC)
//! return. The JSON is that of the plugins written for the Go GoatFlow host.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::ResourceRequest;
use crate::duration::serde_string;

/// A plugin's self-description.
///
/// Fields the platform does not know (newer GoatFlow fields such as `groups` or `uis`) are kept in
/// [`extensions`](Self::extensions) so that nothing a plugin sends is lost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GkRegistration {
    /// Unique identifier, e.g. `stats`.
    pub name: String,
    /// Version, e.g. `1.0.0`.
    pub version: String,
    /// Human-readable description.
    pub description: String,
    /// Author or organisation.
    pub author: String,
    /// SPDX licence identifier.
    pub license: String,
    /// Documentation or repository URL.
    pub homepage: String,
    /// HTTP routes to mount.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteSpec>,
    /// Navigation menu entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub menu_items: Vec<MenuItemSpec>,
    /// Dashboard widgets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub widgets: Vec<WidgetSpec>,
    /// Scheduled jobs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobSpec>,
    /// Templates the plugin provides or overrides.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<TemplateSpec>,
    /// Translations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub i18n: Option<I18nSpec>,
    /// API error codes, without the `<plugin>:` prefix the platform adds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_codes: Vec<ErrorCodeSpec>,
    /// IDs of the host's default menu items to hide.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hide_menu_items: Vec<String>,
    /// Path to send users to after login.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub landing_page: String,
    /// Oldest host version the plugin works with.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub min_host_version: String,
    /// Legacy free-form permission names (superseded by [`resources`](Self::resources)).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
    /// Requested limits and permissions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequest>,
    /// Fields this version of the platform does not interpret, kept as sent.
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

impl GkRegistration {
    /// Parses a registration from JSON.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// The registration as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // A registration holds only strings, numbers, maps and JSON values: it always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// An HTTP route the plugin handles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteSpec {
    /// `GET`, `POST`, ….
    pub method: String,
    /// URL path, e.g. `/api/plugins/stats/overview`; `:name` or `{name}` segments are parameters.
    pub path: String,
    /// The plugin function that answers.
    pub handler: String,
    /// Middleware chain: `auth`, `admin`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub middleware: Vec<String>,
    /// For documentation.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A navigation menu entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MenuItemSpec {
    /// Unique identifier.
    pub id: String,
    /// Display text or translation key.
    pub label: String,
    /// Icon name or SVG.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub icon: String,
    /// URL path when clicked.
    pub path: String,
    /// Where to insert: `admin`, `agent`, `customer`.
    pub location: String,
    /// Parent menu ID for submenus.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub parent: String,
    /// Sort order within the location.
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub order: i32,
    /// Nested entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<MenuItemSpec>,
}

/// A dashboard widget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WidgetSpec {
    /// Unique identifier within the plugin.
    pub id: String,
    /// Display title or translation key.
    pub title: String,
    /// Description.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The plugin function that returns the widget's HTML.
    pub handler: String,
    /// Dashboard location: `agent_home`, `admin_home`, ….
    pub location: String,
    /// `small`, `medium`, `large`, `full`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub size: String,
    /// Sort order within the location.
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub order: i32,
    /// Whether the page may refresh it.
    #[serde(skip_serializing_if = "is_false")]
    pub refreshable: bool,
    /// Auto-refresh interval in seconds.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub refresh_sec: u32,
}

/// A scheduled job. As in the Go host, a job without `"enabled": true` does not run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobSpec {
    /// Unique identifier within the plugin.
    pub id: String,
    /// The plugin function to call (with no arguments).
    pub handler: String,
    /// Cron expression; the seconds field is optional.
    pub schedule: String,
    /// Description.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Whether the job runs.
    pub enabled: bool,
    /// Longest run; absent means the platform default (300 s).
    #[serde(with = "serde_string::option", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// A template the plugin provides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TemplateSpec {
    /// Template name, e.g. `stats/dashboard.html`.
    pub name: String,
    /// Path within the plugin package.
    pub path: String,
    /// Whether it replaces the host template of the same name.
    #[serde(skip_serializing_if = "is_false")]
    pub r#override: bool,
}

/// An API error code the plugin may return; the platform exposes it as `<plugin>:<code>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorCodeSpec {
    /// Code without prefix, e.g. `invalid_range`.
    pub code: String,
    /// Default English message.
    pub message: String,
    /// HTTP status to answer with.
    pub http_status: u16,
}

/// Translations a plugin provides.
///
/// Accepts both forms existing plugins send: `{"namespace", "languages", "translations":
/// {lang: {key: text}}}` and the plain map `{lang: {key: text}}`. Always serialises in the first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct I18nSpec {
    /// Prefix of the plugin's keys (`stats` makes `stats.dashboard.title`); empty means the
    /// plugin name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Supported languages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    /// language -> key -> text.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub translations: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StructuredI18n {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    languages: Vec<String>,
    #[serde(default)]
    translations: BTreeMap<String, BTreeMap<String, String>>,
}

impl<'de> Deserialize<'de> for I18nSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Structured(StructuredI18n),
            Plain(BTreeMap<String, BTreeMap<String, String>>),
        }
        match Wire::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "i18n must be {\"namespace\", \"languages\", \"translations\": {lang: {key: text}}} \
                 or a map {lang: {key: text}} of strings",
            )
        })? {
            Wire::Structured(s) => Ok(Self {
                namespace: s.namespace,
                languages: s.languages,
                translations: s.translations,
            }),
            Wire::Plain(translations) => Ok(Self {
                namespace: String::new(),
                languages: translations.keys().cloned().collect(),
                translations,
            }),
        }
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero_i32(value: &i32) -> bool {
    *value == 0
}

fn is_zero_u32(value: &u32) -> bool {
    *value == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn i18n_accepts_both_forms() {
        let plain: I18nSpec =
            serde_json::from_value(json!({"en": {"a": "A"}, "de": {"a": "Ä"}})).unwrap();
        assert_eq!(plain.languages, ["de", "en"]);
        assert_eq!(plain.translations["de"]["a"], "Ä");
        let structured: I18nSpec = serde_json::from_value(
            json!({"namespace": "stats", "translations": {"en": {"a": "A"}}}),
        )
        .unwrap();
        assert_eq!(structured.namespace, "stats");
        assert_eq!(structured.translations["en"]["a"], "A");
        let err = serde_json::from_value::<I18nSpec>(json!({"en": "not a map"})).unwrap_err();
        assert!(err.to_string().starts_with("i18n must be"), "{err}");
    }

    #[test]
    fn unknown_fields_are_kept() {
        let reg: GkRegistration =
            serde_json::from_value(json!({"name": "x", "groups": [{"name": "g"}]})).unwrap();
        assert_eq!(reg.extensions["groups"], json!([{"name": "g"}]));
        let back: Value = serde_json::from_slice(&reg.to_json()).unwrap();
        assert_eq!(back["groups"], json!([{"name": "g"}]));
    }

    #[test]
    fn job_timeout_is_a_go_duration() {
        let job: JobSpec = serde_json::from_value(
            json!({"id": "j", "handler": "h", "schedule": "* * * * *", "timeout": "5m"}),
        )
        .unwrap();
        assert_eq!(job.timeout, Some(Duration::from_secs(300)));
        assert!(!job.enabled, "absent `enabled` is false, as in the Go host");
        let err = serde_json::from_value::<JobSpec>(json!({"timeout": "soon"}))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid duration `soon`"), "{err}");
    }
}
