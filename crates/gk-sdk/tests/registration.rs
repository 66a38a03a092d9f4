//! Registrations, policies and contexts survive JSON, YAML and protobuf unchanged, and the
//! registration of GoatFlow's Stats plugin parses. (The protobuf round trips need the `proto`
//! feature, which the workspace's test run turns on.)

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

#[cfg(feature = "proto")]
use gk_sdk::proto::pb;
use gk_sdk::{
    Access, CallContext, ErrorCodeSpec, GkRegistration, I18nSpec, JobSpec, MenuItemSpec,
    Permission, PermissionType, PolicyStatus, ResourcePolicy, ResourceRequest, RouteSpec,
    TemplateSpec, WidgetSpec,
};
use pretty_assertions::assert_eq;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

const STATS: &str = include_str!("fixtures/stats_registration.json");

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let json = serde_json::to_string(value).unwrap();
    assert_eq!(
        &serde_json::from_str::<T>(&json).unwrap(),
        value,
        "JSON: {json}"
    );
    let yaml = serde_norway::to_string(value).unwrap();
    assert_eq!(
        &serde_norway::from_str::<T>(&yaml).unwrap(),
        value,
        "YAML: {yaml}"
    );
}

fn full_registration() -> GkRegistration {
    let mut extensions = serde_json::Map::new();
    extensions.insert("groups".into(), json!([{"name": "stats-viewers"}]));
    GkRegistration {
        name: "full".into(),
        version: "1.2.3".into(),
        description: "Every field set".into(),
        author: "Ann".into(),
        license: "MIT".into(),
        homepage: "https://example.com/full".into(),
        routes: vec![RouteSpec {
            method: "POST".into(),
            path: "/api/plugins/full/items/:id".into(),
            handler: "update_item".into(),
            middleware: vec!["auth".into(), "admin".into()],
            description: "Updates an item".into(),
        }],
        menu_items: vec![MenuItemSpec {
            id: "full".into(),
            label: "full.menu".into(),
            icon: "chart".into(),
            path: "/full".into(),
            location: "agent".into(),
            parent: String::new(),
            order: -2,
            children: vec![MenuItemSpec {
                id: "full-sub".into(),
                label: "Sub".into(),
                path: "/full/sub".into(),
                location: "agent".into(),
                parent: "full".into(),
                order: 1,
                ..MenuItemSpec::default()
            }],
        }],
        widgets: vec![WidgetSpec {
            id: "w".into(),
            title: "W".into(),
            description: "d".into(),
            handler: "widget_w".into(),
            location: "agent_home".into(),
            size: "full".into(),
            order: 4,
            refreshable: true,
            refresh_sec: 30,
        }],
        jobs: vec![JobSpec {
            id: "nightly".into(),
            handler: "cleanup".into(),
            schedule: "0 0 3 * * *".into(),
            description: "Cleans up".into(),
            enabled: true,
            timeout: Some(Duration::from_secs(90)),
        }],
        templates: vec![TemplateSpec {
            name: "full/page.html".into(),
            path: "templates/page.html".into(),
            r#override: true,
        }],
        i18n: Some(I18nSpec {
            namespace: "full".into(),
            languages: vec!["de".into(), "en".into()],
            translations: BTreeMap::from([
                (
                    "de".into(),
                    BTreeMap::from([("menu".into(), "Voll".into())]),
                ),
                (
                    "en".into(),
                    BTreeMap::from([("menu".into(), "Full".into())]),
                ),
            ]),
        }),
        error_codes: vec![ErrorCodeSpec {
            code: "broken".into(),
            message: "It broke".into(),
            http_status: 503,
        }],
        hide_menu_items: vec!["queues".into()],
        landing_page: "/full".into(),
        min_host_version: "2.1.0".into(),
        permissions: vec!["db.read".into()],
        resources: Some(ResourceRequest {
            memory_mb: Some(64),
            call_timeout: Some(Duration::from_millis(2500)),
            init_timeout: Some(Duration::from_secs(20)),
            shutdown_timeout: Some(Duration::from_secs(3)),
            permissions: vec![
                Permission::new(PermissionType::Db, Access::ReadWrite)
                    .with_scope(["full_*", "@analytics:events"]),
                Permission::new(PermissionType::PluginCall, Access::Read).with_scope(["stats"]),
            ],
        }),
        extensions,
    }
}

