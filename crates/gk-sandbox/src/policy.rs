//! A policy compiled for enforcement: matchers, limits and the SQL decision cache of one policy
//! version. A new version is built off to the side and swapped in whole.

use std::sync::Arc;

use dashmap::DashMap;
use gk_sdk::{
    DEFAULT_DATABASE, HostError, PermissionType, PolicyStatus, ResourcePolicy, TableScope,
    validate_plugin_name,
};

use crate::config_guard::ConfigRules;
use crate::db_rules::{DbRules, database_of};
use crate::email_guard::EmailRules;
use crate::limits::LimitSet;
use crate::scope::{Scope, ScopeMatch};
use crate::sql_guard::{StatementClass, analyse};
use crate::url_guard::HttpRules;
use crate::{PolicyError, SandboxConfig};

/// The longest query text whose decision is remembered.
const MAX_CACHED_QUERY_BYTES: usize = 2048;

/// Which database function a SQL decision is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqlCall {
    Query,
    Exec,
}

/// A statement the guard allowed: the SQL to run (printed back from the checked syntax tree,
/// with its `@name:` prefix) and its number of `?` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckedSql {
    pub(crate) sql: Arc<str>,
    pub(crate) placeholders: usize,
}

/// One policy version, ready to judge calls.
#[derive(Debug)]
pub(crate) struct CompiledPolicy {
    pub(crate) version: u64,
    /// The policy as the admin set it.
    pub(crate) stored: ResourcePolicy,
    /// The policy enforced: the stored one, or the default while pending review.
    pub(crate) effective: ResourcePolicy,
    pub(crate) limits: LimitSet,
    db: Arc<DbRules>,
    http: HttpRules,
    email: EmailRules,
    config: ConfigRules,
    cache_read: bool,
    cache_write: bool,
    cache_scope: Scope,
    plugin_calls: Scope,
    query_decisions: DashMap<Box<str>, Result<CheckedSql, HostError>>,
    exec_decisions: DashMap<Box<str>, Result<CheckedSql, HostError>>,
}

impl CompiledPolicy {
    pub(crate) fn compile(
        plugin: &str,
        stored: ResourcePolicy,
        version: u64,
        previous: Option<&CompiledPolicy>,
    ) -> Result<Self, PolicyError> {
        if !stored.plugin_name.is_empty() && stored.plugin_name != plugin {
            return Err(PolicyError::WrongPlugin {
                plugin: plugin.to_owned(),
                policy_plugin: stored.plugin_name,
            });
        }
        let mut effective = match stored.status {
            PolicyStatus::PendingReview => ResourcePolicy::default_for(plugin),
            _ => stored.clone(),
        };
        effective.plugin_name = plugin.to_owned();
        let scope_error = |permission: PermissionType| {
            move |problem: String| PolicyError::InvalidScope {
                plugin: plugin.to_owned(),
                permission,
                problem,
            }
        };
        let scope_of = |kind: PermissionType| -> Vec<&str> {
            effective
                .permissions_of(kind)
                .flat_map(|p| p.scope.iter().map(String::as_str))
                .collect()
        };
        let cache_permissions: Vec<_> = effective.permissions_of(PermissionType::Cache).collect();
        Ok(Self {
            version,
            limits: LimitSet::build(&effective, previous.map(|p| &p.limits)),
            db: Arc::new(DbRules::compile(&effective).map_err(scope_error(PermissionType::Db))?),
            http: HttpRules::compile(&effective).map_err(scope_error(PermissionType::Http))?,
            email: EmailRules::compile(&effective).map_err(scope_error(PermissionType::Email))?,
            config: ConfigRules::compile(&effective)
                .map_err(scope_error(PermissionType::Config))?,
            cache_read: cache_permissions.iter().any(|p| p.access.can_read()),
            cache_write: cache_permissions.iter().any(|p| p.access.can_write()),
            cache_scope: Scope::compile(scope_of(PermissionType::Cache), None)
                .map_err(scope_error(PermissionType::Cache))?,
            plugin_calls: Scope::compile(scope_of(PermissionType::PluginCall), None)
                .map_err(scope_error(PermissionType::PluginCall))?,
            query_decisions: DashMap::new(),
            exec_decisions: DashMap::new(),
            stored,
            effective,
        })
    }

    pub(crate) fn is_blocked(&self) -> bool {
        self.effective.status == PolicyStatus::Blocked
    }

    /// What the database engine may let this policy's statements touch.
    pub(crate) fn table_scope(&self) -> Arc<dyn TableScope> {
        self.db.clone()
    }

