//! Menus from the plugins' menu items: one per location (the admin pages show `admin` items,
//! the dashboard and plugin pages `agent` ones), nested by `parent` and `children`, labels
//! translated, icons as names or images, and the items a plugin hides left out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common;
use async_trait::async_trait;
use gk_sdk::{CallContext, GkRegistration, HostApi, I18nSpec, MenuItemSpec, Plugin, PluginError};
use gk_server::auth::Role;

struct Menus;

fn item(id: &str, label: &str, path: &str, location: &str) -> MenuItemSpec {
    MenuItemSpec {
        id: id.into(),
        label: label.into(),
        path: path.into(),
        location: location.into(),
        ..MenuItemSpec::default()
    }
}

#[async_trait]
impl Plugin for Menus {
    async fn register(&self) -> Result<GkRegistration, PluginError> {
        Ok(GkRegistration {
            name: "menus".into(),
            version: "1.0.0".into(),
            menu_items: vec![
                MenuItemSpec {
                    icon: "chart-bar".into(),
                    children: vec![item("daily", "menus.daily", "/reports/daily", "agent")],
                    ..item("reports", "Reports", "", "agent")
                },
                MenuItemSpec {
                    parent: "reports".into(),
                    icon: "<svg xmlns='http://www.w3.org/2000/svg'/>".into(),
                    ..item("weekly", "Weekly", "/reports/weekly", "agent")
                },
                item("settings", "Menu settings", "/menus/settings", "admin"),
                item("portal", "Portal", "/portal", "customer"),
                item("old-reports", "Old reports", "/old", "agent"),
                // A cycle: each shows once, and the page stays small.
                MenuItemSpec {
                    parent: "loop-b".into(),
                    ..item("loop-a", "Loop A", "/loop/a", "agent")
                },
                MenuItemSpec {
                    parent: "loop-a".into(),
                    ..item("loop-b", "Loop B", "/loop/b", "agent")
                },
            ],
            hide_menu_items: vec!["old-reports".into()],
            i18n: Some(I18nSpec {
                translations: BTreeMap::from([(
                    "en".into(),
                    BTreeMap::from([("daily".into(), "Daily report".into())]),
                )]),
                ..I18nSpec::default()
            }),
            ..GkRegistration::default()
        })
    }

    async fn init(&self, _: &CallContext, _: Arc<dyn HostApi>) -> Result<(), PluginError> {
        Ok(())
    }

    async fn call(&self, _: &CallContext, _: &str, _: &[u8]) -> Result<Vec<u8>, PluginError> {
        Ok(b"{}".to_vec())
    }

    async fn shutdown(&self, _: &CallContext) -> Result<(), PluginError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn menus_by_location_nested_translated_and_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let server = gk_server::start(&common::config_for(dir.path()))
        .await
        .unwrap();
    server.manager.register(Arc::new(Menus)).await.unwrap();
    let admin = server
        .tokens
        .mint("root", Role::Admin, Duration::from_secs(60))
        .unwrap();

    let dashboard =
        common::send_text(server.addr, "GET", "/dashboard", Some(&admin), &[], vec![]).await;
    assert_eq!(dashboard.status, 200, "{}", dashboard.body);
    // Attribute values come HTML-escaped (`/` as `&#x2f;`).
    let body = &dashboard.body;
    // The group holds its inline child and the item that names it as parent.
    let group = body
        .find("<details class=\"gk-menu-group\" data-plugin=\"menus\" data-menu=\"reports\">")
        .unwrap_or_else(|| panic!("{body}"));
    let end = body[group..].find("</details>").unwrap() + group;
    let inside = &body[group..end];
    assert!(inside.contains("<summary>Reports</summary>"), "{inside}");
    assert!(
        inside.contains("data-menu=\"daily\">Daily report</a>"),
        "translated: {inside}"
    );
    assert!(
        inside.contains("href=\"&#x2f;reports&#x2f;weekly\""),
        "{inside}"
    );
    assert!(
        inside.contains("<img class=\"gk-menu-icon\" src=\"data:image&#x2f;svg+xml;base64,"),
        "an SVG icon is an image: {inside}"
    );
    assert!(!body.contains("&#x2f;old\""), "hidden by hide_menu_items");
    assert!(
        body.matches("data-menu=\"loop-a\"").count() <= 1
            && body.matches("data-menu=\"loop-b\"").count() <= 1,
        "an item shows at most once: {body}"
    );
    assert!(
        !body.contains("&#x2f;portal"),
        "the customer menu is not the agent's"
    );
    assert!(
        !body.contains("&#x2f;menus&#x2f;settings"),
        "the admin menu is not the agent's"
    );

    let page = common::admin_page(server.addr, &admin, "/admin/plugins").await;
    assert!(
        page.contains("data-menu=\"settings\">Menu settings</a>"),
        "{page}"
    );
    assert!(!page.contains("&#x2f;reports&#x2f;daily"), "{page}");

    // The host application asks for a location's menu, as a tree.
    let (status, customer) = common::send(
        server.addr,
        "GET",
        "/api/v1/plugins/menu?location=customer",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(status, 200, "{customer}");
    assert_eq!(customer[0]["id"], "portal", "{customer}");
    assert_eq!(customer.as_array().unwrap().len(), 1, "{customer}");
    let (_, agent) =
        common::send(server.addr, "GET", "/api/v1/plugins/menu", Some(&admin), "").await;
    let reports = agent
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "reports")
        .unwrap();
    let children: Vec<&str> = reports["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(children, ["Daily report", "Weekly"], "{agent}");
    let (status, _) = common::send(server.addr, "GET", "/api/v1/plugins/menu", None, "").await;
    assert_eq!(status, 401, "the menu needs a token");
    let agent = server
        .tokens
        .mint("agent", Role::Agent, Duration::from_secs(60))
        .unwrap();
    let (status, _) = common::send(
        server.addr,
        "GET",
        "/api/v1/plugins/menu?location=admin",
        Some(&agent),
        "",
    )
    .await;
    assert_eq!(status, 403, "the admin menu is for admins");
    server.shutdown().await;
}
