//! The configuration as read from files and the environment.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Environment {
    Environment::from_pairs(pairs.iter().copied())
}

/// Each file text is refused with a message holding its expected part, and no secret.
fn refuses_each(dir: &Path, cases: &[(&str, &str)]) {
    for (text, expected) in cases {
        let path = write(dir, text);
        let error = ServeConfig::load(Some(&path), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{text}: {error}");
        assert!(
            !error.contains("hunter2"),
            "no secret in the message: {error}"
        );
    }
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("goatkit.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn nothing_configured_is_the_embedded_default() {
    let config = ServeConfig::load(None, &env(&[])).unwrap();
    assert_eq!(config, ServeConfig::default());
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert!(
        config
            .database_url()
            .starts_with("sqlite://data/goatkit.db")
    );
}

#[test]
fn the_file_is_read_relative_to_itself_and_the_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        r#"
listen = "0.0.0.0:9000"
plugins_dir = "my-plugins"
request_timeout = "1m30s"
eager_loading = true
approve = ["stats", "hello-grpc"]

[database]
url = "postgres://127.0.0.1/test"
init_sql = ["schema.sql", "/abs/seed.sql"]
query_timeout = "2s"
max_concurrent_queries = 2
"#,
    );
    let config = ServeConfig::load(Some(&path), &env(&[])).unwrap();
    assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(config.plugins_dir, dir.path().join("my-plugins"));
    assert_eq!(config.request_timeout, Duration::from_secs(90));
    assert!(config.eager_loading);
    assert_eq!(config.approve, ["stats", "hello-grpc"]);
    assert_eq!(config.database_url(), "postgres://127.0.0.1/test");
    assert_eq!(config.database_limits.query_timeout, Duration::from_secs(2));
    assert_eq!(config.database_limits.max_concurrent_queries, 2);
    assert_eq!(
        config.database_limits.max_rows,
        gk_core::host::DEFAULT_MAX_ROWS
    );
    assert_eq!(
        config.init_sql,
        [
            dir.path().join("schema.sql"),
            PathBuf::from("/abs/seed.sql")
        ]
    );

    let config = ServeConfig::load(
        Some(&path),
        &env(&[
            ("GOATKIT_LISTEN", "127.0.0.1:7000"),
            ("GOATKIT_EAGER_LOADING", "false"),
            ("GOATKIT_APPROVE", "a, b"),
            ("GOATFLOW_REQUIRE_SIGNATURES", "1"),
            ("GOATKIT_DATABASE_URL", ""),
            ("GOATKIT_METRICS_TOKEN", "scrape-me"),
            ("GOATKIT_CACHE_QUOTA_BYTES", "4096"),
            ("GOATKIT_DATABASE_MAX_ROWS", "50"),
            ("GOATKIT_DATABASE_MAX_RESULT_BYTES", "65536"),
        ]),
    )
    .unwrap();
    assert_eq!(config.database_limits.max_rows, 50);
    assert_eq!(config.database_limits.max_result_bytes, 65536);
    assert_eq!(config.database_limits.query_timeout, Duration::from_secs(2));
    assert_eq!(config.metrics_token.as_deref(), Some("scrape-me"));
    assert_eq!(config.cache_quota_bytes, 4096);
    assert_eq!(config.listen.to_string(), "127.0.0.1:7000");
    assert!(!config.eager_loading);
    assert!(config.require_signatures);
    assert_eq!(config.approve, ["a", "b"]);
    assert_eq!(config.database_url, None, "an empty variable unsets it");
}

