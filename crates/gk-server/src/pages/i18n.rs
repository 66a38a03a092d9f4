//! Texts plugins declare as i18n keys — widget titles, menu labels, route and widget
//! descriptions — shown in the request's language through the declaring plugin's own catalog.
//!
//! The languages are the request's `Accept-Language`, best first (`de-CH` also tries `de`),
//! then [`FALLBACK_LANGUAGE`], then the languages the plugin declares (its first is its
//! default). A text that is no key of the plugin's catalog is shown as it is. Translations are
//! plain text: templates escape them like any other value.

use std::collections::HashMap;

use axum::http::{HeaderMap, header};
use gk_core::host::FALLBACK_LANGUAGE;
use gk_core::{Manager, PluginItem};
use gk_sdk::{GkRegistration, I18nSpec, MenuItemSpec, WidgetSpec};

use super::MenuEntry;

/// At most this many languages of an `Accept-Language` header are considered.
const MAX_LANGUAGES: usize = 8;

/// The languages of an `Accept-Language` header, best first: lower case, `q=0` and `*`
/// dropped, equal weights in the header's order.
pub fn accepted_languages(headers: &HeaderMap) -> Vec<String> {
    let Some(value) = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
    else {
        return Vec::new();
    };
    let mut weighted: Vec<(u16, String)> = value
        .split(',')
        .filter_map(|part| {
            let mut pieces = part.split(';');
            let tag = pieces.next()?.trim().to_ascii_lowercase().replace('_', "-");
            let valid = !tag.is_empty()
                && tag.len() <= 35
                && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            let quality = pieces
                .filter_map(|p| p.trim().strip_prefix("q="))
                .next()
                .map_or(Some(1000), parse_quality)?;
            (valid && quality > 0).then_some((quality, tag))
        })
        .take(MAX_LANGUAGES)
        .collect();
    weighted.sort_by_key(|w| std::cmp::Reverse(w.0));
    weighted.into_iter().map(|(_, tag)| tag).collect()
}

/// A quality value (`0.8`) in thousandths; `None` when it is not one.
fn parse_quality(text: &str) -> Option<u16> {
    let value: f32 = text.trim().parse().ok()?;
    (0.0..=1.0)
        .contains(&value)
        .then(|| (value * 1000.0).round() as u16)
}

/// Translates what plugins declare, for one request.
#[derive(Debug, Clone, Default)]
pub struct Translator {
    languages: Vec<String>,
    /// Each loaded plugin's catalog, by plugin name.
    catalogs: HashMap<String, I18nSpec>,
}

impl Translator {
    /// The catalogs of the loaded plugins of `manager`, for the request's `headers`.
    pub fn new(manager: &Manager, headers: &HeaderMap) -> Self {
        Self::with_languages(manager, accepted_languages(headers))
    }

    /// The catalogs of the loaded plugins of `manager`, for `languages` (best first).
    pub fn with_languages(manager: &Manager, languages: Vec<String>) -> Self {
        let catalogs = manager
            .names()
            .into_iter()
            .filter_map(|name| {
                let i18n = manager.registration(&name).ok()?.i18n?;
                Some((name, i18n))
            })
            .collect();
        Self {
            languages,
            catalogs,
        }
    }

    /// The request's best language, for `<html lang>` and the plugins' `translate`.
    pub fn language(&self) -> Option<&str> {
        self.languages.first().map(String::as_str)
    }

    /// `text` in the request's language when it is a key of `plugin`'s catalog (with or
    /// without the catalog's namespace); else `text` itself.
    pub fn text(&self, plugin: &str, text: &str) -> String {
        let Some(spec) = self.catalogs.get(plugin) else {
            return text.to_owned();
        };
        let namespace = if spec.namespace.is_empty() {
            plugin
        } else {
            &spec.namespace
        };
        let bare = text
            .strip_prefix(namespace)
            .and_then(|rest| rest.strip_prefix('.'));
        self.candidates(spec)
            .iter()
            .filter_map(|language| spec.translations.get(language))
            .find_map(|texts| texts.get(text).or_else(|| bare.and_then(|b| texts.get(b))))
            .cloned()
            .unwrap_or_else(|| text.to_owned())
    }

