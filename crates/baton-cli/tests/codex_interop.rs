//! Continuing sessions written by the real Codex CLI (SPEC §6), from the fixtures in
//! `tests/fixtures/codex-home` (made by `scripts/gen-codex-fixtures.sh`, see its README).
//!
//! Each test copies the fixture tree into the temporary `codex_home` that [`TestEnv`]
//! configures, so the absolute paths Codex recorded (the project cwd, `rollout_path` in its
//! `state_5.sqlite`) are stale, as in a moved Codex home: baton has to be told `--cd` and has
//! to find the files by name.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use baton_test_support::{ScriptedModelServer, default_script};
use common::*;
use serde_json::Value;

fn fixture_home() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/codex-home")
}

/// `fixtures.json`: which Codex session id is which fixture.
fn fixture_id(name: &str) -> String {
    let manifest =
        std::fs::read_to_string(fixture_home().join("fixtures.json")).expect("read fixtures.json");
    let manifest: Value = serde_json::from_str(&manifest).expect("fixtures.json is JSON");
    manifest["sessions"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no fixture {name} in fixtures.json"))
        .to_owned()
}

fn server() -> ScriptedModelServer {
    ScriptedModelServer::start_blocking(default_script).expect("scripted server")
}

/// A test home with the fixture Codex home copied to its `codex_home`.
fn env_with_codex_home(server: &ScriptedModelServer) -> TestEnv {
    let env = TestEnv::new(server, baton_test_support::Wire::Responses);
    copy_tree(&fixture_home(), &env.codex_home);
    env
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

/// Every file under `dir` (relative path → bytes): equal snapshots mean nothing was
/// written, created or removed there.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read file");
            (
                path.strip_prefix(dir).expect("inside dir").to_path_buf(),
                bytes,
            )
        })
        .collect()
}

/// The Codex rollout of `id` inside the test's codex home.
fn codex_rollout(env: &TestEnv, id: &str) -> PathBuf {
    let mut files = Vec::new();
    collect_files(&env.codex_home.join("sessions"), &mut files);
    files
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(&format!("-{id}.jsonl")))
        .unwrap_or_else(|| panic!("no Codex rollout for {id}"))
}

fn resume(env: &TestEnv, id: &str, prompt: &str) -> std::process::Output {
    let project = env.project.display().to_string();
    env.run(&["exec", "resume", id, prompt, "--cd", &project])
}

/// Runs `exec resume ID PROMPT --cd <project>`, checks it succeeded under the same id and
/// returns the final message.
fn resume_ok(env: &TestEnv, id: &str, prompt: &str) -> String {
    let output = resume(env, id, prompt);
    assert_success(&output);
    assert_eq!(thread_id_of(&output), id, "the Codex id must be kept");
    stdout(&output).trim().to_owned()
}

/// The conversation of a request without baton's own system/developer messages and context
/// messages after the Codex history (which are baton's business, not the import's).
fn conversation(server: &ScriptedModelServer, index: usize) -> Vec<String> {
    server.requests()[index].conversation()
}

#[test]
fn print_first_request() {
    let server = server();
    let env = env_with_codex_home(&server);
    let id = fixture_id("shell");
    let answer = resume_ok(&env, &id, "RECALL");
    eprintln!("answer: {answer}");
    for entry in conversation(&server, 0) {
        eprintln!("ENTRY {}", entry.chars().take(200).collect::<String>());
    }
    let transcript = env.rollout_of(&id);
    eprintln!(
        "{}",
        std::fs::read_to_string(transcript)
            .unwrap()
            .chars()
            .take(3000)
            .collect::<String>()
    );
    panic!("show");
}
