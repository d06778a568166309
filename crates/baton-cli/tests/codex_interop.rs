//! Continuing sessions written by the real Codex CLI, from the fixtures in
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

/// Asserts `dir` holds exactly the files of `before`, byte for byte; names what differs.
fn assert_unchanged(dir: &Path, before: &BTreeMap<PathBuf, Vec<u8>>) {
    let after = snapshot(dir);
    let mut differences = Vec::new();
    for (path, bytes) in &after {
        match before.get(path) {
            None => differences.push(format!("created {}", path.display())),
            Some(old) if old != bytes => differences.push(format!("changed {}", path.display())),
            Some(_) => {}
        }
    }
    for path in before.keys().filter(|path| !after.contains_key(*path)) {
        differences.push(format!("removed {}", path.display()));
    }
    assert!(
        differences.is_empty(),
        "Codex's home must be left byte for byte as it was: {differences:?}"
    );
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

/// The conversation of the request at `index`, as `RecordedRequest::conversation` renders it.
fn conversation(server: &ScriptedModelServer, index: usize) -> Vec<String> {
    server.requests()[index].conversation()
}

/// `pattern` with `*` matching any text (newlines included).
fn glob_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = parts.split_first().expect("split yields one part at least");
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    for (index, part) in rest.iter().enumerate() {
        if index == rest.len() - 1 {
            return remaining.ends_with(part);
        }
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.is_empty()
}

/// Asserts the conversation is exactly `expected`, entry by entry, in order.
fn assert_conversation(actual: &[String], expected: &[&str]) {
    let shown = || {
        actual
            .iter()
            .map(|e| format!("  {:?}", e.chars().take(160).collect::<String>()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        actual.len(),
        expected.len(),
        "the conversation has {} entries, expected {}:\n{}",
        actual.len(),
        expected.len(),
        shown()
    );
    for (index, (entry, pattern)) in actual.iter().zip(expected).enumerate() {
        assert!(
            glob_matches(pattern, entry),
            "entry {index} is {entry:?}, expected {pattern:?}; whole conversation:\n{}",
            shown()
        );
    }
}

/// What Codex put before the first prompt of every fixture: its developer message and its
/// environment context, which name the directory Codex ran in.
const CODEX_PREAMBLE: [&str; 2] = [
    "system: <skills_instructions>*",
    "user: <environment_context>*<cwd>*/project</cwd>*",
];

fn with_preamble<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    CODEX_PREAMBLE.iter().chain(rest).copied().collect()
}

/// How a test continues a session.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// `baton exec resume ID PROMPT --cd DIR`
    Exec,
    /// `tools/call baton-reply {threadId, prompt, cwd}` on `baton mcp-server`
    Mcp,
}

/// Calls `baton-reply` once on a fresh `baton mcp-server` (newline-delimited JSON-RPC on
/// stdio) and returns the tool result.
fn mcp_reply(env: &TestEnv, id: &str, prompt: &str) -> Value {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let mut child = env
        .baton()
        .arg("mcp-server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start baton mcp-server");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let messages = [
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "codex-interop-test", "version": "1"}}}),
        serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "baton-reply",
            "arguments": {"threadId": id, "prompt": prompt, "cwd": env.project}}}),
    ];
    for message in messages {
        writeln!(stdin, "{message}").expect("write to the server");
    }
    // The answer is read on a thread so that a server that never answers fails the test
    // after a generous guard time instead of hanging it.
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if message["id"] == 2 {
                let _ = sender.send(message);
                break;
            }
        }
    });
    let response = receiver.recv_timeout(std::time::Duration::from_secs(60));
    drop(stdin); // EOF: the server exits
    let _ = child.kill();
    let _ = child.wait();
    let response = response.expect("baton-reply answered");
    assert!(
        response.get("error").is_none(),
        "JSON-RPC error: {response}"
    );
    response["result"].clone()
}

