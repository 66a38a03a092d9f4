//! Server-rendered HTML: the page layout plugin pages are wrapped in, and the admin pages.
//! Templates are minijinja (Jinja2 syntax), compiled into the binary from `templates/`.

mod i18n;
pub mod menu;
mod plugins;

pub use i18n::{Translator, accepted_languages};
pub(crate) use plugins::escape_html;
pub use plugins::{PluginTemplates, override_handler};

use minijinja::Environment;
use serde::Serialize;

/// The stylesheet every page links as `/static/goatkit.css`.
pub const STYLESHEET: &str = include_str!("../../templates/goatkit.css");

/// The stylesheet inside every widget frame (a sandboxed `srcdoc` sees none of the page's):
/// label/value pairs, lists, tables and charts, in a cascade layer so that the widget's own
/// styles win whatever their order.
pub const WIDGET_STYLESHEET: &str = include_str!("../../templates/widget.css");

/// The built-in templates, by name.
const TEMPLATES: [(&str, &str); 6] = [
    (
        "dashboard.html",
        include_str!("../../templates/dashboard.html"),
    ),
    ("layout.html", include_str!("../../templates/layout.html")),
    (
        "admin_login.html",
        include_str!("../../templates/admin_login.html"),
    ),
    (
        "admin_plugins.html",
        include_str!("../../templates/admin_plugins.html"),
    ),
    (
        "admin_plugin.html",
        include_str!("../../templates/admin_plugin.html"),
    ),
    (
        "admin_logs.html",
        include_str!("../../templates/admin_logs.html"),
    ),
];

/// A template could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("cannot render `{template}`: {message}")]
pub struct RenderError {
    /// The template.
    pub template: String,
    /// Why (the engine's error, with the line, or the overriding plugin's).
    pub message: String,
}

impl RenderError {
    fn new(template: &str, message: impl std::fmt::Display) -> Self {
        Self {
            template: template.to_owned(),
            message: format!("{message:#}"),
        }
    }
}

/// One entry of the navigation menu.
#[derive(Debug, Clone, Serialize)]
pub struct MenuEntry {
    /// The plugin that declared it.
    pub plugin: String,
    /// Its id (what `hide_menu_items` and `parent` name).
    pub id: String,
    /// What it says.
    pub label: String,
    /// Where it leads (empty for a group that only holds children).
    pub path: String,
    /// An icon name (a CSS class hook), or `None`.
    pub icon: Option<String>,
    /// An SVG icon as a `data:` URL, shown as an image (so it runs no script), or `None`.
    pub icon_image: Option<String>,
    /// Its sub-entries.
    pub children: Vec<MenuEntry>,
}

/// The templates of the server.
#[derive(Debug)]
pub struct Pages {
    env: Environment<'static>,
}

impl Default for Pages {
    fn default() -> Self {
        Self::new()
    }
}

impl Pages {
    /// The built-in templates, HTML-escaped by default.
    pub fn new() -> Self {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            // The built-in templates are compiled in and covered by tests; a syntax error in
            // one is reported when it is rendered.
            if let Err(error) = env.add_template(name, source) {
                tracing::error!(template = name, %error, "a built-in template does not compile");
            }
        }
        Self { env }
    }

    /// Renders template `name` with `context`.
    pub fn render(&self, name: &str, context: impl Serialize) -> Result<String, RenderError> {
        let error = |source: minijinja::Error| RenderError::new(name, source);
        self.env
            .get_template(name)
            .map_err(error)?
            .render(minijinja::Value::from(minijinja::value::Serde(context)))
            .map_err(error)
    }
}