#[test]
fn bad_configuration_names_the_key_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("lisen = \"x\"", "unknown field `lisen`"),
        (
            "listen = \"localhost\"",
            "listen: `localhost` is not an address",
        ),
        ("request_timeout = \"soon\"", "request_timeout:"),
        (
            "request_timeout = \"0s\"",
            "request_timeout: must be longer than zero",
        ),
        ("[database]\nurl = 5", "invalid type"),
        (
            "[database]\nmax_concurrent_queries = 0",
            "database.max_concurrent_queries: must be at least 1",
        ),
        (
            "[database]\nquery_timeout = \"0s\"",
            "database.query_timeout: must be longer than zero",
        ),
        (
            "token_secret = \"short\"",
            "token_secret: must be at least 32 bytes, it is 5",
        ),
        (
            "listen = \"127.0.0.1:1\"\nsmtp_urll = \"smtp://u:hunter2@mail\"",
            "line 2, column 1: unknown field `smtp_urll`",
        ),
    ];
    refuses_each(dir.path(), &cases);
    let error = ServeConfig::load(None, &env(&[("GOATKIT_EAGER_LOADING", "maybe")]))
        .unwrap_err()
        .to_string();
    assert_eq!(error, "GOATKIT_EAGER_LOADING: `maybe` is not true or false");
    let error = ServeConfig::load(None, &env(&[("GOATKIT_DATABASE_MAX_ROWS", "many")]))
        .unwrap_err()
        .to_string();
    assert_eq!(error, "GOATKIT_DATABASE_MAX_ROWS: `many` is not a number");
    let missing = dir.path().join("absent.toml");
    let error = ServeConfig::load(Some(&missing), &env(&[])).unwrap_err();
    assert!(error.to_string().starts_with("cannot read"), "{error}");
}

#[test]
fn host_service_sections_are_read_from_the_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        r#"
[databases.reports]
url = "sqlite://reports.db"

[databases.CRM]
url = "postgres://127.0.0.1/crm"

[http]
timeout = "3s"
allow_private = ["10.1.2.0/24", "127.0.0.1:8025"]

[email]
smtp_url = "smtps://ada%40example.com:p%3Ass@mail.example.com"
from = "helpdesk@example.com"

[app]
name = "Help"
base_url = "https://help.example.com/"

[config]
helpdesk = { url = "https://help.example.com", teams = ["a", "b"], enabled = true }

[plugins.stats]
page_size = 20
"#,
    );
    let config = ServeConfig::load(
        Some(&path),
        &env(&[
            (
                "GOATKIT_DATABASES_ARCHIVE_URL",
                "mysql://root@127.0.0.1/archive",
            ),
            ("GOATKIT_DATABASES_CRM_URL", ""),
            ("GOATKIT_HTTP_CONNECT_TIMEOUT", "1s"),
            ("GOATKIT_APP_TIMEZONE", "Europe/Berlin"),
            ("GOATKIT_CONFIG_HELPDESK__REGION", "eu"),
            ("GOATFLOW_PLUGIN_STATS_API_KEY", "k"),
        ]),
    )
    .unwrap();
    assert_eq!(
        config.databases.keys().collect::<Vec<_>>(),
        ["archive", "reports"],
        "names are lower-cased; an empty variable removes one"
    );
    assert_eq!(
        config.databases["reports"],
        format!("sqlite://{}", dir.path().join("reports.db").display())
    );
    assert_eq!(config.http.timeout, Duration::from_secs(3));
    assert_eq!(config.http.connect_timeout, Duration::from_secs(1));
    assert_eq!(config.http.allow_private.len(), 2);
    let smtp = config.email.smtp_config().unwrap().unwrap();
    assert_eq!(
        (smtp.host.as_str(), smtp.port, smtp.security),
        ("mail.example.com", 465, gk_core::host::SmtpSecurity::Tls)
    );
    assert_eq!(smtp.username.as_deref(), Some("ada@example.com"));
    assert_eq!(smtp.password.as_deref(), Some("p:ss"));
    let values = config.config_values();
    let get = |key: &str| values.get(key).unwrap();
    assert_eq!(get("app.name"), "Help");
    assert_eq!(get("app.base_url"), "https://help.example.com");
    assert_eq!(get("app.timezone"), "Europe/Berlin");
    assert_eq!(get("app.default_language"), "en");
    assert_eq!(get("helpdesk.url"), "https://help.example.com");
    assert_eq!(get("helpdesk.teams"), r#"["a","b"]"#);
    assert_eq!(get("helpdesk.enabled"), "true");
    assert_eq!(get("helpdesk.region"), "eu");
    assert_eq!(get("plugins.stats.page_size"), "20");
    assert_eq!(get("plugins.stats.api_key"), "k");
}

