//! What a registration must satisfy before it is published: a valid name, well-formed routes
//! no other plugin declares, and jobs with schedules that parse.

use gk_sdk::{GkRegistration, RouteSpec};

use super::{Manager, ManagerError};

/// The HTTP methods a plugin route may declare.
pub const ROUTE_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
/// The middleware a plugin route may ask for: `auth` (any valid token), `admin` (admin role).
pub const ROUTE_MIDDLEWARE: [&str; 2] = ["auth", "admin"];
/// Path prefixes the server keeps for itself.
pub const RESERVED_PATH_PREFIXES: [&str; 4] = ["/api/v1/", "/admin/", "/healthz/", "/metrics/"];

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
        gk_sdk::validate_plugin_name(&registration.name).map_err(invalid)?;
        for job in &registration.jobs {
            crate::parse_schedule(&job.schedule)
                .map_err(|problem| invalid(format!("job `{}`: {problem}", job.id)))?;
        }
        self.check_routes(registration)
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
