//! Templates that reach plugins.
//!
//! minijinja has no custom tags, so `{% use "stats" %}` is written as the function it stands
//! for: `{% set stats = use("stats") %}` (or inline, `use("stats").widget("stats_overview")`).
//! The value has two methods: `call(function, args)` returns the plugin's JSON reply as a
//! template value, `widget(id)` the widget's HTML in a sandboxed `<iframe srcdoc>` (rendered
//! in the page's `language`; `widget(id, language)` names another). The first
//! `use` of a plugin loads it when it was only discovered; later ones find it loaded.
//!
//! Plugins take part in two more ways, both declared in their registrations' `templates`:
//! - a template with `override: true` replaces the server's template of that name, when the
//!   server declares it overridable (`overridable_templates`; never the layout or the admin
//!   templates, refused at registration by gk-core): the server
//!   calls the plugin's handler `template_<name>` (non-alphanumerics as `_`) with
//!   `{"template", "data"}` and uses the `html` it answers (GoatFlow's contract);
//! - any other template (`path` inside the plugin's directory) can be rendered, extended or
//!   included by its `name`.

use std::sync::{Arc, OnceLock};

use gk_core::Manager;
use minijinja::value::{Object, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State};
use serde_json::json;
use tokio::runtime::Handle;

use super::{Pages, RenderError};

/// The handler a plugin that overrides template `name` answers: `template_` and the name with
/// every character but ASCII letters and digits as `_` (`stats/dashboard.html` →
/// `template_stats_dashboard_html`).
pub fn override_handler(name: &str) -> String {
    let sanitised: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("template_{sanitised}")
}

/// Renders the server's templates with the plugins' overrides, templates and `use`.
#[derive(Debug, Clone)]
pub struct PluginTemplates {
    pages: Arc<Pages>,
    manager: Manager,
}

/// A plugin as a template sees it after `use("name")`.
#[derive(Debug)]
struct PluginInTemplate {
    name: String,
    manager: Manager,
    runtime: Handle,
}

/// The largest plugin template read.
const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

/// Text made safe to put into HTML: minijinja's escaping, the same the pages' templates use.
pub(crate) fn escape_html(text: &str) -> String {
    minijinja::HtmlEscape(text).to_string()
}

/// The frame around a widget's HTML; minijinja escapes every value (`srcdoc` holds the whole
/// document: the widget's HTML, then the host's widget stylesheet).
const WIDGET_FRAME: &str = "<iframe class=\"gk-widget-frame\" \
    sandbox=\"allow-scripts allow-popups\" data-plugin=\"{{ plugin }}\" \
    data-widget=\"{{ id }}\" srcdoc=\"{{ html ~ '<style>' ~ stylesheet ~ '</style>' }}\"></iframe>";

/// The environment that renders [`WIDGET_FRAME`], HTML-escaping everything.
fn frame_environment() -> &'static Environment<'static> {
    static FRAME: OnceLock<Environment<'static>> = OnceLock::new();
    FRAME.get_or_init(|| {
        let mut environment = Environment::new();
        environment.set_auto_escape_callback(|_| AutoEscape::Html);
        environment
            .add_template("widget_frame", WIDGET_FRAME)
            .expect("the widget frame template is valid");
        environment
    })
}

/// A widget's HTML as a sandboxed `<iframe srcdoc>`: scripts run, but in an opaque origin
/// (no `allow-same-origin`), so they see no cookie and cannot read the host's pages. The
/// host's widget stylesheet follows the widget's HTML inside the frame.
pub(crate) fn framed_widget(plugin: &str, id: &str, html: &str) -> String {
    frame_environment()
        .get_template("widget_frame")
        .and_then(|frame| {
            frame.render(minijinja::context! {
                plugin,
                id,
                html,
                stylesheet => super::WIDGET_STYLESHEET,
            })
        })
        .unwrap_or_else(|error| {
            tracing::error!(%plugin, widget = %id, %error, "the widget frame did not render");
            String::new()
        })
}

fn template_error(message: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.to_string())
}

impl PluginInTemplate {
    fn call_function(&self, function: &str, args: &Value) -> Result<Value, Error> {
        let args = if args.is_undefined() || args.is_none() {
            json!({})
        } else {
            serde_json::to_value(args).map_err(template_error)?
        };
        let reply = self
            .runtime
            .block_on(
                self.manager
                    .call(&self.name, function, args.to_string().as_bytes()),
            )
            .map_err(template_error)?;
        let reply: serde_json::Value = serde_json::from_slice(&reply).map_err(|e| {
            template_error(format!("{}.{function} did not answer JSON: {e}", self.name))
        })?;
        Ok(Value::from(minijinja::value::Serde(&reply)))
    }

    /// A widget's HTML in a sandboxed frame (its own opaque origin: a widget's script cannot
    /// act as the page's user); a failing widget shows why instead of failing the whole page.
    /// The plugin renders it in `language` (the page's, unless the template names one).
    fn widget(&self, id: &str, language: Option<String>) -> Value {
        let mut ctx = gk_sdk::CallContext::for_plugin(self.name.clone());
        ctx.language = language;
        let html = self
            .runtime
            .block_on(self.manager.render_widget(&ctx, id, b"{}"))
            .map_err(template_error);
        match html {
            Ok(html) => Value::from_safe_string(framed_widget(&self.name, id, &html)),
            Err(error) => {
                tracing::warn!(plugin = %self.name, widget = %id, %error, "widget failed");
                let reason = error.detail().unwrap_or("error");
                Value::from_safe_string(format!(
                    "<p class=\"error\">widget unavailable: {}</p>",
                    escape_html(reason)
                ))
            }
        }
    }
}

