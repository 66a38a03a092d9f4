//! What a registration must satisfy before it is published: a valid name, well-formed routes
//! no other plugin declares, jobs with schedules that parse, menu links and a landing page that
//! are plain paths or http(s) URLs, and template overrides only of the templates the host
//! declares overridable.

use gk_sdk::{GkRegistration, MenuItemSpec, RouteSpec};

use super::{Manager, ManagerError};

/// The HTTP methods a plugin route may declare.
pub const ROUTE_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
/// The middleware a plugin route may ask for: `auth` (any valid token), `admin` (admin role).
pub const ROUTE_MIDDLEWARE: [&str; 2] = ["auth", "admin"];
/// Path prefixes the server keeps for itself.
pub const RESERVED_PATH_PREFIXES: [&str; 4] = ["/api/v1/", "/admin/", "/healthz/", "/metrics/"];

/// Templates no plugin may override whatever the host declares: the page layout plugin pages
/// and host pages share, and the admin pages (`admin*`).
pub const RESERVED_TEMPLATES: [&str; 2] = ["layout.html", "admin"];

/// Whether template `name` is reserved (see [`RESERVED_TEMPLATES`]).
fn is_reserved_template(name: &str) -> bool {
    name == RESERVED_TEMPLATES[0] || name.starts_with(RESERVED_TEMPLATES[1])
}

/// What is wrong with a link a plugin wants shown (a menu item's path), if anything: a link
/// is a plain relative path (`/api/plugins/stats/page`, `reports?range=7d`) or an `http`/`https`
/// URL. Other schemes (`javascript:`, `data:`, …), protocol-relative (`//host`) links,
/// backslashes, whitespace and control characters are refused.
pub fn check_link(link: &str) -> Result<(), String> {
    if link
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return Err(format!(
            "link `{}` holds whitespace, a control character or a backslash",
            link.escape_debug()
        ));
    }
    let lower = link.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return match url::Url::parse(link) {
            Ok(url) if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
            _ => Err(format!("link `{link}` is not a valid http(s) URL")),
        };
    }
    if link.starts_with("//") {
        return Err(format!(
            "link `{link}` is protocol-relative: write a path or an http(s) URL"
        ));
    }
    // A scheme is what comes before a `:` that precedes any `/`, `?` or `#`.
    let head = link.split(['/', '?', '#']).next().unwrap_or_default();
    if head.contains(':') {
        return Err(format!(
            "link `{link}` has a scheme other than http(s): only paths and http(s) URLs are shown"
        ));
    }
    Ok(())
}

/// The first menu item (or nested child) whose link is refused, with the reason.
fn check_menu(items: &[MenuItemSpec]) -> Result<(), String> {
    for item in items {
        if !item.path.is_empty() {
            check_link(&item.path)
                .map_err(|problem| format!("menu item `{}`: {problem}", item.id))?;
        }
        check_menu(&item.children)?;
    }
    Ok(())
}

/// What is wrong with a declared route, if anything.
fn check_route(route: &RouteSpec) -> Result<(), String> {
    if !ROUTE_METHODS
        .iter()
        .any(|m| m.eq_ignore_ascii_case(&route.method))
    {
        return Err(format!(
            "method `{}` is not one of {}",
            route.method,
            ROUTE_METHODS.join(", ")
        ));
    }
    if !route.path.starts_with('/') || route.path.contains("//") || route.path.contains('?') {
        return Err("the path must start with `/` and hold no empty segment or query".into());
    }
    if let Some(prefix) = RESERVED_PATH_PREFIXES
        .iter()
        .find(|p| route.path == p.trim_end_matches('/') || route.path.starts_with(*p))
    {
        return Err(format!("paths under `{prefix}` belong to the server"));
    }
    if let Some(unknown) = route
        .middleware
        .iter()
        .find(|m| !ROUTE_MIDDLEWARE.contains(&m.as_str()))
    {
        return Err(format!(
            "middleware `{unknown}` is not one of {}",
            ROUTE_MIDDLEWARE.join(", ")
        ));
    }
    if route.handler.is_empty() {
        return Err("no handler is named".into());
    }
    Ok(())
}

impl Manager {
    /// Refuses a registration that cannot be published, naming the problem.
    pub(super) fn validate(&self, registration: &GkRegistration) -> Result<(), ManagerError> {
        let invalid = |problem: String| ManagerError::Invalid {
            plugin: registration.name.clone(),
            problem,
        };
        gk_sdk::validate_plugin_name(&registration.name).map_err(|e| invalid(e.to_string()))?;
        for job in &registration.jobs {
            crate::schedule::parse_schedule(&job.schedule)
                .map_err(|problem| invalid(format!("job `{}`: {problem}", job.id)))?;
        }
        check_menu(&registration.menu_items).map_err(invalid)?;
        if !registration.landing_page.is_empty() {
            check_link(&registration.landing_page)
                .map_err(|problem| invalid(format!("landing_page: {problem}")))?;
        }
        self.check_overrides(registration).map_err(invalid)?;
        self.check_routes(registration)
    }