/// Continues fixture `name` with RECALL `via` the CLI or MCP and checks the answer, the
/// threadId, the first model request and that Codex's files were left as they were.
fn continue_fixture(name: &str, via: Via, expected_answer: &str, expected_history: &[&str]) {
    let server = server();
    let env = env_with_codex_home(&server);
    let id = fixture_id(name);
    let before = snapshot(&env.codex_home);

    let answer = match via {
        Via::Exec => resume_ok(&env, &id, "RECALL"),
        Via::Mcp => {
            let result = mcp_reply(&env, &id, "RECALL");
            assert_eq!(result["isError"], false, "{result}");
            assert_eq!(
                result["structuredContent"]["threadId"],
                id.as_str(),
                "{result}"
            );
            assert_eq!(
                result["content"][0]["text"],
                result["structuredContent"]["content"]
            );
            result["content"][0]["text"]
                .as_str()
                .expect("text content")
                .trim()
                .to_owned()
        }
    };
    assert!(
        glob_matches(expected_answer, &answer),
        "{via:?} answer: {answer:?}"
    );

    let mut expected = with_preamble(expected_history);
    expected.push("user: RECALL");
    assert_conversation(&conversation(&server, 0), &expected);
    assert_unchanged(&env.codex_home, &before);
}

/// [`continue_fixture`] through both `baton exec resume` and MCP `baton-reply`.
fn continue_fixture_both_ways(name: &str, expected_answer: &str, expected_history: &[&str]) {
    for via in [Via::Exec, Via::Mcp] {
        continue_fixture(name, via, expected_answer, expected_history);
    }
}

#[test]
fn the_shell_fixture_continues_with_its_tool_call_as_a_shell_call() {
    continue_fixture_both_ways(
        "shell",
        "recall: shell: echo hello from codex (1 tool outputs)",
        &[
            "user: shell: echo hello from codex",
            r#"call shell {"command":["bash","-lc","echo hello from codex"]}"#,
            "output: Chunk ID: *\nProcess exited with code 0\n*Output:\nhello from codex\n",
            "assistant: tool output: Chunk ID: *\nOutput:\nhello from codex",
        ],
    );
}

#[test]
fn the_multi_turn_fixture_continues_with_every_turn_in_order() {
    continue_fixture_both_ways(
        "multi_turn",
        "recall: first question | second question | shell: echo third turn (1 tool outputs)",
        &[
            "user: first question",
            "assistant: echo: first question",
            "user: second question",
            "assistant: echo: second question",
            "user: shell: echo third turn",
            r#"call shell {"command":["bash","-lc","echo third turn"]}"#,
            "output: Chunk ID: *\nOutput:\nthird turn\n",
            "assistant: tool output: Chunk ID: *\nOutput:\nthird turn",
        ],
    );
}

#[test]
fn the_compacted_fixture_continues_from_its_replacement_history() {
    // What came before the compaction (the answer "echo: before compaction") is gone; the
    // replacement history and what followed it remain.
    continue_fixture_both_ways(
        "compacted",
        "recall: before compaction | Another language model started *summary: before compaction | after compaction (0 tool outputs)",
        &[
            "user: before compaction",
            "user: Another language model started to solve this problem*\nsummary: before compaction",
            "user: after compaction",
            "assistant: echo: after compaction",
        ],
    );
}

