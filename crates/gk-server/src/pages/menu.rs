//! The navigation menus built from the enabled plugins' menu items: one per location (`admin`
//! for the admin pages, `agent` for the dashboard and plugin pages, `customer` for the host
//! application), nested by `parent` and `children`, ordered by `order`, without the items a
//! plugin hides (`hide_menu_items`). Links are only paths or http(s) URLs; icons are a name, or
//! an SVG shown as an image (an `<img>` runs no script).

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

/// The menu of `location`, as a tree.
pub fn build(manager: &Manager, location: &str) -> Vec<MenuEntry> {
    let hidden = manager.hidden_menu_items();
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
    let ids: BTreeSet<&str> = items.iter().map(|m| m.item.id.as_str()).collect();
    // Top level: no parent, or a parent that is not in this menu.
    items
        .iter()
        .filter(|m| m.item.parent.is_empty() || !ids.contains(m.item.parent.as_str()))
        .filter_map(|m| entry(&m.plugin, &m.item, &items, &hidden, 0))
        .collect()
}

fn entry(
    plugin: &str,
    item: &MenuItemSpec,
    all: &[PluginItem<MenuItemSpec>],
    hidden: &BTreeSet<String>,
    depth: usize,
) -> Option<MenuEntry> {
    if hidden.contains(&item.id) || depth > MAX_DEPTH {
        return None;
    }
    if !item.path.is_empty()
        && let Err(reason) = gk_core::check_link(&item.path)
    {
        tracing::warn!(%plugin, item = %item.id, %reason, "menu link not shown");
        return None;
    }
    let mut children: Vec<MenuEntry> = item
        .children
        .iter()
        .filter_map(|child| entry(plugin, child, all, hidden, depth + 1))
        .collect();
    children.extend(
        all.iter()
            .filter(|m| !item.id.is_empty() && m.item.parent == item.id && m.item.id != item.id)
            .filter_map(|m| entry(&m.plugin, &m.item, all, hidden, depth + 1)),
    );
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