    /// Judges a database call, remembering the decision for this policy version. An allowed
    /// statement comes back as the SQL to run in its place.
    pub(crate) fn check_sql(
        &self,
        config: &SandboxConfig,
        call: SqlCall,
        query: &str,
    ) -> Result<CheckedSql, HostError> {
        let decisions = match call {
            SqlCall::Query => &self.query_decisions,
            SqlCall::Exec => &self.exec_decisions,
        };
        if let Some(decision) = decisions.get(query) {
            return decision.clone();
        }
        let decision = self.judge_sql(config, call, query);
        // Long statements are judged each time: the cache stays small in bytes.
        if query.len() > MAX_CACHED_QUERY_BYTES {
            return decision;
        }
        if decisions.len() >= config.decision_cache_capacity {
            decisions.clear();
        }
        decisions.insert(query.into(), decision.clone());
        decision
    }

    fn judge_sql(
        &self,
        config: &SandboxConfig,
        call: SqlCall,
        query: &str,
    ) -> Result<CheckedSql, HostError> {
        let needed = match call {
            SqlCall::Query => "db:read",
            SqlCall::Exec => "db:write",
        };
        let (database, sql) = database_of(query).map_err(HostError::InvalidInput)?;
        if !self.db.knows_database(&database) {
            return Err(HostError::denied(
                needed,
                format!("the policy grants no table of database `{database}`"),
            ));
        }
        let analysis = analyse(sql, config.dialect_of(&database))
            .map_err(|problem| HostError::denied(needed, problem))?;
        if call == SqlCall::Query && analysis.class != StatementClass::Read {
            return Err(HostError::denied(
                "db:write",
                format!(
                    "db_query runs only reads, and this is a {} statement: use db_exec",
                    analysis.class
                ),
            ));
        }
        if analysis.class == StatementClass::Other {
            // Their objects cannot be listed, and they reach past any table scope (`ATTACH` a
            // file, `SET ROLE`, `GRANT`, `COPY … TO`): no scope, `*` included, allows them.
            return Err(HostError::denied(
                "db:write",
                "administrative statements (GRANT, SET, PRAGMA, ATTACH, COPY, …) are never allowed to plugins",
            ));
        }
        if let Some(table) = analysis
            .reads
            .iter()
            .chain(&analysis.writes)
            .find(|t| config.is_reserved(t.table()))
        {
            return Err(HostError::denied(
                needed,
                format!("table `{table}` belongs to the platform: no scope reaches it"),
            ));
        }
        for table in &analysis.reads {
            if !self.db.allows(&database, table, false) {
                return Err(HostError::denied(
                    "db:read",
                    format!("table `{table}` of database `{database}` is not in the db read scope"),
                ));
            }
        }
        for table in &analysis.writes {
            if !self.db.allows(&database, table, true) {
                return Err(HostError::denied(
                    "db:write",
                    format!(
                        "table `{table}` of database `{database}` is not in the db write scope"
                    ),
                ));
            }
        }
        let sql = if database == DEFAULT_DATABASE {
            analysis.checked_sql
        } else {
            format!("@{database}:{}", analysis.checked_sql)
        };
        Ok(CheckedSql {
            sql: sql.into(),
            placeholders: analysis.placeholders,
        })
    }

    /// Judges a cache key for reading (`write == false`) or writing.
    pub(crate) fn check_cache(
        &self,
        config: &SandboxConfig,
        key: &str,
        write: bool,
    ) -> Result<(), HostError> {
        let (granted, permission) = if write {
            (self.cache_write, "cache:write")
        } else {
            (self.cache_read, "cache:read")
        };
        if !granted {
            return Err(HostError::denied(
                permission,
                "the policy grants no such cache access",
            ));
        }
        if key.is_empty() || key.len() > config.max_cache_key_bytes {
            return Err(HostError::InvalidInput(format!(
                "cache keys are 1 to {} bytes long",
                config.max_cache_key_bytes
            )));
        }
        if !self.cache_scope.is_empty() && self.cache_scope.matches(&[key]) == ScopeMatch::No {
            return Err(HostError::denied(
                permission,
                format!("key `{key}` is not in the cache scope"),
            ));
        }
        Ok(())
    }

    /// Checks `url`; `true` when its host is named exactly in the scope (only such a request
    /// may reach the internal networks the operator opened).
    pub(crate) fn check_http(&self, url: &str) -> Result<bool, HostError> {
        self.http
            .check(url)
            .map_err(|reason| HostError::denied("http", reason))
    }

    pub(crate) fn check_email(&self, to: &str) -> Result<(), HostError> {
        self.email
            .check(to)
            .map_err(|reason| HostError::denied("email", reason))
    }

    pub(crate) fn check_config(&self, plugin: &str, key: &str) -> Result<(), HostError> {
        self.config
            .check(plugin, key)
            .map_err(|reason| HostError::denied("config", reason))
    }

    pub(crate) fn check_plugin_call(&self, target: &str) -> Result<(), HostError> {
        validate_plugin_name(target)
            .map_err(|problem| HostError::InvalidInput(format!("plugin name: {problem}")))?;
        match self.plugin_calls.matches(&[target]) {
            ScopeMatch::No => Err(HostError::denied(
                "plugin_call",
                format!("plugin `{target}` is not in the plugin_call scope"),
            )),
            _ => Ok(()),
        }
    }
}
