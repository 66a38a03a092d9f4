//! What a plugin asks for ([`ResourceRequest`]) and what an admin grants ([`ResourcePolicy`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::serde_string;
use crate::string_enum::string_enum;

string_enum! {
    /// The kind of host access a [`Permission`] grants.
    pub enum PermissionType as "permission type" {
        /// `db_query` and `db_exec`; scope: table patterns, optionally `@database:table`.
        Db = "db",
        /// `cache_get`, `cache_set`, `cache_delete` on the plugin's own namespace.
        Cache = "cache",
        /// `http_request`; scope: host names, `*.example.com` for subdomains.
        Http = "http",
        /// `send_email`; scope: `@domain` or full addresses.
        Email = "email",
        /// `config_get` of sensitive keys; scope: key names.
        Config = "config",
        /// `call_plugin`; scope: plugin names, `*` for any.
        PluginCall = "plugin_call",
    }
}

string_enum! {
    /// How much of a permission is granted.
    pub enum Access as "access level" {
        /// Reading only.
        Read = "read",
        /// Writing only.
        Write = "write",
        /// Reading and writing.
        ReadWrite = "readwrite",
    }
}

impl Access {
    /// Whether this level allows reading.
    pub fn can_read(self) -> bool {
        matches!(self, Self::Read | Self::ReadWrite)
    }

    /// Whether this level allows writing. `read` never does.
    pub fn can_write(self) -> bool {
        matches!(self, Self::Write | Self::ReadWrite)
    }
}

string_enum! {
    /// Where a plugin stands with the admin.
    pub enum PolicyStatus as "policy status" {
        /// New and not yet reviewed: runs with the restrictive default policy.
        PendingReview = "pending_review",
        /// Reviewed and granted its policy.
        Approved = "approved",
        /// Reviewed and granted less than it asked for.
        Restricted = "restricted",
        /// Every host call is refused.
        Blocked = "blocked",
    }
}

fn read_access() -> Access {
    Access::Read
}

/// One capability: a type, an access level and a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    /// What kind of host access.
    #[serde(rename = "type")]
    pub kind: PermissionType,
    /// How much of it; absent means `read`.
    #[serde(default = "read_access")]
    pub access: Access,
    /// What it applies to; the meaning depends on [`kind`](Self::kind).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<String>,
}

impl Permission {
    /// A permission without scope.
    pub fn new(kind: PermissionType, access: Access) -> Self {
        Self {
            kind,
            access,
            scope: Vec::new(),
        }
    }

    /// The same permission limited to `scope`.
    #[must_use]
    pub fn with_scope<I, S>(mut self, scope: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scope = scope.into_iter().map(Into::into).collect();
        self
    }
}

impl Permission {
    /// The permission as a plugin's *request* means it. Plugins written for the Go host ask
    /// for `type: db, access: read` without scope and mean "any table": a requested permission
    /// without scope asks for everything of its kind (`*`), and is shown and granted as such.
    /// (`cache` has no scope: a plugin only ever reaches its own namespace.) A *granted*
    /// permission without scope grants nothing.
    #[must_use]
    pub fn as_requested(&self) -> Self {
        let mut permission = self.clone();
        if permission.scope.is_empty() && permission.kind != PermissionType::Cache {
            permission.scope = vec!["*".to_owned()];
        }
        permission
    }