#[test]
fn bad_host_service_settings_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[databases.default]\nurl = \"sqlite://x.db\"",
            "databases.default: the default database is configured as [database] url",
        ),
        (
            "[databases.\"a b\"]\nurl = \"sqlite://x.db\"",
            "databases.a b: `a b` is not a database name",
        ),
        (
            "[databases.crm]\nurl = \"http://crm\"",
            "databases.crm.url: not a database URL",
        ),
        ("[databases.crm]\n", "databases.crm.url: is missing"),
        (
            "[http]\nallow_private = [\"intranet\"]",
            "http.allow_private: `intranet` is not a network",
        ),
        (
            "[http]\ntimeout = \"0s\"",
            "http.timeout: must be longer than zero",
        ),
        ("[http]\nproxy = \"x\"", "unknown field `proxy`"),
        (
            "[email]\nsmtp_url = \"imap://mail\"\nfrom = \"a@b.c\"",
            "email.smtp_url: scheme `imap` is not smtp",
        ),
        (
            "[email]\nsmtp_url = \"smtp://mail\"",
            "email.from: a sender address is needed",
        ),
        (
            "[email]\nsecurity = \"ssl\"",
            "email.security: `ssl` is not starttls, tls or none",
        ),
        (
            "[app]\nbase_url = \"help.example.com\"",
            "app.base_url: `help.example.com` is not a URL",
        ),
        (
            "[app]\ntimezone = \"Mars Time\"",
            "app.timezone: `Mars Time` is not a time zone name",
        ),
    ];
    refuses_each(dir.path(), &cases);
    let error = ServeConfig::load(None, &env(&[("GOATKIT_DATABASES_CRM", "x")]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "GOATKIT_DATABASES_CRM: is not GOATKIT_DATABASES_<NAME>_URL"
    );
    let error = ServeConfig::load(
        None,
        &env(&[("GOATKIT_HTTP_ALLOW_PRIVATE", "10.0.0.0/8, nope")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with("GOATKIT_HTTP_ALLOW_PRIVATE: `nope`"),
        "{error}"
    );
}

/// The example in this module's documentation, and the repository's goatkit.toml, are
/// configurations that load.
#[test]
fn the_documented_examples_load() {
    let source = include_str!("mod.rs");
    let example: String = source
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .skip_while(|line| line.trim() != "```toml")
        .skip(1)
        .take_while(|line| line.trim() != "```")
        .map(|line| format!("{}\n", line.strip_prefix(' ').unwrap_or(line)))
        .collect();
    assert!(example.contains("[email]"), "{example}");
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &example);
    let config = ServeConfig::load(Some(&path), &env(&[])).unwrap();
    assert_eq!(config.databases.len(), 1);
    assert_eq!(config.http.allow_private.len(), 2);
    assert!(config.email.smtp_config().unwrap().is_some());
    assert_eq!(
        config.config_values().get("helpdesk.url").unwrap(),
        "https://help.example.com"
    );

    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../goatkit.toml");
    ServeConfig::load(Some(&repository), &env(&[])).unwrap();
}

/// `gk serve`'s flags are declared with their keys, go through the same checks, and name
/// themselves in errors.
#[test]
fn flags_override_the_file_and_the_environment() {
    let longs: Vec<_> = flags().map(|flag| flag.long).collect();
    assert_eq!(
        longs,
        [
            "listen",
            "plugins",
            "data",
            "require-signatures",
            "trusted-keys",
            "request-timeout",
            "eager",
            "node-id"
        ]
    );
    let switches: Vec<_> = flags()
        .filter(|flag| flag.value_name.is_none())
        .map(|flag| flag.key)
        .collect();
    assert_eq!(switches, ["require_signatures", "eager_loading"]);

    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "listen = \"0.0.0.0:9000\"\nplugins_dir = \"p\"\n",
    );
    let mut config =
        ServeConfig::load(Some(&path), &env(&[("GOATKIT_LISTEN", "127.0.0.1:7000")])).unwrap();
    config
        .apply_flags([
            ("listen", "127.0.0.1:6000"),
            ("plugins", "here"),
            ("eager", "true"),
            ("request-timeout", "2m"),
            ("node-id", "node-b"),
        ])
        .unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:6000");
    assert_eq!(
        config.plugins_dir,
        PathBuf::from("here"),
        "flags are not relative to the file"
    );
    assert!(config.eager_loading);
    assert_eq!(config.request_timeout, Duration::from_secs(120));
    assert_eq!(config.cluster.node_id.as_deref(), Some("node-b"));

    for (flag, value, expected) in [
        (
            "listen",
            "x",
            "--listen: `x` is not an address like 127.0.0.1:8080",
        ),
        (
            "request-timeout",
            "0s",
            "--request-timeout: must be longer than zero",
        ),
        ("node-id", "a b", "--node-id: `a b` is not a name"),
        ("verbose", "true", "--verbose: is not a flag of gk serve"),
    ] {
        let error = config.apply_flags([(flag, value)]).unwrap_err().to_string();
        assert!(error.starts_with(expected), "{flag}: {error}");
    }
}

