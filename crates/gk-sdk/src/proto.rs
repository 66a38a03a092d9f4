//! The wire contract of `proto/goatkit/plugin/v1`, generated at build time, and conversions
//! between its messages and the domain types of this crate.
//!
//! Prefer the domain types; use [`pb`] only at the gRPC boundary.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{
    CallContext, ErrorCodeSpec, GkRegistration, HostError, HostErrorKind, I18nSpec, JobSpec,
    LogLevel, MenuItemSpec, Permission, PluginError, ResourceRequest, RouteSpec, TemplateSpec,
    WidgetSpec,
};

mod generated {
    #![allow(
        missing_docs,
        unreachable_pub,
        missing_debug_implementations,
        clippy::all,
        clippy::pedantic
    )]
    include!(concat!(env!("OUT_DIR"), "/goatkit.plugin.v1.rs"));
}

/// Wire types and gRPC clients and servers of `goatkit.plugin.v1`.
pub mod pb {
    pub use super::generated::*;
}

mod status;
pub use status::{
    HOST_ERROR_DETAIL_TYPE_URL, host_error_from_status, host_error_to_status, rpc,
    status_to_host_error,
};

/// The encoded `FileDescriptorSet` of the contract, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/goatkit_plugin_v1_descriptor.bin"
));

fn protocol(problem: String) -> PluginError {
    PluginError::Protocol(format!("invalid registration message: {problem}"))
}

fn millis(duration: Option<Duration>) -> u64 {
    duration.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn duration(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

impl From<&CallContext> for pb::CallContext {
    fn from(ctx: &CallContext) -> Self {
        Self {
            plugin: ctx.plugin.clone(),
            caller: ctx.caller.clone().unwrap_or_default(),
            depth: ctx.depth,
            language: ctx.language.clone().unwrap_or_default(),
            call_id: String::new(),
        }
    }
}

impl From<pb::CallContext> for CallContext {
    fn from(ctx: pb::CallContext) -> Self {
        Self {
            plugin: ctx.plugin,
            caller: Some(ctx.caller).filter(|c| !c.is_empty()),
            depth: ctx.depth,
            language: Some(ctx.language).filter(|l| !l.is_empty()),
        }
    }
}

impl From<LogLevel> for pb::LogLevel {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Debug => Self::Debug,
            LogLevel::Info => Self::Info,
            LogLevel::Warn => Self::Warn,
            LogLevel::Error => Self::Error,
        }
    }
}

impl From<pb::LogLevel> for LogLevel {
    fn from(level: pb::LogLevel) -> Self {
        match level {
            pb::LogLevel::Debug => Self::Debug,
            pb::LogLevel::Unspecified | pb::LogLevel::Info => Self::Info,
            pb::LogLevel::Warn => Self::Warn,
            pb::LogLevel::Error => Self::Error,
        }
    }
}

impl From<&HostError> for pb::HostErrorDetail {
    fn from(error: &HostError) -> Self {
        let mut detail = Self {
            kind: error.kind().as_str().to_owned(),
            message: error.detail().to_owned(),
            ..Self::default()
        };
        match error {
            HostError::PermissionDenied { permission, .. } => {
                detail.permission = permission.clone()
            }
            HostError::RateLimited { limit, retry_after } => {
                detail.limit = limit.clone();
                detail.retry_after_ms = millis(Some(*retry_after));
            }
            HostError::CallDepthExceeded { max } => detail.message = max.to_string(),
            // The kind and the message say all there is.
            HostError::NotFound(_)
            | HostError::InvalidInput(_)
            | HostError::Timeout(_)
            | HostError::Unavailable(_)
            | HostError::PluginFailed(_)
            | HostError::Backend(_) => {}
        }
        detail
    }
}