    /// What the scope reaches, in words an admin reads: `*` is "every table of the default
    /// database", "any public host", "any recipient", …; an empty scope grants nothing.
    pub fn scope_summary(&self) -> String {
        if self.kind == PermissionType::Cache {
            return "its own cache namespace".to_owned();
        }
        if self.scope.is_empty() {
            return "nothing (no scope)".to_owned();
        }
        let everything = match self.kind {
            PermissionType::Db => {
                "every table of the default database (never the platform's tables or system catalogs)"
            }
            PermissionType::Http => "any public host (never internal addresses)",
            PermissionType::Email => "any recipient",
            PermissionType::Config => "every non-sensitive key",
            PermissionType::PluginCall => "every plugin",
            PermissionType::Cache => "its own cache namespace",
        };
        self.scope
            .iter()
            .map(|entry| {
                if entry.trim() == "*" {
                    everything
                } else {
                    entry.as_str()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One line: `db readwrite: every table of the default database (…)`.
    pub fn summary(&self) -> String {
        format!("{} {}: {}", self.kind, self.access, self.scope_summary())
    }
}

/// What a plugin asks the platform for, in its registration or `plugin.yaml`. The admin grants
/// it, or less, as a [`ResourcePolicy`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceRequest {
    /// Memory cap in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    /// Deadline of one call.
    #[serde(with = "serde_string::option", skip_serializing_if = "Option::is_none")]
    pub call_timeout: Option<Duration>,
    /// Deadline of `init`.
    #[serde(with = "serde_string::option", skip_serializing_if = "Option::is_none")]
    pub init_timeout: Option<Duration>,
    /// Grace period of `shutdown`.
    #[serde(with = "serde_string::option", skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<Duration>,
    /// Host permissions asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<Permission>,
}

/// The limits and permissions the platform enforces on one plugin. Set by an admin, stored as
/// JSON under `Plugin::<name>::Policy`.
///
/// Fields absent from stored JSON take the values of [`ResourcePolicy::default_for`]. A rate
/// limit of 0 means unlimited, as in the Go host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourcePolicy {
    /// The plugin this policy applies to.
    pub plugin_name: String,
    /// Review status.
    pub status: PolicyStatus,
    /// Memory cap in MiB.
    pub memory_mb: u32,
    /// Deadline of one call.
    #[serde(with = "serde_string")]
    pub call_timeout: Duration,
    /// Deadline of `init` (and of `register` for WASM guests).
    #[serde(with = "serde_string")]
    pub init_timeout: Duration,
    /// Grace period of `shutdown`.
    #[serde(with = "serde_string")]
    pub shutdown_timeout: Duration,
    /// Granted permissions.
    pub permissions: Vec<Permission>,
    /// Host calls per second, all functions together (0 = unlimited).
    pub max_calls_per_second: u32,
    /// `db_query` and `db_exec` calls per minute (0 = unlimited).
    pub max_db_queries_per_min: u32,
    /// `http_request` calls per minute (0 = unlimited).
    pub max_http_req_per_min: u32,
    /// `send_email` calls per minute (0 = unlimited).
    pub max_emails_per_min: u32,
}

impl ResourcePolicy {
    /// Default memory cap in MiB.
    pub const DEFAULT_MEMORY_MB: u32 = 256;
    /// Default deadline of one call.
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default deadline of `init`.
    pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default grace period of `shutdown`.
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default host calls per second.
    pub const DEFAULT_CALLS_PER_SECOND: u32 = 100;
    /// Default database calls per minute.
    pub const DEFAULT_DB_QUERIES_PER_MIN: u32 = 600;
    /// Default HTTP requests per minute.
    pub const DEFAULT_HTTP_REQ_PER_MIN: u32 = 60;
    /// Default emails per minute.
    pub const DEFAULT_EMAILS_PER_MIN: u32 = 10;

    /// The restrictive policy a new plugin starts with: `pending_review`, 256 MiB, timeouts
    /// 30 s / 10 s / 5 s, database read and cache read-write without scope, 100 calls/s,
    /// 600 database calls/min, 60 HTTP requests/min, 10 emails/min.
    pub fn default_for(plugin_name: impl Into<String>) -> Self {
        Self {
            plugin_name: plugin_name.into(),
            status: PolicyStatus::PendingReview,
            memory_mb: Self::DEFAULT_MEMORY_MB,
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
            init_timeout: Self::DEFAULT_INIT_TIMEOUT,
            shutdown_timeout: Self::DEFAULT_SHUTDOWN_TIMEOUT,
            permissions: vec![
                Permission::new(PermissionType::Db, Access::Read),
                Permission::new(PermissionType::Cache, Access::ReadWrite),
            ],
            max_calls_per_second: Self::DEFAULT_CALLS_PER_SECOND,
            max_db_queries_per_min: Self::DEFAULT_DB_QUERIES_PER_MIN,
            max_http_req_per_min: Self::DEFAULT_HTTP_REQ_PER_MIN,
            max_emails_per_min: Self::DEFAULT_EMAILS_PER_MIN,
        }
    }

    /// The policy that grants what a plugin requests: `approved`, its memory and timeouts (the
    /// defaults where it asks for none) and exactly the permissions it asks for, as
    /// [`Permission::as_requested`] reads them (no scope asked: `*`), with the default rate
    /// limits.
    pub fn approving(plugin_name: impl Into<String>, request: &ResourceRequest) -> Self {
        let defaults = Self::default_for(plugin_name);
        Self {
            status: PolicyStatus::Approved,
            memory_mb: request.memory_mb.unwrap_or(defaults.memory_mb),
            call_timeout: request.call_timeout.unwrap_or(defaults.call_timeout),
            init_timeout: request.init_timeout.unwrap_or(defaults.init_timeout),
            shutdown_timeout: request
                .shutdown_timeout
                .unwrap_or(defaults.shutdown_timeout),
            permissions: request
                .permissions
                .iter()
                .map(Permission::as_requested)
                .collect(),
            ..defaults
        }
    }

    /// The granted permissions of one type.
    pub fn permissions_of(&self, kind: PermissionType) -> impl Iterator<Item = &Permission> {
        self.permissions.iter().filter(move |p| p.kind == kind)
    }

    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_mb) * 1024 * 1024
    }
}

