//! `intruder`: an in-process plugin whose page and widget carry a script that tries to act as
//! the admin (read `/admin/plugins`, read `document.cookie`, approve itself), and whose
//! handlers flood the log and the cache.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use gk_sdk::{
    CallContext, GkRegistration, HostApi, LogLevel, MenuItemSpec, Plugin, PluginError, RouteSpec,
    TemplateSpec, WidgetSpec,
};
use serde_json::{Map, Value, json};

/// What the page's and the widget's script try; each result lands in `body[data-result]`.
pub(crate) const ATTACK_SCRIPT: &str = r#"<script>
(async () => {
  const result = {};
  try {
    const page = await fetch("/admin/plugins", { credentials: "include" });
    const text = await page.text();
    const csrf = /name="csrf" value="([^"]+)"/.exec(text);
    result.read = csrf ? "read the csrf value" : `read without csrf (${page.status})`;
    if (csrf) {
      const approve = await fetch("/admin/plugins/intruder/approve", {
        method: "POST", credentials: "include",
        body: new URLSearchParams({ csrf: csrf[1] }),
      });
      result.approve = `posted: ${approve.status}`;
    }
  } catch (error) {
    result.read = `blocked: ${error}`;
  }
  try {
    result.cookie = `read: ${document.cookie}`;
  } catch (error) {
    result.cookie = `blocked: ${error.name}`;
  }
  try {
    // A blind POST without the CSRF value (the response cannot be read anyway).
    await fetch("/admin/plugins/intruder/approve", {
      method: "POST", mode: "no-cors", credentials: "include",
      body: new URLSearchParams({ csrf: "guessed" }),
    });
    result.blind = "sent";
  } catch (error) {
    result.blind = `blocked: ${error}`;
  }
  document.body.dataset.result = JSON.stringify(result);
})();
</script><p id="intruder">intruder</p>"#;

/// The intruder plugin, optionally with an extra (bad) menu link or template override.
#[derive(Default)]
pub(crate) struct Intruder {
    /// A menu link to declare besides `/intruder/page`.
    pub menu_link: Option<String>,
    /// A template to override.
    pub overrides: Option<String>,
    /// Its landing page.
    pub landing_page: String,
    host: OnceLock<Arc<dyn HostApi>>,
}

impl Intruder {
    /// The plugin with a menu item linking to `link`.
    pub(crate) fn with_menu_link(link: &str) -> Self {
        Self {
            menu_link: Some(link.into()),
            ..Self::default()
        }
    }

    /// The plugin with `link` as its landing page.
    pub(crate) fn with_landing_page(link: &str) -> Self {
        Self {
            landing_page: link.into(),
            ..Self::default()
        }
    }

    /// The plugin overriding template `name`.
    pub(crate) fn overriding(name: &str) -> Self {
        Self {
            overrides: Some(name.into()),
            ..Self::default()
        }
    }

    fn host(&self) -> Result<&Arc<dyn HostApi>, PluginError> {
        self.host
            .get()
            .ok_or_else(|| PluginError::failed("not_initialised", "init was not called"))
    }
}

fn route(method: &str, path: &str, handler: &str, middleware: &[&str]) -> RouteSpec {
    RouteSpec {
        method: method.into(),
        path: path.into(),
        handler: handler.into(),
        middleware: middleware.iter().map(|m| (*m).to_owned()).collect(),
        description: String::new(),
    }
}

fn menu(id: &str, path: &str) -> MenuItemSpec {
    MenuItemSpec {
        id: id.into(),
        label: id.into(),
        path: path.into(),
        location: "agent".into(),
        ..MenuItemSpec::default()
    }
}

fn reply(value: Value) -> Result<Vec<u8>, PluginError> {
    serde_json::to_vec(&value).map_err(|e| PluginError::failed("json", e.to_string()))
}

#[async_trait]
impl Plugin for Intruder {
    async fn register(&self) -> Result<GkRegistration, PluginError> {
        let mut menu_items = vec![menu("intruder", "/intruder/page")];
        if let Some(link) = &self.menu_link {
            menu_items.push(MenuItemSpec {
                children: vec![menu("bad", link)],
                ..menu("parent", "")
            });
        }
        Ok(GkRegistration {
            name: "intruder".into(),
            version: "1.0.0".into(),
            routes: vec![
                route("GET", "/intruder/page", "page", &[]),
                route("GET", "/intruder/raw", "raw", &[]),
                route("POST", "/intruder/log-flood", "log_flood", &["admin"]),
                route("POST", "/intruder/cache-flood", "cache_flood", &["admin"]),
            ],
            menu_items,
            landing_page: self.landing_page.clone(),
            widgets: vec![WidgetSpec {
                id: "intruder_widget".into(),
                title: "Intruder".into(),
                handler: "widget".into(),
                location: "dashboard".into(),
                size: "small".into(),
                ..WidgetSpec::default()
            }],
            templates: self
                .overrides
                .iter()
                .map(|name| TemplateSpec {
                    name: name.clone(),
                    path: String::new(),
                    r#override: true,
                })
                .collect(),
            ..GkRegistration::default()
        })
    }

    async fn init(&self, _: &CallContext, host: Arc<dyn HostApi>) -> Result<(), PluginError> {
        let _ = self.host.set(host);
        Ok(())
    }

    async fn call(
        &self,
        ctx: &CallContext,
        function: &str,
        args: &[u8],
    ) -> Result<Vec<u8>, PluginError> {
        let args: Value = serde_json::from_slice(args).unwrap_or_default();
        match function {
            "page" => reply(json!({"html": ATTACK_SCRIPT, "title": "Intruder"})),
            "raw" => reply(json!({"html": ATTACK_SCRIPT, "raw": true})),
            "widget" => reply(json!({"html": ATTACK_SCRIPT})),
            "log_flood" => {
                let line = "x".repeat(5 * 1024 * 1024);
                let count = args["count"].as_u64().unwrap_or(10);
                for _ in 0..count {
                    self.host()?
                        .log(ctx, LogLevel::Info, &line, &Map::new())
                        .await
                        .map_err(|e| PluginError::failed("log", e.to_string()))?;
                }
                reply(json!({"written": count}))
            }
            "cache_flood" => {
                let value = vec![b'c'; 1024];
                let mut stored = 0u64;
                let error = loop {
                    let key = format!("k{stored}");
                    match self
                        .host()?
                        .cache_set(ctx, &key, &value, Duration::ZERO)
                        .await
                    {
                        Ok(()) => stored += 1,
                        Err(error) => break error.to_string(),
                    }
                    if stored == 100_000 {
                        break "never refused".to_owned();
                    }
                };
                reply(json!({"stored": stored, "error": error}))
            }
            name if name.starts_with("template_") => reply(
                json!({"html": format!("<main>overridden by intruder</main>{ATTACK_SCRIPT}")}),
            ),
            other => Err(PluginError::failed(
                "unknown",
                format!("no function {other}"),
            )),
        }
    }

    async fn shutdown(&self, _: &CallContext) -> Result<(), PluginError> {
        Ok(())
    }
}
