//! The configuration as read from files and the environment.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Environment {
    Environment::from_pairs(pairs.iter().copied())
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
    ];
    for (text, expected) in cases {
        let path = write(dir.path(), text);
        let error = ServeConfig::load(Some(&path), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{text}: {error}");
    }
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
