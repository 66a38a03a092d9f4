//! Installing and removing plugins over HTTP: a signed `.zip` upload checked like the loader
//! checks, upgrade, conflicts, and `DELETE`.

use std::path::Path;

use crate::common::{config_for, list_plugins, repository, send, send_text, stats_module, upload};
use gk_core::signing::{generate_keypair, sign_file};
use gk_server::ServeConfig;
use serde_json::Value;

/// The Stats plugin packaged as `<out>/stats.zip` and signed with `private_key`.
async fn signed_stats_package(out: &Path, private_key: &str) -> (Vec<u8>, Vec<u8>) {
    let source = out.join("stats-src");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::copy(stats_module(), source.join("stats.wasm")).unwrap();
    std::fs::copy(
        repository().join("plugins/stats/plugin.yaml"),
        source.join("plugin.yaml"),
    )
    .unwrap();
    let package = out.join("stats.zip");
    gk_core::packaging::build(&source, &package).await.unwrap();
    let signature = sign_file(&package, private_key).unwrap();
    (
        std::fs::read(&package).unwrap(),
        std::fs::read(signature).unwrap(),
    )
}

#[tokio::test]
async fn a_signed_package_is_uploaded_upgraded_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = generate_keypair().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("release.pub"), &public).unwrap();
    let server = gk_server::start(&ServeConfig {
        require_signatures: true,
        trusted_keys_dir: Some(keys),
        ..config_for(dir.path())
    })
    .await
    .unwrap();
    let addr = server.addr;
    let admin = server.first_admin_token.clone().unwrap();
    let agent = server
        .tokens
        .mint(
            "agent",
            gk_server::auth::Role::Agent,
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let (package, signature) = signed_stats_package(dir.path(), &private).await;
    let plugins_dir = dir.path().join("plugins");

    // Who may upload.
    let signed: [(&str, &str, &[u8]); 2] = [
        ("plugin", "stats.zip", &package),
        ("signature", "stats.zip.sig", &signature),
    ];
    assert_eq!(upload(addr, None, &signed).await.0, 401);
    assert_eq!(upload(addr, Some(&agent), &signed).await.0, 403);

    // What is refused, with the reason.
    let (status, reply) = upload(addr, Some(&admin), &signed[..1]).await;
    assert_eq!(
        status, 422,
        "unsigned while signatures are required: {reply}"
    );
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stats.zip is not signed: stats.zip.sig is missing"),
        "{reply}"
    );
    let (_, other) = generate_keypair().unwrap();
    let (_, forged) = {
        let elsewhere = tempfile::tempdir().unwrap();
        let (other_private, _) = generate_keypair().unwrap();
        signed_stats_package(elsewhere.path(), &other_private).await
    };
    let (status, reply) = upload(
        addr,
        Some(&admin),
        &[
            ("plugin", "stats.zip", &package),
            ("signature", "stats.zip.sig", &forged),
        ],
    )
    .await;
    assert_eq!(status, 422, "signed with an untrusted key: {reply}");
    drop(other);
    let (status, reply) = upload(addr, Some(&admin), &[("plugin", "stats.exe", &package)]).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (422, Some("invalid_plugin"))
    );
    let (status, reply) = upload(addr, Some(&admin), &[("plugin", "../stats.zip", &package)]).await;
    assert_eq!(status, 422, "{reply}");
    let (status, reply) = upload(addr, Some(&admin), &[]).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (422, Some("invalid_upload"))
    );
    let names: Vec<String> = std::fs::read_dir(&plugins_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.is_empty(),
        "nothing refused is left behind: {names:?}"
    );

    // Accepted, loaded, listed, answering.
    let (status, reply) = upload(addr, Some(&admin), &signed).await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["name"], "stats");
    assert_eq!(reply["routes"], 8);
    assert!(plugins_dir.join("stats.zip").is_file());
    assert!(plugins_dir.join("stats.zip.sig").is_file());
    let list = list_plugins(&server).await;
    assert_eq!(list[0]["name"], "stats");
    assert_eq!(list[0]["loaded"], true);
    let widget = send_text(
        addr,
        "GET",
        "/api/v1/plugins/widgets?location=dashboard",
        Some(&agent),
        &[],
        vec![],
    )
    .await;
    assert!(widget.body.contains("stats_overview"), "{}", widget.body);

    // The same file again is an upgrade; the same plugin under another file name a conflict.
    let (status, _) = upload(addr, Some(&admin), &signed).await;
    assert_eq!(status, 201);
    let module = std::fs::read(stats_module()).unwrap();
    let (status, reply) = upload(addr, Some(&admin), &[("plugin", "stats.wasm", &module)]).await;
    assert_eq!(status, 422, "an unsigned module is refused first: {reply}");

    // Removal: admin only; the files go, the plugin goes, a second removal is 404.
    let (status, _) = send(addr, "DELETE", "/api/v1/plugins/stats", Some(&agent), "").await;
    assert_eq!(status, 403);
    let (status, _) = send(addr, "DELETE", "/api/v1/plugins/stats", Some(&admin), "").await;
    assert_eq!(status, 204);
    assert!(!plugins_dir.join("stats.zip").exists());
    assert!(!plugins_dir.join("stats.zip.sig").exists());
    let list = list_plugins(&server).await;
    assert_eq!(list, Value::Array(vec![]));
    let (status, reply) = send(addr, "DELETE", "/api/v1/plugins/stats", Some(&admin), "").await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = send(addr, "GET", "/api/plugins/stats/overview", Some(&agent), "").await;
    assert_eq!(status, 404);

    server.shutdown().await;
}