#[test]
fn an_imported_session_continues_from_batons_copy_afterwards() {
    let server = server();
    let env = env_with_codex_home(&server);
    let id = fixture_id("multi_turn");
    let codex_file = codex_rollout(&env, &id);
    let before = snapshot(&env.codex_home);

    let first = resume_ok(&env, &id, "RECALL");
    let transcript = env.rollout_of(&id);
    assert!(
        transcript.starts_with(env.home.join("sessions")),
        "{transcript:?}"
    );
    let meta = &parse_complete_lines(&transcript)[0];
    assert_eq!(meta["type"], "session_meta");
    assert_eq!(meta["payload"]["id"], id.as_str());
    let imported_from = &meta["payload"]["imported_from"];
    assert_eq!(imported_from["path"], codex_file.display().to_string());
    assert_eq!(imported_from["cli_version"], "0.169.0");
    assert_eq!(imported_from["originator"], "codex_exec");

    let requests_before = server.requests().len();
    let second = resume_ok(&env, &id, "RECALL");
    assert_eq!(
        second,
        "recall: first question | second question | shell: echo third turn | RECALL (1 tool outputs)"
    );
    let conversation = conversation(&server, requests_before);
    let tail: Vec<&str> = conversation[conversation.len() - 3..]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "user: RECALL",
            &format!("assistant: {first}"),
            "user: RECALL"
        ]
    );
    assert_eq!(
        env.rollout_files(),
        vec![transcript.clone()],
        "still one transcript"
    );
    assert_unchanged(&env.codex_home, &before);

    // With Codex's files gone, the session lives on in baton's copy.
    std::fs::remove_dir_all(&env.codex_home).expect("remove the Codex home");
    let third = resume_ok(&env, &id, "RECALL");
    assert!(
        third.starts_with("recall: first question | second question | shell: echo third turn"),
        "{third}"
    );
}

#[test]
fn an_id_found_nowhere_names_both_places_looked() {
    let server = server();
    let env = env_with_codex_home(&server);
    let before = snapshot(&env.codex_home);
    let unknown = "01a21391-0000-7000-8000-000000000000";
    let output = resume(&env, unknown, "RECALL");
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains(unknown), "{message}");
    assert!(
        message.contains(&env.home.join("sessions").display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&env.codex_home.display().to_string()),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
    assert!(
        server.requests().is_empty(),
        "no model request for an unknown thread"
    );
    assert_unchanged(&env.codex_home, &before);
}

/// Sets the `rollout_path` Codex's index records for `id`.
fn set_index_path(env: &TestEnv, id: &str, path: &Path) {
    let db = rusqlite::Connection::open(env.codex_home.join("state_5.sqlite")).expect("open index");
    let changed = db
        .execute(
            "UPDATE threads SET rollout_path = ?1 WHERE id = ?2",
            (path.display().to_string(), id),
        )
        .expect("update index");
    assert_eq!(changed, 1, "the fixture index has thread {id}");
}

#[test]
fn the_codex_index_finds_a_rollout_the_file_name_scan_cannot() {
    let server = server();
    let env = env_with_codex_home(&server);
    let id = fixture_id("shell");
    let moved = move_rollout_where_only_the_index_finds_it(&env.codex_home, &id);
    let before = snapshot(&env.codex_home);

    let answer = resume_ok(&env, &id, "RECALL");
    assert_eq!(
        answer,
        "recall: shell: echo hello from codex (1 tool outputs)"
    );
    let meta = &parse_complete_lines(&env.rollout_of(&id))[0];
    assert_eq!(
        meta["payload"]["imported_from"]["path"],
        moved.display().to_string()
    );
    assert_unchanged(&env.codex_home, &before);
}

/// Moves the rollout of `id` out of `sessions/` to `<codex_home>/elsewhere/`, where only the
/// index can lead, and points the index at it.
fn move_rollout_where_only_the_index_finds_it(codex_home: &Path, id: &str) -> PathBuf {
    let mut files = Vec::new();
    collect_files(&codex_home.join("sessions"), &mut files);
    let original = files
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(&format!("-{id}.jsonl")))
        .expect("the fixture rollout");
    let moved = codex_home
        .join("elsewhere")
        .join(original.file_name().expect("name"));
    std::fs::create_dir_all(moved.parent().expect("parent")).expect("mkdir");
    std::fs::rename(&original, &moved).expect("move the rollout");
    let db = rusqlite::Connection::open(codex_home.join("state_5.sqlite")).expect("open index");
    db.execute(
        "UPDATE threads SET rollout_path = ?1 WHERE id = ?2",
        (moved.display().to_string(), id),
    )
    .expect("update index");
    moved
}