impl From<pb::HostErrorDetail> for HostError {
    /// Unknown kinds become [`HostError::Backend`] with the message, so nothing is lost.
    fn from(detail: pb::HostErrorDetail) -> Self {
        let Some(kind) = HostErrorKind::from_wire(&detail.kind) else {
            return HostError::Backend(format!("{}: {}", detail.kind, detail.message));
        };
        match kind {
            HostErrorKind::PermissionDenied => HostError::PermissionDenied {
                permission: detail.permission,
                reason: detail.message,
            },
            HostErrorKind::RateLimited => HostError::RateLimited {
                limit: detail.limit,
                retry_after: Duration::from_millis(detail.retry_after_ms),
            },
            HostErrorKind::NotFound => HostError::NotFound(detail.message),
            HostErrorKind::InvalidInput => HostError::InvalidInput(detail.message),
            HostErrorKind::Timeout => HostError::Timeout(detail.message),
            HostErrorKind::Unavailable => HostError::Unavailable(detail.message),
            HostErrorKind::CallDepthExceeded => HostError::CallDepthExceeded {
                max: detail.message.parse().unwrap_or(crate::MAX_CALL_DEPTH),
            },
            HostErrorKind::PluginFailed => HostError::PluginFailed(detail.message),
            HostErrorKind::Backend => HostError::Backend(detail.message),
        }
    }
}

impl From<pb::Failure> for PluginError {
    fn from(failure: pb::Failure) -> Self {
        Self::Failed {
            code: Some(failure.code).filter(|c| !c.is_empty()),
            message: failure.message,
        }
    }
}

impl From<&PluginError> for pb::Failure {
    /// A [`PluginError::Failed`] keeps its code; any other error travels as its message.
    fn from(error: &PluginError) -> Self {
        match error {
            PluginError::Failed { code, message } => Self {
                code: code.clone().unwrap_or_default(),
                message: message.clone(),
            },
            other => Self {
                code: String::new(),
                message: other.to_string(),
            },
        }
    }
}

impl From<&Permission> for pb::Permission {
    fn from(p: &Permission) -> Self {
        Self {
            r#type: p.kind.as_str().to_owned(),
            access: p.access.as_str().to_owned(),
            scope: p.scope.clone(),
        }
    }
}

impl TryFrom<pb::Permission> for Permission {
    type Error = PluginError;

    fn try_from(p: pb::Permission) -> Result<Self, PluginError> {
        Ok(Self {
            kind: p.r#type.parse().map_err(protocol)?,
            access: if p.access.is_empty() {
                crate::Access::Read
            } else {
                p.access.parse().map_err(protocol)?
            },
            scope: p.scope,
        })
    }
}

