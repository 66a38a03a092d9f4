//! Packages: a good round trip, and every refusal with a crafted archive.

use std::path::Path;

use async_zip::base::write::ZipFileWriter;
use async_zip::{Compression, ZipEntryBuilder};
use gk_core::packaging::{self, PackageError};

const MANIFEST: &str = "name: packed\nversion: \"1.0.0\"\nruntime: wasm\nwasm: packed.wasm\n";

/// Writes a ZIP of `(name, unix mode, content)` entries.
async fn zip(path: &Path, entries: &[(&str, u16, Vec<u8>)]) {
    let file = tokio::fs::File::create(path).await.unwrap();
    let mut writer = ZipFileWriter::with_tokio(file);
    for (name, mode, data) in entries {
        let entry =
            ZipEntryBuilder::new((*name).into(), Compression::Deflate).unix_permissions(*mode);
        writer.write_entry_whole(entry, data).await.unwrap();
    }
    writer.close().await.unwrap();
}

fn file(name: &str, data: &[u8]) -> (&'static str, u16, Vec<u8>) {
    (
        Box::leak(name.to_owned().into_boxed_str()),
        0o100_644,
        data.to_vec(),
    )
}

async fn refusal(entries: &[(&str, u16, Vec<u8>)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let package = dir.path().join("p.zip");
    zip(&package, entries).await;
    let plugins = dir.path().join("plugins");
    let err = packaging::extract(&package, &plugins).await.unwrap_err();
    assert!(matches!(err, PackageError::Refused { .. }), "{err:?}");
    let left: Vec<_> = std::fs::read_dir(&plugins)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing is left behind: {left:?}");
    err.to_string()
}

#[tokio::test]
async fn a_good_package_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("templates/stats")).unwrap();
    std::fs::write(source.join("plugin.yaml"), MANIFEST).unwrap();
    std::fs::write(source.join("packed.wasm"), b"\0asm fake module").unwrap();
    std::fs::write(
        source.join("templates/stats/page.html"),
        "<h1>{{ title }}</h1>",
    )
    .unwrap();
    std::fs::write(source.join("notes.txt"), "not packaged").unwrap();
    let package = dir.path().join("packed.zip");
    let manifest = packaging::build(&source, &package).await.unwrap();
    assert_eq!(manifest.name, "packed");

    let plugins = dir.path().join("plugins");
    let (installed, manifest) = packaging::extract(&package, &plugins).await.unwrap();
    assert_eq!(installed, plugins.join("packed"));
    assert_eq!(manifest.version, "1.0.0");
    assert_eq!(
        std::fs::read(installed.join("packed.wasm")).unwrap(),
        b"\0asm fake module"
    );
    assert_eq!(
        std::fs::read_to_string(installed.join("templates/stats/page.html")).unwrap(),
        "<h1>{{ title }}</h1>"
    );
    assert!(
        !installed.join("notes.txt").exists(),
        "only the manifest, the module and the known folders are packaged"
    );

    // A second version replaces the first; a bad one leaves the installed one alone.
    std::fs::write(source.join("packed.wasm"), b"\0asm version two").unwrap();
    packaging::build(&source, &package).await.unwrap();
    packaging::extract(&package, &plugins).await.unwrap();
    assert_eq!(
        std::fs::read(installed.join("packed.wasm")).unwrap(),
        b"\0asm version two"
    );
    let bad = dir.path().join("bad.zip");
    zip(
        &bad,
        &[
            file("plugin.yaml", MANIFEST.as_bytes()),
            file("../escape", b"x"),
        ],
    )
    .await;
    packaging::extract(&bad, &plugins).await.unwrap_err();
    assert_eq!(
        std::fs::read(installed.join("packed.wasm")).unwrap(),
        b"\0asm version two"
    );
}

#[tokio::test]
async fn hostile_archives_are_refused() {
    let manifest = file("plugin.yaml", MANIFEST.as_bytes());
    let module = file("packed.wasm", b"\0asm");
    for (entries, expected) in [
        (
            vec![
                manifest.clone(),
                module.clone(),
                file("../../etc/cron.d/evil", b"x"),
            ],
            "entry `../../etc/cron.d/evil` climbs out with `..`",
        ),
        (
            vec![manifest.clone(), module.clone(), file("/etc/passwd", b"x")],
            "entry `/etc/passwd` is an absolute path",
        ),
        (
            vec![
                manifest.clone(),
                module.clone(),
                ("link", 0o120_777, b"/etc/passwd".to_vec()),
            ],
            "entry `link` is a symbolic link",
        ),
        (
            vec![manifest.clone(), module.clone(), module.clone()],
            "entry `packed.wasm` appears twice",
        ),
        (
            vec![manifest.clone(), module.clone(), file("a\\..\\b", b"x")],
            "has a backslash",
        ),
        (
            vec![module.clone()],
            "it holds no plugin.yaml or manifest.yaml",
        ),
        (
            vec![manifest.clone()],
            "the manifest names `packed.wasm`, which the package does not hold",
        ),
        (
            vec![file("plugin.yaml", b"name: Bad Name\nwasm: x.wasm\n")],
            "plugin.yaml: field `name`",
        ),
    ] {
        let err = refusal(&entries).await;
        assert!(err.contains(expected), "expected `{expected}` in `{err}`");
    }
}

#[tokio::test]
async fn too_many_entries_are_refused() {
    let mut entries = vec![
        file("plugin.yaml", MANIFEST.as_bytes()),
        file("packed.wasm", b"\0asm"),
    ];
    for i in 0..1000 {
        entries.push(file(&format!("static/f{i}.txt"), b"x"));
    }
    let err = refusal(&entries).await;
    assert!(
        err.contains("1002 entries, more than the 1000 allowed"),
        "{err}"
    );
}

#[tokio::test]
async fn a_zip_bomb_is_stopped_by_the_bytes_it_inflates() {
    // 101 MiB of zeros deflate to about 100 KiB: the archive is small, its content is not.
    let bomb = vec![0u8; 101 << 20];
    let err = refusal(&[
        file("plugin.yaml", MANIFEST.as_bytes()),
        file("packed.wasm", &bomb),
    ])
    .await;
    assert!(
        err.contains("entry `packed.wasm` inflates past 100 MiB"),
        "{err}"
    );
}
