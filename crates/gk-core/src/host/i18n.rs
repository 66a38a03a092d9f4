//! `translate`: catalogs from each plugin's registration and the host's own; the language of
//! the call context, falling back to its base language (`de` for `de-CH`), then English, then
//! the key itself; positional (`{0}`) and named (`{name}`) arguments.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use gk_sdk::{I18nSpec, TranslateArgs};
use serde_json::Value;

/// The language used when the context names none, and the last fallback.
pub const FALLBACK_LANGUAGE: &str = "en";

type Catalog = BTreeMap<String, BTreeMap<String, String>>;

/// Every catalog the host knows.
#[derive(Debug, Default)]
pub struct Translations {
    host: RwLock<Catalog>,
    plugins: RwLock<HashMap<String, (String, Catalog)>>,
}

impl Translations {
    /// Adds the host's own texts for a language.
    pub fn add_host(&self, language: &str, texts: BTreeMap<String, String>) {
        let mut host = self.host.write().unwrap_or_else(|p| p.into_inner());
        host.entry(language.to_owned()).or_default().extend(texts);
    }

    /// Sets a plugin's catalog from its registration; its keys are also reachable as
    /// `<namespace>.<key>` (the namespace defaults to the plugin's name).
    pub fn set_plugin(&self, plugin: &str, spec: &I18nSpec) {
        let namespace = if spec.namespace.is_empty() {
            plugin.to_owned()
        } else {
            spec.namespace.clone()
        };
        let mut plugins = self.plugins.write().unwrap_or_else(|p| p.into_inner());
        plugins.insert(plugin.to_owned(), (namespace, spec.translations.clone()));
    }

    /// Forgets a plugin's catalog.
    pub fn remove_plugin(&self, plugin: &str) {
        self.plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(plugin);
    }

    /// Every key as the platform exposes it, `<namespace>.<key>`, for one language.
    pub fn exposed(&self, language: &str) -> BTreeMap<String, String> {
        let plugins = self.plugins.read().unwrap_or_else(|p| p.into_inner());
        plugins
            .values()
            .filter_map(|(namespace, catalog)| {
                catalog.get(language).map(|texts| (namespace, texts))
            })
            .flat_map(|(namespace, texts)| {
                texts
                    .iter()
                    .map(move |(k, v)| (format!("{namespace}.{k}"), v.clone()))
            })
            .collect()
    }

    /// Translates `key` for `plugin` into `language`.
    pub fn translate(
        &self,
        plugin: &str,
        language: Option<&str>,
        key: &str,
        args: &TranslateArgs,
    ) -> String {
        let text = self
            .lookup(plugin, language, key)
            .unwrap_or_else(|| key.to_owned());
        substitute(&text, args)
    }

    fn lookup(&self, plugin: &str, language: Option<&str>, key: &str) -> Option<String> {
        let plugins = self.plugins.read().unwrap_or_else(|p| p.into_inner());
        let host = self.host.read().unwrap_or_else(|p| p.into_inner());
        let own = plugins.get(plugin);
        for language in candidates(language) {
            // The plugin's own keys, raw or with its namespace; then any plugin's namespaced
            // keys; then the host's.
            if let Some((namespace, catalog)) = own
                && let Some(texts) = catalog.get(&language)
            {
                let bare = key.strip_prefix(&format!("{namespace}.")).unwrap_or(key);
                if let Some(text) = texts.get(key).or_else(|| texts.get(bare)) {
                    return Some(text.clone());
                }
            }
            for (namespace, catalog) in plugins.values() {
                if let (Some(bare), Some(texts)) = (
                    key.strip_prefix(&format!("{namespace}.")),
                    catalog.get(&language),
                ) && let Some(text) = texts.get(bare)
                {
                    return Some(text.clone());
                }
            }
            if let Some(text) = host.get(&language).and_then(|texts| texts.get(key)) {
                return Some(text.clone());
            }
        }
        None
    }
}

/// `de-CH` → `de-ch`, `de`, `en`.
fn candidates(language: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(language) = language
        .map(|l| l.trim().to_lowercase().replace('_', "-"))
        .filter(|l| !l.is_empty())
    {
        if let Some((base, _)) = language.split_once('-') {
            out.push(language.clone());
            out.push(base.to_owned());
        } else {
            out.push(language);
        }
    }
    if !out.iter().any(|l| l == FALLBACK_LANGUAGE) {
        out.push(FALLBACK_LANGUAGE.to_owned());
    }
    out
}

fn render(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Replaces `{0}`, `{1}` … or `{name}` … with the arguments; unknown placeholders stay.
fn substitute(text: &str, args: &TranslateArgs) -> String {
    let mut out = text.to_owned();
    match args {
        TranslateArgs::None => {}
        TranslateArgs::Positional(values) => {
            for (i, value) in values.iter().enumerate() {
                out = out.replace(&format!("{{{i}}}"), &render(value));
            }
        }
        TranslateArgs::Named(map) => {
            for (name, value) in map {
                out = out.replace(&format!("{{{name}}}"), &render(value));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn translations() -> Translations {
        let t = Translations::default();
        t.add_host(
            "en",
            BTreeMap::from([("app.hello".to_owned(), "Hello {name}".to_owned())]),
        );
        t.add_host(
            "de",
            BTreeMap::from([("app.hello".to_owned(), "Hallo {name}".to_owned())]),
        );
        let spec = I18nSpec {
            namespace: String::new(),
            languages: vec!["de".into(), "en".into()],
            translations: BTreeMap::from([
                (
                    "de".into(),
                    BTreeMap::from([("title".into(), "Statistiken".into())]),
                ),
                (
                    "en".into(),
                    BTreeMap::from([
                        ("title".into(), "Statistics".into()),
                        ("count".into(), "{0} of {1}".into()),
                    ]),
                ),
            ]),
        };
        t.set_plugin("stats", &spec);
        t
    }

    #[test]
    fn languages_fall_back_to_base_then_english_then_the_key() {
        let t = translations();
        assert_eq!(
            t.translate("stats", Some("de"), "title", &TranslateArgs::None),
            "Statistiken"
        );
        assert_eq!(
            t.translate("stats", Some("de-CH"), "title", &TranslateArgs::None),
            "Statistiken"
        );
        assert_eq!(
            t.translate("stats", Some("fr"), "title", &TranslateArgs::None),
            "Statistics"
        );
        assert_eq!(
            t.translate("stats", None, "stats.title", &TranslateArgs::None),
            "Statistics"
        );
        assert_eq!(
            t.translate("other", Some("de"), "stats.title", &TranslateArgs::None),
            "Statistiken",
            "namespaced keys of other plugins"
        );
        assert_eq!(
            t.translate("stats", Some("de"), "missing.key", &TranslateArgs::None),
            "missing.key"
        );
    }

    #[test]
    fn positional_and_named_arguments() {
        let t = translations();
        assert_eq!(
            t.translate(
                "stats",
                None,
                "count",
                &TranslateArgs::Positional(vec![json!(3), json!("ten")])
            ),
            "3 of ten"
        );
        let named = TranslateArgs::Named(
            json!({"name": "Ann"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        assert_eq!(
            t.translate("stats", Some("de"), "app.hello", &named),
            "Hallo Ann"
        );
        assert_eq!(t.exposed("de")["stats.title"], "Statistiken");
    }
}