#[tokio::test]
async fn an_upload_for_a_plugin_installed_from_another_file_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(stats_module(), plugins.join("stats.wasm")).unwrap();
    let server = gk_server::start(&config_for(dir.path())).await.unwrap();
    let admin = server.first_admin_token.clone().unwrap();
    let (package, _) = signed_stats_package(dir.path(), &generate_keypair().unwrap().0).await;
    let (status, reply) = upload(
        server.addr,
        Some(&admin),
        &[("plugin", "stats.zip", &package)],
    )
    .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{reply}"
    );
    assert!(
        plugins.join("stats.wasm").is_file(),
        "the installed plugin is kept"
    );
    assert!(!plugins.join("stats.zip").exists());

    // An upgrade that does not load leaves the installed file and the running plugin as they
    // were.
    let original = std::fs::read(plugins.join("stats.wasm")).unwrap();
    server.manager.load("stats").await.unwrap();
    let (status, reply) = upload(
        server.addr,
        Some(&admin),
        &[("plugin", "stats.wasm", b"\0asm not really a module")],
    )
    .await;
    assert_eq!(status, 422, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stats"),
        "the error names the plugin: {reply}"
    );
    assert_eq!(std::fs::read(plugins.join("stats.wasm")).unwrap(), original);
    assert_eq!(
        server.manager.registration("stats").unwrap().version,
        "2.0.0"
    );
    let list = list_plugins(&server).await;
    assert_eq!(
        (list[0]["name"].as_str(), list[0]["loaded"].as_bool()),
        (Some("stats"), Some(true))
    );

    // A new plugin that does not load leaves nothing behind.
    let (status, _) = upload(
        server.addr,
        Some(&admin),
        &[("plugin", "broken.wasm", b"junk")],
    )
    .await;
    assert_eq!(status, 422);
    assert!(!plugins.join("broken.wasm").exists());
    assert!(!server.manager.names().contains(&"broken".to_owned()));

    // A body over the API's limit is 413.
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let (status, _) = send(
        server.addr,
        "POST",
        "/api/v1/plugins/stats/call/overview",
        Some(&admin),
        &big,
    )
    .await;
    assert_eq!(status, 413);
    server.shutdown().await;
}

/// Every file under `dir` with a checksum of its content, by relative path.
fn checksums(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    use std::hash::{Hash, Hasher};
    let mut sums = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(&path).unwrap().hash(&mut hasher);
                let relative = path.strip_prefix(dir).unwrap().display().to_string();
                sums.insert(relative, hasher.finish());
            }
        }
    }
    sums
}

#[tokio::test]
async fn a_conflicting_upload_changes_no_file_of_the_installed_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let server = gk_server::start(&config_for(dir.path())).await.unwrap();
    let admin = server.first_admin_token.clone().unwrap();
    let (private, _) = generate_keypair().unwrap();
    let (package, _) = signed_stats_package(dir.path(), &private).await;
    let (status, reply) = upload(
        server.addr,
        Some(&admin),
        &[("plugin", "stats.zip", &package)],
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    let packages = dir.path().join("data/packages");
    assert!(packages.join("stats/plugin.yaml").is_file());

    // Another package of the same plugin, with other files, under another file name.
    let source = dir.path().join("stats-src");
    let manifest = std::fs::read_to_string(source.join("plugin.yaml")).unwrap();
    std::fs::write(
        source.join("plugin.yaml"),
        manifest.replace("version: \"2.0.0\"", "version: \"6.6.6\""),
    )
    .unwrap();
    std::fs::write(source.join("stats.wasm"), b"\0asm not the installed module").unwrap();
    let other = dir.path().join("impostor.zip");
    gk_core::packaging::build(&source, &other).await.unwrap();
    let other = std::fs::read(other).unwrap();

    let plugins_before = checksums(&dir.path().join("plugins"));
    let packages_before = checksums(&packages);
    assert!(
        packages_before.contains_key("stats/stats.wasm"),
        "{packages_before:?}"
    );
    let (status, reply) = upload(
        server.addr,
        Some(&admin),
        &[("plugin", "impostor.zip", &other)],
    )
    .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{reply}"
    );
    assert_eq!(
        checksums(&dir.path().join("plugins")),
        plugins_before,
        "the plugins directory"
    );
    assert_eq!(
        checksums(&packages),
        packages_before,
        "the unpacked packages"
    );
    assert_eq!(
        server.manager.registration("stats").unwrap().version,
        "2.0.0"
    );
    let (status, _) = send(
        server.addr,
        "POST",
        "/api/v1/plugins/stats/call/overview",
        Some(&admin),
        "{}",
    )
    .await;
    assert_ne!(status, 500, "the installed plugin still runs");
    server.shutdown().await;
}
