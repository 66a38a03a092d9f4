//! The navigation menus built from the enabled plugins' menu items: one per location (`admin`
//! for the admin pages, `agent` for the dashboard and plugin pages, `customer` for the host
//! application), nested by `parent` and `children`, ordered by `order`, without the items a
//! plugin hides (`hide_menu_items`). An item nests only under an item of its own plugin, each
//! item shows once, and a menu holds at most 200 entries. Links are only paths or http(s)
//! URLs; icons are a name, or an SVG shown as an image (an `<img>` runs no script).

use std::collections::BTreeSet;

use base64::Engine;
use gk_core::Manager;
use gk_core::PluginItem;
use gk_sdk::MenuItemSpec;

use super::MenuEntry;

/// Where an item without a location goes.
pub const DEFAULT_LOCATION: &str = "agent";
/// The largest SVG icon shown.
const MAX_ICON_BYTES: usize = 8 * 1024;
/// How deep menus nest.
const MAX_DEPTH: usize = 4;

/// The most entries one menu shows (a plugin cannot make a page build a huge menu).
const MAX_ENTRIES: usize = 200;

/// The menu of `location`, as a tree.
pub fn build(manager: &Manager, location: &str) -> Vec<MenuEntry> {
    let items: Vec<PluginItem<MenuItemSpec>> = manager
        .menu_items()
        .into_iter()
        .filter(|m| {
            let at = if m.item.location.is_empty() {
                DEFAULT_LOCATION
            } else {
                m.item.location.as_str()
            };
            at == location
        })
        .collect();
    let mut builder = Builder {
        items: &items,
        hidden: manager.hidden_menu_items(),
        taken: vec![false; items.len()],
        entries: 0,
    };
    // Top level: no parent, or a parent its own plugin does not declare here.
    let mut menu = Vec::new();
    for index in 0..items.len() {
        let item = &items[index];
        let has_parent = !item.item.parent.is_empty()
            && items
                .iter()
                .any(|m| m.plugin == item.plugin && m.item.id == item.item.parent);
        if !has_parent && let Some(entry) = builder.take(index) {
            menu.push(entry);
        }
    }
    menu
}

/// Builds entries, each declared item at most once and at most [`MAX_ENTRIES`] in all.
struct Builder<'a> {
    items: &'a [PluginItem<MenuItemSpec>],
    hidden: BTreeSet<String>,
    taken: Vec<bool>,
    entries: usize,
}

impl Builder<'_> {
    /// The entry of top-level item `index`, with what nests under it.
    fn take(&mut self, index: usize) -> Option<MenuEntry> {
        if self.taken[index] {
            return None;
        }
        self.taken[index] = true;
        let items = self.items;
        let item = &items[index];
        self.entry(&item.plugin, &item.item, 0)
    }

    fn entry(&mut self, plugin: &str, item: &MenuItemSpec, depth: usize) -> Option<MenuEntry> {
        if self.hidden.contains(&item.id) || depth > MAX_DEPTH || self.entries >= MAX_ENTRIES {
            return None;
        }
        if !item.path.is_empty()
            && let Err(reason) = gk_core::check_link(&item.path)
        {
            tracing::warn!(%plugin, item = %item.id, %reason, "menu link not shown");
            return None;
        }
        self.entries += 1;
        let mut children = Vec::new();
        for child in &item.children {
            if let Some(entry) = self.entry(plugin, child, depth + 1) {
                children.push(entry);
            }
        }
        // Items of the same plugin that name this one as their parent, each taken once.
        if !item.id.is_empty() {
            let items = self.items;
            for (index, other) in items.iter().enumerate() {
                if self.taken[index] || other.plugin != plugin || other.item.parent != item.id {
                    continue;
                }
                self.taken[index] = true;
                if let Some(entry) = self.entry(plugin, &other.item, depth + 1) {
                    children.push(entry);
                }
            }
        }
        if item.path.is_empty() && children.is_empty() {
            return None;
        }
        let (icon, icon_image) = icon(&item.icon);
        Some(MenuEntry {
            plugin: plugin.to_owned(),
            id: item.id.clone(),
            label: item.label.clone(),
            path: item.path.clone(),
            icon,
            icon_image,
            children,
        })
    }
}

/// A name (letters, digits, `-`, `_`) as a CSS hook, or SVG markup as a `data:` image.
fn icon(text: &str) -> (Option<String>, Option<String>) {
    let text = text.trim();
    if text.is_empty() {
        return (None, None);
    }
    if text.starts_with("<svg") && text.len() <= MAX_ICON_BYTES {
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        return (None, Some(format!("data:image/svg+xml;base64,{encoded}")));
    }
    let name_like = text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    (name_like.then(|| text.to_owned()), None)
}

#[cfg(test)]
mod tests {
    use super::icon;

    #[test]
    fn icons_are_names_or_images() {
        assert_eq!(icon("chart-bar"), (Some("chart-bar".into()), None));
        let (_, image) = icon("<svg viewBox='0 0 1 1'><script>x</script></svg>");
        assert!(image.unwrap().starts_with("data:image/svg+xml;base64,"));
        assert_eq!(icon("\" onclick=\"x"), (None, None));
        assert_eq!(icon(""), (None, None));
    }
}