    /// The languages to try for a catalog: the request's (each also by its primary subtag),
    /// the fallback, then the plugin's own.
    fn candidates(&self, spec: &I18nSpec) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |language: &str| {
            if !out.iter().any(|l| l == language) {
                out.push(language.to_owned());
            }
        };
        for language in &self.languages {
            push(language);
            if let Some((primary, _)) = language.split_once('-') {
                push(primary);
            }
        }
        push(FALLBACK_LANGUAGE);
        for language in &spec.languages {
            push(&language.to_ascii_lowercase());
        }
        out
    }

    /// Widgets with their titles and descriptions translated.
    pub fn widgets(&self, widgets: Vec<PluginItem<WidgetSpec>>) -> Vec<PluginItem<WidgetSpec>> {
        widgets
            .into_iter()
            .map(|mut w| {
                w.item = self.widget(&w.plugin, w.item);
                w
            })
            .collect()
    }

    fn widget(&self, plugin: &str, mut widget: WidgetSpec) -> WidgetSpec {
        widget.title = self.text(plugin, &widget.title);
        widget.description = self.text(plugin, &widget.description);
        widget
    }

    /// Menu entries with their labels translated, sub-entries too.
    pub fn menu(&self, entries: Vec<MenuEntry>) -> Vec<MenuEntry> {
        entries
            .into_iter()
            .map(|mut entry| {
                entry.label = self.text(&entry.plugin, &entry.label);
                entry.children = self.menu(std::mem::take(&mut entry.children));
                entry
            })
            .collect()
    }

    fn menu_item(&self, plugin: &str, mut item: MenuItemSpec) -> MenuItemSpec {
        item.label = self.text(plugin, &item.label);
        item.children = item
            .children
            .into_iter()
            .map(|child| self.menu_item(plugin, child))
            .collect();
        item
    }

    /// A registration as an admin reads it: description, route descriptions, widget titles
    /// and descriptions, and menu labels translated.
    pub fn registration(&self, mut registration: GkRegistration) -> GkRegistration {
        let plugin = registration.name.clone();
        registration.description = self.text(&plugin, &registration.description);
        for route in &mut registration.routes {
            route.description = self.text(&plugin, &route.description);
        }
        registration.widgets = std::mem::take(&mut registration.widgets)
            .into_iter()
            .map(|w| self.widget(&plugin, w))
            .collect();
        registration.menu_items = std::mem::take(&mut registration.menu_items)
            .into_iter()
            .map(|m| self.menu_item(&plugin, m))
            .collect();
        registration
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::http::HeaderValue;

    use super::*;

    fn translator(languages: &[&str]) -> Translator {
        let catalog = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let spec = I18nSpec {
            namespace: "stats".into(),
            languages: vec!["de".into(), "en".into()],
            translations: BTreeMap::from([
                (
                    "de".into(),
                    catalog(&[("stats.overview", "Ticketübersicht"), ("chart", "Verlauf")]),
                ),
                (
                    "en".into(),
                    catalog(&[("stats.overview", "Ticket overview")]),
                ),
                ("fr".into(), catalog(&[("stats.overview", "<b>Aperçu</b>")])),
            ]),
        };
        Translator {
            languages: languages.iter().map(|l| (*l).to_owned()).collect(),
            catalogs: HashMap::from([("stats".to_owned(), spec)]),
        }
    }

    #[test]
    fn keys_follow_the_request_then_english_then_the_plugin() {
        let de = translator(&["de-ch", "en"]);
        assert_eq!(de.text("stats", "stats.overview"), "Ticketübersicht");
        assert_eq!(
            de.text("stats", "stats.chart"),
            "Verlauf",
            "the key without its namespace"
        );
        assert_eq!(de.text("stats", "Plain title"), "Plain title");
        assert_eq!(de.text("other", "stats.overview"), "stats.overview");
        let nl = translator(&["nl"]);
        assert_eq!(nl.text("stats", "stats.overview"), "Ticket overview");
        assert_eq!(
            nl.text("stats", "stats.chart"),
            "Verlauf",
            "then the plugin's own languages"
        );
        // Text, not markup: the templates escape it.
        assert_eq!(
            translator(&["fr"]).text("stats", "stats.overview"),
            "<b>Aperçu</b>"
        );
    }

    #[test]
    fn accept_language_is_ordered_by_quality() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("fr;q=0.5, de-CH, en;q=0.8, *;q=0.1, it;q=0, x<y>"),
        );
        assert_eq!(accepted_languages(&headers), ["de-ch", "en", "fr"]);
        assert!(accepted_languages(&HeaderMap::new()).is_empty());
    }
}
