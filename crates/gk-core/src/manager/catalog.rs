//! What the server asks of the plugins: routes, widgets, menu items, hidden menu items, the
//! landing page, jobs, templates, translations and error codes.
//!
//! Every query reads the registrations of the enabled plugins, in plugin-name order, so a
//! disabled plugin's contributions disappear at once and come back when it is enabled again. A
//! plugin discovered but not loaded yet contributes what the registration cache holds for its
//! exact bytes (see `known.rs`); one the cache does not know contributes nothing until
//! [`Manager::load_all`] (eager loading) or its first use loads it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use gk_sdk::{
    CallContext, ErrorCodeSpec, GkRegistration, JobSpec, MenuItemSpec, PluginError, RouteSpec,
    TemplateSpec, WidgetSpec,
};
use serde::Serialize;

use super::{Manager, ManagerError, Slot};

/// Something a plugin declared in its registration, with the plugin that declared it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginItem<T> {
    /// The plugin that declared it.
    pub plugin: String,
    /// What it declared.
    #[serde(flatten)]
    pub item: T,
}

/// Two plugins exposing the same translation key; the first (by plugin name) is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslationConflict {
    /// The exposed key, `<namespace>.<key>`.
    pub key: String,
    /// The plugin whose text is used.
    pub kept: String,
    /// The plugin whose text is ignored.
    pub ignored: String,
}