#[test]
fn a_codex_home_whose_path_needs_uri_escaping_is_read_through_its_index() {
    // The index is opened through a `file:` URI; `?`, `#`, `%` and spaces must not break it.
    let server = server();
    let env = TestEnv::new(&server, baton_test_support::Wire::Responses);
    let odd_home = env.root.join("codex home ?#%20 x");
    copy_tree(&fixture_home(), &odd_home);
    let id = fixture_id("shell");
    let moved = move_rollout_where_only_the_index_finds_it(&odd_home, &id);
    let before = snapshot(&odd_home);

    let override_home = format!("codex_home={:?}", odd_home.display().to_string());
    let project = env.project.display().to_string();
    let output = env.run(&[
        "-c",
        &override_home,
        "exec",
        "resume",
        &id,
        "RECALL",
        "--cd",
        &project,
    ]);
    assert_success(&output);
    assert_eq!(
        stdout(&output).trim(),
        "recall: shell: echo hello from codex (1 tool outputs)"
    );
    let meta = &parse_complete_lines(&env.rollout_of(&id))[0];
    assert_eq!(
        meta["payload"]["imported_from"]["path"],
        moved.display().to_string()
    );
    assert_unchanged(&odd_home, &before);
}

#[test]
fn the_index_of_a_running_codex_is_read_through_its_write_ahead_log() {
    let server = server();
    let env = env_with_codex_home(&server);
    let id = fixture_id("shell");
    // Like a running Codex: a connection holds the database open in WAL mode and its last
    // commit (the new rollout_path) sits in the -wal file, not yet in the database file.
    let mut files = Vec::new();
    collect_files(&env.codex_home.join("sessions"), &mut files);
    let original = files
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(&format!("-{id}.jsonl")))
        .expect("the fixture rollout");
    let moved = env
        .codex_home
        .join("elsewhere")
        .join(original.file_name().expect("name"));
    std::fs::create_dir_all(moved.parent().expect("parent")).expect("mkdir");
    std::fs::rename(&original, &moved).expect("move the rollout");
    let codex = rusqlite::Connection::open(env.codex_home.join("state_5.sqlite")).expect("open");
    codex
        .execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;")
        .expect("WAL mode");
    codex
        .execute(
            "UPDATE threads SET rollout_path = ?1 WHERE id = ?2",
            (moved.display().to_string(), &id),
        )
        .expect("update index");
    assert!(
        env.codex_home.join("state_5.sqlite-wal").is_file(),
        "the update must sit in the write-ahead log"
    );

    let answer = resume_ok(&env, &id, "RECALL");
    assert_eq!(
        answer,
        "recall: shell: echo hello from codex (1 tool outputs)"
    );
    let meta = &parse_complete_lines(&env.rollout_of(&id))[0];
    assert_eq!(
        meta["payload"]["imported_from"]["path"],
        moved.display().to_string()
    );
    drop(codex);
}

#[test]
fn an_index_path_outside_codex_home_is_ignored_for_the_file_name_scan() {
    let server = server();
    let env = env_with_codex_home(&server);
    let id = fixture_id("shell");
    let genuine = codex_rollout(&env, &id);
    // A readable transcript of the same id outside codex_home: a stale or planted path.
    let decoy = env
        .root
        .join("decoy")
        .join(genuine.file_name().expect("name"));
    std::fs::create_dir_all(decoy.parent().expect("parent")).expect("mkdir");
    let text = std::fs::read_to_string(&genuine).expect("read rollout");
    std::fs::write(&decoy, text.replace("hello from codex", "DECOY")).expect("write decoy");
    set_index_path(&env, &id, &decoy);

    let answer = resume_ok(&env, &id, "RECALL");
    assert_eq!(
        answer,
        "recall: shell: echo hello from codex (1 tool outputs)"
    );
    let meta = &parse_complete_lines(&env.rollout_of(&id))[0];
    assert_eq!(
        meta["payload"]["imported_from"]["path"],
        genuine.display().to_string()
    );
}

