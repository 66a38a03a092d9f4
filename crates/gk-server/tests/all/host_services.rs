//! The host services as `gk serve` runs them: outbound HTTP from a WASM and a gRPC plugin
//! (only to the internal port the configuration opens), configuration values and their reload,
//! email over a real SMTP server, named databases (a second SQLite file and PostgreSQL), and a
//! request without scope granted as "every table" that still never reaches the platform's
//! tables.
//!
//! The WASM plugin is `proxy`, a WAT guest whose every function is the host function of the same
//! name: calling `proxy`'s `http_request` with `{url}` is the guest calling `http_request`.

use std::path::Path;
use std::time::Duration;

use crate::common;
use crate::common::proxy::proxy_module;
use crate::common::{KillOnDrop, free_port, service_url};
use base64::Engine;
use gk_sdk::{Access, Permission, PermissionType, PolicyStatus, ResourcePolicy};
use gk_server::auth::Role;
use gk_server::config::Environment;
use gk_server::{RunningServer, ServeConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A configuration over `dir` with `proxy` and hello-grpc in its plugins directory.
fn config_with_plugins(dir: &Path) -> ServeConfig {
    let plugins = dir.join("plugins");
    common::install_hello_grpc(&plugins);
    std::fs::write(plugins.join("proxy.wasm"), proxy_module()).unwrap();
    common::config_for(dir)
}

fn admin_token(server: &RunningServer) -> String {
    server
        .tokens
        .mint("ada", Role::Admin, Duration::from_secs(600))
        .unwrap()
}

/// Calls `function` of `plugin` over the HTTP API.
async fn call(server: &RunningServer, plugin: &str, function: &str, args: Value) -> (u16, Value) {
    let token = admin_token(server);
    common::send(
        server.addr,
        "POST",
        &format!("/api/v1/plugins/{plugin}/call/{function}"),
        Some(&token),
        &args.to_string(),
    )
    .await
}

/// Grants `plugin` exactly `permissions`.
async fn grant(server: &RunningServer, plugin: &str, permissions: Vec<Permission>) {
    let policy = ResourcePolicy {
        status: PolicyStatus::Approved,
        permissions,
        ..ResourcePolicy::default_for(plugin)
    };
    server.manager.set_policy(policy, "test").await.unwrap();
}

/// A plain HTTP server on a port of its own answering every request with `text`.
async fn http_server(text: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

fn decode_body(reply: &Value) -> String {
    let body = reply["body"].as_str().unwrap_or_default();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_reaches_only_the_port_the_operator_opened() {
    let opened = http_server("from the opened port").await;
    let other = http_server("from a port nobody opened").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_with_plugins(dir.path());
    config.http.allow_private = vec![format!("127.0.0.1:{opened}").parse().unwrap()];
    let server = gk_server::start(&config).await.unwrap();
    let http = || Permission::new(PermissionType::Http, Access::Read).with_scope(["127.0.0.1"]);
    grant(&server, "proxy", vec![http()]).await;
    grant(&server, "hello-grpc", vec![http()]).await;

    // WASM: the guest's `http_request`, answered `{status, headers, body(base64)}`.
    let url = |port: u16| format!("http://127.0.0.1:{port}/hello");
    let (status, reply) = call(
        &server,
        "proxy",
        "http_request",
        json!({"url": url(opened)}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["status"], 200, "{reply}");
    assert_eq!(decode_body(&reply), "from the opened port");
    let (_, reply) = call(&server, "proxy", "http_request", json!({"url": url(other)})).await;
    assert_eq!(reply["kind"], "permission_denied", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("internal addresses"),
        "{reply}"
    );

    // gRPC: hello-grpc's `fetch` calls `http_request` back through the host service.
    let (status, reply) = call(&server, "hello-grpc", "fetch", json!({"url": url(opened)})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply,
        json!({"status": 200, "body": "from the opened port"})
    );
    let (status, reply) = call(&server, "hello-grpc", "fetch", json!({"url": url(other)})).await;
    assert_ne!(status, 200, "{reply}");
    assert!(
        reply.to_string().contains("internal addresses"),
        "the refusal reaches the caller: {reply}"
    );

    // The native plugin has no network of its own, `http` granted or not: only the host's
    // `http_request` goes out, under the scope and the internal-address wall.
    let (status, reply) = call(
        &server,
        "hello-grpc",
        "tcp",
        json!({"address": format!("127.0.0.1:{opened}")}),
    )
    .await;
    assert_eq!(
        (status, &reply["connected"]),
        (200, &json!(false)),
        "{reply}"
    );

    // A host outside the scope is refused by the sandbox before any connection.
    let (_, reply) = call(
        &server,
        "proxy",
        "http_request",
        json!({"url": "http://169.254.169.254/latest/meta-data/"}),
    )
    .await;
    assert_eq!(reply["kind"], "permission_denied", "{reply}");
    server.shutdown().await;
}

/// `config_get` through the proxy: the value, or the error kind.
async fn config_get(server: &RunningServer, key: &str) -> Result<String, String> {
    let (_, reply) = call(server, "proxy", "config_get", json!({ "key": key })).await;
    match reply["value"].as_str() {
        Some(value) => Ok(value.to_owned()),
        None => Err(reply["kind"].as_str().unwrap_or("?").to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_read_configuration_and_see_it_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("goatkit.toml");
    let write = |name: &str| {
        std::fs::write(
            &file,
            format!(
                r#"
[app]
name = "{name}"
timezone = "Europe/Berlin"

[config]
helpdesk = {{ url = "https://help.example.com", page_size = 25 }}

[plugins.proxy]
api_key = "s3cret"

[plugins.hello-grpc]
colour = "red"
"#
            ),
        )
        .unwrap()
    };
    write("Help Desk");
    let environment = Environment::from_pairs([
        ("GOATFLOW_PLUGIN_PROXY_REGION", "eu-1"),
        ("GOATFLOW_PLUGIN_HELLO_GRPC_TOKEN", "not for proxy"),
    ]);
    let defaults = config_with_plugins(dir.path());
    let config = ServeConfig {
        listen: defaults.listen,
        plugins_dir: defaults.plugins_dir,
        data_dir: defaults.data_dir,
        ..ServeConfig::load(Some(&file), &environment).unwrap()
    };
    let server = gk_server::start(&config).await.unwrap();

    assert_eq!(config_get(&server, "app.name").await.unwrap(), "Help Desk");
    assert_eq!(
        config_get(&server, "app.version").await.unwrap(),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        config_get(&server, "app.timezone").await.unwrap(),
        "Europe/Berlin"
    );
    assert_eq!(
        config_get(&server, "app.base_url").await.unwrap(),
        format!("http://{}", config.listen)
    );
    assert_eq!(
        config_get(&server, "helpdesk.url").await.unwrap(),
        "https://help.example.com"
    );
    assert_eq!(
        config_get(&server, "helpdesk.page_size").await.unwrap(),
        "25"
    );
    // Its own settings need no permission; the variables of the Go host's form are its
    // settings as well. Secret-looking ones wait for an admin's approval.
    assert_eq!(
        config_get(&server, "plugins.proxy.api_key").await,
        Err("permission_denied".into()),
        "pending review"
    );
    grant(&server, "proxy", vec![]).await;
    assert_eq!(
        config_get(&server, "plugins.proxy.api_key").await.unwrap(),
        "s3cret"
    );
    assert_eq!(
        config_get(&server, "plugins.proxy.region").await.unwrap(),
        "eu-1"
    );
    // Another plugin's settings stay behind the `config` permission.
    assert_eq!(
        config_get(&server, "plugins.hello-grpc.colour").await,
        Err("permission_denied".into())
    );
    assert_eq!(
        config_get(&server, "plugins.hello-grpc.token").await,
        Err("permission_denied".into())
    );
    assert_eq!(
        config_get(&server, "nothing.here").await,
        Err("not_found".into())
    );

    // The file changes: the next read sees it, no restart.
    write("Help Desk 2");
    let mut seen = String::new();
    for _ in 0..100 {
        seen = config_get(&server, "app.name").await.unwrap();
        if seen == "Help Desk 2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, "Help Desk 2", "the file change was not applied");
    // A file that no longer reads keeps the values in force.
    std::fs::write(&file, "[app\nname = ").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        config_get(&server, "app.name").await.unwrap(),
        "Help Desk 2"
    );
    server.shutdown().await;
}

/// An SMTP server (Python's aiosmtpd, installed by scripts/install-deps.sh) writing to a maildir.
struct SmtpServer {
    _child: KillOnDrop,
    port: u16,
}

fn start_smtp_server(maildir: &Path) -> SmtpServer {
    let port = free_port();
    let server = SmtpServer {
        port,
        _child: KillOnDrop(
            std::process::Command::new("python3")
                .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(maildir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("python3 with aiosmtpd is needed: scripts/install-deps.sh installs it"),
        ),
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("aiosmtpd did not start on port {port} (scripts/install-deps.sh installs it)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_out_over_the_configured_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("mail");
    let smtp = start_smtp_server(&maildir);
    let mut config = config_with_plugins(dir.path());
    config.email.smtp_url = Some(format!("smtp://127.0.0.1:{}", smtp.port));
    config.email.security = Some(gk_core::host::SmtpSecurity::None);
    config.email.from = Some("GoatFlow <helpdesk@example.com>".into());
    let server = gk_server::start(&config).await.unwrap();
    grant(
        &server,
        "proxy",
        vec![Permission::new(PermissionType::Email, Access::Write).with_scope(["@example.com"])],
    )
    .await;
    let (status, reply) = call(
        &server,
        "proxy",
        "send_email",
        json!({"to": "ada@example.com", "subject": "Ticket 42", "body": "It is solved."}),
    )
    .await;
    assert_eq!((status, &reply), (200, &json!({"ok": true})));
    let message = std::fs::read_dir(maildir.join("new"))
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .next()
        .expect("the message arrived");
    assert!(message.contains("Subject: Ticket 42"), "{message}");
    assert!(message.contains("To: ada@example.com"), "{message}");
    assert!(message.contains("It is solved."), "{message}");
    server.shutdown().await;

    // A server that cannot be reached stops the start, naming the key.
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config_for(dir.path());
    config.email.smtp_url = Some(format!("smtp://127.0.0.1:{}", free_port()));
    config.email.security = Some(gk_core::host::SmtpSecurity::None);
    config.email.from = Some("helpdesk@example.com".into());
    config.email.timeout = Duration::from_secs(2);
    let error = gk_server::start(&config).await.unwrap_err().to_string();
    assert!(error.starts_with("email.smtp_url: "), "{error}");
    assert!(error.contains("cannot be reached"), "{error}");
}

/// Runs `query` through the proxy; rows, or the error message.
async fn db(server: &RunningServer, function: &str, query: &str) -> Result<Value, String> {
    let (_, reply) = call(
        server,
        "proxy",
        function,
        json!({ "query": query, "args": [] }),
    )
    .await;
    match reply.get("kind") {
        Some(_) => Err(reply["message"].as_str().unwrap_or_default().to_owned()),
        None => Ok(reply),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_databases_are_reached_with_their_prefix() {
    let postgres = service_url("GK_TEST_POSTGRES_URL");
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_with_plugins(dir.path());
    let reports = dir.path().join("reports.db");
    config
        .databases
        .insert("reports".into(), format!("sqlite://{}", reports.display()));
    if let Some(url) = &postgres {
        config.databases.insert("pg".into(), url.clone());
    }
    let server = gk_server::start(&config).await.unwrap();
    let table = format!("gk_named_{}", std::process::id());
    grant(
        &server,
        "proxy",
        vec![
            Permission::new(PermissionType::Db, Access::ReadWrite)
                .with_scope(["@reports:*", "@pg:gk_named_*"]),
        ],
    )
    .await;
    let mut names = vec!["reports"];
    if postgres.is_some() {
        names.push("pg");
    }
    for name in names {
        db(
            &server,
            "db_exec",
            &format!("@{name}:DROP TABLE IF EXISTS {table}"),
        )
        .await
        .unwrap();
        db(
            &server,
            "db_exec",
            &format!("@{name}:CREATE TABLE {table} (id INTEGER PRIMARY KEY, title VARCHAR(50))"),
        )
        .await
        .unwrap();
        let affected = db(
            &server,
            "db_exec",
            &format!("@{name}:INSERT INTO {table} (id, title) VALUES (1, 'in {name}')"),
        )
        .await
        .unwrap();
        assert_eq!(affected["affected"], 1, "{name}: {affected}");
        let rows = db(
            &server,
            "db_query",
            &format!("@{name}:SELECT title FROM {table}"),
        )
        .await
        .unwrap();
        assert_eq!(rows, json!([{"title": format!("in {name}")}]), "{name}");
        db(&server, "db_exec", &format!("@{name}:DROP TABLE {table}"))
            .await
            .unwrap();
    }
    // The default database is another one, and out of this scope anyway.
    let refused = db(&server, "db_query", "SELECT 1 FROM stats_tickets")
        .await
        .unwrap_err();
    assert!(refused.contains("permission denied"), "{refused}");
    assert!(
        std::fs::metadata(&reports).unwrap().len() > 0,
        "the second SQLite file is used"
    );
    server.shutdown().await;

    // A database that cannot be opened stops the start, naming its key.
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config_for(dir.path());
    config
        .databases
        .insert("crm".into(), "postgres://nobody@127.0.0.1:1/crm".into());
    let error = gk_server::start(&config).await.unwrap_err().to_string();
    assert!(error.starts_with("databases.crm.url: "), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_scope_is_every_table_but_never_the_platforms() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_plugins(dir.path());
    let server = gk_server::start(&config).await.unwrap();
    let token = admin_token(&server);
    // The admin reads the request in words before approving it.
    let page = common::send_text(
        server.addr,
        "GET",
        "/admin/plugins/proxy",
        None,
        &[("cookie", &format!("gk_admin={token}"))],
        vec![],
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("<li>db readwrite: every table of the default database"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("<li>http read: *.tenor.com</li>"),
        "{}",
        page.body
    );
    let (status, policy) = common::send(
        server.addr,
        "POST",
        "/api/v1/plugins/proxy/approve",
        Some(&token),
        "",
    )
    .await;
    assert_eq!(status, 200, "{policy}");
    assert_eq!(
        policy["permissions"],
        json!([
            {"type": "db", "access": "readwrite", "scope": ["*"]},
            {"type": "http", "access": "read", "scope": ["*.tenor.com"]},
        ])
    );
    db(
        &server,
        "db_exec",
        "CREATE TABLE gifs (id INTEGER PRIMARY KEY, url TEXT)",
    )
    .await
    .unwrap();
    db(
        &server,
        "db_exec",
        "INSERT INTO gifs (url) VALUES ('https://media.tenor.com/x.gif')",
    )
    .await
    .unwrap();
    let rows = db(&server, "db_query", "SELECT url FROM gifs")
        .await
        .unwrap();
    assert_eq!(rows, json!([{"url": "https://media.tenor.com/x.gif"}]));
    // Refused by the sandbox by name (the store is another file here, so "no such table"
    // would not prove the wall).
    for (function, platform, table) in [
        (
            "db_query",
            "SELECT * FROM sysconfig_modified",
            "sysconfig_modified",
        ),
        (
            "db_exec",
            "INSERT INTO sysconfig_modified (name, value) VALUES ('Plugin::proxy::Policy', '{}')",
            "sysconfig_modified",
        ),
        (
            "db_query",
            "SELECT * FROM gk_email_outbox",
            "gk_email_outbox",
        ),
    ] {
        let error = db(&server, function, platform).await.unwrap_err();
        assert!(
            error.contains(&format!("table `{table}` belongs to the platform")),
            "{platform}: {error}"
        );
    }
    let error = db(&server, "db_query", "SELECT name FROM sqlite_master")
        .await
        .unwrap_err();
    assert!(error.contains("permission denied"), "{error}");
    server.shutdown().await;
}