impl Default for ResourcePolicy {
    fn default() -> Self {
        Self::default_for("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_policy_is_restrictive() {
        let p = ResourcePolicy::default_for("stats");
        assert_eq!(p.plugin_name, "stats");
        assert_eq!(p.status, PolicyStatus::PendingReview);
        assert_eq!(p.memory_mb, 256);
        assert_eq!(p.memory_bytes(), 256 << 20);
        assert_eq!(
            (p.call_timeout, p.init_timeout, p.shutdown_timeout),
            (
                Duration::from_secs(30),
                Duration::from_secs(10),
                Duration::from_secs(5)
            )
        );
        assert_eq!(
            p.permissions_of(PermissionType::Db)
                .map(|p| p.access)
                .collect::<Vec<_>>(),
            [Access::Read]
        );
        assert_eq!(
            p.permissions_of(PermissionType::Cache)
                .map(|p| p.access)
                .collect::<Vec<_>>(),
            [Access::ReadWrite]
        );
        assert_eq!(p.permissions_of(PermissionType::Http).count(), 0);
        assert_eq!(
            (
                p.max_calls_per_second,
                p.max_db_queries_per_min,
                p.max_http_req_per_min
            ),
            (100, 600, 60)
        );
    }

    #[test]
    fn policy_json_matches_the_go_host() {
        let json = json!({
            "plugin_name": "stats",
            "status": "approved",
            "memory_mb": 128,
            "call_timeout": "500ms",
            "init_timeout": "2m",
            "shutdown_timeout": "1s",
            "permissions": [{"type": "db", "access": "readwrite", "scope": ["ticket*"]}, {"type": "http", "scope": ["*.example.com"]}],
            "max_calls_per_second": 5,
            "max_db_queries_per_min": 0,
            "max_http_req_per_min": 7
        });
        let p: ResourcePolicy = serde_json::from_value(json).unwrap();
        assert_eq!(p.call_timeout, Duration::from_millis(500));
        assert_eq!(p.init_timeout, Duration::from_secs(120));
        assert_eq!(
            p.permissions[0],
            Permission::new(PermissionType::Db, Access::ReadWrite).with_scope(["ticket*"])
        );
        assert_eq!(
            p.permissions[1].access,
            Access::Read,
            "absent access means read"
        );
        assert_eq!(p.max_db_queries_per_min, 0);
        assert_eq!(p.max_emails_per_min, 10, "absent limits take the default");
        let back: ResourcePolicy =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn unknown_enum_values_list_the_accepted_ones() {
        let err = serde_json::from_value::<Permission>(json!({"type": "files"}))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "unknown permission type `files` (expected one of: db, cache, http, email, config, plugin_call)"
        );
        let err = serde_json::from_value::<Permission>(json!({"type": "db", "access": "all"}))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "unknown access level `all` (expected one of: read, write, readwrite)"
        );
    }

    #[test]
    fn a_request_without_scope_asks_for_everything_and_says_so() {
        // The Go host's plugin.yaml: `db` readwrite without scope, `http` on one domain.
        let request: ResourceRequest = serde_json::from_value(json!({
            "permissions": [
                {"type": "db", "access": "readwrite"},
                {"type": "http", "scope": ["*.tenor.com"]},
                {"type": "cache", "access": "readwrite"},
                {"type": "email"}
            ]
        }))
        .unwrap();
        let policy = ResourcePolicy::approving("gifs", &request);
        let scopes: Vec<&[String]> = policy.permissions.iter().map(|p| &p.scope[..]).collect();
        assert_eq!(
            scopes,
            [
                &["*".to_owned()][..],
                &["*.tenor.com".to_owned()],
                &[],
                &["*".to_owned()]
            ]
        );
        let lines: Vec<String> = policy.permissions.iter().map(Permission::summary).collect();
        assert!(lines[0].starts_with("db readwrite: every table of the default database"));
        assert_eq!(lines[1], "http read: *.tenor.com");
        assert_eq!(lines[2], "cache readwrite: its own cache namespace");
        assert_eq!(lines[3], "email read: any recipient");
        // Granted (not requested) without scope: nothing.
        let granted = Permission::new(PermissionType::Db, Access::Read);
        assert_eq!(granted.scope_summary(), "nothing (no scope)");
    }

    #[test]
    fn access_levels() {
        assert!(Access::ReadWrite.can_read() && Access::ReadWrite.can_write());
        assert!(Access::Read.can_read() && !Access::Read.can_write());
        assert!(!Access::Write.can_read() && Access::Write.can_write());
    }
}