impl Object for PluginInTemplate {
    fn call_method(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let page_language = || {
            state
                .lookup("language")
                .and_then(|l| l.as_str().map(str::to_owned))
        };
        match (method, args) {
            ("call", [function]) => self.call_function(&function.to_string(), &Value::UNDEFINED),
            ("call", [function, args]) => self.call_function(&function.to_string(), args),
            ("widget", [id]) => Ok(self.widget(&id.to_string(), page_language())),
            ("widget", [id, language]) => {
                let language = language.as_str().map(str::to_owned).or_else(page_language);
                Ok(self.widget(&id.to_string(), language))
            }
            _ => Err(Error::new(
                ErrorKind::UnknownMethod,
                format!(
                    "`{}` has `call(function, args)` and `widget(id)`, not `{method}` with {} arguments",
                    self.name,
                    args.len()
                ),
            )),
        }
    }
}

impl PluginTemplates {
    /// The server's templates (`pages`) over the plugins of `manager`.
    pub fn new(pages: Arc<Pages>, manager: Manager) -> Self {
        Self { pages, manager }
    }

    /// The enabled plugin that overrides template `name`, if one does: its HTML is plugin
    /// content, to be served as such.
    pub fn overridden_by(&self, name: &str) -> Option<String> {
        self.manager
            .templates()
            .into_iter()
            .find(|t| t.item.r#override && t.item.name == name)
            .map(|t| t.plugin)
    }

    /// Renders template `name` with `data`: the overriding plugin's HTML when an enabled
    /// plugin overrides it, else the template (built-in or a plugin's) with `use` available.
    pub async fn render(&self, name: &str, data: serde_json::Value) -> Result<String, RenderError> {
        let overriding = self
            .manager
            .templates()
            .into_iter()
            .find(|t| t.item.r#override && t.item.name == name);
        if let Some(template) = overriding {
            let args = json!({"template": name, "data": data}).to_string();
            let handler = override_handler(name);
            let reply = self
                .manager
                .call(&template.plugin, &handler, args.as_bytes())
                .await
                .map_err(|e| RenderError::new(name, e))?;
            let reply: serde_json::Value =
                serde_json::from_slice(&reply).map_err(|e| RenderError::new(name, e))?;
            return reply["html"].as_str().map(str::to_owned).ok_or_else(|| {
                RenderError::new(
                    name,
                    format!(
                        "plugin `{}` overrides it but answered no `html`",
                        template.plugin
                    ),
                )
            });
        }
        let renderer = self.clone();
        let name = name.to_owned();
        let runtime = Handle::current();
        tokio::task::spawn_blocking(move || renderer.render_blocking(&name, &data, runtime))
            .await
            .map_err(|e| RenderError::new("(render task)", e))?
    }

    /// Renders `source` (a template of the host application's own) like [`Self::render`]
    /// renders a named one: with `use`, and the plugins' templates to include or extend.
    pub async fn render_source(
        &self,
        source: &str,
        data: serde_json::Value,
    ) -> Result<String, RenderError> {
        let renderer = self.clone();
        let source = source.to_owned();
        let runtime = Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut env = renderer.environment(runtime);
            env.add_template_owned("(source)", source)
                .map_err(|e| RenderError::new("(source)", e))?;
            env.get_template("(source)")
                .and_then(|t| t.render(Value::from(minijinja::value::Serde(&data))))
                .map_err(|e| RenderError::new("(source)", e))
        })
        .await
        .map_err(|e| RenderError::new("(render task)", e))?
    }

    /// Renders on a blocking thread: plugin calls made by the template wait on `runtime`.
    fn render_blocking(
        &self,
        name: &str,
        data: &serde_json::Value,
        runtime: Handle,
    ) -> Result<String, RenderError> {
        self.environment(runtime)
            .get_template(name)
            .and_then(|t| t.render(Value::from(minijinja::value::Serde(data))))
            .map_err(|e| RenderError::new(name, e))
    }

    /// The server's templates with `use` and the plugins' templates; plugin calls wait on
    /// `runtime` (the caller is a blocking thread).
    fn environment(&self, runtime: Handle) -> minijinja::Environment<'static> {
        let mut env = self.pages.env.clone();
        let manager = self.manager.clone();
        let uses = runtime.clone();
        env.add_function("use", move |plugin: String| -> Result<Value, Error> {
            // Loads a discovered plugin on its first use; a no-op once it is loaded.
            uses.block_on(manager.load(&plugin))
                .map_err(template_error)?;
            if !manager.is_enabled(&plugin).map_err(template_error)? {
                return Err(template_error(format!("plugin `{plugin}` is disabled")));
            }
            Ok(Value::from_object(PluginInTemplate {
                name: plugin,
                manager: manager.clone(),
                runtime: uses.clone(),
            }))
        });
        let manager = self.manager.clone();
        env.set_loader(move |wanted| {
            let Some(template) = manager
                .templates()
                .into_iter()
                .find(|t| !t.item.r#override && t.item.name == wanted)
            else {
                return Ok(None);
            };
            let Ok(Some(source)) = manager.source(&template.plugin) else {
                return Ok(None);
            };
            // Inside the plugin's directory, through no link, and not huge.
            let bytes = gk_core::plugin_files::read(
                &source.dir,
                std::path::Path::new(&template.item.path),
                MAX_TEMPLATE_BYTES,
            )
            .map_err(|e| {
                template_error(format!("template `{wanted}` of `{}`: {e}", template.plugin))
            })?;
            String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| template_error(format!("template `{wanted}` is not UTF-8")))
        });
        env
    }
}