    /// Declares which host templates plugins may override (`override: true` in their
    /// registrations' templates); every other override is refused at registration. The
    /// reserved templates (layout, admin pages) are never overridable and are dropped from
    /// `names` with a warning. Applies to registrations from now on.
    pub fn allow_template_overrides(&self, names: impl IntoIterator<Item = String>) {
        let mut allowed = std::collections::BTreeSet::new();
        for name in names {
            if is_reserved_template(&name) {
                tracing::warn!(template = %name, "the layout and admin templates cannot be declared overridable");
            } else {
                allowed.insert(name);
            }
        }
        *self
            .inner
            .overridable_templates
            .write()
            .unwrap_or_else(|p| p.into_inner()) = allowed;
    }

    /// Refuses an override of a template the host does not declare overridable.
    fn check_overrides(&self, registration: &GkRegistration) -> Result<(), String> {
        let allowed = self
            .inner
            .overridable_templates
            .read()
            .unwrap_or_else(|p| p.into_inner());
        for template in registration.templates.iter().filter(|t| t.r#override) {
            if is_reserved_template(&template.name) {
                return Err(format!(
                    "template `{}` cannot be overridden: the layout and the admin templates belong to the server",
                    template.name
                ));
            }
            if !allowed.contains(&template.name) {
                let declared: Vec<&str> = allowed.iter().map(String::as_str).collect();
                return Err(format!(
                    "template `{}` cannot be overridden: the host declares only [{}] overridable",
                    template.name,
                    declared.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Refuses a malformed route, or one another plugin has already declared.
    fn check_routes(&self, registration: &GkRegistration) -> Result<(), ManagerError> {
        for route in &registration.routes {
            check_route(route).map_err(|problem| ManagerError::Invalid {
                plugin: registration.name.clone(),
                problem: format!("route {} {}: {problem}", route.method, route.path),
            })?;
        }
        let plugins = self.inner.plugins.read().unwrap_or_else(|p| p.into_inner());
        for (name, slot) in plugins
            .iter()
            .filter(|(name, _)| **name != registration.name)
        {
            let Some(loaded) = slot.loaded.load_full() else {
                continue;
            };
            for route in &registration.routes {
                if loaded
                    .registration
                    .routes
                    .iter()
                    .any(|r| r.method.eq_ignore_ascii_case(&route.method) && r.path == route.path)
                {
                    return Err(ManagerError::Invalid {
                        plugin: registration.name.clone(),
                        problem: format!(
                            "route {} {} is already declared by plugin `{name}`",
                            route.method, route.path
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_paths_or_http_urls() {
        for good in [
            "/api/plugins/stats/page",
            "reports?range=7d",
            "reports#top",
            "https://example.com/help",
            "HTTP://example.com",
            "/a/b:c",
        ] {
            assert_eq!(check_link(good), Ok(()), "{good}");
        }
        for (bad, expected) in [
            ("javascript:alert(1)", "scheme other than http(s)"),
            ("JavaScript:alert(1)", "scheme other than http(s)"),
            ("data:text/html,<script>", "scheme other than http(s)"),
            ("java\tscript:alert(1)", "whitespace, a control character"),
            (" javascript:alert(1)", "whitespace, a control character"),
            ("//evil.example/x", "protocol-relative"),
            ("/\\evil.example", "backslash"),
            ("https://", "not a valid http(s) URL"),
        ] {
            let problem = check_link(bad).unwrap_err();
            assert!(problem.contains(expected), "{bad}: {problem}");
        }
    }

    #[test]
    fn reserved_templates_are_the_layout_and_admin_pages() {
        assert!(is_reserved_template("layout.html"));
        assert!(is_reserved_template("admin_plugins.html"));
        assert!(!is_reserved_template("dashboard.html"));
    }

    fn route(method: &str, path: &str, middleware: &[&str], handler: &str) -> RouteSpec {
        RouteSpec {
            method: method.into(),
            path: path.into(),
            handler: handler.into(),
            middleware: middleware.iter().map(|m| (*m).to_owned()).collect(),
            description: String::new(),
        }
    }

    #[test]
    fn malformed_routes_are_refused_with_the_reason() {
        let cases = [
            (
                route("TRACE", "/a", &[], "h"),
                "method `TRACE` is not one of",
            ),
            (route("GET", "a", &[], "h"), "must start with `/`"),
            (route("GET", "/a//b", &[], "h"), "no empty segment"),
            (route("GET", "/a?x=1", &[], "h"), "or query"),
            (
                route("GET", "/api/v1/plugins/x", &[], "h"),
                "under `/api/v1/` belong to the server",
            ),
            (route("POST", "/admin", &[], "h"), "under `/admin/`"),
            (route("GET", "/metrics", &[], "h"), "under `/metrics/`"),
            (
                route("GET", "/a", &["csrf"], "h"),
                "middleware `csrf` is not one of auth, admin",
            ),
            (route("GET", "/a", &["auth"], ""), "no handler is named"),
        ];
        for (route, expected) in cases {
            let problem = check_route(&route).unwrap_err();
            assert!(
                problem.contains(expected),
                "{} {}: {problem}",
                route.method,
                route.path
            );
        }
        for good in [
            route("get", "/api/plugins/stats/overview", &["auth"], "overview"),
            route("DELETE", "/api/plugins/x/:id", &["auth", "admin"], "remove"),
            route("GET", "/administration", &[], "page"),
        ] {
            assert_eq!(check_route(&good), Ok(()), "{}", good.path);
        }
    }
}
