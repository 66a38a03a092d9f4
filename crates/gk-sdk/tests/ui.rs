//! Every bad manifest under `tests/ui/` is refused with exactly the error in the `.err` file
//! beside it. `BLESS=1 cargo test -p gk-sdk --test ui` rewrites the `.err` files.

use std::path::Path;

use gk_sdk::PluginManifest;

#[test]
fn bad_manifests_give_their_exact_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let bless = std::env::var_os("BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 15,
        "expected the bad-manifest cases in {}",
        dir.display()
    );

    let mut failures = Vec::new();
    for case in &cases {
        let text = std::fs::read_to_string(case).unwrap();
        let expected_path = case.with_extension("err");
        let actual = match PluginManifest::from_yaml(&text) {
            Ok(manifest) => format!("accepted: {manifest:?}"),
            Err(error) => error.to_string(),
        };
        if bless {
            std::fs::write(&expected_path, format!("{actual}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected.trim_end() != actual {
            failures.push(format!(
                "{}:\n  expected: {}\n  actual:   {actual}",
                case.display(),
                expected.trim_end()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