/// A value of the wrong type in the file names the key and where it is; a variable names
/// itself; the Go host's alias yields to GoatKit's own variable; an empty URL unsets it in
/// every layer.
#[test]
fn each_layer_names_its_source() {
    let dir = tempfile::tempdir().unwrap();
    refuses_each(
        dir.path(),
        &[
            (
                "[database]\nurl = 5",
                "line 2, column 7: database.url: invalid type: integer, expected a string",
            ),
            (
                "eager_loading = \"yes\"",
                "eager_loading: invalid type: string, expected a boolean",
            ),
            (
                "approve = [\"a\", 1]",
                "approve: invalid type: array, expected an array of strings",
            ),
            ("http = 1", "http: invalid type: integer, expected a table"),
            (
                "[databases.crm]\nurl = \"sqlite://x.db\"\npassword = \"hunter2\"",
                "line 3, column 1: unknown field `password`, expected `url`",
            ),
            (
                "[cluster]\nprefix = \"a:b\"",
                "cluster.prefix: `a:b` is not a name",
            ),
            (
                "[database]\nmax_rows = -1",
                "database.max_rows: `-1` is not a number",
            ),
        ],
    );
    let both = env(&[
        ("GOATFLOW_REQUIRE_SIGNATURES", "1"),
        ("GOATKIT_REQUIRE_SIGNATURES", "0"),
    ]);
    assert!(!ServeConfig::load(None, &both).unwrap().require_signatures);
    let error = ServeConfig::load(None, &env(&[("GOATFLOW_REQUIRE_SIGNATURES", "si")]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "GOATFLOW_REQUIRE_SIGNATURES: `si` is not true or false"
    );
    let error = ServeConfig::load(None, &env(&[("GOATKIT_CLUSTER_PREFIX", "a b")]))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("GOATKIT_CLUSTER_PREFIX: `a b`"),
        "{error}"
    );

    let path = write(dir.path(), "redis_url = \"\"\n[database]\nurl = \"\"");
    let config = ServeConfig::load(Some(&path), &env(&[])).unwrap();
    assert_eq!((config.redis_url, config.database_url), (None, None));
}

/// A flag's help that states a default (`[default: 60s]`) states the one `ServeConfig::default`
/// has: setting the stated value changes nothing. A default described in words (`host name and
/// port`) is computed at start and has no value to compare.
#[test]
fn defaults_in_the_help_are_the_real_ones() {
    let mut checked = 0;
    for key in super::keys::KEYS {
        let Some((_, rest)) = key.doc.split_once("[default: ") else {
            continue;
        };
        let stated = rest.trim_end_matches(['.', ']']);
        if stated.contains(' ') {
            continue;
        }
        let mut config = ServeConfig::default();
        (key.set)(&mut config, &super::layers::Value::text(key.path, stated))
            .unwrap_or_else(|e| panic!("{}: the stated default does not parse: {e}", key.path));
        assert_eq!(
            config,
            ServeConfig::default(),
            "{}: the help says [default: {stated}]",
            key.path
        );
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} defaults found in the help");
}
