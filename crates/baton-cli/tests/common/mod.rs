//! Helpers shared by the integration tests: a temporary BATON_HOME wired to a scripted model
//! server, and a way to run the real `baton` binary in it.

#![allow(dead_code)] // each test binary uses a different subset

pub mod http;
pub mod mcp;
pub mod tasks;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use baton_test_support::{ScriptedModelServer, Wire};

/// The environment variable the test provider reads its key from, and a key distinctive
/// enough to search for in files.
pub const KEY_VAR: &str = "BATON_TEST_API_KEY";
pub const SECRET_KEY: &str = "sk-test-DO-NOT-LEAK-4f1b2c";

pub struct TestEnv {
    _root: tempfile::TempDir,
    pub root: PathBuf,
    pub home: PathBuf,
    pub project: PathBuf,
    pub codex_home: PathBuf,
}

impl TestEnv {
    /// A home whose default provider is `server`, on `wire`.
    pub fn new(server: &ScriptedModelServer, wire: Wire) -> Self {
        Self::with_provider(&server.provider_toml("scripted", wire))
    }

    /// A home whose default provider `scripted` is defined by `provider_toml`.
    pub fn with_provider(provider_toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().canonicalize().expect("canonical temp dir");
        let home = root.join("baton-home");
        let project = root.join("project");
        let codex_home = root.join("codex-home");
        std::fs::create_dir_all(&project).expect("project dir");
        std::fs::create_dir_all(&home).expect("home dir");
        let config = format!(
            "model = \"scripted-model\"\nmodel_provider = \"scripted\"\ncodex_home = \"{}\"\n\n{provider_toml}env_key = \"{KEY_VAR}\"\nrequest_max_retries = 2\n",
            codex_home.display()
        );
        std::fs::write(home.join("config.toml"), config).expect("config.toml");
        Self {
            _root: dir,
            root,
            home,
            project,
            codex_home,
        }
    }

    /// `baton` with this home, the test key, and the project as working directory.
    pub fn baton(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
        command
            .env("BATON_HOME", &self.home)
            .env("HOME", &self.root)
            .env("CODEX_HOME", &self.codex_home)
            .env(KEY_VAR, SECRET_KEY)
            .env_remove("RUST_LOG")
            .env_remove("OPENAI_BASE_URL")
            .current_dir(&self.project);
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.baton().args(args).output().expect("run baton")
    }

    /// Runs `baton exec PROMPT` and returns (thread id, stdout), failing the test on error.
    pub fn exec_ok(&self, prompt: &str) -> (String, String) {
        let output = self.run(&["exec", prompt]);
        assert_success(&output);
        (thread_id_of(&output), stdout(&output))
    }

    pub fn resume_ok(&self, thread_id: &str, prompt: &str) -> String {
        let output = self.run(&["exec", "resume", thread_id, prompt]);
        assert_success(&output);
        assert_eq!(
            thread_id_of(&output),
            thread_id,
            "the thread id must not change"
        );
        stdout(&output)
    }

    /// `baton sessions list --json`, parsed.
    pub fn listed_sessions(&self) -> Vec<serde_json::Value> {
        let output = self.run(&["sessions", "list", "--json"]);
        assert_success(&output);
        let rows: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("sessions list --json is JSON");
        rows.as_array().expect("a JSON array").clone()
    }

    /// The ids `baton sessions list` shows, in its order.
    pub fn listed_ids(&self) -> Vec<String> {
        self.listed_sessions()
            .iter()
            .filter_map(|row| row["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Every transcript file under the home's sessions directory.
    pub fn rollout_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        collect_files(&self.home.join("sessions"), &mut files);
        files.retain(|p| p.extension().is_some_and(|e| e == "jsonl"));
        files.sort();
        files
    }

    pub fn rollout_of(&self, thread_id: &str) -> PathBuf {
        self.rollout_files()
            .into_iter()
            .find(|p| {
                p.to_string_lossy()
                    .ends_with(&format!("-{thread_id}.jsonl"))
            })
            .unwrap_or_else(|| panic!("no transcript for {thread_id}"))
    }
}

pub fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "baton failed ({:?})\nstdout: {}\nstderr: {}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// The id from the `thread: <uuid>` line that `baton exec` prints on stderr.
pub fn thread_id_of(output: &Output) -> String {
    let text = stderr(output);
    text.lines()
        .find_map(|line| line.strip_prefix("thread: "))
        .map(|id| id.trim().to_owned())
        .unwrap_or_else(|| panic!("no `thread:` line on stderr: {text}"))
}

/// Parses every complete line of a transcript; panics on a line that is not one record.
pub fn parse_complete_lines(path: &Path) -> Vec<serde_json::Value> {
    let bytes = std::fs::read(path).expect("read transcript");
    let mut records = Vec::new();
    for (number, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let is_last = number == bytes.split(|b| *b == b'\n').count() - 1;
        if line.is_empty() || is_last {
            continue; // the text after the last newline is a torn tail at worst
        }
        let value: serde_json::Value = serde_json::from_slice(line).unwrap_or_else(|err| {
            panic!(
                "line {} of {} is not one JSON record ({err}): {}",
                number + 1,
                path.display(),
                String::from_utf8_lossy(line)
            )
        });
        records.push(value);
    }
    records
}