impl Manager {
    /// The enabled plugins' slots, taken out of the map's lock.
    fn enabled_slots(&self) -> Vec<Arc<Slot>> {
        self.inner
            .plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|slot| slot.enabled.load(Ordering::SeqCst))
            .cloned()
            .collect()
    }

    /// The registrations of the loaded, enabled plugins, by plugin name.
    fn enabled_registrations(&self) -> Vec<(String, GkRegistration)> {
        let mut registrations: Vec<(String, GkRegistration)> = self
            .enabled_slots()
            .iter()
            .filter_map(|slot| Some((slot.name.clone(), slot.registration()?)))
            .collect();
        registrations.sort_by(|a, b| a.0.cmp(&b.0));
        registrations
    }

    /// Every declared item of one kind, tagged with its plugin.
    fn items<T: Clone>(&self, pick: impl Fn(&GkRegistration) -> &[T]) -> Vec<PluginItem<T>> {
        self.enabled_registrations()
            .into_iter()
            .flat_map(|(plugin, registration)| {
                pick(&registration)
                    .iter()
                    .map(|item| PluginItem {
                        plugin: plugin.clone(),
                        item: item.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The HTTP routes of the enabled plugins (no two plugins declare the same method and path:
    /// registration refuses that).
    pub fn routes(&self) -> Vec<PluginItem<RouteSpec>> {
        self.items(|r| &r.routes)
    }

    /// The HTTP routes of every loaded plugin, enabled or not: a server answers a disabled
    /// plugin's route `403` (the call says the plugin is disabled), not `404`.
    pub fn all_routes(&self) -> Vec<PluginItem<RouteSpec>> {
        let mut slots: Vec<Arc<Slot>> = self
            .inner
            .plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        slots
            .iter()
            .filter_map(|slot| Some((slot.name.clone(), slot.registration()?)))
            .flat_map(|(plugin, registration)| {
                registration
                    .routes
                    .iter()
                    .map(|route| PluginItem {
                        plugin: plugin.clone(),
                        item: route.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Whether an enabled plugin is discovered but neither loaded nor known from the
    /// registration cache (its routes and widgets are not known until it loads: see
    /// [`Manager::load_all`]).
    pub fn has_unloaded(&self) -> bool {
        self.enabled_slots()
            .iter()
            .any(|slot| slot.loaded.load().is_none() && slot.known.load().is_none())
    }

    /// The widgets of the enabled plugins, all of them or those for one `location`, ordered by
    /// their `order`, then plugin and id.
    pub fn widgets(&self, location: Option<&str>) -> Vec<PluginItem<WidgetSpec>> {
        let mut widgets = self.items(|r| &r.widgets);
        if let Some(location) = location {
            widgets.retain(|w| w.item.location == location);
        }
        widgets.sort_by(|a, b| {
            (a.item.order, &a.plugin, &a.item.id).cmp(&(b.item.order, &b.plugin, &b.item.id))
        });
        widgets
    }

    /// One widget of a plugin, if the plugin is loaded and enabled and declares it.
    pub fn widget(&self, plugin: &str, id: &str) -> Result<WidgetSpec, ManagerError> {
        if !self.is_enabled(plugin)? {
            return Err(ManagerError::Disabled(plugin.to_owned()));
        }
        self.registration(plugin)?
            .widgets
            .into_iter()
            .find(|w| w.id == id)
            .ok_or_else(|| ManagerError::Undeclared {
                plugin: plugin.to_owned(),
                item: format!("widget `{id}`"),
            })
    }

    /// Renders widget `id` of the plugin `ctx.plugin` (loading the plugin first if it was only
    /// discovered): calls the widget's handler with `args` and returns the `html` it answers.
    /// A reply without `html` is the plugin's error `invalid_widget`.
    pub async fn render_widget(
        &self,
        ctx: &CallContext,
        id: &str,
        args: &[u8],
    ) -> Result<String, ManagerError> {
        self.load(&ctx.plugin).await?;
        let widget = self.widget(&ctx.plugin, id)?;
        let reply = self.call_with(ctx, &widget.handler, args).await?;
        serde_json::from_slice::<serde_json::Value>(&reply)
            .ok()
            .and_then(|v| v.get("html")?.as_str().map(str::to_owned))
            .ok_or_else(|| ManagerError::Plugin {
                plugin: ctx.plugin.clone(),
                source: PluginError::failed(
                    "invalid_widget",
                    format!("widget `{id}` did not answer {{\"html\": …}}"),
                ),
            })
    }

    /// The menu items of the enabled plugins, ordered by their `order`, then plugin and id.
    pub fn menu_items(&self) -> Vec<PluginItem<MenuItemSpec>> {
        let mut items = self.items(|r| &r.menu_items);
        items.sort_by(|a, b| {
            (a.item.order, &a.plugin, &a.item.id).cmp(&(b.item.order, &b.plugin, &b.item.id))
        });
        items
    }

    /// The ids of the host's menu items that enabled plugins hide.
    pub fn hidden_menu_items(&self) -> BTreeSet<String> {
        self.enabled_registrations()
            .into_iter()
            .flat_map(|(_, r)| r.hide_menu_items)
            .collect()
    }

    /// The landing page an enabled plugin asks for. When several do, the first by plugin name
    /// wins and the others are logged.
    pub fn landing_page(&self) -> Option<PluginItem<String>> {
        let mut pages = self
            .enabled_registrations()
            .into_iter()
            .filter(|(_, r)| !r.landing_page.is_empty())
            .map(|(plugin, r)| PluginItem {
                plugin,
                item: r.landing_page,
            });
        let chosen = pages.next()?;
        for ignored in pages {
            tracing::warn!(
                chosen = %chosen.plugin,
                ignored = %ignored.plugin,
                "several plugins set a landing page; using the first by name"
            );
        }
        Some(chosen)
    }

    /// The jobs of the enabled plugins (including jobs they declare disabled).
    pub fn jobs(&self) -> Vec<PluginItem<JobSpec>> {
        self.items(|r| &r.jobs)
    }

    /// The template overrides of the enabled plugins.
    pub fn templates(&self) -> Vec<PluginItem<TemplateSpec>> {
        self.items(|r| &r.templates)
    }

    /// Every translation of the enabled plugins for `language`, keyed `<namespace>.<key>` (the
    /// namespace defaults to the plugin's name), with the keys two plugins both expose.
    pub fn translations(
        &self,
        language: &str,
    ) -> (BTreeMap<String, String>, Vec<TranslationConflict>) {
        let mut texts: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut conflicts = Vec::new();
        for (plugin, registration) in self.enabled_registrations() {
            let Some(i18n) = registration.i18n else {
                continue;
            };
            let namespace = if i18n.namespace.is_empty() {
                plugin.clone()
            } else {
                i18n.namespace
            };
            let Some(catalog) = i18n.translations.get(language) else {
                continue;
            };
            for (key, text) in catalog {
                let key = format!("{namespace}.{key}");
                match texts.get(&key) {
                    Some((kept, _)) => conflicts.push(TranslationConflict {
                        key,
                        kept: kept.clone(),
                        ignored: plugin.clone(),
                    }),
                    None => {
                        texts.insert(key, (plugin.clone(), text.clone()));
                    }
                }
            }
        }
        let texts = texts.into_iter().map(|(k, (_, text))| (k, text)).collect();
        (texts, conflicts)
    }

    /// The error codes of the enabled plugins, keyed `<plugin>:<code>`.
    pub fn error_codes(&self) -> BTreeMap<String, ErrorCodeSpec> {
        self.enabled_registrations()
            .into_iter()
            .flat_map(|(plugin, r)| {
                r.error_codes
                    .into_iter()
                    .map(move |spec| (format!("{plugin}:{}", spec.code), spec))
            })
            .collect()
    }

    /// Loads every enabled plugin that was discovered but not loaded yet (eager loading); returns
    /// the plugins that failed, each with why. Disabled plugins stay unloaded.
    pub async fn load_all(&self) -> Vec<ManagerError> {
        let mut failures = Vec::new();
        for slot in self.enabled_slots() {
            if slot.loaded.load().is_some() {
                continue;
            }
            if let Err(error) = self.ensure_loaded(&slot).await {
                tracing::warn!(plugin = %slot.name, %error, "eager load failed");
                failures.push(error);
            }
        }
        failures
    }
}
