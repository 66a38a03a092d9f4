//! Runs every command of docs/WASM_TUTORIAL.md's `console` blocks, in order, against a real
//! server, and checks that the lines under each command appear in its output.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{output_text, repository, serve_examples_with_data, target_dir};

/// One command of the tutorial and the lines its output must contain.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The `$ ` commands of the ```console blocks, each with the lines under it.
fn steps(markdown: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    for line in markdown.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_console = !in_console && trimmed == "```console";
            continue;
        }
        if !in_console || trimmed.is_empty() {
            continue;
        }
        match trimmed.strip_prefix("$ ") {
            Some(command) => steps.push(Step {
                command: command.to_owned(),
                expected: Vec::new(),
            }),
            None => steps
                .last_mut()
                .expect("output before any command")
                .expected
                .push(trimmed.to_owned()),
        }
    }
    steps
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_of_the_wasm_tutorial_works() {
    let tutorial = std::fs::read_to_string(repository().join("docs/WASM_TUTORIAL.md")).unwrap();
    let steps = steps(&tutorial);
    assert!(steps.len() >= 7, "{steps:?}");

    let dir = tempfile::tempdir().unwrap();
    let server = serve_examples_with_data(dir.path()).await;
    let workdir = dir.path().join("work");
    std::fs::create_dir_all(&workdir).unwrap();
    let gk = Path::new(env!("CARGO_BIN_EXE_gk"));
    let path = format!(
        "{}:{}",
        gk.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Guests share the target directory of `cargo xtask build-plugins`.
    let target = target_dir().join("wasm-guests");
    let env = [
        ("PATH", path),
        ("GOATKIT_URL", format!("http://{}", server.addr)),
        ("GOATKIT_TOKEN", server.first_admin_token.clone().unwrap()),
        (
            "GOATKIT_PLUGINS_DIR",
            dir.path().join("plugins").display().to_string(),
        ),
        ("CARGO_TARGET_DIR", target.display().to_string()),
    ];

    for step in steps {
        // The server picks a new plugin up after its watcher's debounce: a failing command is
        // tried again for a while before the step fails.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (command, env, workdir) = (step.command.clone(), env.clone(), workdir.clone());
            let output = tokio::task::spawn_blocking(move || {
                Command::new("sh")
                    .args(["-c", &command])
                    .current_dir(workdir)
                    .envs(env)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            let text = output_text(&output);
            let missing: Vec<&String> = step
                .expected
                .iter()
                .filter(|e| !text.contains(e.as_str()))
                .collect();
            if output.status.success() && missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "`{}` failed ({}), missing {missing:?}:\n{text}",
                step.command,
                output.status
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    server.shutdown().await;
}
