//! What the server asks the manager: routes, widgets, menus, landing page, jobs, translations
//! and error codes of the enabled plugins.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use gk_sdk::{
    CallContext, ErrorCodeSpec, GkRegistration, HostApi, I18nSpec, MenuItemSpec, Plugin,
    PluginError, RouteSpec, TranslateArgs, WidgetSpec,
};

use crate::common::fixture;

/// A plugin that only declares things.
struct Declaring(GkRegistration);

#[async_trait]
impl Plugin for Declaring {
    async fn register(&self) -> Result<GkRegistration, PluginError> {
        Ok(self.0.clone())
    }
    async fn init(&self, _: &CallContext, _: Arc<dyn HostApi>) -> Result<(), PluginError> {
        Ok(())
    }
    async fn call(&self, _: &CallContext, f: &str, _: &[u8]) -> Result<Vec<u8>, PluginError> {
        // Widget handlers: `w1` answers HTML, `w2` something else.
        match f {
            "w1" => Ok(br#"{"html":"<p>w1</p>"}"#.to_vec()),
            "w2" => Ok(br#"{"text":"not a widget reply"}"#.to_vec()),
            _ => Err(PluginError::failed("unknown_function", f)),
        }
    }
    async fn shutdown(&self, _: &CallContext) -> Result<(), PluginError> {
        Ok(())
    }
}

fn widget(id: &str, location: &str, order: i32) -> WidgetSpec {
    WidgetSpec {
        id: id.into(),
        handler: id.into(),
        location: location.into(),
        order,
        ..Default::default()
    }
}

fn i18n(namespace: &str, hello: &str) -> I18nSpec {
    I18nSpec {
        namespace: namespace.into(),
        languages: vec!["en".into()],
        translations: BTreeMap::from([(
            "en".to_owned(),
            BTreeMap::from([("hello".to_owned(), hello.to_owned())]),
        )]),
    }
}

fn alpha() -> GkRegistration {
    GkRegistration {
        name: "alpha".into(),
        version: "1.0.0".into(),
        routes: vec![RouteSpec {
            method: "GET".into(),
            path: "/alpha".into(),
            handler: "page".into(),
            ..Default::default()
        }],
        widgets: vec![widget("w2", "dashboard", 2), widget("side", "sidebar", 0)],
        menu_items: vec![MenuItemSpec {
            id: "alpha-menu".into(),
            label: "Alpha".into(),
            path: "/alpha".into(),
            order: 5,
            ..Default::default()
        }],
        hide_menu_items: vec!["tickets".into()],
        landing_page: "/alpha".into(),
        error_codes: vec![ErrorCodeSpec {
            code: "quota".into(),
            message: "Quota exceeded".into(),
            http_status: 429,
        }],
        i18n: Some(i18n("shared", "Hello from alpha")),
        ..Default::default()
    }
}

fn beta() -> GkRegistration {
    GkRegistration {
        name: "beta".into(),
        version: "1.0.0".into(),
        widgets: vec![widget("w1", "dashboard", 1)],
        landing_page: "/beta".into(),
        i18n: Some(i18n("shared", "Hello from beta")),
        ..Default::default()
    }
}

fn ids<T>(items: &[gk_core::PluginItem<T>], id: impl Fn(&T) -> &str) -> Vec<String> {
    items
        .iter()
        .map(|i| format!("{}/{}", i.plugin, id(&i.item)))
        .collect()
}

#[tokio::test]
async fn the_catalog_follows_what_enabled_plugins_declare() {
    let f = fixture().await;
    let m = &f.manager;
    m.register(Arc::new(Declaring(alpha()))).await.unwrap();
    m.register(Arc::new(Declaring(beta()))).await.unwrap();

    assert_eq!(ids(&m.routes(), |r| &r.path), ["alpha//alpha"]);
    assert_eq!(
        ids(&m.widgets(Some("dashboard")), |w| &w.id),
        ["beta/w1", "alpha/w2"],
        "widgets of a location, by order"
    );
    assert_eq!(m.widgets(None).len(), 3);
    assert_eq!(m.widget("alpha", "side").unwrap().location, "sidebar");
    assert_eq!(
        m.widget("alpha", "nope").unwrap_err().to_string(),
        "plugin `alpha` declares no widget `nope`"
    );
    assert_eq!(ids(&m.menu_items(), |i| &i.id), ["alpha/alpha-menu"]);
    assert_eq!(
        m.hidden_menu_items().into_iter().collect::<Vec<_>>(),
        ["tickets"]
    );
    let landing = m.landing_page().unwrap();
    assert_eq!(
        (landing.plugin.as_str(), landing.item.as_str()),
        ("alpha", "/alpha"),
        "the first plugin by name wins"
    );
    let codes = m.error_codes();
    assert_eq!(codes.keys().collect::<Vec<_>>(), ["alpha:quota"]);
    assert_eq!(codes["alpha:quota"].http_status, 429);

    let (texts, conflicts) = m.translations("en");
    assert_eq!(texts["shared.hello"], "Hello from alpha");
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        (conflicts[0].kept.as_str(), conflicts[0].ignored.as_str()),
        ("alpha", "beta")
    );
    assert!(m.translations("fr").0.is_empty());
    // The `translate` host service sees the registrations too.
    assert_eq!(
        f.translations
            .translate("beta", Some("en"), "hello", &TranslateArgs::None),
        "Hello from beta"
    );

    m.set_enabled("alpha", false, "admin").await.unwrap();
    assert!(m.routes().is_empty(), "a disabled plugin's routes go");
    assert_eq!(ids(&m.widgets(None), |w| &w.id), ["beta/w1"]);
    assert!(m.menu_items().is_empty());
    assert!(m.hidden_menu_items().is_empty());
    assert_eq!(m.landing_page().unwrap().plugin, "beta");
    assert!(m.error_codes().is_empty());
    assert_eq!(m.translations("en").0["shared.hello"], "Hello from beta");
    assert_eq!(
        m.widget("alpha", "side").unwrap_err().to_string(),
        "plugin `alpha` is disabled"
    );

    m.set_enabled("alpha", true, "admin").await.unwrap();
    assert_eq!(ids(&m.routes(), |r| &r.path), ["alpha//alpha"]);

    m.unregister("beta").await.unwrap();
    assert_eq!(
        f.translations
            .translate("beta", Some("en"), "hello", &TranslateArgs::None),
        "hello",
        "an unloaded plugin's catalog is forgotten"
    );
    assert_eq!(ids(&m.widgets(Some("dashboard")), |w| &w.id), ["alpha/w2"]);
}

#[tokio::test]
async fn widgets_render_their_html_and_other_replies_are_errors() {
    let f = fixture().await;
    let m = &f.manager;
    m.register(Arc::new(Declaring(alpha()))).await.unwrap();
    m.register(Arc::new(Declaring(beta()))).await.unwrap();
    let html = m
        .render_widget(&CallContext::for_plugin("beta"), "w1", b"{}")
        .await
        .unwrap();
    assert_eq!(html, "<p>w1</p>");
    let error = m
        .render_widget(&CallContext::for_plugin("alpha"), "w2", b"{}")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("widget `w2` did not answer"), "{error}");
    let error = m
        .render_widget(&CallContext::for_plugin("alpha"), "nope", b"{}")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(error, "plugin `alpha` declares no widget `nope`");
    m.set_enabled("beta", false, "test").await.unwrap();
    let error = m
        .render_widget(&CallContext::for_plugin("beta"), "w1", b"{}")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(error, "plugin `beta` is disabled");
}