impl From<&ResourceRequest> for pb::ResourceRequest {
    fn from(r: &ResourceRequest) -> Self {
        Self {
            memory_mb: r.memory_mb.unwrap_or(0),
            call_timeout_ms: millis(r.call_timeout),
            init_timeout_ms: millis(r.init_timeout),
            shutdown_timeout_ms: millis(r.shutdown_timeout),
            permissions: r.permissions.iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::ResourceRequest> for ResourceRequest {
    type Error = PluginError;

    fn try_from(r: pb::ResourceRequest) -> Result<Self, PluginError> {
        Ok(Self {
            memory_mb: (r.memory_mb > 0).then_some(r.memory_mb),
            call_timeout: duration(r.call_timeout_ms),
            init_timeout: duration(r.init_timeout_ms),
            shutdown_timeout: duration(r.shutdown_timeout_ms),
            permissions: r
                .permissions
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<&MenuItemSpec> for pb::MenuItem {
    fn from(m: &MenuItemSpec) -> Self {
        Self {
            id: m.id.clone(),
            label: m.label.clone(),
            icon: m.icon.clone(),
            path: m.path.clone(),
            location: m.location.clone(),
            parent: m.parent.clone(),
            order: m.order,
            children: m.children.iter().map(Into::into).collect(),
        }
    }
}

impl From<pb::MenuItem> for MenuItemSpec {
    fn from(m: pb::MenuItem) -> Self {
        Self {
            id: m.id,
            label: m.label,
            icon: m.icon,
            path: m.path,
            location: m.location,
            parent: m.parent,
            order: m.order,
            children: m.children.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<&GkRegistration> for pb::Registration {
    fn from(r: &GkRegistration) -> Self {
        Self {
            name: r.name.clone(),
            version: r.version.clone(),
            description: r.description.clone(),
            author: r.author.clone(),
            license: r.license.clone(),
            homepage: r.homepage.clone(),
            routes: r
                .routes
                .iter()
                .map(|x| pb::Route {
                    method: x.method.clone(),
                    path: x.path.clone(),
                    handler: x.handler.clone(),
                    middleware: x.middleware.clone(),
                    description: x.description.clone(),
                })
                .collect(),
            widgets: r
                .widgets
                .iter()
                .map(|w| pb::Widget {
                    id: w.id.clone(),
                    title: w.title.clone(),
                    description: w.description.clone(),
                    handler: w.handler.clone(),
                    location: w.location.clone(),
                    size: w.size.clone(),
                    order: w.order,
                    refreshable: w.refreshable,
                    refresh_sec: w.refresh_sec,
                })
                .collect(),
            menu_items: r.menu_items.iter().map(Into::into).collect(),
            jobs: r
                .jobs
                .iter()
                .map(|j| pb::Job {
                    id: j.id.clone(),
                    handler: j.handler.clone(),
                    schedule: j.schedule.clone(),
                    description: j.description.clone(),
                    enabled: j.enabled,
                    timeout_ms: millis(j.timeout),
                })
                .collect(),
            templates: r
                .templates
                .iter()
                .map(|t| pb::Template {
                    name: t.name.clone(),
                    path: t.path.clone(),
                    r#override: t.r#override,
                })
                .collect(),
            i18n: r.i18n.as_ref().map(|i| pb::I18n {
                namespace: i.namespace.clone(),
                languages: i.languages.clone(),
                translations: i
                    .translations
                    .iter()
                    .map(|(lang, entries)| {
                        (
                            lang.clone(),
                            pb::Catalog {
                                entries: entries
                                    .iter()
                                    .map(|(k, v)| (k.clone(), v.clone()))
                                    .collect(),
                            },
                        )
                    })
                    .collect(),
            }),
            error_codes: r
                .error_codes
                .iter()
                .map(|e| pb::ErrorCode {
                    code: e.code.clone(),
                    message: e.message.clone(),
                    http_status: u32::from(e.http_status),
                })
                .collect(),
            hide_menu_items: r.hide_menu_items.clone(),
            landing_page: r.landing_page.clone(),
            min_host_version: r.min_host_version.clone(),
            resources: r.resources.as_ref().map(Into::into),
            permissions: r.permissions.clone(),
            extensions_json: if r.extensions.is_empty() {
                Vec::new()
            } else {
                serde_json::to_vec(&r.extensions).unwrap_or_default()
            },
        }
    }
}

impl TryFrom<pb::Registration> for GkRegistration {
    type Error = PluginError;

    /// Fails when an enumerated field (permission type, access) or the extensions JSON is invalid.
    fn try_from(r: pb::Registration) -> Result<Self, PluginError> {
        Ok(Self {
            name: r.name,
            version: r.version,
            description: r.description,
            author: r.author,
            license: r.license,
            homepage: r.homepage,
            routes: r
                .routes
                .into_iter()
                .map(|x| RouteSpec {
                    method: x.method,
                    path: x.path,
                    handler: x.handler,
                    middleware: x.middleware,
                    description: x.description,
                })
                .collect(),
            menu_items: r.menu_items.into_iter().map(Into::into).collect(),
            widgets: r
                .widgets
                .into_iter()
                .map(|w| WidgetSpec {
                    id: w.id,
                    title: w.title,
                    description: w.description,
                    handler: w.handler,
                    location: w.location,
                    size: w.size,
                    order: w.order,
                    refreshable: w.refreshable,
                    refresh_sec: w.refresh_sec,
                })
                .collect(),
            jobs: r
                .jobs
                .into_iter()
                .map(|j| JobSpec {
                    id: j.id,
                    handler: j.handler,
                    schedule: j.schedule,
                    description: j.description,
                    enabled: j.enabled,
                    timeout: duration(j.timeout_ms),
                })
                .collect(),
            templates: r
                .templates
                .into_iter()
                .map(|t| TemplateSpec {
                    name: t.name,
                    path: t.path,
                    r#override: t.r#override,
                })
                .collect(),
            i18n: r.i18n.map(|i| I18nSpec {
                namespace: i.namespace,
                languages: i.languages,
                translations: i
                    .translations
                    .into_iter()
                    .map(|(lang, catalog)| {
                        (
                            lang,
                            catalog.entries.into_iter().collect::<BTreeMap<_, _>>(),
                        )
                    })
                    .collect(),
            }),
            error_codes: r
                .error_codes
                .into_iter()
                .map(|e| {
                    Ok(ErrorCodeSpec {
                        code: e.code,
                        message: e.message,
                        http_status: u16::try_from(e.http_status).map_err(|_| {
                            protocol(format!(
                                "http_status {} is not an HTTP status",
                                e.http_status
                            ))
                        })?,
                    })
                })
                .collect::<Result<_, PluginError>>()?,
            hide_menu_items: r.hide_menu_items,
            landing_page: r.landing_page,
            min_host_version: r.min_host_version,
            permissions: r.permissions,
            resources: r.resources.map(TryInto::try_into).transpose()?,
            extensions: if r.extensions_json.is_empty() {
                serde_json::Map::new()
            } else {
                serde_json::from_slice(&r.extensions_json)
                    .map_err(|e| protocol(format!("extensions_json: {e}")))?
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn descriptor_set_decodes_and_names_both_services() {
        let set = prost_types_free::decode_file_names(FILE_DESCRIPTOR_SET);
        assert!(set.iter().any(|f| f.ends_with("plugin.proto")), "{set:?}");
        assert!(set.iter().any(|f| f.ends_with("host.proto")), "{set:?}");
    }

    /// Reads file names out of a FileDescriptorSet without prost-types.
    mod prost_types_free {
        use prost::Message;

        #[derive(Clone, PartialEq, Message)]
        struct FileDescriptorSet {
            #[prost(message, repeated, tag = "1")]
            file: Vec<FileDescriptorProto>,
        }

        #[derive(Clone, PartialEq, Message)]
        struct FileDescriptorProto {
            #[prost(string, optional, tag = "1")]
            name: Option<String>,
        }

        pub(super) fn decode_file_names(bytes: &[u8]) -> Vec<String> {
            FileDescriptorSet::decode(bytes)
                .map(|s| s.file.into_iter().filter_map(|f| f.name).collect())
                .unwrap_or_default()
        }
    }

    #[test]
    fn host_errors_round_trip_through_the_detail_message() {
        let errors = [
            HostError::denied("db:write", "writes need write access"),
            HostError::RateLimited {
                limit: "max_http_req_per_min".into(),
                retry_after: Duration::from_millis(1500),
            },
            HostError::NotFound("config key `x`".into()),
            HostError::InvalidInput("bad".into()),
            HostError::Timeout("query".into()),
            HostError::Unavailable("redis".into()),
            HostError::CallDepthExceeded { max: 10 },
            HostError::PluginFailed("b: boom".into()),
            HostError::Backend("disk full".into()),
        ];
        for error in errors {
            let detail = pb::HostErrorDetail::from(&error);
            let bytes = detail.encode_to_vec();
            let back = HostError::from(pb::HostErrorDetail::decode(bytes.as_slice()).unwrap());
            assert_eq!(back, error);
        }
        let unknown = HostError::from(pb::HostErrorDetail {
            kind: "quota".into(),
            message: "m".into(),
            ..Default::default()
        });
        assert_eq!(unknown, HostError::Backend("quota: m".into()));
    }

    #[test]
    fn context_and_failure_round_trip() {
        let ctx = CallContext {
            plugin: "b".into(),
            caller: Some("a".into()),
            depth: 3,
            language: Some("de".into()),
        };
        assert_eq!(CallContext::from(pb::CallContext::from(&ctx)), ctx);
        let plain = CallContext::for_plugin("x");
        assert_eq!(CallContext::from(pb::CallContext::from(&plain)), plain);
        let failure = PluginError::failed("invalid_range", "range must be one of 7d, 30d");
        assert_eq!(PluginError::from(pb::Failure::from(&failure)), failure);
        for level in [
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ] {
            assert_eq!(LogLevel::from(pb::LogLevel::from(level)), level);
        }
    }

    #[test]
    fn bad_enumerations_in_a_registration_are_protocol_errors() {
        let wire = pb::Registration {
            name: "x".into(),
            resources: Some(pb::ResourceRequest {
                permissions: vec![pb::Permission {
                    r#type: "files".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = GkRegistration::try_from(wire).unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin broke the protocol: invalid registration message: unknown permission type `files` (expected one of: db, cache, http, email, config, plugin_call)"
        );
    }
}