#[test]
fn stats_registration_from_the_go_plugin_parses() {
    let reg = GkRegistration::from_json(STATS.as_bytes()).unwrap();
    assert_eq!(reg.name, "stats");
    assert_eq!(reg.routes.len(), 8);
    assert!(reg.routes.iter().all(|r| r.method == "GET"
        && r.path.starts_with("/api/plugins/stats/")
        && r.middleware == ["auth"]));
    assert_eq!(reg.routes[0].handler, "overview");
    assert_eq!(reg.routes[7].path, "/api/plugins/stats/timeline");
    assert_eq!(
        reg.widgets
            .iter()
            .map(|w| w.id.as_str())
            .collect::<Vec<_>>(),
        ["stats_overview", "stats_by_status", "stats_chart"]
    );
    assert_eq!(reg.widgets[0].refresh_sec, 60);
    let i18n = reg.i18n.as_ref().unwrap();
    assert_eq!(i18n.languages, ["de", "en"]);
    assert_eq!(i18n.translations["de"]["stats.overview"], "Übersicht");
    assert_eq!(i18n.translations["en"].len(), 5);
    assert_eq!(
        reg.error_codes
            .iter()
            .map(|e| (e.code.as_str(), e.http_status))
            .collect::<Vec<_>>(),
        [
            ("query_failed", 500),
            ("invalid_range", 400),
            ("no_data", 404)
        ]
    );
    assert!(reg.extensions.is_empty(), "{:?}", reg.extensions);
    round_trip(&reg);
}

#[test]
fn every_registration_type_round_trips_through_json_and_yaml() {
    let reg = full_registration();
    round_trip(&reg);
    round_trip(&reg.routes[0]);
    round_trip(&reg.menu_items[0]);
    round_trip(&reg.widgets[0]);
    round_trip(&reg.jobs[0]);
    round_trip(&reg.templates[0]);
    round_trip(reg.i18n.as_ref().unwrap());
    round_trip(&reg.error_codes[0]);
    round_trip(reg.resources.as_ref().unwrap());
    round_trip(&reg.resources.as_ref().unwrap().permissions[0]);
}

#[test]
fn policies_and_contexts_round_trip_through_json_and_yaml() {
    round_trip(&ResourcePolicy::default_for("stats"));
    let mut policy = ResourcePolicy::default_for("full");
    policy.status = PolicyStatus::Restricted;
    policy.call_timeout = Duration::from_millis(750);
    policy
        .permissions
        .push(Permission::new(PermissionType::Http, Access::Read).with_scope(["*.example.com"]));
    policy.max_calls_per_second = 0;
    round_trip(&policy);
    round_trip(&CallContext {
        plugin: "b".into(),
        caller: Some("a".into()),
        depth: 2,
        language: Some("de".into()),
    });
    round_trip(&CallContext::for_plugin("a"));
}

#[cfg(feature = "proto")]
#[test]
fn registration_round_trips_through_protobuf() {
    use prost::Message;
    for reg in [
        full_registration(),
        GkRegistration::from_json(STATS.as_bytes()).unwrap(),
        GkRegistration::default(),
    ] {
        let wire = pb::Registration::from(&reg);
        let bytes = wire.encode_to_vec();
        let decoded = pb::Registration::decode(bytes.as_slice()).unwrap();
        assert_eq!(GkRegistration::try_from(decoded).unwrap(), reg);
    }
}

#[cfg(feature = "proto")]
#[test]
fn register_response_carries_the_registration() {
    use prost::Message;
    let response = pb::RegisterResponse {
        registration: Some(pb::Registration::from(&full_registration())),
    };
    let decoded = pb::RegisterResponse::decode(response.encode_to_vec().as_slice()).unwrap();
    let reg = GkRegistration::try_from(decoded.registration.unwrap()).unwrap();
    assert_eq!(reg.jobs[0].timeout, Some(Duration::from_secs(90)));
    assert_eq!(reg.menu_items[0].children[0].parent, "full");
}
