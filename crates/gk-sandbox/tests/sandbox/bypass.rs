//! Allowed and denied cases per permission type, with the attempts to get around each rule.
//! Every denied case also checks that nothing reached the inner host.

use gk_sdk::{
    Access, CallContext, Email, HostApi, HostError, HttpRequest, PermissionType, PolicyStatus,
};
use pretty_assertions::assert_eq;

use crate::support::{approved, ctx, perm, sandbox};

/// Runs `(input, expected)` cases through `call`; `None` means allowed, `Some(text)` means
/// refused with an error containing `text`.
async fn judge<F, Fut>(
    what: &str,
    cases: &[(&str, Option<&str>)],
    host_count: impl Fn() -> usize,
    call: F,
) where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), HostError>>,
{
    let mut failures = Vec::new();
    for (input, expected) in cases {
        let before = host_count();
        let result = call((*input).to_owned()).await;
        let reached = host_count() > before;
        match (expected, &result) {
            (None, Ok(())) if reached => {}
            (Some(text), Err(error)) if error.to_string().contains(text) && !reached => {}
            _ => failures.push(format!(
                "{what} {input:?}: expected {expected:?}, got {result:?} (reached host: {reached})"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn database_reads() {
    let (sb, host) = sandbox(approved(vec![
        perm(
            PermissionType::Db,
            Access::Read,
            &["ticket*", "queue", "@analytics:orders"],
        ),
        perm(PermissionType::Db, Access::ReadWrite, &["plugin_notes"]),
    ]));
    let cases: &[(&str, Option<&str>)] = &[
        ("SELECT * FROM tickets", None),
        (
            "select t.id from ticket_history t join queue q on q.id = t.queue_id",
            None,
        ),
        (
            "SELECT count(*) AS n, max(id) FROM Tickets WHERE title LIKE '%DROP TABLE users%'",
            None,
        ),
        (
            "SELECT 'DELETE FROM tickets; DROP TABLE users' AS text FROM tickets",
            None,
        ),
        ("SELECT id FROM tickets -- DROP TABLE users", None),
        ("@analytics:SELECT sum(total) FROM orders", None),
        (
            "WITH open AS (SELECT * FROM tickets WHERE state = 'open') SELECT count(*) FROM open",
            None,
        ),
        ("SELECT * FROM plugin_notes", None),
        // tables hidden in joins, subqueries, CTEs and set operations
        (
            "SELECT * FROM users",
            Some("table `users` of database `default` is not in the db read scope"),
        ),
        (
            "SELECT * FROM tickets WHERE owner IN (SELECT id FROM users)",
            Some("table `users`"),
        ),
        (
            "SELECT * FROM tickets t JOIN users u ON u.id = t.owner",
            Some("table `users`"),
        ),
        ("SELECT * FROM tickets, users", Some("table `users`")),
        (
            "SELECT (SELECT pw FROM users LIMIT 1) AS x FROM tickets",
            Some("table `users`"),
        ),
        (
            "SELECT * FROM tickets WHERE EXISTS (SELECT 1 FROM users WHERE users.id = 1)",
            Some("table `users`"),
        ),
        (
            "SELECT id FROM tickets UNION SELECT id FROM users",
            Some("table `users`"),
        ),
        (
            "WITH x AS (SELECT * FROM users) SELECT * FROM x",
            Some("table `users`"),
        ),
        (
            "WITH tickets AS (SELECT * FROM users) SELECT * FROM tickets",
            Some("table `users`"),
        ),
        (
            "WITH users AS (SELECT * FROM users) SELECT * FROM users",
            Some("shadows"),
        ),
        (
            "SELECT * FROM (SELECT * FROM users) AS tickets",
            Some("table `users`"),
        ),
        // quoting and qualification
        ("SELECT * FROM \"users\"", Some("table `users`")),
        ("SELECT * FROM `users`", Some("table `users`")),
        ("SELECT * FROM \"USERS\"", Some("table `users`")),
        (
            "SELECT * FROM public.tickets",
            Some("table `public.tickets`"),
        ),
        (
            "SELECT * FROM ticket_archive.users",
            Some("table `ticket_archive.users`"),
        ),
        ("SELECT * FROM xticket", Some("table `xticket`")),
        ("SELECT * FROM queues", Some("table `queues`")),
        // other databases
        (
            "@otherdb:SELECT * FROM tickets",
            Some("grants no table of database `otherdb`"),
        ),
        (
            "@analytics:SELECT * FROM tickets",
            Some("table `tickets` of database `analytics`"),
        ),
        ("@ANALYTICS :SELECT 1", Some("malformed database prefix")),
        // system catalogs and functions
        (
            "SELECT * FROM information_schema.tables",
            Some("information_schema.tables"),
        ),
        ("SELECT * FROM sqlite_master", Some("table `sqlite_master`")),
        (
            "SELECT pg_read_file('/etc/passwd')",
            Some("function `pg_read_file`"),
        ),
        (
            "SELECT load_file('/etc/passwd') FROM tickets",
            Some("function `load_file`"),
        ),
        (
            "SELECT query_to_xml('select * from users', true, true, '') FROM tickets",
            Some("function `query_to_xml`"),
        ),
        ("SELECT pg_sleep(100)", Some("function `pg_sleep`")),
        // stacked statements and comment tricks
        (
            "SELECT * FROM tickets; DROP TABLE users",
            Some("2 statements in one call"),
        ),
        (
            "SELECT * FROM tickets /* ; */; DELETE FROM tickets",
            Some("2 statements in one call"),
        ),
        (
            "SELECT * FROM tickets -- x\n; DELETE FROM tickets",
            Some("2 statements in one call"),
        ),
        // writes through the read function
        ("DELETE FROM tickets", Some("db_query runs only reads")),
        (
            "INSERT INTO plugin_notes VALUES (1)",
            Some("db_query runs only reads"),
        ),
        (
            "SELECT * INTO tickets_copy FROM tickets",
            Some("db_query runs only reads"),
        ),
        ("DROP TABLE plugin_notes", Some("db_query runs only reads")),
        // what does not parse is refused
        ("SELECT * FROM tickets WHERE (", Some("SQL does not parse")),
        ("", Some("the query is empty")),
    ];
    judge(
        "db_query",
        cases,
        || host.count(),
        |q| {
            let sb = sb.clone();
            async move { sb.db_query(&ctx(), &q, &[]).await.map(|_| ()) }
        },
    )
    .await;
    assert_eq!(
        sb.stats().denied as usize,
        cases.iter().filter(|c| c.1.is_some()).count() - 1,
        "malformed prefix is an input error"
    );
}

#[tokio::test]
async fn database_writes() {
    let (sb, host) = sandbox(approved(vec![
        perm(PermissionType::Db, Access::Read, &["ticket*"]),
        perm(PermissionType::Db, Access::ReadWrite, &["plugin_notes"]),
        perm(PermissionType::Db, Access::Write, &["plugin_log"]),
    ]));
    let cases: &[(&str, Option<&str>)] = &[
        (
            "INSERT INTO plugin_notes (ticket_id, text) VALUES (?, ?)",
            None,
        ),
        (
            "INSERT INTO plugin_notes SELECT id, title FROM tickets",
            None,
        ),
        (
            "UPDATE plugin_notes SET text = 'x' WHERE ticket_id IN (SELECT id FROM tickets)",
            None,
        ),
        ("DELETE FROM plugin_notes WHERE id = 1", None),
        (
            "INSERT INTO plugin_log (line) VALUES ('DROP TABLE users')",
            None,
        ),
        ("CREATE TABLE plugin_notes (id INT)", None),
        ("SELECT * FROM tickets", None),
        (
            "DELETE FROM tickets",
            Some("table `tickets` of database `default` is not in the db write scope"),
        ),
        (
            "UPDATE tickets SET title = ''",
            Some("not in the db write scope"),
        ),
        (
            "INSERT INTO plugin_notes SELECT * FROM users",
            Some("table `users` of database `default` is not in the db read scope"),
        ),
        (
            "UPDATE plugin_notes SET text = u.pw FROM users u WHERE u.id = plugin_notes.id",
            Some("table `users`"),
        ),
        (
            "DELETE FROM plugin_notes USING users WHERE users.id = plugin_notes.id",
            Some("table `users`"),
        ),
        (
            "INSERT INTO plugin_log (line) VALUES (1) RETURNING *",
            Some("table `plugin_log` of database `default` is not in the db read scope"),
        ),
        (
            "DELETE FROM plugin_log WHERE line IN (SELECT line FROM plugin_log)",
            Some("table `plugin_log` of database `default` is not in the db read scope"),
        ),
        (
            "DROP TABLE tickets",
            Some("table `tickets` of database `default` is not in the db write scope"),
        ),
        ("TRUNCATE TABLE tickets", Some("not in the db write scope")),
        ("ALTER TABLE users ADD COLUMN x INT", Some("table `users`")),
        (
            "CREATE TABLE plugin_notes AS SELECT * FROM users",
            Some("table `users`"),
        ),
        (
            "GRANT ALL ON tickets TO PUBLIC",
            Some("administrative statements need write access to every table"),
        ),
        ("SET search_path TO evil", Some("administrative statements")),
        (
            "ATTACH DATABASE '/tmp/x.db' AS x",
            Some("administrative statements"),
        ),
        ("PRAGMA writable_schema = 1", Some("")),
        (
            "COPY tickets TO '/tmp/x'",
            Some("administrative statements"),
        ),
        (
            "INSERT INTO plugin_notes VALUES (1); DROP TABLE tickets",
            Some("2 statements in one call"),
        ),
    ];
    judge(
        "db_exec",
        cases,
        || host.count(),
        |q| {
            let sb = sb.clone();
            async move { sb.db_exec(&ctx(), &q, &[]).await.map(|_| ()) }
        },
    )
    .await;
}

#[tokio::test]
async fn database_administration_needs_unrestricted_write() {
    let (sb, _) = sandbox(approved(vec![perm(
        PermissionType::Db,
        Access::ReadWrite,
        &["*"],
    )]));
    sb.db_exec(&ctx(), "SET search_path TO public", &[])
        .await
        .unwrap();
    sb.db_exec(&ctx(), "DROP TABLE anything", &[])
        .await
        .unwrap();
    let err = sb
        .db_query(&ctx(), "SELECT * FROM pg_catalog.pg_authid", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pg_catalog.pg_authid"), "{err}");
}

#[tokio::test]
async fn decisions_are_cached_per_policy_version() {
    let (sb, host) = sandbox(approved(vec![perm(
        PermissionType::Db,
        Access::Read,
        &["tickets"],
    )]));
    for _ in 0..3 {
        sb.db_query(&ctx(), "SELECT * FROM tickets", &[])
            .await
            .unwrap();
    }
    assert_eq!(host.count(), 3);
    sb.update_policy(approved(vec![perm(
        PermissionType::Db,
        Access::Read,
        &["queue"],
    )]))
    .unwrap();
    let err = sb
        .db_query(&ctx(), "SELECT * FROM tickets", &[])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("table `tickets`"),
        "the cached allow of the old version is not reused: {err}"
    );
}

#[tokio::test]
async fn cache_keys_are_namespaced_whatever_they_hold() {
    let (sb, host) = sandbox(approved(vec![perm(
        PermissionType::Cache,
        Access::ReadWrite,
        &[],
    )]));
    for key in [
        "k",
        "plugin:other:k",
        "../other/k",
        ":k",
        "k\0x",
        "plugin:me:k",
    ] {
        sb.cache_set(&ctx(), key, b"v", std::time::Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(host.last().unwrap().subject, format!("plugin:me:{key}"));
        sb.cache_get(&ctx(), key).await.unwrap();
        assert_eq!(host.last().unwrap().subject, format!("plugin:me:{key}"));
        sb.cache_delete(&ctx(), key).await.unwrap();
        assert_eq!(host.last().unwrap().subject, format!("plugin:me:{key}"));
    }
    let long = "k".repeat(600);
    assert!(matches!(
        sb.cache_get(&ctx(), &long).await,
        Err(HostError::InvalidInput(_))
    ));
    assert!(matches!(
        sb.cache_get(&ctx(), "").await,
        Err(HostError::InvalidInput(_))
    ));
    let big = vec![0u8; (1 << 20) + 1];
    let err = sb
        .cache_set(&ctx(), "big", &big, std::time::Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cache values are at most 1048576 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn cache_access_levels_and_scope() {
    let (sb, host) = sandbox(approved(vec![perm(
        PermissionType::Cache,
        Access::Read,
        &["stats:*"],
    )]));
    sb.cache_get(&ctx(), "stats:today").await.unwrap();
    let err = sb
        .cache_set(&ctx(), "stats:today", b"v", std::time::Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        HostError::denied("cache:write", "the policy grants no such cache access")
    );
    let err = sb.cache_delete(&ctx(), "stats:today").await.unwrap_err();
    assert!(
        err.to_string().contains("cache:write"),
        "read never grants write: {err}"
    );
    let err = sb.cache_get(&ctx(), "other").await.unwrap_err();
    assert_eq!(
        err,
        HostError::denied("cache:read", "key `other` is not in the cache scope")
    );
    assert_eq!(host.count(), 1);
}

#[tokio::test]
async fn http_hosts() {
    let (sb, host) = sandbox(approved(vec![perm(
        PermissionType::Http,
        Access::Read,
        &["*.example.com", "api.partner.io", "10.0.0.5"],
    )]));
    let cases: &[(&str, Option<&str>)] = &[
        ("https://a.example.com/x", None),
        ("https://deep.a.example.com/", None),
        ("https://api.partner.io:8443/path?q=1#frag", None),
        ("HTTP://API.PARTNER.IO/", None),
        ("https://api.partner.io./", None),
        ("http://10.0.0.5/metrics", None),
        ("https://user:pw@api.partner.io/", None),
        (
            "https://example.com/",
            Some("host `example.com` is not in the http scope"),
        ),
        ("https://evil.com?x=.example.com", Some("host `evil.com`")),
        ("https://evil.com/#.example.com", Some("host `evil.com`")),
        ("https://evil.com/a.example.com", Some("host `evil.com`")),
        ("https://api.partner.io@evil.com/", Some("host `evil.com`")),
        (
            "https://evil.com\\@api.partner.io/",
            Some("host `evil.com`"),
        ),
        (
            "https://api.partner.io.evil.com/",
            Some("host `api.partner.io.evil.com`"),
        ),
        ("https://evilexample.com/", Some("host `evilexample.com`")),
        (
            "https://a.example.com.evil.org/",
            Some("host `a.example.com.evil.org`"),
        ),
        (
            "https://xn--exmple-cua.com/",
            Some("is not in the http scope"),
        ),
        ("https://exаmple.com/", Some("is not in the http scope")),
        ("http://127.0.0.1/", Some("`127.0.0.1` is an IP address")),
        ("http://2130706433/", Some("`127.0.0.1` is an IP address")),
        ("http://0x7f.0.0.1/", Some("`127.0.0.1` is an IP address")),
        ("http://[::1]/", Some("`[::1]` is an IP address")),
        (
            "http://169.254.169.254/latest/meta-data",
            Some("is an IP address"),
        ),
        ("http://localhost:8080/", Some("`localhost` is local")),
        ("http://admin.localhost/", Some("is local")),
        ("ftp://a.example.com/", Some("scheme `ftp` is not allowed")),
        ("file:///etc/passwd", Some("scheme `file` is not allowed")),
        ("//a.example.com/", Some("is not a valid absolute URL")),
        ("a.example.com", Some("is not a valid absolute URL")),
    ];
    judge(
        "http",
        cases,
        || host.count(),
        |url| {
            let sb = sb.clone();
            async move {
                sb.http_request(
                    &ctx(),
                    HttpRequest {
                        url,
                        ..HttpRequest::default()
                    },
                )
                .await
                .map(|_| ())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn http_needs_a_scope_and_star_excludes_ips() {
    let (none, _) = sandbox(approved(vec![perm(
        PermissionType::Http,
        Access::Read,
        &[],
    )]));
    let err = none
        .http_request(
            &ctx(),
            HttpRequest {
                url: "https://a.com/".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("host `a.com` is not in the http scope"),
        "{err}"
    );
    let (star, _) = sandbox(approved(vec![perm(
        PermissionType::Http,
        Access::Read,
        &["*"],
    )]));
    star.http_request(
        &ctx(),
        HttpRequest {
            url: "https://anything.org/".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for url in ["http://127.0.0.1/", "http://localhost/"] {
        assert!(
            star.http_request(
                &ctx(),
                HttpRequest {
                    url: url.into(),
                    ..Default::default()
                }
            )
            .await
            .is_err(),
            "{url}"
        );
    }
}

#[tokio::test]
async fn email_recipients() {
    let (sb, host) = sandbox(approved(vec![perm(
        PermissionType::Email,
        Access::Read,
        &["@example.com", "boss@partner.io"],
    )]));
    let cases: &[(&str, Option<&str>)] = &[
        ("a@example.com", None),
        ("Ann.Lee+tag@EXAMPLE.com", None),
        ("boss@partner.io", None),
        ("BOSS@Partner.IO", None),
        (
            "a@example.com.evil.org",
            Some("recipient `a@example.com.evil.org` is not in the email scope"),
        ),
        ("a@sub.example.com", Some("not in the email scope")),
        ("a@evilexample.com", Some("not in the email scope")),
        ("other@partner.io", Some("not in the email scope")),
        (
            "\"a@example.com\" <x@evil.org>",
            Some("is not one bare address"),
        ),
        ("Ann <a@example.com>", Some("is not one bare address")),
        (
            "x@evil.org (a@example.com)",
            Some("is not one bare address"),
        ),
        ("a@example.com, x@evil.org", Some("is not one bare address")),
        (
            "x@evil.org\r\nBcc: a@example.com",
            Some("is not one bare address"),
        ),
        (
            "a@example.com\r\nBcc: x@evil.org",
            Some("is not one bare address"),
        ),
        ("x@evil.org?@example.com", Some("is not one bare address")),
        ("a@[127.0.0.1]", Some("is not a mail domain")),
        ("example.com", Some("is not an email address")),
    ];
    judge(
        "email",
        cases,
        || host.count(),
        |to| {
            let sb = sb.clone();
            async move {
                sb.send_email(
                    &ctx(),
                    Email {
                        to,
                        ..Email::default()
                    },
                )
                .await
            }
        },
    )
    .await;
}

#[tokio::test]
async fn config_keys() {
    let (sb, host) = sandbox(approved(vec![perm(
        PermissionType::Config,
        Access::Read,
        &["smtp.host", "*"],
    )]));
    let cases: &[(&str, Option<&str>)] = &[
        ("app.name", None),
        ("app.timezone", None),
        ("plugins.me.colour", None),
        ("smtp.host", None),
        ("SMTP_HOST", None),
        ("Smtp::Host", None),
        (
            "smtp.password",
            Some("key `smtp.password` is sensitive (`smtp` settings)"),
        ),
        ("database.password", Some("`database` settings")),
        ("DATABASE.URL", Some("`database` settings")),
        ("Database__Host", Some("`database` settings")),
        ("db/url", Some("`db` settings")),
        ("app.secret_key", Some("contains `secret`")),
        ("App.API-Token", Some("contains `token`")),
        ("app.session.cookie_name", Some("contains `session`")),
        ("ldap.bind_dn", Some("`ldap` settings")),
        ("oauth.client_id", Some("`oauth` settings")),
        ("aws:region", Some("`aws` settings")),
        (
            "app.PrivateKeyPath",
            Some("key `app.privatekeypath` is sensitive"),
        ),
        ("plugins.other.colour", Some("another plugin's settings")),
        ("plugins/me/colour", Some("another plugin's settings")),
        ("plugins.me.api_key", Some("contains `key`")),
        ("", Some("the key is empty")),
    ];
    judge(
        "config",
        cases,
        || host.count(),
        |key| {
            let sb = sb.clone();
            async move { sb.config_get(&ctx(), &key).await.map(|_| ()) }
        },
    )
    .await;
}

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
    assert!(
        host.reached
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.ctx.plugin == "me")
    );
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
