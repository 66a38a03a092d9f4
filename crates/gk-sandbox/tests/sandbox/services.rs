//! Cache, HTTP, email and config permissions, with the attempts to get around each rule.
//! Every denied case also checks that nothing reached the inner host.

use gk_sdk::{Access, Email, HostApi, HostError, HttpRequest, PermissionType};
use pretty_assertions::assert_eq;

use crate::support::{approved, ctx, judge, perm, sandbox};

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
        ("plugins.me.api_key", None),
        ("plugins.other.api_key", Some("another plugin's settings")),
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

/// A ttl no clock can hold is an input error, not a panic further down.
#[tokio::test]
async fn cache_ttl_is_capped() {
    let (sb, host) = crate::support::sandbox(crate::support::approved(vec![crate::support::perm(
        gk_sdk::PermissionType::Cache,
        gk_sdk::Access::ReadWrite,
        &[],
    )]));
    let err = gk_sdk::HostApi::cache_set(
        &*sb,
        &crate::support::ctx(),
        "k",
        b"v",
        std::time::Duration::from_secs(u64::MAX),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("a cache ttl is at most"), "{err}");
    assert_eq!(host.count(), 0);
}
