//! Plugin calls, the plugin's identity on every host call, policy status and bad policies.

use gk_sdk::{Access, CallContext, HostApi, HostError, HttpRequest, PermissionType, PolicyStatus};
use pretty_assertions::assert_eq;

use crate::support::{approved, ctx, perm, sandbox};

#[tokio::test]
async fn plugin_calls_scope_depth_and_identity() {
    let (sb, host) = sandbox(approved(vec![perm(
        PermissionType::PluginCall,
        Access::Read,
        &["stats", "report*"],
    )]));
    // The plugin claims to be someone else and to be at depth 0 of another chain: the sandbox
    // stamps its own name as the caller.
    let forged = CallContext {
        plugin: "admin".into(),
        caller: Some("root".into()),
        depth: 2,
        language: Some("de".into()),
    };
    sb.call_plugin(&forged, "stats", "overview", b"{}")
        .await
        .unwrap();
    let reached = host.last().unwrap();
    assert_eq!(reached.subject, "stats.overview");
    assert_eq!(
        reached.ctx,
        CallContext {
            plugin: "stats".into(),
            caller: Some("me".into()),
            depth: 3,
            language: Some("de".into())
        }
    );
    sb.call_plugin(&ctx(), "reports-weekly", "run", b"")
        .await
        .unwrap();
    let err = sb
        .call_plugin(&ctx(), "billing", "charge", b"")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        HostError::denied(
            "plugin_call",
            "plugin `billing` is not in the plugin_call scope"
        )
    );
    let err = sb
        .call_plugin(&ctx(), "Stats!", "x", b"")
        .await
        .unwrap_err();
    assert!(matches!(err, HostError::InvalidInput(_)), "{err:?}");
    let deep = CallContext { depth: 10, ..ctx() };
    let err = sb
        .call_plugin(&deep, "stats", "overview", b"")
        .await
        .unwrap_err();
    assert_eq!(err, HostError::CallDepthExceeded { max: 10 });
    let nine = CallContext { depth: 9, ..ctx() };
    sb.call_plugin(&nine, "stats", "overview", b"")
        .await
        .unwrap();
    assert_eq!(host.last().unwrap().ctx.depth, 10);
    let (none, _) = sandbox(approved(vec![]));
    assert!(
        none.call_plugin(&ctx(), "stats", "x", b"").await.is_err(),
        "no plugin_call permission, no calls"
    );
}

#[tokio::test]
async fn every_host_call_reaches_the_host_as_the_sandboxed_plugin() {
    let (sb, host) = sandbox(approved(vec![
        perm(PermissionType::Db, Access::ReadWrite, &["t"]),
        perm(PermissionType::Cache, Access::ReadWrite, &[]),
    ]));
    let impostor = CallContext::for_plugin("admin");
    sb.db_query(&impostor, "SELECT * FROM t", &[])
        .await
        .unwrap();
    sb.db_exec(&impostor, "DELETE FROM t", &[]).await.unwrap();
    sb.cache_get(&impostor, "k").await.unwrap();
    sb.log(
        &impostor,
        gk_sdk::LogLevel::Info,
        "hi",
        &serde_json::Map::new(),
    )
    .await
    .unwrap();
    sb.config_get(&impostor, "app.name").await.unwrap();
    sb.translate(&impostor, "stats.title", &gk_sdk::TranslateArgs::None)
        .await
        .unwrap();
    assert!(host.reached().iter().all(|r| r.ctx.plugin == "me"));
    let stats = sb.stats();
    assert_eq!(
        (
            stats.db_queries,
            stats.db_execs,
            stats.cache_ops,
            stats.logs,
            stats.config_reads,
            stats.translations
        ),
        (1, 1, 1, 1, 1, 1)
    );
    assert!(stats.last_call_at_ms > 0);
}

#[tokio::test]
async fn blocked_plugins_may_only_log() {
    let mut policy = approved(vec![
        perm(PermissionType::Db, Access::ReadWrite, &["*"]),
        perm(PermissionType::Cache, Access::ReadWrite, &[]),
    ]);
    policy.status = PolicyStatus::Blocked;
    let (sb, host) = sandbox(policy);
    let err = sb.db_query(&ctx(), "SELECT 1", &[]).await.unwrap_err();
    assert_eq!(
        err,
        HostError::denied("status", "the plugin is blocked by an admin")
    );
    assert!(sb.cache_get(&ctx(), "k").await.is_err());
    assert!(
        sb.translate(&ctx(), "k", &gk_sdk::TranslateArgs::None)
            .await
            .is_err()
    );
    sb.log(
        &ctx(),
        gk_sdk::LogLevel::Warn,
        "still here",
        &serde_json::Map::new(),
    )
    .await
    .unwrap();
    assert_eq!(host.count(), 1);
    assert_eq!(sb.stats().denied, 3);
}

#[tokio::test]
async fn pending_review_runs_with_the_default_policy() {
    let mut policy = approved(vec![
        perm(PermissionType::Http, Access::Read, &["*"]),
        perm(PermissionType::Db, Access::ReadWrite, &["*"]),
    ]);
    policy.status = PolicyStatus::PendingReview;
    let (sb, _) = sandbox(policy.clone());
    assert!(
        sb.http_request(
            &ctx(),
            HttpRequest {
                url: "https://a.com/".into(),
                ..Default::default()
            }
        )
        .await
        .is_err()
    );
    assert!(
        sb.db_query(&ctx(), "SELECT * FROM tickets", &[])
            .await
            .is_err(),
        "the default db permission has no scope"
    );
    sb.cache_set(&ctx(), "k", b"v", std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        sb.policy(),
        policy,
        "the stored policy is kept for the admin to approve"
    );
    assert_eq!(
        sb.effective_policy().permissions,
        gk_sdk::ResourcePolicy::default_for("me").permissions
    );
}

#[tokio::test]
async fn bad_policies_are_refused_and_the_old_one_stays() {
    let (sb, _) = sandbox(approved(vec![perm(
        PermissionType::Db,
        Access::Read,
        &["t"],
    )]));
    let bad = approved(vec![perm(
        PermissionType::Http,
        Access::Read,
        &["https://x.com/path"],
    )]);
    let err = sb.update_policy(bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        "policy of `me`: http scope `https://x.com/path`: scope entries are host names: leave out scheme, port and path"
    );
    let mut other = approved(vec![]);
    other.plugin_name = "other".into();
    assert_eq!(
        sb.update_policy(other).unwrap_err().to_string(),
        "policy of `other` cannot be applied to plugin `me`"
    );
    sb.db_query(&ctx(), "SELECT * FROM t", &[]).await.unwrap();
    assert_eq!(sb.policy_version(), 1);
}