#[test]
fn archived_codex_sessions_are_found_without_an_index() {
    let server = server();
    let env = env_with_codex_home(&server);
    let id = fixture_id("multi_turn");
    let original = codex_rollout(&env, &id);
    let archived = env.codex_home.join("archived_sessions");
    std::fs::create_dir_all(&archived).expect("mkdir");
    std::fs::rename(
        &original,
        archived.join(original.file_name().expect("name")),
    )
    .expect("archive the rollout");
    std::fs::remove_file(env.codex_home.join("state_5.sqlite")).expect("remove the index");

    let answer = resume_ok(&env, &id, "RECALL");
    assert_eq!(
        answer,
        "recall: first question | second question | shell: echo third turn (1 tool outputs)"
    );
}

#[test]
fn the_glob_helper_matches_as_documented() {
    assert!(glob_matches("a*c", "abbbc"));
    assert!(glob_matches("a*", "a\nb"));
    assert!(glob_matches("abc", "abc"));
    assert!(!glob_matches("abc", "abcd"));
    assert!(!glob_matches("a*c", "abd"));
    assert!(glob_matches("a*b*c", "a-b-c"));
    assert!(!glob_matches("a*b*c", "a-c-b"));
}

#[test]
fn sessions_list_with_codex_shows_codex_sessions_once() {
    let server = server();
    let env = env_with_codex_home(&server);
    let (own, _) = env.exec_ok("a baton session");
    let ids = |output: &std::process::Output| -> Vec<(String, String)> {
        let rows: Value = serde_json::from_slice(&output.stdout).expect("json array");
        rows.as_array()
            .expect("array")
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap_or_default().to_owned(),
                    r["source"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };

    let without = env.run(&["sessions", "list", "--json"]);
    assert_success(&without);
    assert_eq!(ids(&without), [(own.clone(), "baton".to_owned())]);

    let with = env.run(&["sessions", "list", "--json", "--codex"]);
    assert_success(&with);
    let listed = ids(&with);
    assert_eq!(listed.len(), 4, "{listed:?}");
    for name in ["shell", "multi_turn", "compacted"] {
        assert!(
            listed.contains(&(fixture_id(name), "codex".to_owned())),
            "{name} missing from {listed:?}"
        );
    }

    // Once imported, a Codex session is listed once, as baton's copy (still marked codex).
    resume_ok(&env, &fixture_id("shell"), "RECALL");
    let after = ids(&env.run(&["sessions", "list", "--json", "--codex"]));
    assert_eq!(after.len(), 4, "{after:?}");
    assert_eq!(after[0], (fixture_id("shell"), "codex".to_owned()));
}

#[test]
fn forking_a_codex_session_converts_it_like_a_reply_would() {
    let server = server();
    let env = env_with_codex_home(&server);
    let before = snapshot(&env.codex_home);
    let source = fixture_id("shell");
    let output = env.run(&["sessions", "fork", &source]);
    assert_success(&output);
    let fork = thread_id_of(&output);
    assert_ne!(fork, source);
    let fork_meta = &parse_complete_lines(&env.rollout_of(&fork))[0]["payload"];
    assert_eq!(fork_meta["forked_from"], source.as_str());
    assert_eq!(fork_meta["originator"], "baton");
    assert!(
        fork_meta["imported_from"]["path"].is_string(),
        "{fork_meta}"
    );

    let answer = resume_ok(&env, &fork, "RECALL");
    assert!(answer.contains("(1 tool outputs)"), "{answer}");
    let conversation = server.requests().pop().expect("request").conversation();
    assert!(
        conversation.iter().any(|e| e.starts_with("call shell ")),
        "Codex's exec_command became a baton shell call: {conversation:?}"
    );
    assert_unchanged(&env.codex_home, &before);
}
