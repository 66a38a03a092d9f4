//! The `gk` binary's file commands: keygen, sign, verify, package, token.

use std::path::Path;
use std::process::Output;

use crate::common::{gk_command, output_text};

/// `gk` in `cwd`, without the caller's `GOATKIT_*` (token secret, data directory, config).
fn gk(args: &[&str], cwd: &Path) -> Output {
    gk_command().args(args).current_dir(cwd).output().unwrap()
}

#[test]
fn keygen_sign_verify_and_package() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let out = gk(&["keygen", "--out", "keys", "--name", "me"], cwd);
    assert!(out.status.success(), "{}", output_text(&out));
    let again = gk(&["keygen", "--out", "keys", "--name", "me"], cwd);
    assert!(!again.status.success());
    assert!(
        output_text(&again).contains("never overwritten"),
        "{}",
        output_text(&again)
    );

    std::fs::create_dir_all(cwd.join("plugin")).unwrap();
    std::fs::write(cwd.join("plugin/hello.wasm"), b"\0asm fake").unwrap();
    std::fs::write(
        cwd.join("plugin/plugin.yaml"),
        "name: hello\nwasm: hello.wasm\n",
    )
    .unwrap();
    let out = gk(&["package", "plugin", "-o", "hello.zip"], cwd);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(output_text(&out).contains("package of plugin `hello`"));

    let out = gk(&["sign", "hello.zip", "--key", "keys/me.key"], cwd);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(cwd.join("hello.zip.sig").is_file());
    let out = gk(&["verify", "hello.zip", "--pubkey", "keys/me.pub"], cwd);
    assert!(out.status.success(), "{}", output_text(&out));
    let public = std::fs::read_to_string(cwd.join("keys/me.pub")).unwrap();
    let out = gk(&["verify", "hello.zip", "--pubkey", public.trim()], cwd);
    assert!(out.status.success(), "hex key: {}", output_text(&out));

    gk(&["keygen", "--out", "keys", "--name", "other"], cwd);
    let out = gk(&["verify", "hello.zip", "--pubkey", "keys/other.pub"], cwd);
    assert!(!out.status.success(), "a wrong key must not verify");
    assert!(
        output_text(&out).contains("is not verified"),
        "{}",
        output_text(&out)
    );
    std::fs::write(cwd.join("hello.zip"), b"tampered").unwrap();
    let out = gk(&["verify", "hello.zip", "--pubkey", "keys/me.pub"], cwd);
    assert!(!out.status.success(), "a tampered file must not verify");

    let out = gk(&["package", "nowhere", "-o", "x.zip"], cwd);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("cannot package nowhere"),
        "{}",
        output_text(&out)
    );
}

#[test]
fn token_needs_a_secret_and_says_where_it_comes_from() {
    let dir = tempfile::tempdir().unwrap();
    let out = gk(&["token", "--user", "ada"], dir.path());
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("start `gk serve` once"),
        "{}",
        output_text(&out)
    );
    // The secret comes from ./goatkit.toml, as `gk serve` run there would use it.
    std::fs::write(
        dir.path().join("goatkit.toml"),
        "token_secret = \"too-short\"\n",
    )
    .unwrap();
    let out = gk(&["token", "--user", "ada"], dir.path());
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("at least 32 bytes"),
        "{}",
        output_text(&out)
    );
    let secret = "x".repeat(40);
    std::fs::write(
        dir.path().join("goatkit.toml"),
        format!("token_secret = \"{secret}\"\n"),
    )
    .unwrap();
    let out = gk(&["token", "--user", "ada", "--role", "admin"], dir.path());
    assert!(out.status.success(), "{}", output_text(&out));
    let token = String::from_utf8(out.stdout).unwrap();
    let keys = gk_server::auth::TokenKeys::from_secret(secret.as_bytes()).unwrap();
    let claims = keys.verify(token.trim()).unwrap();
    assert_eq!(claims.sub, "ada");
    assert_eq!(claims.role, gk_server::auth::Role::Admin);
}
